import { defineConfig } from "@playwright/test";

// The server is started by scripts/test.sh (a release build on a free port with a
// throwaway database); it passes the address in MODERATO_URL.
const baseURL = process.env.MODERATO_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  // On CI a story that fails is run once more; one that then passes is reported as flaky
  // (scripts/test.sh names it), so it is seen without failing the build.
  retries: process.env.CI ? 1 : 0,
  globalSetup: "./global-setup.ts",
  reporter: [["list"], ["json", { outputFile: "test-results/results.json" }]],
  use: {
    baseURL,
    trace: "off",
    launchOptions: {
      // Debian's Chromium: Playwright cannot download its own browser here.
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      // Without the background-networking flags Chromium floods the closed network.
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
