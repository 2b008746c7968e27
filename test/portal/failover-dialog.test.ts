// The portal with a real protected guest: a TCG guest writing records at site dc1, replication
// enabled from the item page and followed on its job page to the end, recovery points listed,
// the RPO chart drawn from its points; then, all through the page, a test failover (the test VM
// boots isolated at dc2) and its cleanup with notes, the failover dialog as the seeds describe
// it (direction in words, planned/unplanned, point choice, "shut down the machine before
// failover"), a planned failover followed live on its job page until the VM runs at dc2, and its
// commit. Screenshots of the dashboard and the dialog go to test-output/portal/.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { teardownSite, testGuest, waitConsole } from '../providers/support.ts';
import { api } from '../replication/support.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { launch, openPage, screenshot, signIn } from './browser.ts';
import { followJob, onJobPage } from './flows.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;
let server: ServerProcess | undefined;
let browser: Browser | undefined;
const providers: QemuProvider[] = [];

before(async () => {
  execFileSync(path.join(REPO, 'scripts/portal-build'), { stdio: 'pipe' });
  dir = await mkdtemp(path.join(tmpdir(), 'rb-portal-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(path.join(dir, d), { recursive: true });
  const guest = await testGuest(dir);
  const prim = new QemuProvider({ root: path.join(dir, 'a') });
  providers.push(prim, new QemuProvider({ root: path.join(dir, 'b') }));
  await makeDataDisk(path.join(dir, 'a', 'rec.qcow2'), { sizeMiB: 32 });
  await prim.define({
    name: 'app1', cpus: 1, memoryMiB: 192, nics: [],
    disks: [{ path: path.join(dir, 'a', 'rec.qcow2'), format: 'qcow2' }],
    boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: 'records', rate: 20, disk: '/dev/vda' }) },
  });
  const info = await prim.start('app1');
  await waitConsole(info.consoleLog!, /REBOUND seq=\d+ durable/, 90_000);
  server = await startServerProcess({ dataDir: path.join(dir, 'vault') });
  await api(server, 'POST', '/sites', { name: 'dc1', provider: 'qemu', root: path.join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dc2', provider: 'qemu', root: path.join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'fast', frequency: '5s', retention: '1m', appConsistent: '0s' });
  await api(server, 'POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'fast' });
  browser = await launch();
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  for (const p of providers) await teardownSite(p, ['app1-test']);
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('a guest protected from its page, its points listed, drilled and cleaned up, failed over (planned) live and committed', { timeout: 420_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, s.token);
  await page.goto(`${s.url}/items/app1`);
  await page.getByRole('button', { name: 'Enable replication' }).click();
  await page.getByRole('dialog', { name: 'Enable replication of app1' }).getByRole('button', { name: 'Enable replication' }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]+$/);
  // The initial copy runs while the page watches it over the event stream.
  await page.getByTestId('job-state').getByText('succeeded').waitFor({ timeout: 150_000 });
  assert.equal(await page.getByTestId('live').textContent(), 'finished');

  await page.getByRole('link', { name: 'app1' }).click();
  await page.getByTestId('item-state').getByText('protected').waitFor();
  await page.getByRole('table', { name: 'Recovery points' }).getByText('crash-consistent').first().waitFor({ timeout: 30_000 });

  // The dashboard's RPO chart is drawn from the item's recovery points.
  await page.getByRole('link', { name: 'Dashboard' }).click();
  // A line may have no height (counted as hidden by Playwright): wait for it to be there with at
  // least two vertices instead.
  await page.locator('figure.chart polyline').first().waitFor({ state: 'attached', timeout: 15_000 });
  const deadline = Date.now() + 15_000;
  while (((await page.locator('figure.chart polyline').first().getAttribute('points')) ?? '').trim().split(/\s+/).length < 2) {
    assert.ok(Date.now() < deadline, 'the RPO chart did not get a second vertex');
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(5500);
  await screenshot(page, 'dashboard-protected');

  // Test failover from the latest point: the test VM starts isolated at dc2; then its cleanup.
  await page.goto(`${s.url}/items/app1`);
  await page.getByRole('button', { name: 'Test failover', exact: true }).click();
  let dialog = page.getByRole('dialog', { name: 'Test failover of app1' });
  await dialog.getByRole('button', { name: 'Start test failover' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  assert.equal((await providers[1]!.state('app1-test')).state, 'running');
  assert.equal((await providers[1]!.state('app1-test')).definition.nics.every((n) => n.network === 'isolated'), true);
  await page.getByRole('link', { name: 'app1', exact: true }).click();
  await page.getByRole('button', { name: 'Cleanup test failover' }).click();
  dialog = page.getByRole('dialog', { name: 'Cleanup test failover of app1' });
  await dialog.getByLabel('Notes').fill('the test VM booted and resumed its records');
  await dialog.getByRole('button', { name: 'Clean up' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 120_000);
  assert.equal(await page.getByTestId('job-notes').textContent(), 'Notes: the test VM booted and resumed its records');

  // The failover dialog as the seeds describe it, then a planned failover followed live.
  await page.goto(`${s.url}/items/app1`);
  await page.getByTestId('item-state').getByText('protected').waitFor();
  await page.getByRole('button', { name: 'Failover', exact: true }).click();
  dialog = page.getByRole('dialog', { name: 'Failover of app1' });
  assert.equal(await dialog.getByTestId('failover-direction').textContent(), 'Fail over app1 from dc1 to dc2.');
  await dialog.getByLabel(/^Unplanned/).check();
  await dialog.getByLabel('Recovery point', { exact: true }).selectOption('latest-processed');
  assert.equal(await dialog.getByLabel('Shut down the machine before failover').isChecked(), true);
  await screenshot(page, 'failover-dialog');
  await dialog.getByLabel(/^Planned/).check();
  await dialog.getByRole('button', { name: 'Start failover' }).click();
  await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'failover app1' }).waitFor();
  const fo = await followJob(page, 'succeeded', 240_000);
  assert.ok(fo.seen.filter((x) => x.includes('running')).length >= 2, `task-by-task progress seen live: ${fo.seen.join(' → ')}`);
  assert.equal((await providers[0]!.state('app1')).state, 'stopped');
  assert.equal((await providers[1]!.state('app1')).state, 'running');

  // Commit from the page.
  await page.getByRole('link', { name: 'app1', exact: true }).click();
  await page.getByTestId('item-state').getByText('failed-over').waitFor();
  await page.getByRole('button', { name: 'Commit' }).click();
  await page.getByRole('dialog', { name: 'Commit app1' }).getByRole('button', { name: 'Commit' }).click();
  await onJobPage(page);
  await followJob(page, 'succeeded', 240_000);
  assert.equal((await api<{ state: string }>(s, 'GET', '/items/app1')).state, 'committed');
  assert.deepEqual(problems, []);
  await page.context().close();
});
