import { expect, type Page } from "@playwright/test";

/** A thread key no other test uses (the e2e server auto-creates threads on first visit). */
export function freshThread(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Opens a page and waits until the wasm has hydrated it. */
export async function gotoHydrated(page: Page, path: string): Promise<void> {
  await page.goto(path);
  await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true");
}

/** Marks the current document, so a test can prove that no reload happened since. */
export async function markDocument(page: Page): Promise<void> {
  await page.evaluate(() => ((window as unknown as { __moderatoMark: number }).__moderatoMark = 42));
}

export async function expectSameDocument(page: Page): Promise<void> {
  expect(await page.evaluate(() => (window as unknown as { __moderatoMark?: number }).__moderatoMark)).toBe(42);
}

/** Fills the comment form currently on the page. */
export async function fillForm(page: Page, name: string, body: string): Promise<void> {
  const form = page.locator("#comment-form");
  await form.getByLabel("Name").fill(name);
  await form.locator("textarea[name=body]").fill(body);
}

/** Runs the `moderato` command line against the test server's database. */
export function moderato(...args: string[]): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { execFileSync } = require("node:child_process") as typeof import("node:child_process");
  const bin = process.env.MODERATO_BIN ?? "../target/release/moderato";
  return execFileSync(bin, args, {
    env: { ...process.env, DATABASE_URL: process.env.MODERATO_DATABASE_URL ?? "sqlite://moderato.db" },
    encoding: "utf8",
  });
}

/** An RFC 3339 time `days` days ago. */
export function daysAgo(days: number): string {
  return new Date(Date.now() - days * 86_400_000).toISOString();
}
