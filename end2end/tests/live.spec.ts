import { expect, test, type Browser, type Page } from "@playwright/test";
import { expectSameDocument, fillForm, freshThread, gotoHydrated, markDocument } from "./helpers";

const STAFF_USER = process.env.MODERATO_STAFF_USER ?? "e2e-staff";
const STAFF_PASSWORD = process.env.MODERATO_STAFF_PASSWORD ?? "e2e-staff-password";
const LINKY = "Links [a](https://a.example) [b](https://b.example) [c](https://c.example) [d](https://d.example)";

async function openLive(browser: Browser, path: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await gotoHydrated(page, path);
  await expect(page.locator(".live-indicator")).toHaveText("● live");
  return page;
}

async function signedInStaff(browser: Browser): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  // Hydrated first: typing into the server-rendered form before the wasm takes over would
  // be reset by hydration.
  await gotoHydrated(page, "/login");
  await page.getByLabel("User name").fill(STAFF_USER);
  await page.getByLabel("Password").fill(STAFF_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/moderation$/);
  return page;
}

test("a reader sees another reader's comment appear without a reload", async ({ browser }) => {
  const key = freshThread("live");
  const watcher = await openLive(browser, `/t/${key}`);
  await markDocument(watcher);
  const poster = await openLive(browser, `/t/${key}`);

  await fillForm(poster, "Poster", "Hello from the other tab");
  await poster.getByRole("button", { name: "Post comment" }).click();
  // The poster's own copy first, published (not held): if this fails, the post did, not
  // the live update.
  const own = poster.locator(".comment-tree article.comment").filter({ hasText: "Hello from the other tab" });
  await expect(own).toHaveCount(1);
  await expect(own.locator(".awaiting")).toHaveCount(0);

  const arrived = watcher.locator(".comment-tree article.comment").filter({ hasText: "Hello from the other tab" });
  await expect(arrived).toHaveCount(1);
  await expect(arrived).toHaveClass(/fresh/);
  await expect(watcher.locator(".comment-count")).toContainText("1 comment");
  await expectSameDocument(watcher);
  await watcher.context().close();
  await poster.context().close();
});

test("staff approve a held comment and the reader sees it appear; removal makes it vanish", async ({ browser, request }) => {
  const key = freshThread("live-mod");
  const reader = await openLive(browser, `/t/${key}`);
  await markDocument(reader);
  const staff = await signedInStaff(browser);

  // Someone posts a comment that is held (too many links).
  const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
  const res = await request.post(`/api/threads/${key}/comments`, {
    data: { name: "Held Author", body: LINKY, form_token: token },
  });
  expect(res.status()).toBe(202);

  await gotoHydrated(staff, `/t/${key}`);
  const held = staff.locator(".comment-tree article.comment").filter({ hasText: "Held Author" });
  await expect(held.locator(".mod-flag")).toContainText("held");
  // Nothing reached the reader yet.
  await expect(reader.locator(".comment-tree article.comment")).toHaveCount(0);

  await held.locator("button[data-action=approve]").click();
  const shown = reader.locator(".comment-tree article.comment").filter({ hasText: "Held Author" });
  await expect(shown).toHaveCount(1);
  await expect(shown).toBeVisible();

  await held.locator("button[data-action=remove]").click();
  await expect(shown).toBeHidden();
  await expect(reader.locator(".comment-count")).toHaveText(/No comments yet/);
  await expectSameDocument(reader);
  await reader.context().close();
  await staff.context().close();
});

test("staff see new held comments arrive flagged, live", async ({ browser, request }) => {
  const key = freshThread("live-staff");
  const staff = await signedInStaff(browser);
  await gotoHydrated(staff, `/t/${key}`);
  await expect(staff.locator(".live-indicator")).toHaveText("● live");
  const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
  await request.post(`/api/threads/${key}/comments`, {
    data: { name: "Linker", body: LINKY, form_token: token },
  });
  const held = staff.locator(".comment-tree article.comment").filter({ hasText: "Linker" });
  await expect(held.locator(".mod-flag")).toContainText("(moderated) held: Too many links");
  await staff.context().close();
});
