import { expect, test, type Browser, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { fillForm, freshThread, gotoHydrated } from "./helpers";

// The Maildir of the SMTP server scripts/test.sh runs for the e2e server.
const MAILDIR = process.env.MODERATO_MAILDIR;
const STAFF_USER = process.env.MODERATO_STAFF_USER ?? "e2e-staff";
const STAFF_PASSWORD = process.env.MODERATO_STAFF_PASSWORD ?? "e2e-staff-password";
// More links than moderation.max_links: held for review.
const LINKY = "Agreed, see [a](https://a.example) [b](https://b.example) [c](https://c.example) [d](https://d.example)";

/** Every mail received so far, as a reader sees it (quoted-printable undone). */
function mails(): string[] {
  const dir = path.join(MAILDIR ?? "", "new");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).map((f) =>
    fs
      .readFileSync(path.join(dir, f), "utf8")
      .replace(/\r\n/g, "\n")
      .replace(/=\n/g, "")
      .replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
  );
}

async function mailTo(address: string, containing: string): Promise<string> {
  let found: string | undefined;
  await expect
    .poll(() => (found = mails().find((m) => m.includes(`To: ${address}`) && m.includes(containing))), {
      timeout: 20_000,
    })
    .toBeTruthy();
  return found!;
}

async function staffPage(browser: Browser): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await gotoHydrated(page, "/login");
  await page.getByLabel("User name").fill(STAFF_USER);
  await page.getByLabel("Password").fill(STAFF_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/moderation$/);
  return page;
}

test("a reader asks to be told of replies, confirms from the mail, and is mailed when a reply is approved", async ({
  page,
  browser,
  request,
}) => {
  test.skip(!MAILDIR, "needs the SMTP server scripts/test.sh starts");
  const key = freshThread("notify");
  const address = `nora-${key}@example.org`;
  await gotoHydrated(page, `/t/${key}`);
  const form = page.locator("#comment-form");
  // "Notify me" makes sense only with an address.
  await expect(form.locator(".notify-option")).toBeHidden();
  await fillForm(page, "Nora", "Tell me when someone answers");
  await form.locator("input[name=email]").fill(address);
  await form.getByLabel("Email me when someone replies").check();
  await page.getByRole("button", { name: "Post comment" }).click();
  const mine = page.locator(".comment-tree article.comment").filter({ hasText: "Tell me when someone answers" });
  await expect(mine).toHaveCount(1);
  const id = Number((await mine.getAttribute("id"))!.slice(1));

  // The confirmation mail: its link opens a page that asks first.
  const confirmation = await mailTo(address, "/mail/confirm?t=");
  const confirm = /(http\S+\/mail\/confirm\?t=\S+)/.exec(confirmation)![1];
  await page.goto(confirm);
  await page.getByRole("button", { name: "Confirm" }).click();
  await expect(page.locator("body")).toContainText("Confirmed");

  // Someone answers with too many links: held, so no mail yet.
  const { token } = await (await request.get(`/api/threads/${key}/form`)).json();
  const res = await request.post(`/api/threads/${key}/comments`, {
    data: { name: "Otto", body: LINKY, parent_id: id, form_token: token },
  });
  expect(res.status()).toBe(202);
  const replyId = (await res.json()).comment_id as number;
  await page.waitForTimeout(1500);
  expect(mails().filter((m) => m.includes("replied to your comment"))).toHaveLength(0);

  // Staff approve it in place; now Nora hears of it, with a link back and one-click unsubscribe.
  const staff = await staffPage(browser);
  await gotoHydrated(staff, `/t/${key}`);
  // The reply itself (Nora's comment around it mentions Otto too); it has no replies of its own.
  const held = staff.locator(`#c${replyId}`);
  await held.locator("button[data-action=approve]").click();
  await expect(held.locator(".mod-flag")).toHaveCount(0);
  const notification = await mailTo(address, "Otto replied to your comment");
  expect(notification).toContain(`/t/${key}#c`);
  expect(notification).toContain("List-Unsubscribe-Post: List-Unsubscribe=One-Click");
  await staff.context().close();
});
