// The console in headless Chromium against a live pool (see
// playwright.config.js for the environment). The tests run in order and
// share one tenant: the container run here is what the usage page charts.
// Every page is photographed at 1280 px and at 360 px wide (where it must
// not scroll sideways) into SKIFF_CONSOLE_SCREENSHOTS.
import { expect, test } from '@playwright/test';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const TENANT = process.env.SKIFF_CONSOLE_TENANT_TOKEN;
const ADMIN = process.env.SKIFF_CONSOLE_ADMIN_TOKEN;
const IMAGE = process.env.SKIFF_CONSOLE_IMAGE;
const SHOTS = process.env.SKIFF_CONSOLE_SCREENSHOTS || '../target/console-screenshots';
mkdirSync(SHOTS, { recursive: true });

const RUN = Date.now().toString(36);
const CONTAINER = `console-${RUN}`;
const LOG_LINE = `hello from the console ${RUN}`;
const LATE_LINE = `after the exec ${RUN}`;

test.describe.configure({ mode: 'serial' });

// Every page must load without a Content-Security-Policy violation or a
// script error.
let problems = [];
test.beforeEach(async ({ page }) => {
  problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      problems.push(message.text());
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
});
test.afterEach(() => {
  expect(problems, 'no CSP violation or script error').toEqual([]);
});

/** Two animation frames: the layout (and Chart.js's resize) has settled. */
async function settled(page) {
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
}

/** Screenshots of the page at 1280 and 360 px; at 360 it must not overflow sideways. */
async function snap(page, name) {
  await settled(page);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  await page.setViewportSize({ width: 360, height: 780 });
  await settled(page);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width, `${name} fits a 360 px wide screen`).toBeLessThanOrEqual(360);
  await page.screenshot({ path: join(SHOTS, `${name}-360.png`), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
  await settled(page);
}

/**
 * Loads a page of the console (`goto`, or `reload` without a path) until
 * the app has rendered. Chromium aborts loads in flight with
 * ERR_NETWORK_CHANGED when a network interface comes or goes, which the
 * other e2e tests (bridges, veths, namespaces) do all the time on this
 * machine: such a load is tried again, twice at most.
 */
async function load(page, path) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      const response = path ? await page.goto(path) : await page.reload();
      await expect(page.locator('#app > *').first()).toBeAttached({ timeout: 10_000 });
      return response;
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
}

async function signIn(page, token, heading) {
  await load(page, '/console/');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('heading', { level: 1, name: heading })).toBeVisible();
}

test('signs in with a tenant token, by keyboard, keeping it out of the URL', async ({ page }) => {
  const response = await load(page, '/console/');
  const csp = response.headers()['content-security-policy'];
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain('unsafe');
  await expect(page.getByRole('heading', { level: 1, name: 'Sign in' })).toBeVisible();
  await snap(page, '01-sign-in');

  // A token the API refuses is said so.
  await page.getByLabel('API token').fill('not-a-token-of-this-platform');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toHaveText(/not accepted/);

  // Keyboard only, from a fresh load: the skip link first, then the token
  // field; Enter submits.
  await load(page);
  await expect(page.getByRole('heading', { level: 1, name: 'Sign in' })).toBeVisible();
  await page.keyboard.press('Tab');
  await expect(page.getByRole('link', { name: 'Skip to content' })).toBeFocused();
  await page.keyboard.press('Tab');
  await expect(page.getByLabel('API token')).toBeFocused();
  await page.keyboard.type(TENANT);
  await page.keyboard.press('Enter');
  await expect(page.getByRole('heading', { level: 1, name: 'Containers' })).toBeVisible();
  await expect(page.getByRole('heading', { level: 1, name: 'Containers' })).toBeFocused();

  expect(page.url()).not.toContain(TENANT);
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  expect(stored).toContain(TENANT);
  expect(await page.evaluate(() => localStorage.length)).toBe(0);
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Containers' })).toHaveAttribute(
    'aria-current',
    'page',
  );
  await snap(page, '02-containers-empty');
});

test('shows the API’s validation error for cpu 0 at the CPU field', async ({ page }) => {
  await signIn(page, TENANT, 'Containers');
  await page.getByLabel('Image').fill(IMAGE);
  await page.getByLabel('CPU (vCPU)').fill('0');
  const answer = page.waitForResponse((r) => r.url().endsWith('/v1/containers') && r.request().method() === 'POST');
  await page.getByRole('button', { name: 'Run' }).click();
  const response = await answer;
  expect(response.status()).toBeGreaterThanOrEqual(400);
  expect(response.headers()['content-type']).toContain('application/problem+json');
  const problem = await response.json();
  expect(problem.field).toBe('cpu');

  const cpu = page.getByLabel('CPU (vCPU)');
  await expect(cpu).toHaveAttribute('aria-invalid', 'true');
  await expect(cpu).toBeFocused();
  const message = page.locator('#run-cpu-error');
  await expect(message).toHaveText(problem.detail);
  await expect(cpu).toHaveAccessibleDescription(new RegExp(problem.detail.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  await snap(page, '03-run-form-cpu-0');
});

test('runs a container from the form, follows its log live, watches it succeed', async ({ page, request }) => {
  test.setTimeout(180_000);
  await signIn(page, TENANT, 'Containers');
  // It prints a line, then waits for /tmp/go (made below through the exec
  // route), then prints another: the second line must reach the page by
  // the open follow stream, while the page shows it running.
  const script = `echo ${LOG_LINE}; until [ -e /tmp/go ]; do sleep 0.2; done; echo ${LATE_LINE} >&2`;
  await page.getByLabel('Image').fill(IMAGE);
  await page.getByLabel('Command').fill(JSON.stringify(['sh', '-c', script]));
  await page.getByLabel('CPU (vCPU)').fill('0.25');
  await page.getByLabel('Memory (MiB)').fill('64');
  await page.getByLabel('Name (optional)').fill(CONTAINER);
  await page.getByLabel('Labels (optional)').fill('suite=console');
  await page.getByRole('button', { name: 'Run' }).click();

  await page.waitForURL(/\/console\/containers\/[0-9a-f-]{36}$/);
  await expect(page.getByRole('heading', { level: 2, name: CONTAINER })).toBeVisible();
  const id = page.url().split('/').pop();
  const state = page.getByTestId('container-state');
  const logs = page.getByTestId('logs');
  await expect(state).toContainText('running', { timeout: 120_000 });
  await expect(logs).toContainText(LOG_LINE, { timeout: 60_000 });
  await expect(page.getByTestId('log-status')).toHaveText('following live');
  await expect(logs).not.toContainText(LATE_LINE);
  await snap(page, '04a-container-running');

  const exec = await request.post(`/v1/containers/${id}/exec`, {
    headers: { Authorization: `Bearer ${TENANT}` },
    data: { command: ['touch', '/tmp/go'] },
  });
  expect(exec.status(), await exec.text()).toBe(200);
  await expect(logs).toContainText(LATE_LINE, { timeout: 60_000 });
  await expect(state).toContainText('succeeded', { timeout: 60_000 });
  await expect(page.getByTestId('log-status')).toHaveText('complete');

  const timeline = page.locator('ol.timeline');
  await expect(timeline).toContainText('Started');
  await expect(timeline).toContainText('Exited');
  const bar = page.getByRole('img', { name: /^Start latency/ });
  await expect(bar).toBeVisible();
  await expect(bar).toHaveAttribute('aria-label', /start \d/);
  await snap(page, '04-container-succeeded');

  // A deep link reloads into the same page (the API serves the app there).
  await load(page);
  await expect(page.getByRole('heading', { level: 2, name: CONTAINER })).toBeVisible();
  await expect(logs).toContainText(LOG_LINE);
  await expect(logs).toContainText(LATE_LINE);

  // The live list shows it, and its filters work.
  await page.getByRole('link', { name: 'All containers' }).click();
  const row = page.getByRole('row').filter({ hasText: CONTAINER });
  await expect(row).toContainText('succeeded');
  await page.getByLabel('State').selectOption('running');
  await expect(page.getByText('No containers match these filters.')).toBeVisible();
  await page.getByLabel('State').selectOption('succeeded');
  await page.getByLabel('Label', { exact: true }).fill('suite=console');
  await page.getByRole('button', { name: 'Apply' }).click();
  await expect(row).toBeVisible();
  await snap(page, '05-containers-list');
});

test('charts usage per day and per label and downloads it as CSV', async ({ page }) => {
  test.setTimeout(150_000);
  await signIn(page, TENANT, 'Containers');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Usage' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Usage' })).toBeFocused();
  await page.getByLabel('Measure').selectOption('billed_seconds');

  // The finished container's usage is in the ledger by now; "Show" reads
  // the report again until a day has some.
  const chart = page.locator('figure.chart');
  await expect(async () => {
    await page.getByRole('button', { name: 'Show' }).click();
    await expect(chart).toHaveAttribute('data-nonzero', /^[1-9]/, { timeout: 2_000 });
  }).toPass({ timeout: 60_000 });
  await expect(chart).toHaveAttribute('data-points', '7');

  // The canvas has bars painted in the chart's colour (#1f5fa8).
  const barPixels = async () =>
    chart.locator('canvas').evaluate((canvas) => {
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      let n = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i] - 31) < 8 && Math.abs(data[i + 1] - 95) < 8 && Math.abs(data[i + 2] - 168) < 8) n += 1;
      }
      return n;
    });
  await expect.poll(barPixels).toBeGreaterThan(20);
  await snap(page, '06-usage-per-day');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download CSV' }).click(),
  ]);
  expect(download.suggestedFilename()).toMatch(/^skiff-usage-.*\.csv$/);
  const csv = readFileSync(await download.path(), 'utf8');
  writeFileSync(join(SHOTS, 'usage.csv'), csv);
  const lines = csv.trim().split('\n');
  expect(lines[0]).toContain('billed_seconds');
  expect(lines.length).toBeGreaterThanOrEqual(3); // header, a day, the total

  await page.getByLabel('Group by').selectOption('label');
  await page.getByLabel('Label key').fill('suite');
  await page.getByRole('button', { name: 'Show' }).click();
  await expect(page.getByRole('heading', { level: 2, name: /per value of label suite/ })).toBeVisible();
  await expect(page.getByRole('rowheader', { name: 'console' })).toBeVisible();
  await expect(chart).toHaveAttribute('data-nonzero', /^[1-9]/);
  await snap(page, '07-usage-per-label');
});

test('shows a job’s progress', async ({ page, request }) => {
  test.setTimeout(150_000);
  const name = `console-job-${RUN}`;
  const created = await request.post('/v1/jobs', {
    headers: { Authorization: `Bearer ${TENANT}` },
    data: { name, template: { image: IMAGE, command: ['true'], cpu: 0.1, memory_mib: 64 }, count: 3, parallelism: 3 },
  });
  expect(created.status(), await created.text()).toBe(201);
  await signIn(page, TENANT, 'Containers');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Jobs' }).click();
  const job = page.locator('li.job').filter({ has: page.getByRole('heading', { name }) });
  await expect(job.getByRole('progressbar')).toBeVisible();
  await expect(job).toContainText('3 of 3 tasks finished', { timeout: 120_000 });
  await expect(job.getByRole('progressbar')).toHaveAttribute('value', '3');
  await expect(job).toContainText('succeeded');
  await snap(page, '08-jobs');
});

test('shows a group and its members, each a link to its container', async ({ page, request }) => {
  test.setTimeout(150_000);
  const name = `console-group-${RUN}`;
  const auth = { Authorization: `Bearer ${TENANT}` };
  const member = (memberName) => ({
    name: memberName,
    image: IMAGE,
    command: ['sh', '-c', "trap 'exit 0' TERM; while true; do sleep 1; done"],
    cpu: 0.1,
    memory_mib: 64,
  });
  const created = await request.post('/v1/groups', {
    headers: auth,
    data: { name, containers: [member('web'), member('side')] },
  });
  expect(created.status(), await created.text()).toBe(201);
  const group = await created.json();
  await signIn(page, TENANT, 'Containers');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Groups' }).click();
  const card = page.locator('li.group').filter({ has: page.getByRole('heading', { name }) });
  await expect(card.locator('.section-head')).toContainText('running', { timeout: 120_000 });
  await expect(card).toContainText('on ');
  const members = card.getByRole('list', { name: `Members of ${name}` });
  await expect(members.getByRole('link')).toHaveCount(2);
  await snap(page, '08b-groups');
  await members.getByRole('link', { name: 'web' }).click();
  await expect(page).toHaveURL(new RegExp(`/console/containers/${group.containers[0].container.id}$`));
  const deleted = await request.delete(`/v1/groups/${group.id}`, { headers: auth });
  expect(deleted.status()).toBe(204);
});

test('shows the admin each host’s capacity and allocation, and signs out', async ({ page }) => {
  await signIn(page, ADMIN, 'Hosts');
  const hosts = page.locator('li.host');
  await expect(hosts.first()).toBeVisible();
  expect(await hosts.count()).toBeGreaterThanOrEqual(1);
  await expect(hosts.first()).toContainText(/CPU: [\d.]+ of [\d.]+ vCPU/);
  await expect(hosts.first()).toContainText(/Memory: [\d,]+ of [\d,]+ MiB/);
  await expect(hosts.first().getByRole('meter').first()).toBeVisible();
  await snap(page, '09-hosts');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Sign in' })).toBeVisible();
  expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
});
