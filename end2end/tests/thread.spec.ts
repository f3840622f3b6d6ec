import { expect, test } from "@playwright/test";
import { expectSameDocument, freshThread, gotoHydrated, markDocument } from "./helpers";

test("the welcome thread is rendered on the server before any script runs", async ({ page, request }) => {
  // The raw HTML already holds the comments.
  const html = await (await request.get("/t/welcome")).text();
  expect(html).toContain("Welcome to <strong>Moderato</strong>!");
  expect(html).toContain("Can I reply to a reply?");

  // With the wasm blocked, the browser still shows the whole tree.
  await page.route("**/*.wasm", (route) => route.abort());
  await page.goto("/t/welcome");
  await expect(page.locator(".comment-tree article.comment")).toHaveCount(7);
  await expect(page.locator("#c2 .comment-text").first()).toHaveText("Nice. Can I reply to a reply?");
  await expect(page.locator("body")).not.toHaveAttribute("data-hydrated", "true");
});

test("after hydration a reply subtree collapses and expands", async ({ page }) => {
  await gotoHydrated(page, "/t/welcome");
  const first = page.locator("#c1");
  const nested = page.locator("#c3");
  await expect(nested).toBeVisible();

  await first.locator("> header button.toggle").click();
  await expect(nested).toBeHidden();
  await expect(first.locator("> .comment-body")).toBeHidden();
  await expect(first.locator("> header button.toggle")).toHaveText("[+] 3 replies");
  await expect(first.locator("> header button.toggle")).toHaveAttribute("aria-expanded", "false");

  await first.locator("> header button.toggle").click();
  await expect(nested).toBeVisible();
  await expect(first.locator("> header button.toggle")).toHaveAttribute("aria-expanded", "true");
});

test("an unknown page answers 404", async ({ request }) => {
  const res = await request.get("/no/such/page");
  expect(res.status()).toBe(404);
});

test("a 1,000-deep reply chain renders and hydrates with nesting held at the depth cap", async ({ page, request }) => {
  test.setTimeout(120_000);
  const key = freshThread("deep");
  let parent: number | null = null;
  for (let i = 0; i < 1000; i++) {
    const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
    const res = await request.post(`/api/threads/${key}/comments`, {
      data: { name: "Deep", body: `reply ${i}`, parent_id: parent, form_token: token },
    });
    expect(res.status()).toBe(201);
    parent = (await res.json()).comment_id;
  }
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  await gotoHydrated(page, `/t/${key}`);
  await markDocument(page);
  const shown = page.locator(".comment-tree article.comment");
  await expect(shown.first()).toContainText("reply 0");
  // However long the chain, no comment sits inside more than max_depth (8) others.
  const deepest = await page.evaluate(() =>
    Math.max(
      ...Array.from(document.querySelectorAll("article.comment")).map((a) => {
        let n = 0;
        for (let e = a.parentElement; e; e = e.parentElement) if (e.matches("article.comment")) n++;
        return n;
      }),
    ),
  );
  expect(deepest).toBeLessThanOrEqual(8);
  // Hydrated and working: replying to a comment below the cap opens the form there.
  const last = shown.last();
  await last.locator("> .comment-body .reply-link").click();
  await expect(last.locator("#comment-form")).toBeVisible();
  await expectSameDocument(page);
  expect(errors).toEqual([]);
});
