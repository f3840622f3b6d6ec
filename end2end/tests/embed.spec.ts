import { expect, test, type Browser, type Frame, type Page } from "@playwright/test";
import * as http from "node:http";
import { expectSameDocument, freshThread, markDocument } from "./helpers";

// Two sites, as on the web: static host pages served here from http://127.0.0.1:HOST_PORT
// (allowed in the server's [embed] allowed_origins by scripts/test.sh) and from
// http://127.0.0.1:FOREIGN_PORT (not allowed), embedding Moderato from http://localhost:PORT,
// another site. The two ports and Moderato's embed address come from scripts/test.sh.
const HOST_PORT = Number(process.env.MODERATO_EMBED_HOST_PORT ?? 0);
const FOREIGN_PORT = Number(process.env.MODERATO_EMBED_FOREIGN_PORT ?? 0);
const MODERATO = process.env.MODERATO_EMBED_URL ?? "";
const HOST = `http://127.0.0.1:${HOST_PORT}`;
const FOREIGN = `http://127.0.0.1:${FOREIGN_PORT}`;

test.skip(!HOST_PORT || !FOREIGN_PORT || !MODERATO, "needs the two host ports from scripts/test.sh");

/** Path -> HTML, for both static sites. */
const pages = new Map<string, string>();
const servers: http.Server[] = [];

test.beforeAll(async () => {
  for (const port of [HOST_PORT, FOREIGN_PORT]) {
    const server = http.createServer((req, res) => {
      const body = pages.get((req.url ?? "/").split("?")[0]);
      res.writeHead(body ? 200 : 404, { "content-type": "text/html; charset=utf-8" });
      res.end(body ?? "not found");
    });
    await new Promise<void>((ok) => server.listen(port, "127.0.0.1", ok));
    servers.push(server);
  }
});

test.afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
});

function hostPage(path: string, body: string): string {
  pages.set(path, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>A blog post</title></head>
<body style="margin:0;font-family:sans-serif"><article><h1>A blog post</h1><p>Words.</p></article>${body}</body></html>`);
  return path;
}

function snippet(key: string, title = "Embedded post"): string {
  return `<div id="moderato-thread" data-thread="${key}" data-title="${title}"></div>
<script src="${MODERATO}/embed.js" async></script>`;
}

/** Posts a published comment straight to the API; returns its id. */
async function seed(request: import("@playwright/test").APIRequestContext, key: string, name: string, body: string, parent?: number): Promise<number> {
  const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
  const res = await request.post(`/api/threads/${key}/comments`, {
    data: { name, body, form_token: token, parent_id: parent ?? null },
  });
  expect(res.status()).toBe(201);
  return (await res.json()).comment_id;
}

/** The embedded thread's frame, once its wasm has hydrated. */
async function embedFrame(page: Page): Promise<Frame> {
  const handle = await page.locator("#moderato-thread iframe").elementHandle();
  const frame = await handle!.contentFrame();
  expect(frame).not.toBeNull();
  await expect(frame!.locator("body")).toHaveAttribute("data-hydrated", "true");
  return frame!;
}

async function iframeHeight(page: Page): Promise<number> {
  return page.locator("#moderato-thread iframe").evaluate((f) => f.getBoundingClientRect().height);
}

/** The frame shows all of its content: nothing to scroll, and the iframe is as tall as it. */
async function expectFitted(page: Page, frame: Frame): Promise<void> {
  await expect
    .poll(async () => {
      const inner = await frame.evaluate(() => ({
        scroll: document.documentElement.scrollHeight,
        client: document.documentElement.clientHeight,
        content: Math.ceil(document.querySelector(".embed")!.getBoundingClientRect().height),
      }));
      const outer = await iframeHeight(page);
      return inner.scroll <= inner.client && Math.abs(outer - inner.content) <= 1;
    })
    .toBe(true);
}

async function openHost(browser: Browser, url: string): Promise<{ page: Page; frame: Frame }> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(url);
  const frame = await embedFrame(page);
  return { page, frame };
}

test("a page on another site shows the thread in a frame that grows as readers reply, live", async ({ browser, request }) => {
  const key = freshThread("embed");
  const path = hostPage(`/${key}.html`, snippet(key));
  const { page: reader, frame } = await openHost(browser, `${HOST}${path}`);
  // The embed created the thread with the snippet's title.
  expect((await (await request.get(`/api/threads/${key}`)).json()).thread.title).toBe("Embedded post");
  await expect(frame.locator(".live-indicator")).toHaveText("● live");
  await expectFitted(reader, frame);
  await markDocument(reader);

  // Someone else's comment arrives live; the frame grows to show it.
  const first = await seed(request, key, "Alice", "The first comment, from elsewhere");
  await expect(frame.locator(`#c${first}`)).toBeVisible();
  await expectFitted(reader, frame);
  const withOne = await iframeHeight(reader);

  const { page: other, frame: otherFrame } = await openHost(browser, `${HOST}${path}`);
  await expect(otherFrame.locator(".live-indicator")).toHaveText("● live");
  await expectFitted(other, otherFrame);
  const otherBefore = await iframeHeight(other);

  // The form moves under the comment it answers; the frame follows.
  await frame.locator(`#c${first} .reply-link`).click();
  const form = frame.locator(`#c${first} #comment-form`);
  await expect(form).toBeVisible();
  await expectFitted(reader, frame);

  await form.getByLabel("Name").fill("Bob");
  await form.locator("textarea[name=body]").fill("A reply posted inside the frame");
  await form.getByRole("button", { name: "Post comment" }).click();
  const reply = frame.locator(`#c${first} .replies article.comment`).filter({ hasText: "A reply posted inside the frame" });
  await expect(reply).toBeVisible();
  await expectFitted(reader, frame);
  expect(await iframeHeight(reader)).toBeGreaterThan(withOne);
  await expectSameDocument(reader);

  // The second reader's frame receives it live and grows.
  const arrived = otherFrame.locator(`#c${first} .replies article.comment`).filter({ hasText: "A reply posted inside the frame" });
  await expect(arrived).toBeVisible();
  await expectFitted(other, otherFrame);
  expect(await iframeHeight(other)).toBeGreaterThan(otherBefore);

  // Collapsing shrinks the frame.
  const open = await iframeHeight(other);
  await otherFrame.locator(`#c${first} > .comment-meta .toggle`).click();
  await expect(arrived).toBeHidden();
  await expectFitted(other, otherFrame);
  expect(await iframeHeight(other)).toBeLessThan(open);

  expect((await (await request.get(`/api/threads/${key}`)).json()).thread.comment_count).toBe(2);
  await reader.context().close();
  await other.context().close();
});

test("a server-rendered fragment in the page is shown until the frame replaces it", async ({ browser, request }) => {
  const key = freshThread("embed-frag");
  await request.get(`/t/${key}`); // the e2e server creates threads on first visit
  await seed(request, key, "Carol", "Included in the host page's own HTML");
  const fragment = await (await request.get(`/embed/t/${key}.html`)).text();
  expect(fragment).toContain("Included in the host page");
  const path = hostPage(`/${key}.html`, snippet(key).replace("></div>", `>${fragment}</div>`));
  const page = await (await browser.newContext()).newPage();
  // Hold the frame's page back: the fragment must be there, readable, meanwhile.
  let release: () => void = () => {};
  const held = new Promise<void>((ok) => (release = ok));
  await page.route(`${MODERATO}/embed/t/**`, async (route) => {
    await held;
    await route.continue();
  });
  await page.goto(`${HOST}${path}`, { waitUntil: "domcontentloaded" });
  await expect(page.locator("#moderato-thread .moderato-fragment")).toContainText("Included in the host page");
  release();
  const frame = await embedFrame(page);
  await expect(page.locator("#moderato-thread .moderato-fragment")).toHaveCount(0);
  await expect(page.locator("#moderato-thread > *")).toHaveCount(1);
  await expect(frame.locator(".comment-tree")).toContainText("Included in the host page");
  await expectFitted(page, frame);
  await page.context().close();
});

test("a list page's count spans are filled with one request", async ({ page, request }) => {
  const busy = freshThread("count-busy");
  const quiet = freshThread("count-quiet");
  await request.get(`/t/${busy}`);
  await request.get(`/t/${quiet}`);
  const a = await seed(request, busy, "A", "one");
  await seed(request, busy, "B", "two", a);
  const path = hostPage(
    `/list-${busy}.html`,
    `<ul>
  <li>Busy: <span data-moderato-count="${busy}">…</span></li>
  <li>Quiet: <span data-moderato-count="${quiet}">…</span></li>
  <li>Again: <span data-moderato-count="${busy}" data-moderato-count-format="number">…</span></li>
  <li>Never seen: <span data-moderato-count="${freshThread("count-none")}">…</span></li>
</ul><script src="${MODERATO}/count.js" async></script>`,
  );
  const countRequests: string[] = [];
  page.on("request", (r) => {
    if (r.url().includes("/api/counts")) countRequests.push(r.url());
  });
  await page.goto(`${HOST}${path}`);
  const spans = page.locator("[data-moderato-count]");
  await expect(spans.nth(0)).toHaveText("2 comments");
  await expect(spans.nth(1)).toHaveText("No comments");
  await expect(spans.nth(2)).toHaveText("2");
  await expect(spans.nth(3)).toHaveText("No comments");
  expect(countRequests).toHaveLength(1);
});

test("a permalink in the host page's URL scrolls the host page to that comment", async ({ browser, request }) => {
  const key = freshThread("embed-link");
  await request.get(`/t/${key}`);
  let target = 0;
  for (let i = 0; i < 12; i++) {
    const id = await seed(request, key, `Reader ${i}`, `Comment number ${i}\n\n${"A paragraph of words. ".repeat(12)}`);
    if (i === 9) target = id;
  }
  const path = hostPage(`/${key}.html`, `<div style="height:1200px">A long article.</div>${snippet(key)}`);
  const page = await (await browser.newContext({ viewport: { width: 900, height: 700 } })).newPage();
  await page.goto(`${HOST}${path}#comment-${target}`);
  const frame = await embedFrame(page);
  const comment = frame.locator(`#c${target}`);
  // Playwright's box is in the host page's viewport: the comment must be on screen there.
  await expect
    .poll(async () => {
      const box = await comment.boundingBox();
      return box !== null && box.y >= 0 && box.y < 700;
    })
    .toBe(true);
  expect(await page.evaluate(() => window.scrollY)).toBeGreaterThan(1200);

  // Clicking another comment's permalink in the frame puts it in the host page's URL.
  const other = frame.locator("article.comment").nth(2);
  const otherId = await other.getAttribute("data-id");
  await page.evaluate(() => window.scrollTo(0, 1300));
  await other.locator(".permalink").first().click();
  await expect(page).toHaveURL(new RegExp(`#comment-${otherId}$`));
  await page.context().close();
});

test("a page of a site that is not allowed gets no frame", async ({ browser }) => {
  const key = freshThread("embed-foreign");
  // One frame from the snippet, and one that claims to be for the allowed site.
  const lying = `${MODERATO}/embed/t/${key}?origin=${encodeURIComponent(HOST)}&url=${encodeURIComponent(`${HOST}/x`)}`;
  const path = hostPage(`/${key}.html`, `${snippet(key)}<iframe id="lying" src="${lying}"></iframe>`);
  const page = await (await browser.newContext()).newPage();
  const refusals: string[] = [];
  page.on("console", (m) => {
    if (m.text().includes("frame-ancestors")) refusals.push(m.text());
  });
  await page.goto(`${FOREIGN}${path}`);
  await expect(page.locator("#moderato-thread iframe")).toHaveCount(1);
  // Chromium refuses to show both frames and says why: the frame-ancestors directive.
  await expect.poll(() => refusals.length).toBeGreaterThanOrEqual(1);
  for (const sel of ["#moderato-thread iframe", "#lying"]) {
    const frame = (await (await page.locator(sel).elementHandle())!.contentFrame())!;
    // Chromium puts its error page in a frame it refuses to show.
    await expect.poll(() => frame.url()).toMatch(/^chrome-error:/);
    expect(await frame.locator(".embed, .comment-tree").count()).toBe(0);
  }
  // And nothing grew: no height ever came from a refused frame.
  expect(await iframeHeight(page)).toBe(150);

  // The same lying frame on the allowed site is shown, so the refusal above is the origin's.
  const allowed = hostPage(`/ok-${key}.html`, `<iframe id="lying" src="${lying}"></iframe>`);
  const ok = await (await browser.newContext()).newPage();
  await ok.goto(`${HOST}${allowed}`);
  const shown = await (await ok.locator("#lying").elementHandle())!.contentFrame();
  await expect(shown!.locator(".embed")).toHaveCount(1);
  await page.context().close();
  await ok.context().close();
});
