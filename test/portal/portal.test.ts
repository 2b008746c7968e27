// The web portal in a real browser (Debian's Chromium through playwright-core) against a real
// `rebound serve`: an admin signs in and sees what was made through the API, adds a site on the
// page, enables replication from the item page and follows the job live; the job page shows a
// running job's tasks progress without a reload; a reader's session shows no action anywhere.
// Screenshots go to test-output/portal/.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { launch, openPage, screenshot, signIn } from './browser.ts';

const REPO = path.resolve(import.meta.dirname, '../..');

async function api<T>(s: ServerProcess, method: string, p: string, body?: unknown, token = s.token): Promise<T> {
  const res = await fetch(`${s.url}/api/v1${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p} → ${res.status}: ${text}`);
  return JSON.parse(text) as T;
}

describe('web portal', { timeout: 120_000 }, () => {
  let server: ServerProcess;
  let browser: Browser;
  let root: string;

  before(async () => {
    // A no-op when portal/dist is current (scripts/setup builds it).
    execFileSync(path.join(REPO, 'scripts/portal-build'), { stdio: 'pipe' });
    server = await startServerProcess({ env: { REBOUND_ENABLE_TEST_JOBS: '1' } });
    root = server.dataDir;
    await api(server, 'POST', '/sites', { name: 'site-a', provider: 'physical', root: path.join(root, 'site-a') });
    await api(server, 'POST', '/sites', { name: 'site-b', provider: 'physical', root: path.join(root, 'site-b') });
    await api(server, 'POST', '/sites/site-b/hosts', { name: 'host-b2', address: '10.0.0.2' });
    await api(server, 'POST', '/policies', { name: 'gold', frequency: '30s', retention: '2h', appConsistent: '1h' });
    await api(server, 'POST', '/pairings', { primary: 'site-a', recovery: 'site-b', policy: 'gold' });
    mkdirSync(path.join(root, 'site-a'), { recursive: true });
    writeFileSync(path.join(root, 'site-a/web-01.img'), Buffer.alloc(1024 * 1024));
    await api(server, 'POST', '/machines', { name: 'web-01', site: 'site-a', disks: [path.join(root, 'site-a/web-01.img')] });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await server?.cleanup();
  });

  it('serves the pages to a browser and keeps the API answering scripts in JSON', async () => {
    const page = await fetch(`${server.url}/items/web-01`, { headers: { accept: 'text/html' } });
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('cache-control'), 'no-cache');
    const html = await page.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, `index.html names its script: ${html}`);
    const js = await fetch(`${server.url}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('cache-control') ?? '', /max-age=31536000, immutable/);
    const script = await fetch(`${server.url}/items/web-01`);
    assert.equal(script.status, 404);
    assert.equal(((await script.json()) as { error: { code: string } }).error.code, 'route-not-found');
    const apiMiss = await fetch(`${server.url}/api/v1/nope`, { headers: { accept: 'text/html' } });
    assert.equal(apiMiss.status, 404, 'an unknown API path is never answered with the portal');
  });

  it('an admin sees the sites, policy, pairing and machine made through the API, and adds a site on the page', async () => {
    const { page, problems } = await openPage(browser);
    await signIn(page, server.url, server.token);
    assert.equal(await page.getByTestId('who').textContent(), 'admin (admin)');
    await page.getByRole('link', { name: 'Sites' }).click();
    await page.getByRole('rowheader', { name: 'site-a' }).waitFor();
    await page.getByRole('rowheader', { name: 'site-b' }).waitFor();
    assert.match((await page.getByRole('row', { name: /site-b/ }).textContent()) ?? '', /host-b2 \(10\.0\.0\.2\)/);
    assert.match((await page.getByRole('row', { name: /gold/ }).textContent()) ?? '', /30 s.*2 h 0 min.*1 h 0 min/);
    assert.equal(await page.getByTestId('pairing').textContent(), 'site-a → site-b under policy gold');

    const form = page.getByRole('form', { name: 'Add a site' });
    await form.getByLabel('Site name').fill('site-c');
    await form.getByLabel('Provider').selectOption('physical');
    await form.getByLabel('Root directory').fill(path.join(root, 'site-c'));
    await form.getByRole('button', { name: 'Add site' }).click();
    await form.getByText('Site site-c added.').waitFor();
    await page.getByRole('rowheader', { name: 'site-c' }).waitFor();
    const site = await api<{ provider: string; root: string }>(server, 'GET', '/sites/site-c');
    assert.deepEqual(site, { ...site, provider: 'physical', root: path.join(root, 'site-c') });

    await page.getByRole('link', { name: 'Machines' }).click();
    const row = page.getByRole('row', { name: /web-01/ });
    await row.waitFor();
    assert.match((await row.textContent()) ?? '', /site-a.*physical.*web-01\.img \(1\.0 MiB\).*not protected/);
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it('enables replication from the item page and follows the job it queued', async () => {
    const { page, problems } = await openPage(browser);
    await signIn(page, server.url, server.token);
    await page.goto(`${server.url}/items/web-01`);
    await page.getByRole('heading', { level: 1, name: 'web-01' }).waitFor();
    assert.equal(await page.getByTestId('item-state').textContent(), 'not protected');
    await page.getByRole('button', { name: 'Enable replication' }).click();
    const dialog = page.getByRole('dialog', { name: 'Enable replication of web-01' });
    assert.match((await dialog.textContent()) ?? '', /web-01 replicates from site-a to site-b/);
    await dialog.getByLabel('Replication group (optional)').fill('web');
    await dialog.getByRole('button', { name: 'Enable replication' }).click();
    await page.waitForURL(/\/jobs\/[0-9a-f-]+$/);
    await page.getByRole('heading', { level: 1, name: 'protect web-01' }).waitFor();
    const jobId = page.url().split('/').pop() ?? '';
    const job = await api<{ kind: string; target: string; createdBy: string }>(server, 'GET', `/jobs/${jobId}`);
    assert.deepEqual([job.kind, job.target, job.createdBy], ['protect', 'web-01', 'admin']);
    const item = await api<{ state: string; group: string | null }>(server, 'GET', '/items/web-01');
    assert.equal(item.group, 'web');
    // Back on the item: its state changed, and failover is not offered before a recovery point.
    await page.getByRole('link', { name: 'web-01' }).click();
    await page.getByTestId('item-state').getByText(item.state).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Failover', exact: true }).count(), 0);
    await page.goto(`${server.url}/`);
    await page.getByTestId('health-normal').getByText('1').waitFor();
    await page.getByRole('heading', { name: 'Recovery point objective (RPO) per item' }).waitFor();
    await screenshot(page, 'dashboard-first-item');
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it("the job page shows a running job's task progress live", async () => {
    const file = path.join(root, 'diag-seq.txt');
    const { page, problems } = await openPage(browser);
    await signIn(page, server.url, server.token);
    const { job } = await api<{ job: { id: string } }>(server, 'POST', '/diag/jobs', { file, tasks: 5, sleepMs: 900 });
    await page.goto(`${server.url}/jobs/${job.id}`);
    await page.getByRole('heading', { level: 1, name: /diag\.sequence/ }).waitFor();
    // Nothing reloads the page: every change below arrives over the job's event stream.
    const seen: string[] = [];
    const deadline = Date.now() + 20_000;
    for (;;) {
      // One look at the page per round (job state, task states, the cancel button together): the
      // page may change between two separate reads.
      const look = await page.locator('main').evaluate((main) => ({
        job: main.querySelector('[data-testid="job-state"] .badge')?.textContent ?? '',
        states: [...main.querySelectorAll('[data-testid="task"]')].map((r) => r.querySelector('.badge')?.textContent ?? ''),
        cancel: [...main.querySelectorAll('button')].filter((b) => b.textContent === 'Cancel job').length,
      }));
      const snap = look.states.join(',');
      if (seen[seen.length - 1] !== snap) seen.push(snap);
      if (look.job === 'succeeded') break;
      assert.ok(Date.now() < deadline, `job did not finish on the page; seen ${seen.join(' | ')}`);
      if (look.states.includes('running')) assert.equal(look.cancel, 1);
      await page.waitForTimeout(100);
    }
    // At least two different running snapshots: the page moved from task to task by itself.
    assert.ok(seen.filter((x) => x.includes('running')).length >= 2, `task-by-task progress seen: ${seen.join(' | ')}`);
    assert.equal(seen[seen.length - 1], 'succeeded,succeeded,succeeded,succeeded,succeeded');
    assert.equal(await page.getByTestId('live').textContent(), 'finished');
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).count(), 0);
    assert.ok(existsSync(file));
    assert.deepEqual(problems, []);
    await page.context().close();
  });

  it('a reader sees every page and no action button or form anywhere', async () => {
    const reader = await api<{ token: string }>(server, 'POST', '/tokens', { name: 'auditor', role: 'reader' });
    const { job } = await api<{ job: { id: string } }>(server, 'POST', '/diag/jobs', { file: path.join(root, 'diag-reader.txt'), tasks: 2, sleepMs: 3000 });
    const { page, problems } = await openPage(browser);
    await signIn(page, server.url, reader.token);
    assert.equal(await page.getByTestId('who').textContent(), 'auditor (reader)');
    const pages: [string, string | RegExp][] = [
      ['/', 'Dashboard'],
      ['/sites', 'Sites'],
      ['/machines', 'Machines'],
      ['/items', 'Protected items'],
      ['/items/web-01', 'web-01'],
      ['/jobs', 'Jobs'],
      [`/jobs/${job.id}`, /diag\.sequence/],
      ['/plans', 'Recovery plans'],
    ];
    for (const [p, heading] of pages) {
      await page.goto(`${server.url}${p}`);
      await page.getByRole('heading', { level: 1, name: heading }).waitFor();
      // Let the page's first calls answer (buttons appear only once the data is there).
      await page.waitForTimeout(400);
      const buttons = await page.locator('main button').evaluateAll((els) => els.map((e) => e.textContent ?? ''));
      assert.deepEqual(buttons, [], `a reader sees buttons on ${p}`);
      assert.equal(await page.locator('main form').count(), 0, `a reader sees a form on ${p}`);
    }
    assert.deepEqual(problems, []);
    await page.context().close();
  });
});
