// Every failover flow of one machine driven from the browser (Debian's Chromium through
// playwright-core) against a real `rebound serve`, on a physical machine of image files between
// two physical sites (real replication by block digests, real images at the recovery site):
// a test failover from a point chosen in the item's list and its cleanup with notes; a planned
// failover followed live on its job page to success (the stop hook ran); commit; reverse
// replication; a failback whose dialog says so, whose alternate host the server refuses (the
// error is shown in the dialog), synced before: its job waits and is cancelled from its page
// (nothing changes); again: the job waits, the item page offers "Complete failover", and the
// button on the job page completes it; the failback's commit. Each step is
// checked against the API too. Screenshots go to test-output/portal/.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor } from '../replication/support.ts';
import { launch, openPage, screenshot, signIn } from './browser.ts';
import { followJob, makeImage, onJobPage } from './flows.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;
let server: ServerProcess | undefined;
let browser: Browser | undefined;

interface Item { state: string; direction: string; activeSite: string; details: { test?: { name: string } | null; failover?: { name: string } | null } }
interface Job { id: string; kind: string; state: string; result?: { notes?: string }; tasks: { state: string }[] }
const item = (): Promise<Item> => api<Item>(server!, 'GET', '/items/db1');

before(async () => {
  execFileSync(path.join(REPO, 'scripts/portal-build'), { stdio: 'pipe' });
  dir = await mkdtemp(path.join(tmpdir(), 'rb-portal-flows-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(path.join(dir, d), { recursive: true });
  await makeImage(path.join(dir, 'a', 'db1.img'), 8, 512);
  server = await startServerProcess({ dataDir: path.join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  const s = server;
  await api(s, 'POST', '/sites', { name: 'srv', provider: 'physical', root: path.join(dir, 'a') });
  await api(s, 'POST', '/sites', { name: 'dr', provider: 'physical', root: path.join(dir, 'b') });
  // A second host at the primary site: the failback dialog offers it as an alternate location.
  await api(s, 'POST', '/sites/srv/hosts', { name: 'srv-spare', address: '10.0.0.9' });
  await api(s, 'POST', '/policies', { name: 'quick', frequency: '3s', retention: '1h', appConsistent: '0s', encryption: 'none' });
  await api(s, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'quick' });
  // The stop hook runs in the site's root: a planned failover can shut the machine down.
  await api(s, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [path.join(dir, 'a', 'db1.img')], config: { hooks: { stop: 'touch stopped' } } });
  browser = await launch();
});

after(async () => {
  await browser?.close().catch(() => undefined);
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-portal-flows-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Opens an item action's dialog from the item page. */
async function openAction(page: Page, button: string, dialogName: string) {
  await page.goto(`${server!.url}/items/db1`);
  await page.getByRole('heading', { level: 1, name: 'db1' }).waitFor();
  await page.getByRole('group', { name: 'Actions' }).getByRole('button', { name: button, exact: true }).click();
  const dialog = page.getByRole('dialog', { name: dialogName });
  await dialog.waitFor();
  return dialog;
}

test('test failover and cleanup, planned failover, commit, reverse replication, failback synced before and its commit, all from the browser', { timeout: 420_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, s.token);

  // Enable replication from the item page; the initial copy is followed on its job page.
  await page.goto(`${s.url}/items/db1`);
  await page.getByRole('button', { name: 'Enable replication' }).click();
  await page.getByRole('dialog', { name: 'Enable replication of db1' }).getByRole('button', { name: 'Enable replication' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  const pts = await waitFor('two points', async () => {
    const p = await points(s, 'db1');
    return p.length >= 2 ? p : undefined;
  }, 60_000, 500);

  // Test failover from a point chosen in the item's list (not the newest).
  const chosen = pts[pts.length - 1]!;
  let dialog = await openAction(page, 'Test failover', 'Test failover of db1');
  assert.match((await dialog.textContent()) ?? '', /Test db1 at dr, from a recovery point/);
  await dialog.getByLabel('Recovery point', { exact: true }).selectOption(chosen.id);
  await dialog.getByRole('button', { name: 'Start test failover' }).click();
  const tfId = await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'test-failover db1' }).waitFor();
  await followJob(page, 'succeeded', 120_000);
  assert.match((await page.locator('ol.log').textContent()) ?? '', new RegExp(`test failover of db1 from point ${chosen.id}`));
  assert.equal((await item()).state, 'test-failover');
  assert.equal((await api<Job>(s, 'GET', `/jobs/${tfId}`)).kind, 'test-failover');
  await page.goto(`${s.url}/items/db1`);
  await page.getByTestId('test-machine').getByRole('cell', { name: 'db1-test', exact: true }).waitFor();
  assert.match((await page.getByTestId('test-machine').textContent()) ?? '', new RegExp(chosen.id));

  // Cleanup with notes: the notes are required, then kept with the job.
  dialog = await openAction(page, 'Cleanup test failover', 'Cleanup test failover of db1');
  await dialog.getByLabel('Notes').fill('boots from the older point; data checked');
  await dialog.getByRole('button', { name: 'Clean up' }).click();
  const tcId = await onJobPage(page);
  await followJob(page, 'succeeded', 60_000);
  assert.equal(await page.getByTestId('job-notes').textContent(), 'Notes: boots from the older point; data checked');
  assert.equal((await api<Job>(s, 'GET', `/jobs/${tcId}`)).result?.notes, 'boots from the older point; data checked');
  assert.equal((await item()).state, 'protected');

  // The keyboard opens the dialog (focus moves into it) and Escape closes it without acting.
  await page.goto(`${s.url}/items/db1`);
  await page.getByRole('group', { name: 'Actions' }).getByRole('button', { name: 'Failover', exact: true }).focus();
  await page.keyboard.press('Enter');
  dialog = page.getByRole('dialog', { name: 'Failover of db1' });
  await dialog.waitFor();
  assert.equal(await dialog.evaluate((d) => d.contains(d.ownerDocument.activeElement)), true, 'focus is inside the open dialog');
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await item()).state, 'protected');

  // Planned failover: the dialog states the direction, planned is the default for a machine with
  // a stop hook; its job page shows the tasks move live to success.
  dialog = await openAction(page, 'Failover', 'Failover of db1');
  assert.equal(await dialog.getByTestId('failover-direction').textContent(), 'Fail over db1 from srv to dr.');
  assert.equal(await dialog.getByLabel(/^Planned/).isChecked(), true);
  assert.equal(await dialog.getByLabel('Recovery point', { exact: true }).count(), 0, 'a planned failover has no point to choose');
  await dialog.getByLabel(/^Unplanned/).check();
  assert.equal(await dialog.getByLabel('Shut down the machine before failover').isChecked(), true);
  await dialog.getByLabel(/^Planned/).check();
  await screenshot(page, 'failover-dialog-planned');
  await dialog.getByRole('button', { name: 'Start failover' }).click();
  await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'failover db1' }).waitFor();
  const fo = await followJob(page, 'succeeded', 180_000);
  assert.ok(fo.seen.length >= 2 && !fo.seen[0]!.startsWith('succeeded'), `the page saw the job before it ended: ${fo.seen.join(' → ')}`);
  assert.ok(fo.seen.some((x) => /\|.*running/.test(x) || x.startsWith('queued') || x.startsWith('running')), `progress seen live: ${fo.seen.join(' → ')}`);
  assert.equal(fo.seen[fo.seen.length - 1], 'succeeded|succeeded,succeeded,succeeded,succeeded,succeeded');
  assert.equal(await page.getByTestId('live').textContent(), 'finished');
  assert.ok(existsSync(path.join(dir, 'a', 'stopped')), 'the stop hook shut the machine down at srv');
  let it = await item();
  assert.deepEqual([it.state, it.activeSite], ['failed-over', 'dr']);
  await page.getByRole('link', { name: 'db1', exact: true }).click();
  await page.getByTestId('item-state').getByText('failed-over').waitFor();
  await page.getByTestId('failover-machine').waitFor();

  // Commit.
  dialog = await openAction(page, 'Commit', 'Commit db1');
  await dialog.getByRole('button', { name: 'Commit' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  assert.equal((await item()).state, 'committed');

  // Reverse replication: dr → srv.
  dialog = await openAction(page, 'Reverse replicate', 'Reverse replication of db1');
  assert.match((await dialog.textContent()) ?? '', /Replicate db1 from dr to srv/);
  await dialog.getByRole('button', { name: 'Start reverse replication' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  it = await item();
  assert.deepEqual([it.state, it.direction, it.activeSite], ['protected', 'reverse', 'dr']);
  const since = Date.now();
  await waitFor('a point of the reverse replication', async () => (await points(s, 'db1')).some((p) => p.takenAt > since), 60_000, 500);

  // Failback: the dialog says so; a remote host is refused by the server, and the dialog shows
  // its sentence; then synced before with the original host.
  await page.goto(`${s.url}/items/db1`);
  await page.getByTestId('item-direction').getByText('from dr to srv (reverse: a planned failover now is a failback)').waitFor();
  dialog = await openAction(page, 'Failover', 'Failback of db1');
  assert.equal(await dialog.getByTestId('failover-direction').textContent(), 'Fail back db1 from dr to srv.');
  assert.equal(await dialog.getByLabel(/^Synchronize data before failover/).isChecked(), true);
  await dialog.getByLabel('Host at srv').selectOption('srv-spare');
  await screenshot(page, 'failback-dialog');
  await dialog.getByRole('button', { name: 'Start failback' }).click();
  // srv-spare has an address: a remote host (refused as such, or, by a build without alternate
  // hosts, every alternate host is).
  await dialog.getByRole('alert').getByText(/machines on remote hosts are run by a host agent there|failback to an alternate host is not available in this build/).waitFor();
  assert.match(page.url(), /\/items\/db1$/, 'a refused failback stays in the dialog');
  assert.equal((await item()).state, 'protected');
  await dialog.getByLabel('Host at srv').selectOption('');
  await dialog.getByRole('button', { name: 'Start failback' }).click();
  // Cancel from the job page once phase 1 is done: nothing is lost, db1 keeps running at dr.
  const cancelled = await onJobPage(page);
  await followJob(page, 'waiting', 180_000);
  await page.getByRole('group', { name: 'Job actions' }).getByRole('button', { name: 'Cancel job' }).click();
  const cancel = page.getByRole('dialog', { name: 'Cancel this job' });
  assert.match((await cancel.textContent()) ?? '', /nothing is lost/);
  await cancel.getByRole('button', { name: 'Cancel job' }).click();
  await followJob(page, 'cancelled', 60_000);
  assert.equal((await api<Job>(s, 'GET', `/jobs/${cancelled}`)).state, 'cancelled');
  it = await item();
  assert.deepEqual([it.state, it.direction, it.activeSite], ['protected', 'reverse', 'dr']);

  // Failback again, synced before, to the end.
  dialog = await openAction(page, 'Failover', 'Failback of db1');
  await dialog.getByRole('button', { name: 'Start failback' }).click();
  const fbId = await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'failback-sync db1' }).waitFor();
  await followJob(page, 'waiting', 180_000);
  await page.getByTestId('waiting').getByText(/The data sync has finished/).waitFor();
  assert.equal((await item()).state, 'failback-ready');
  await screenshot(page, 'failback-waiting');

  // The item page offers "Complete failover" while the item is failback-ready, and links the job.
  await page.goto(`${s.url}/items/db1`);
  await page.getByTestId('item-state').getByText('failback-ready').waitFor();
  await page.getByRole('group', { name: 'Actions' }).getByRole('button', { name: 'Complete failover' }).waitFor();
  await page.getByTestId('current-job').getByRole('link').click();
  assert.equal(await onJobPage(page), fbId);

  // "Complete failover" on the job page: phase 2 runs live to success.
  await page.getByRole('group', { name: 'Job actions' }).getByRole('button', { name: 'Complete failover' }).click();
  const confirm = page.getByRole('dialog', { name: 'Complete failover' });
  await confirm.getByRole('button', { name: 'Complete failover' }).click();
  const fb = await followJob(page, 'succeeded', 180_000);
  assert.ok(fb.seen.some((x) => x.startsWith('queued') || x.startsWith('running')), `phase 2 seen live: ${fb.seen.join(' → ')}`);
  assert.equal(await page.getByTestId('live').textContent(), 'finished');
  it = await item();
  assert.deepEqual([it.state, it.activeSite], ['failed-over', 'srv']);
  assert.ok(existsSync(path.join(dir, 'b', 'stopped')), 'the stop hook shut the machine down at dr');

  // Commit of the failback: the machine's images at dr go.
  dialog = await openAction(page, 'Commit', 'Commit db1');
  assert.match((await dialog.textContent()) ?? '', /and so are the machine and its disks at dr/);
  await dialog.getByRole('button', { name: 'Commit' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  assert.equal((await item()).state, 'committed');
  assert.deepEqual(problems, []);
  await page.context().close();
});
