import { expect, test, type Page } from "@playwright/test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freshThread, moderato } from "./helpers";

// What a reader on a slow phone waits for: a cold load of the thread page under Chromium's
// throttling (1.6 Mbit/s down, 750 kbit/s up, 150 ms round trip: DevTools' "slow 4G"; and a
// CPU four times slower), until the comment form works. Printed, not asserted: figures
// depend on the machine (the README keeps the latest ones). What is asserted is what the
// reader sees: the whole thread in the HTML, then a form that previews what they type.

const SLOW_4G = {
  offline: false,
  latency: 150,
  downloadThroughput: (1.6 * 1_000_000) / 8,
  uploadThroughput: (750 * 1_000) / 8,
};

/** Cold-loads `url` throttled; returns milliseconds from navigation start to each stage. */
async function throttledLoad(page: Page, url: string) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  await cdp.send("Network.emulateNetworkConditions", SLOW_4G);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
  // The moment the form works: the reader client (or, for staff, App's effect after
  // hydration) sets body[data-hydrated].
  await page.addInitScript(() => {
    new MutationObserver((_, observer) => {
      if (document.body?.dataset.hydrated === "true") {
        (window as unknown as { __hydratedAt: number }).__hydratedAt = performance.now();
        observer.disconnect();
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-hydrated"] });
  });
  await page.goto(url, { waitUntil: "commit", timeout: 120_000 });
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true", { timeout: 120_000 });
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
    const paint = performance.getEntriesByName("first-contentful-paint")[0];
    const bytes = performance
      .getEntriesByType("resource")
      .reduce((n, r) => n + (r as PerformanceResourceTiming).transferSize, nav.transferSize);
    return {
      firstByte: nav.responseStart,
      firstPaint: paint ? paint.startTime : NaN,
      domContentLoaded: nav.domContentLoadedEventEnd,
      formWorks: (window as unknown as { __hydratedAt: number }).__hydratedAt,
      transferred: bytes,
    };
  });
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
  await cdp.send("Network.emulateNetworkConditions", { ...SLOW_4G, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  return timing;
}

function report(label: string, t: Awaited<ReturnType<typeof throttledLoad>>) {
  const ms = (v: number) => `${Math.round(v)} ms`;
  console.log(
    `[speed] ${label}: first byte ${ms(t.firstByte)}, first paint ${ms(t.firstPaint)}, ` +
      `DOM ready ${ms(t.domContentLoaded)}, form works (hydrated) ${ms(t.formWorks)}, ` +
      `${t.transferred} bytes transferred (slow 4G, 4x CPU)`,
  );
}

/** After hydration the form previews what is typed: the wasm really runs. */
async function expectWorkingForm(page: Page) {
  const form = page.locator("#comment-form");
  await form.locator("textarea[name=body]").fill("Some **bold** words");
  await expect(page.locator(".comment-preview .comment-text strong")).toHaveText("bold");
}

test.describe("time until the comment form works, throttled", () => {
  test.setTimeout(240_000);

  test("the demo thread", async ({ page }) => {
    const t = await throttledLoad(page, "/t/welcome");
    report("demo thread /t/welcome", t);
    await expect(page.locator(".comment-tree article.comment").first()).toBeVisible();
    await expectWorkingForm(page);
  });

  test("a 10,000-comment thread", async ({ page }) => {
    // Made with the importer (Moderato's own format): posting 10,000 comments one by one
    // would measure the posting path, not the page.
    const key = freshThread("speed-10k");
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "moderato-speed-")), "big.jsonl");
    const now = Date.now();
    const lines = [
      JSON.stringify({ type: "header", format: "moderato-export", version: 1, instance: "e2e-speed", exported_at: new Date(now).toISOString(), thread: null }),
      JSON.stringify({ type: "thread", key, kind: "page", title: "Ten thousand comments", url: null, comments_enabled: true, published_at: null, created_at: now, updated_at: now }),
    ];
    // 2,000 top-level comments with four replies each, a realistic mix of depth.
    let id = 0;
    for (let top = 0; top < 2_000; top++) {
      const root = ++id;
      for (let k = 0; k < 5; k++) {
        const cid = k === 0 ? root : ++id;
        const text = `Comment ${cid}: a sentence or two of an ordinary reply, long enough to wrap once.`;
        lines.push(
          JSON.stringify({
            type: "comment", id: cid, thread: key, parent_id: k === 0 ? null : k === 1 ? root : cid - 1,
            author_name: `Reader ${cid % 97}`, author_email: null, author_url: null, title: null,
            body_source: text, body_html: "", status: "published", moderator: null, reason: null,
            score: null, ip: null, created_at: now - 10_000_000 + cid, updated_at: now - 10_000_000 + cid,
          }),
        );
      }
    }
    lines.push(JSON.stringify({ type: "end", threads: 1, comments: id, audit: 0 }));
    fs.writeFileSync(file, lines.join("\n") + "\n");
    const config = process.env.MODERATO_CONFIG ? ["--config", process.env.MODERATO_CONFIG] : [];
    moderato("import", "--format", "moderato", file, ...config);

    const t = await throttledLoad(page, `/t/${key}`);
    report(`10,000-comment thread (first page)`, t);
    await expect(page.locator(".comment-count")).toHaveText("10000 comments");
    await expectWorkingForm(page);
  });
});
