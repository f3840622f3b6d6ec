import { expect, test, type APIRequestContext, type WebSocketRoute } from "@playwright/test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expectSameDocument, fillForm, freshThread, gotoHydrated, markDocument, moderato } from "./helpers";

// What only the light reader client (frontend's `reader` feature) has to prove: that a
// reader loads it and not the whole app, and the reader's paths no other story covers with
// it: "show more", form tokens that went stale, and catching up after the socket drops.

const STAFF_USER = process.env.MODERATO_STAFF_USER ?? "e2e-staff";
const STAFF_PASSWORD = process.env.MODERATO_STAFF_PASSWORD ?? "e2e-staff-password";

/** Posts a comment through the API; returns its id. */
async function seed(request: APIRequestContext, key: string, body: string, parent_id?: number): Promise<number> {
  const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
  const res = await request.post(`/api/threads/${key}/comments`, {
    data: { name: "Seed", body, parent_id, form_token: token },
  });
  expect(res.status()).toBe(201);
  return (await res.json()).comment_id as number;
}

test("a reader loads the light client, staff the whole app", async ({ page, browser }) => {
  const loaded: string[] = [];
  page.on("request", (r) => loaded.push(new URL(r.url()).pathname));
  await gotoHydrated(page, "/t/welcome");
  expect(loaded.some((p) => /^\/pkg\/reader\.[0-9a-f]{16}\.wasm$/.test(p))).toBe(true);
  expect(loaded.filter((p) => /^\/pkg\/moderato\.[0-9a-f]{16}\.(js|wasm)$/.test(p))).toEqual([]);

  const staff = await (await browser.newContext()).newPage();
  await gotoHydrated(staff, "/login");
  await staff.getByLabel("User name").fill(STAFF_USER);
  await staff.getByLabel("Password").fill(STAFF_PASSWORD);
  await staff.getByRole("button", { name: "Sign in" }).click();
  await expect(staff).toHaveURL(/\/moderation$/);
  const staffLoaded: string[] = [];
  staff.on("request", (r) => staffLoaded.push(new URL(r.url()).pathname));
  await staff.goto("/t/welcome");
  await expect(staff.locator("body")).toHaveAttribute("data-hydrated", "true");
  expect(staffLoaded.some((p) => /^\/pkg\/reader\./.test(p))).toBe(false);
  await staff.context().close();
});

test("show more loads the next comments in place", async ({ page }) => {
  const key = freshThread("more");
  // One more top-level thread than a page holds (50), the last with a reply: imported, so
  // no moderator or filter trained by other stories holds any of them.
  const now = Date.now();
  const comment = (id: number, parent: number | null, text: string) =>
    JSON.stringify({
      type: "comment", id, thread: key, parent_id: parent, author_name: `Reader ${id}`,
      author_email: null, author_url: null, title: null, body_source: text, body_html: "",
      status: "published", moderator: null, reason: null, score: null, ip: null,
      created_at: now - 100_000 + id, updated_at: now - 100_000 + id,
    });
  const lines = [
    JSON.stringify({ type: "header", format: "moderato-export", version: 1, instance: "e2e-more", exported_at: new Date(now).toISOString(), thread: null }),
    JSON.stringify({ type: "thread", key, kind: "page", title: "Paged", url: null, comments_enabled: true, published_at: null, created_at: now, updated_at: now }),
  ];
  for (let id = 1; id <= 51; id++) lines.push(comment(id, null, `Top-level comment number ${id}.`));
  lines.push(comment(52, 51, "The reply on the second page."));
  lines.push(JSON.stringify({ type: "end", threads: 1, comments: 52, audit: 0 }));
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "moderato-more-")), "more.jsonl");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  const config = process.env.MODERATO_CONFIG ? ["--config", process.env.MODERATO_CONFIG] : [];
  moderato("import", "--format", "moderato", file, ...config);

  await gotoHydrated(page, `/t/${key}`);
  await markDocument(page);
  const top = page.locator(".comment-tree > article.comment");
  await expect(top).toHaveCount(50);
  const more = page.locator("a.show-more");
  await expect(more).toHaveText("Show more comments (1 more threads)");
  await more.click();
  await expect(top).toHaveCount(51);
  const last = top.last();
  await expect(last.locator("> .comment-body .comment-text")).toHaveText("Top-level comment number 51.");
  await expect(last.locator("> .replies > article.comment")).toContainText("The reply on the second page.");
  await expect(more).toHaveCount(0);
  await expect(page.locator(".comment-count")).toHaveText("52 comments");
  await expectSameDocument(page);
});

test("a stale form token in the page is replaced, and a spent one renewed on posting", async ({ page, request }) => {
  const key = freshThread("token");
  await gotoHydrated(page, `/t/${key}`);
  const tokenInput = page.locator("#comment-form input[name=form_token]");
  const embedded = await tokenInput.inputValue();
  // Someone spends the page's token (as a cached page's token may be).
  const res = await request.post(`/api/threads/${key}/comments`, {
    data: { name: "Other", body: "Spent the page's token", form_token: embedded },
  });
  expect(res.status()).toBe(201);

  // Using the form fetches a token of its own.
  await fillForm(page, "Tess", "Posted with a fresh token");
  await expect.poll(() => tokenInput.inputValue()).not.toBe(embedded);
  // Even when the token it holds is spent by the time it posts, the post goes through.
  await tokenInput.evaluate((input, spent) => ((input as HTMLInputElement).value = spent), embedded);
  await page.getByRole("button", { name: "Post comment" }).click();
  const mine = page.locator(".comment-tree article.comment").filter({ hasText: "Posted with a fresh token" });
  await expect(mine).toHaveCount(1);
  await expect(mine).toHaveClass(/highlight/);
  await expect(page.locator("#comment-form .field-error")).toHaveCount(0);
});

test("after the live connection drops, the reader catches up on what was missed", async ({ page, request }) => {
  const key = freshThread("reconnect");
  const sockets: WebSocketRoute[] = [];
  const subscribes: { since?: number }[] = [];
  // Pass the socket through, watching what the client asks for, so the test can drop it.
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      const msg = JSON.parse(String(message));
      if (msg.type === "subscribe") subscribes.push(msg);
      server.send(message);
    });
    sockets.push(ws);
  });
  await gotoHydrated(page, `/t/${key}`);
  await markDocument(page);
  const indicator = page.locator(".live-indicator");
  await expect(indicator).toHaveText("● live");
  await seed(request, key, "Seen live");
  await expect(page.locator("article.comment").filter({ hasText: "Seen live" })).toHaveCount(1);

  await sockets[0].close();
  await expect(indicator).toHaveText("○ offline");
  // Posted while the page is offline (it waits at least a second before reconnecting).
  await seed(request, key, "Missed while offline");
  const missed = page.locator("article.comment").filter({ hasText: "Missed while offline" });
  await expect(missed).toHaveCount(1);
  await expect(missed).toHaveClass(/fresh/);
  await expect(indicator).toHaveText("● live");
  await expect(page.locator(".comment-count")).toHaveText("2 comments");
  // The reconnect resumed from the last event the page had seen.
  expect(subscribes.length).toBe(2);
  expect(subscribes[1].since).toBeGreaterThan(subscribes[0].since ?? 0);
  await expectSameDocument(page);
});

test("replies that arrive under a collapsed comment are counted in its label", async ({ page, request }) => {
  const key = freshThread("collapsed");
  // Under five words each, so that the spam filter (trained by other stories) does not judge
  // them and none is held.
  const top = await seed(request, key, "A top-level comment.");
  const first = await seed(request, key, "The first reply.", top);
  await gotoHydrated(page, `/t/${key}`);
  await expect(page.locator(".live-indicator")).toHaveText("● live");
  const article = page.locator(`#c${top}`);
  const toggle = article.locator("> header > button.toggle");
  await toggle.click();
  await expect(toggle).toHaveText("[+] 1 reply");
  await expect(article.locator("> .replies")).toBeHidden();
  // Posted by others while it is collapsed: a reply to it, and a reply to its reply.
  await seed(request, key, "A second reply.", top);
  await expect(toggle).toHaveText("[+] 2 replies");
  await seed(request, key, "Replying to that.", first);
  await expect(toggle).toHaveText("[+] 3 replies");
  await toggle.click();
  await expect(toggle).toHaveText("[–]");
  await expect(article.locator("article.comment")).toHaveCount(3);
});

test("a signed-in user who is not staff reads with the light client and can sign out", async ({ page }) => {
  const name = freshThread("user");
  process.env.MODERATO_PASSWORD = "user-password-1";
  moderato("user", "add", name);
  const res = await page.request.post("/api/session", { data: { username: name, password: "user-password-1" } });
  expect(res.status()).toBe(200);

  const loaded: string[] = [];
  page.on("request", (r) => loaded.push(new URL(r.url()).pathname));
  await gotoHydrated(page, "/t/welcome");
  expect(loaded.some((p) => /^\/pkg\/reader\./.test(p))).toBe(true);
  await expect(page.locator("nav.session .who")).toHaveText(name);
  await page.locator("nav.session").getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.locator("nav.session")).toContainText("Staff sign-in");
});
