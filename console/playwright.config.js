// The console's browser tests: headless Chromium from Debian (/usr/bin/chromium;
// Playwright's own browser downloads are never used), against a running
// skiff API. tests/e2e/console.rs runs them on the e2e pool and passes:
//   SKIFF_CONSOLE_API_URL       the API (which serves the console at /console)
//   SKIFF_CONSOLE_TENANT_TOKEN  a fresh tenant's token
//   SKIFF_CONSOLE_ADMIN_TOKEN   the admin token
//   SKIFF_CONSOLE_IMAGE         an image the pool's hosts can pull (busybox)
//   SKIFF_CONSOLE_SCREENSHOTS   where each page's screenshots go
// and optionally SKIFF_CHROMIUM (another Chromium binary).
import { defineConfig } from '@playwright/test';
import { existsSync } from 'node:fs';

for (const name of ['SKIFF_CONSOLE_API_URL', 'SKIFF_CONSOLE_TENANT_TOKEN', 'SKIFF_CONSOLE_ADMIN_TOKEN', 'SKIFF_CONSOLE_IMAGE']) {
  if (!process.env[name]) throw new Error(`${name} is not set: run these tests through tests/e2e/console.rs (deploy/local/test.sh)`);
}
const chromium = process.env.SKIFF_CHROMIUM || '/usr/bin/chromium';
if (!existsSync(chromium)) {
  throw new Error(`${chromium} is missing: install Debian's chromium (deploy/local/lib.sh installs it)`);
}

export default defineConfig({
  testDir: 'tests',
  outputDir: process.env.SKIFF_CONSOLE_RESULTS || '../target/console-test-results',
  // One test at a time, in file order: later tests read what earlier ones made.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  forbidOnly: true,
  timeout: 120_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  use: {
    baseURL: process.env.SKIFF_CONSOLE_API_URL,
    browserName: 'chromium',
    headless: true,
    launchOptions: { executablePath: chromium },
    viewport: { width: 1280, height: 900 },
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
});
