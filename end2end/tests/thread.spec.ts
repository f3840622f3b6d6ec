import { expect, test } from "@playwright/test";
import { gotoHydrated } from "./helpers";

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
