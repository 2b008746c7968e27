// The portal's dashboard and accessibility against a real `rebound serve` with physical machines
// of image files replicating between two sites (one written to all the time):
// - the dashboard's RPO chart is drawn from the vault's recovery points as soon as the page opens
//   (not from what the page sampled), and matches the points' gaps; the replication traffic chart
//   shows the bytes the server's agent sends while the machine is written; screenshot;
// - contrast measured on every main page, the sign-in page and the dialogs: every visible text
//   against its background ≥ 4.5:1 (3:1 large);
// - every control has a name (Chromium's accessibility tree) and every form control a label;
// - Tab reaches every control of every main page with a visible focus outline; a dialog opened
//   by keyboard keeps the focus inside when tabbing round, closes on Escape and gives the focus
//   back to the button that opened it;
// - a reader's session shows no action button or form on any page: every item, job and plan.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { open } from 'node:fs/promises';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';
import { contrast, focusedText, focusInside, tabThrough, unnamed } from './a11y.ts';
import { launch, openPage, screenshot, signIn } from './browser.ts';
import { mainButtons, makeImage } from './flows.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;
let server: ServerProcess | undefined;
let browser: Browser | undefined;
let writer: NodeJS.Timeout | undefined;
let readerToken = '';

before(async () => {
  execFileSync(path.join(REPO, 'scripts/portal-build'), { stdio: 'pipe' });
  dir = await mkdtemp(path.join(tmpdir(), 'rb-portal-a11y-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(path.join(dir, d), { recursive: true });
  server = await startServerProcess({ dataDir: path.join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn', REBOUND_ENABLE_TEST_JOBS: '1' } });
  const s = server;
  await api(s, 'POST', '/sites', { name: 'srv', provider: 'physical', root: path.join(dir, 'a') });
  await api(s, 'POST', '/sites', { name: 'dr', provider: 'physical', root: path.join(dir, 'b') });
  await api(s, 'POST', '/sites/dr/hosts', { name: 'dr-host', address: '10.0.0.9' });
  await api(s, 'POST', '/policies', { name: 'quick', frequency: '2s', retention: '1h', appConsistent: '0s', encryption: 'none' });
  await api(s, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'quick' });
  for (const m of ['web', 'db', 'spare']) {
    await makeImage(path.join(dir, 'a', `${m}.img`), 8, 256);
    await api(s, 'POST', '/machines', { name: m, site: 'srv', disks: [path.join(dir, 'a', `${m}.img`)] });
  }
  const jobs = await Promise.all(['web', 'db'].map(async (m) => (await api<{ job: { id: string } }>(s, 'POST', `/items/${m}/protect`, {})).job.id));
  for (const j of jobs) await waitJob(s, j, 120_000);
  await api(s, 'POST', '/plans', { name: 'shop', groups: [{ machines: ['db'], after: [{ kind: 'manual', text: 'Check the database answers' }] }, { machines: ['web'] }] });
  readerToken = (await api<{ token: string }>(s, 'POST', '/tokens', { name: 'auditor', role: 'reader' })).token;
  // web is written all the time: 64 KiB of new data at a random place every 300 ms.
  const fh = await open(path.join(dir, 'a', 'web.img'), 'r+');
  writer = setInterval(() => void fh.write(randomBytes(65536), 0, 65536, Math.floor(Math.random() * 127) * 65536).catch(() => undefined), 300);
  writer.unref();
  // Enough points for a sawtooth before the browser looks.
  await waitFor('six points of web', async () => (await points(s, 'web')).length >= 6, 60_000, 500);
  browser = await launch();
});

after(async () => {
  if (writer) clearInterval(writer);
  await browser?.close().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Main pages with their level-1 heading. */
function mainPages(jobId: string): [string, string | RegExp][] {
  return [
    ['/', 'Dashboard'],
    ['/sites', 'Sites'],
    ['/machines', 'Machines'],
    ['/items', 'Protected items'],
    ['/items/web', 'web'],
    ['/items/spare', 'spare'],
    ['/jobs', 'Jobs'],
    [`/jobs/${jobId}`, /protect/],
    ['/plans', 'Recovery plans'],
    ['/plans/shop', 'Plan shop'],
  ];
}

async function visit(page: Page, url: string, heading: string | RegExp): Promise<void> {
  await page.goto(url);
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
  // The page's data calls answer (buttons and forms appear once the data is there).
  await page.waitForLoadState('networkidle').catch(() => undefined);
  await page.waitForTimeout(300);
}

test('the dashboard draws RPO from the recovery points and traffic from the server\'s counters', { timeout: 120_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, s.token);
  // The first sample: the chart already holds web's history (two vertices per point).
  const line = page.locator('[data-testid="rpo-chart"] polyline[data-series="web"]');
  await line.waitFor();
  const vertices = Number(await line.getAttribute('data-vertices'));
  const taken = (await points(s, 'web')).map((p) => p.takenAt).sort((a, b) => a - b);
  assert.ok(vertices >= 2 * 5, `the RPO line of web has ${vertices} vertices on the first sample: drawn from its ${taken.length} points`);
  // Its highest value is the longest gap between two of web's points, or the RPO now.
  const item = await api<{ rpoSeconds: number }>(s, 'GET', '/items/web');
  const gaps = taken.slice(1).map((t, i) => (t - (taken[i] ?? t)) / 1000);
  const expected = Math.max(...gaps, item.rpoSeconds);
  const drawn = Number(await line.getAttribute('data-max'));
  assert.ok(Math.abs(drawn - expected) <= 2.5, `the chart's highest RPO of web (${drawn} s) is the longest gap between its points or its RPO now (${expected} s)`);
  assert.ok(drawn > 0 && drawn < 60, `web's RPO stays near its 2 s policy: ${drawn} s`);
  await page.locator('[data-testid="rpo-chart"] polyline[data-series="db"]').waitFor();
  assert.equal(await page.locator('[data-testid="rpo-chart"] polyline[data-series="spare"]').count(), 0, 'an unprotected machine has no RPO line');

  // Traffic: web is written all the time, so the agent sends bytes and the master target writes them.
  const sent = page.locator('[data-testid="traffic-chart"] polyline[data-series="sent by agents"]');
  await waitFor('replication traffic on the chart', async () => (await sent.count()) > 0 && Number(await sent.getAttribute('data-max')) > 0, 40_000, 500);
  const written = Number(await page.locator('[data-testid="traffic-chart"] polyline[data-series="written at the recovery site"]').getAttribute('data-max'));
  assert.ok(written > 0, 'the master target wrote bytes too');
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  const agentSent = Number(/^rebound_replication_bytes\{counter="agent_sent"\} (\S+)$/m.exec(metrics)?.[1]);
  assert.ok(agentSent > 0 && Number(await sent.getAttribute('data-max')) <= agentSent, `a rate no higher than all the bytes sent (${agentSent})`);
  await page.getByTestId('health-normal').getByText('2').waitFor();
  // A line of a few rates for the screenshot.
  await waitFor('three traffic samples', async () => Number(await sent.getAttribute('data-vertices')) >= 3, 30_000, 500);
  await screenshot(page, 'dashboard');
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('contrast of every visible text ≥ 4.5:1 (3:1 large) on every main page, the sign-in page and the dialogs', { timeout: 120_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await page.goto(`${s.url}/`);
  await page.getByLabel('API token').waitFor();
  const reports: string[] = [];
  const failures: string[] = [];
  const check = async (what: string, scope?: string) => {
    const r = await contrast(page, scope);
    assert.ok(r.measured > 0, `${what}: no text measured`);
    reports.push(`${what}: ${r.measured} texts, lowest ${r.lowest?.ratio}:1 (${r.lowest?.fg} on ${r.lowest?.bg}, "${r.lowest?.text}")`);
    for (const f of r.failures) failures.push(`${what}: "${f.text}" ${f.fg} on ${f.bg} = ${f.ratio}:1 < ${f.need}:1 (${f.px}px/${f.weight}) at ${f.where}`);
  };
  await check('sign-in');
  await page.getByLabel('API token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  await check('sign-in refused');
  await signIn(page, s.url, s.token);
  const jobId = (await api<{ items: { id: string; kind: string }[] }>(s, 'GET', '/jobs?limit=50')).items.find((j) => j.kind === 'protect')?.id ?? '';
  for (const [p, heading] of mainPages(jobId)) {
    await visit(page, `${s.url}${p}`, heading);
    if (p === '/') await page.locator('[data-testid="rpo-chart"]').waitFor();
    await check(p);
  }
  // The dialogs: only the dialog is measured (the page behind is inert and dimmed).
  await visit(page, `${s.url}/items/web`, 'web');
  await page.getByRole('button', { name: 'Failover', exact: true }).click();
  await page.getByRole('dialog', { name: 'Failover of web' }).waitFor();
  await check('failover dialog', 'dialog[open]');
  await screenshot(page, 'failover-dialog-physical');
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Test failover' }).click();
  await check('test failover dialog', 'dialog[open]');
  await page.keyboard.press('Escape');
  console.log(reports.join('\n'));
  assert.deepEqual(failures, []);
  assert.deepEqual(problems, []);
  await page.context().close();
});

test('every control has a name and a label; Tab reaches every control with a focus outline; dialogs keep the focus and close on Escape', { timeout: 120_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, s.token);
  const jobId = (await api<{ items: { id: string; kind: string }[] }>(s, 'GET', '/jobs?limit=50')).items.find((j) => j.kind === 'protect')?.id ?? '';
  const out: string[] = [];
  for (const [p, heading] of mainPages(jobId)) {
    await visit(page, `${s.url}${p}`, heading);
    assert.deepEqual(await unnamed(page), [], `unnamed controls on ${p}`);
    const tab = await tabThrough(page);
    assert.ok(tab.controls.length >= 8, `${p}: ${tab.controls.length} controls`);
    assert.deepEqual(tab.missed, [], `Tab does not reach these on ${p}`);
    assert.deepEqual(tab.noOutline, [], `no focus outline on ${p}`);
    out.push(`${p}: ${tab.controls.length} controls reached in ${tab.presses} presses`);
  }
  console.log(out.join('\n'));

  // A dialog by keyboard: Enter on the focused button opens it, the focus is inside, Tab and
  // Shift+Tab go round inside it, Escape closes it and the focus is back on the button.
  await visit(page, `${s.url}/items/web`, 'web');
  const opener = page.getByRole('button', { name: 'Failover', exact: true });
  await opener.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Failover of web' });
  await dialog.waitFor();
  assert.deepEqual(await unnamed(page), [], 'unnamed controls in the failover dialog');
  const inside = () => focusInside(page, 'dialog[open]');
  assert.equal(await inside(), true, 'the focus moved into the dialog');
  const tab = await tabThrough(page, 'dialog[open]');
  assert.deepEqual(tab.missed, [], 'Tab reaches every control of the dialog');
  for (let i = 0; i < tab.controls.length + 3; i++) {
    await page.keyboard.press('Tab');
    assert.equal(await inside(), true, `Tab ${i + 1} left the dialog`);
  }
  for (let i = 0; i < tab.controls.length + 3; i++) {
    await page.keyboard.press('Shift+Tab');
    assert.equal(await inside(), true, `Shift+Tab ${i + 1} left the dialog`);
  }
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(await focusedText(page), 'Failover', 'the focus is back on the button that opened the dialog');
  // The same for a plan's dialog, opened with Space this time.
  await visit(page, `${s.url}/plans/shop`, 'Plan shop');
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Test failover' }).focus();
  await page.keyboard.press(' ');
  const drill = page.getByRole('dialog', { name: 'Test failover of plan shop' });
  await drill.waitFor();
  assert.equal(await inside(), true);
  for (let i = 0; i < 6; i++) {
    await page.keyboard.press('Tab');
    assert.equal(await inside(), true, `Tab ${i + 1} left the plan's dialog`);
  }
  await page.keyboard.press('Escape');
  await drill.waitFor({ state: 'hidden' });
  assert.equal(await focusedText(page), 'Test failover');
  assert.deepEqual(problems, []);
  await page.context().close();
});

test("a reader's session shows no action button or form on any page: every item, job and plan", { timeout: 120_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, readerToken);
  assert.equal(await page.getByTestId('who').textContent(), 'auditor (reader)');
  const jobs = (await api<{ items: { id: string }[] }>(s, 'GET', '/jobs?limit=100')).items;
  const items = (await api<{ items: { machine: string }[] }>(s, 'GET', '/items?limit=100')).items;
  const machines = (await api<{ items: { name: string }[] }>(s, 'GET', '/machines?limit=100')).items;
  const plans = (await api<{ items: { name: string }[] }>(s, 'GET', '/plans?limit=100')).items;
  const pages: [string, string | RegExp][] = [
    ['/', 'Dashboard'],
    ['/sites', 'Sites'],
    ['/machines', 'Machines'],
    ['/items', 'Protected items'],
    ['/jobs', 'Jobs'],
    ['/plans', 'Recovery plans'],
    ...machines.map((m): [string, string] => [`/items/${m.name}`, m.name]),
    ...jobs.map((j): [string, RegExp] => [`/jobs/${j.id}`, /./]),
    ...plans.map((p): [string, string] => [`/plans/${p.name}`, `Plan ${p.name}`]),
  ];
  assert.ok(items.length === 2 && jobs.length >= 2 && plans.length === 1);
  for (const [p, heading] of pages) {
    await visit(page, `${s.url}${p}`, heading);
    assert.deepEqual(await mainButtons(page), [], `a reader sees buttons on ${p}`);
    assert.equal(await page.locator('main form, main [role="button"], main .button').count(), 0, `a reader sees a form or an action on ${p}`);
    assert.deepEqual(await page.locator('header button').allTextContents(), ['Sign out'], `the header offers a reader only to sign out (${p})`);
  }
  console.log(`a reader saw ${pages.length} pages without any action`);
  assert.deepEqual(problems, []);
  await page.context().close();
});
