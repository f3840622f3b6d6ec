import { expect, test } from "@playwright/test";
import { expectSameDocument, fillForm, freshThread, gotoHydrated, markDocument } from "./helpers";

test("a top-level comment appears without a reload, in view and highlighted", async ({ page }) => {
  const key = freshThread("post");
  await gotoHydrated(page, `/t/${key}`);
  await expect(page.locator(".comment-count")).toHaveText("No comments yet");
  await markDocument(page);

  await fillForm(page, "Rita", "My **first** comment");
  await page.getByRole("button", { name: "Post comment" }).click();

  const posted = page.locator(".comment-tree article.comment").filter({ hasText: "My first comment" });
  await expect(posted).toHaveCount(1);
  await expect(posted).toHaveClass(/highlight/);
  await expect(posted).toBeInViewport();
  await expect(posted.locator(".author")).toHaveText("Rita");
  await expect(posted.locator(".comment-text strong")).toHaveText("first");
  await expect(page.locator(".comment-count")).toHaveText("1 comment");
  // The form is empty again and ready for another comment.
  await expect(page.locator("#comment-form textarea[name=body]")).toHaveValue("");
  await expectSameDocument(page);

  // A second comment works too: the single-use form token was renewed.
  await page.locator("#comment-form textarea[name=body]").fill("And a second one");
  await page.getByRole("button", { name: "Post comment" }).click();
  await expect(page.locator(".comment-tree article.comment").filter({ hasText: "And a second one" })).toHaveCount(1);

  // A reload shows both, from the server.
  await page.reload();
  await expect(page.locator(".comment-tree article.comment")).toHaveCount(2);
});

test("a reply to a reply is posted inline and lands under it", async ({ page, request }) => {
  const key = freshThread("reply");
  // Seed a top-level comment and a reply through the API.
  const post = async (body: string, parent_id?: number) => {
    const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
    const res = await request.post(`/api/threads/${key}/comments`, {
      data: { name: "Seed", body, parent_id, form_token: token },
    });
    expect(res.status()).toBe(201);
    return (await res.json()).comment_id as number;
  };
  const top = await post("Top comment");
  const reply = await post("A reply", top);

  await gotoHydrated(page, `/t/${key}`);
  await markDocument(page);
  const replyNode = page.locator(`#c${reply}`);
  await replyNode.locator("> .comment-body .reply-link").click();

  // The form moved under the reply; the bottom one is gone; cancel puts it back.
  const inlineForm = replyNode.locator("#comment-form");
  await expect(inlineForm).toBeVisible();
  await expect(page.locator("#comment-form")).toHaveCount(1);
  await inlineForm.locator(".cancel-reply").click();
  await expect(inlineForm).toHaveCount(0);
  await expect(page.locator("section.thread > #comment-form")).toBeVisible();

  await replyNode.locator("> .comment-body .reply-link").click();
  await fillForm(page, "Nested", "Deep answer");
  await inlineForm.getByRole("button", { name: "Post comment" }).click();

  const nested = replyNode.locator("> .replies > article.comment");
  await expect(nested).toHaveCount(1);
  await expect(nested.locator(".comment-text")).toHaveText("Deep answer");
  await expect(nested).toHaveAttribute("data-depth", "2");
  await expectSameDocument(page);

  // The server agrees about where it went.
  const data = await (await request.get(`/api/threads/${key}`)).json();
  const stored = data.comments.find((c: { author_name: string }) => c.author_name === "Nested");
  expect(stored.parent_id).toBe(reply);
});

test("the live preview matches the posted rendering", async ({ page }) => {
  const key = freshThread("preview");
  await gotoHydrated(page, `/t/${key}`);
  const body = "# Heading\n\nSome *markdown* with a [link](https://example.org) and `code`.\n\n- one\n- two";
  await fillForm(page, "Pat", body);

  const preview = page.locator(".comment-preview .comment-text");
  await expect(preview).toContainText("Some markdown with a link");
  await expect(preview.locator("h1")).toHaveText("Heading");
  // Compare markup as a reader gets it: framework marker comments and edge whitespace aside.
  const visible = (html: string) => html.replace(/<!--[^]*?-->/g, "").trim();
  const previewHtml = visible(await preview.innerHTML());

  await page.getByRole("button", { name: "Post comment" }).click();
  // In the tree (the preview pane renders a comment too).
  const posted = page.locator(".comment-tree article.comment").filter({ hasText: "Some markdown" });
  await expect(posted).toHaveCount(1);
  expect(visible(await posted.locator(".comment-text").innerHTML())).toBe(previewHtml);
  await expect(posted.locator(".comment-text a")).toHaveAttribute("rel", "nofollow ugc noopener noreferrer");
  // Posting clears the preview.
  await expect(page.locator(".comment-preview")).toHaveCount(0);
});

test("an XSS attempt in the body renders as harmless text", async ({ page }) => {
  const key = freshThread("xss");
  await gotoHydrated(page, `/t/${key}`);
  const attack =
    `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">` +
    ` [click](javascript:window.__pwned=3)`;
  await fillForm(page, "<b>Mallory</b>", attack);
  await page.getByRole("button", { name: "Post comment" }).click();

  const posted = page.locator(".comment-tree article.comment").first();
  await expect(posted.locator(".comment-text")).toContainText("<script>window.__pwned = 1</script>");
  await expect(posted.locator(".author")).toHaveText("<b>Mallory</b>");
  await expect(posted.locator("script, img, b")).toHaveCount(0);
  await expect(posted.locator(".comment-text a[href^=javascript]")).toHaveCount(0);

  // Also after a reload, from the server-rendered HTML.
  await page.reload();
  await expect(page.locator("article.comment .comment-text")).toContainText("<img src=x");
  await page.locator("article.comment .comment-text").click();
  expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
});

test("a validation error shows beside its field and the text is kept", async ({ page }) => {
  const key = freshThread("invalid");
  await gotoHydrated(page, `/t/${key}`);
  await fillForm(page, "", "Text I do not want to lose");
  await page.locator("#comment-form").getByLabel("Website").fill("javascript:alert(1)");
  await page.getByRole("button", { name: "Post comment" }).click();

  const nameField = page.locator("#comment-form .field").filter({ has: page.locator("#f-name") });
  await expect(nameField.locator(".field-error")).toHaveText("Please give your name.");
  const urlField = page.locator("#comment-form .field").filter({ has: page.locator("#f-url") });
  await expect(urlField.locator(".field-error")).toContainText("http:// or https://");
  await expect(page.locator("#comment-form textarea[name=body]")).toHaveValue("Text I do not want to lose");
  await expect(page.locator(".comment-tree article.comment")).toHaveCount(0);

  // Fixing the fields posts the same text.
  await page.locator("#comment-form").getByLabel("Name").fill("Quinn");
  await page.locator("#comment-form").getByLabel("Website").fill("https://quinn.example");
  await page.getByRole("button", { name: "Post comment" }).click();
  const posted = page.locator(".comment-tree article.comment");
  await expect(posted).toHaveCount(1);
  await expect(posted.locator("a.author")).toHaveAttribute("href", "https://quinn.example/");
  await expect(page.locator(".field-error")).toHaveCount(0);
});

test("without JavaScript the form posts and comes back to the thread", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  const key = freshThread("nojs");
  await page.goto(`/t/${key}`);
  await page.getByLabel("Name").fill("Plain");
  await page.locator("textarea[name=body]").fill("Posted without scripts");
  await page.getByRole("button", { name: "Post comment" }).click();
  await expect(page).toHaveURL(new RegExp(`/t/${key}#c\\d+$`));
  await expect(page.locator("article.comment .comment-text")).toHaveText("Posted without scripts");
  await context.close();
});

test("text typed before the page is interactive survives hydration and is posted", async ({ page }) => {
  const key = freshThread("early");
  // Hold the wasm back until the reader has typed, as on a slow connection.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  await page.route("**/*.wasm", async (route) => {
    await gate;
    await route.continue();
  });
  await page.goto(`/t/${key}`, { waitUntil: "domcontentloaded" });
  const form = page.locator("#comment-form");
  await form.getByLabel("Name").fill("Early Bird");
  await form.locator("textarea[name=body]").fill("Typed before the *wasm* arrived");
  await expect(page.locator("body")).not.toHaveAttribute("data-hydrated", "true");
  release();
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");

  await expect(form.getByLabel("Name")).toHaveValue("Early Bird");
  await expect(form.locator("textarea[name=body]")).toHaveValue("Typed before the *wasm* arrived");
  await markDocument(page);
  await page.getByRole("button", { name: "Post comment" }).click();
  const posted = page.locator(".comment-tree article.comment").filter({ hasText: "Typed before the wasm arrived" });
  await expect(posted).toHaveCount(1);
  await expect(posted.locator(".author")).toHaveText("Early Bird");
  await expectSameDocument(page);
});
