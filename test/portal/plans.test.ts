// A recovery plan made, edited and run from the browser against a real `rebound serve`, with three
// physical machines of image files: the plan is created on the page from two groups of machines
// (a machine chosen in one group cannot be chosen in another), a manual action before group 2 and
// a script after group 1 are added on the plan's page; the group editor moves p3 into a group of
// its own placed second and removes the manual action (an edit from a stale read is refused);
// the plan's test failover runs live (the script runs for it) and is cleaned up with notes; the
// manual action is added back, the plan fails over (the dialog states the direction; planned is
// refused for machines without a stop hook), its job waits at the manual action and says what to
// do, a reader sees that job, the plan and a failed-over machine without any action button or
// form, and the Resume button on the job page lets the plan finish live; then the plan is
// committed from its page.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';
import { launch, openPage, screenshot, signIn } from './browser.ts';
import { followJob, mainButtons, makeImage, onJobPage } from './flows.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const MACHINES = ['p1', 'p2', 'p3'];
let dir: string;
let server: ServerProcess | undefined;
let browser: Browser | undefined;

interface Item { state: string; activeSite: string }
const state = async (m: string): Promise<string> => (await api<Item>(server!, 'GET', `/items/${m}`)).state;

before(async () => {
  execFileSync(path.join(REPO, 'scripts/portal-build'), { stdio: 'pipe' });
  dir = await mkdtemp(path.join(tmpdir(), 'rb-portal-plans-'));
  for (const d of ['a', 'b', 'vault', 'scripts']) await mkdir(path.join(dir, d), { recursive: true });
  server = await startServerProcess({ dataDir: path.join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  const s = server;
  await api(s, 'POST', '/sites', { name: 'srv', provider: 'physical', root: path.join(dir, 'a') });
  await api(s, 'POST', '/sites', { name: 'dr', provider: 'physical', root: path.join(dir, 'b') });
  await api(s, 'POST', '/policies', { name: 'quick', frequency: '3s', retention: '1h', appConsistent: '0s', encryption: 'none' });
  await api(s, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'quick' });
  for (const m of MACHINES) {
    await makeImage(path.join(dir, 'a', `${m}.img`), 4, 256);
    await api(s, 'POST', '/machines', { name: m, site: 'srv', disks: [path.join(dir, 'a', `${m}.img`)] });
  }
  const jobs = await Promise.all(MACHINES.map(async (m) => (await api<{ job: { id: string } }>(s, 'POST', `/items/${m}/protect`, {})).job.id));
  for (const j of jobs) await waitJob(s, j, 120_000);
  for (const m of MACHINES) await waitFor(`a point of ${m}`, async () => (await points(s, m)).length > 0, 60_000, 500);
  // A script the plan runs after group 1: it records the plan's environment.
  const script = path.join(dir, 'scripts', 'after-db.sh');
  await writeFile(script, `#!/bin/sh\necho "$REBOUND_PLAN $REBOUND_GROUP $REBOUND_WHEN $REBOUND_MACHINES $REBOUND_OPERATION" > ${path.join(dir, 'script-ran')}\n`);
  await chmod(script, 0o755);
  browser = await launch();
});

after(async () => {
  await browser?.close().catch(() => undefined);
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-portal-plans-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('a plan made on the page, with actions, its groups edited, test failed over and cleaned up, failed over, resumed at its manual action from the job page, then committed; a reader sees no action', { timeout: 300_000 }, async () => {
  const s = server!;
  const { page, problems } = await openPage(browser!);
  await signIn(page, s.url, s.token);

  // Create the plan: group 1 = p1; group 2 = p2, p3.
  await page.getByRole('link', { name: 'Recovery plans' }).click();
  const form = page.getByRole('form', { name: 'Create a recovery plan' });
  await form.getByLabel('Plan name').fill('web');
  const g1 = form.getByRole('group', { name: 'Group 1' });
  await g1.getByLabel(/^p1/).check();
  await form.getByRole('button', { name: 'Add a group' }).click();
  const g2 = form.getByRole('group', { name: 'Group 2' });
  assert.equal(await g2.getByLabel(/^p1/).isDisabled(), true, 'p1 is already in group 1');
  await g2.getByLabel(/^p2/).check();
  await g2.getByLabel(/^p3/).check();
  await form.getByRole('button', { name: 'Create plan' }).click();
  await page.waitForURL(/\/plans\/web$/);
  await page.getByRole('heading', { level: 1, name: 'Plan web' }).waitFor();

  // Actions: a manual one before group 2, a script after group 1.
  const add = page.getByRole('form', { name: 'Add an action' });
  await add.getByLabel('Group').selectOption('2');
  await add.getByLabel('When').selectOption('before');
  await add.getByLabel('Kind').selectOption('manual');
  await add.getByLabel('Instruction').fill('Switch the DNS record of web to dr');
  await add.getByRole('button', { name: 'Add action' }).click();
  await add.getByText('Added manual: Switch the DNS record of web to dr before group 2.').waitFor();
  const script = path.join(dir, 'scripts', 'after-db.sh');
  await add.getByLabel('Group').selectOption('1');
  await add.getByLabel('When').selectOption('after');
  await add.getByLabel('Kind').selectOption('script');
  await add.getByLabel('Script path on the server').fill(script);
  await add.getByLabel('Timeout in seconds (optional)').fill('60');
  await add.getByRole('button', { name: 'Add action' }).click();
  await add.getByText(`Added script ${script} (timeout 60 s) after group 1.`).waitFor();
  await page.getByText('Before: manual: Switch the DNS record of web to dr').waitFor();
  await page.getByText(`After: script ${script} (timeout 60 s)`).waitFor();
  const plan = await api<{ groups: unknown[] }>(s, 'GET', '/plans/web');
  assert.deepEqual(plan.groups, [
    { machines: ['p1'], before: [], after: [{ kind: 'script', path: script, timeoutSeconds: 60 }] },
    { machines: ['p2', 'p3'], before: [{ kind: 'manual', text: 'Switch the DNS record of web to dr' }], after: [] },
  ]);
  await page.getByTestId('plan-direction').getByText('runs at srv; fails over to dr').waitFor();

  // Edit the groups: p3 leaves group 2 for a new group 3, which moves up to be group 2; the
  // manual action is removed. Nothing is saved before "Save plan".
  const before = await api<{ updatedAt: number }>(s, 'GET', '/plans/web');
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Edit groups and actions' }).click();
  const edit = page.getByRole('form', { name: 'Edit groups and actions' });
  assert.equal(await page.getByRole('form', { name: 'Add an action' }).count(), 0, 'one form at a time');
  await edit.getByRole('group', { name: 'Group 2' }).getByLabel(/^p3/).uncheck();
  await edit.getByRole('button', { name: 'Add a group' }).click();
  await edit.getByRole('group', { name: 'Group 3' }).getByLabel(/^p3/).check();
  assert.equal(await edit.getByRole('group', { name: 'Group 1' }).getByLabel(/^p3/).isDisabled(), true, 'p3 is in group 3 now');
  await edit.getByRole('button', { name: 'Move group 3 up' }).click();
  assert.equal(await edit.getByRole('group', { name: 'Group 2' }).getByLabel(/^p3/).isChecked(), true, 'the new group moved up');
  await edit.getByRole('button', { name: 'Remove action before group 3, 1: manual: Switch the DNS record of web to dr' }).click();
  assert.deepEqual((await api<{ groups: { machines: string[] }[] }>(s, 'GET', '/plans/web')).groups.map((g) => g.machines), [['p1'], ['p2', 'p3']], 'not saved yet');
  await edit.getByRole('button', { name: 'Save plan' }).click();
  await page.getByRole('status').getByText('Plan web saved: 3 groups.').waitFor();
  await page.getByRole('heading', { level: 2, name: 'Group 3' }).waitFor();
  const edited = await api<{ groups: unknown[]; updatedAt: number }>(s, 'GET', '/plans/web');
  assert.deepEqual(edited.groups, [
    { machines: ['p1'], before: [], after: [{ kind: 'script', path: script, timeoutSeconds: 60 }] },
    { machines: ['p3'], before: [], after: [] },
    { machines: ['p2'], before: [], after: [] },
  ]);
  assert.equal(await page.getByText('Before: manual: Switch the DNS record of web to dr').count(), 0);
  // An edit made from what the plan was before this one is refused, not applied over it.
  const stale = await fetch(`${s.url}/api/v1/plans/web`, { method: 'PUT', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ groups: [{ machines: ['p1', 'p2', 'p3'] }], updatedAt: before.updatedAt }) });
  assert.equal(stale.status, 409);
  assert.equal(((await stale.json()) as { error: { code: string } }).error.code, 'plan-changed');
  await screenshot(page, 'plan-edited');

  // Test failover of the whole plan from its page, live to the end; the script runs for it.
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Test failover' }).click();
  const drill = page.getByRole('dialog', { name: 'Test failover of plan web' });
  await drill.getByText('Test the plan\u2019s machines at dr, group by group.').waitFor();
  await drill.getByLabel('Recovery point', { exact: true }).selectOption('latest');
  await drill.getByRole('button', { name: 'Start test failover' }).click();
  await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'plan-test-failover plan:web' }).waitFor();
  const drilled = await followJob(page, 'succeeded', 180_000);
  assert.ok(drilled.seen.some((x) => x.startsWith('queued') || x.startsWith('running')), `the test failover was seen live: ${drilled.seen.join(' → ')}`);
  assert.deepEqual(await Promise.all(MACHINES.map(state)), ['test-failover', 'test-failover', 'test-failover']);
  assert.match(readFileSync(path.join(dir, 'script-ran'), 'utf8'), /^web 1 after p1 test-failover\n$/);
  // Its cleanup, with notes (required).
  await page.getByRole('link', { name: 'plan:web' }).click();
  await page.getByRole('heading', { level: 1, name: 'Plan web' }).waitFor();
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Cleanup test failover' }).click();
  const cleanup = page.getByRole('dialog', { name: 'Cleanup test failover of plan web' });
  await cleanup.getByLabel('Notes').fill('drill of web: p1, p3, p2 came up in order');
  await cleanup.getByRole('button', { name: 'Clean up' }).click();
  const cleanupJob = await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'plan-test-cleanup plan:web' }).waitFor();
  await followJob(page, 'succeeded', 180_000);
  assert.deepEqual(await Promise.all(MACHINES.map(state)), ['protected', 'protected', 'protected']);
  const cj = await api<{ params: unknown }>(s, 'GET', `/jobs/${cleanupJob}`);
  assert.match(JSON.stringify(cj.params), /drill of web: p1, p3, p2 came up in order/);

  // The manual action back, before p2's group (now group 3).
  await page.getByRole('link', { name: 'plan:web' }).click();
  await page.getByRole('heading', { level: 1, name: 'Plan web' }).waitFor();
  const add2 = page.getByRole('form', { name: 'Add an action' });
  await add2.getByLabel('Group').selectOption('3');
  await add2.getByLabel('When').selectOption('before');
  await add2.getByLabel('Kind').selectOption('manual');
  await add2.getByLabel('Instruction').fill('Switch the DNS record of web to dr');
  await add2.getByRole('button', { name: 'Add action' }).click();
  await add2.getByText('Added manual: Switch the DNS record of web to dr before group 3.').waitFor();
  await screenshot(page, 'plan');

  // Fail the plan over: planned is refused (no stop hooks), unplanned from each machine's latest.
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Failover', exact: true }).click();
  const dialog = page.getByRole('dialog', { name: 'Failover of plan web' });
  assert.equal(await dialog.getByTestId('failover-direction').textContent(), 'Fail over plan web from srv to dr.');
  assert.equal(await dialog.getByLabel(/^Planned/).isDisabled(), true);
  await dialog.getByText('p1, p3, p2 have no stop hook').waitFor();
  assert.equal(await dialog.getByLabel(/^Unplanned/).isChecked(), true);
  await dialog.getByLabel('Recovery point', { exact: true }).selectOption('latest');
  await screenshot(page, 'plan-failover-dialog');
  await dialog.getByRole('button', { name: 'Start failover' }).click();
  const jobId = await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'plan-failover plan:web' }).waitFor();
  const first = await followJob(page, 'waiting', 180_000);
  assert.ok(first.seen.some((x) => x.startsWith('queued') || x.startsWith('running')), `the plan's progress was seen live: ${first.seen.join(' → ')}`);
  await page.getByTestId('waiting').getByText('Switch the DNS record of web to dr').waitFor();
  assert.deepEqual(await Promise.all(MACHINES.map(state)), ['failed-over', 'protected', 'failed-over'], 'groups 1 (p1) and 2 (p3) failed over, group 3 (p2) waits for the manual action');
  assert.match(readFileSync(path.join(dir, 'script-ran'), 'utf8'), /^web 1 after p1 failover\n$/);
  // The plan's log names p1's failover job: a link to it.
  await page.locator('ol.log').getByRole('link').first().waitFor();
  await screenshot(page, 'plan-job-waiting');
  // While its job is unfinished the plan cannot be edited: no editor on its page, 409 plan-busy.
  const busy = await fetch(`${s.url}/api/v1/plans/web`, { method: 'PUT', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ groups: [{ machines: ['p1', 'p2', 'p3'] }] }) });
  assert.equal(busy.status, 409);
  assert.equal(((await busy.json()) as { error: { code: string } }).error.code, 'plan-busy');

  // A reader sees the waiting job, the plan and a failed-over machine, and no action anywhere.
  const reader = await api<{ token: string }>(s, 'POST', '/tokens', { name: 'auditor', role: 'reader' });
  const r = await openPage(browser!);
  await signIn(r.page, s.url, reader.token);
  for (const [p, heading] of [[`/jobs/${jobId}`, 'plan-failover plan:web'], ['/plans/web', 'Plan web'], ['/plans', 'Recovery plans'], ['/items/p1', 'p1']] as const) {
    await r.page.goto(`${s.url}${p}`);
    await r.page.getByRole('heading', { level: 1, name: heading }).waitFor();
    if (p === '/plans/web') await r.page.getByText('Before: manual: Switch the DNS record of web to dr').waitFor();
    if (p === '/items/p1') await r.page.getByTestId('item-state').getByText('failed-over').waitFor();
    if (p.startsWith('/jobs/')) await r.page.getByTestId('waiting').waitFor();
    await r.page.waitForTimeout(400);
    assert.deepEqual(await mainButtons(r.page), [], `a reader sees buttons on ${p}`);
    assert.equal(await r.page.locator('main form').count(), 0, `a reader sees a form on ${p}`);
  }
  assert.deepEqual(r.problems, []);
  await r.page.context().close();

  // Resume from the job page: group 2 fails over, live, to the end.
  // Live: the page goes from the waiting job to its end without a reload. A mark left on the
  // window before the click is still there at the end (a reload would drop it); the first look
  // after the click may already be running, and on a fast machine the plan may finish between two
  // updates, so the states in between need not be seen.
  assert.equal(await page.getByTestId('job-state').locator('.badge').textContent(), 'waiting');
  await page.evaluate(() => { (globalThis as { reboundMark?: string }).reboundMark = 'before-resume'; });
  await page.getByRole('group', { name: 'Job actions' }).getByRole('button', { name: 'Resume' }).click();
  const done = await followJob(page, 'succeeded', 180_000);
  const mark = await page.evaluate(() => (globalThis as { reboundMark?: string }).reboundMark);
  assert.equal(mark, 'before-resume', `the page was reloaded while the resumed plan ran: ${done.seen.join(' → ')}`);
  assert.equal(await page.getByTestId('live').textContent(), 'finished');
  assert.deepEqual(await Promise.all(MACHINES.map(state)), ['failed-over', 'failed-over', 'failed-over']);
  const job = await api<{ log: { message: string }[] }>(s, 'GET', `/jobs/${jobId}`);
  assert.ok(job.log.some((l) => /manual action done: Switch the DNS record of web to dr/.test(l.message)), 'the plan went on after the manual action');

  // Commit the plan from its page (the job link on the job page leads back to it).
  await page.getByRole('link', { name: 'plan:web' }).click();
  await page.getByRole('heading', { level: 1, name: 'Plan web' }).waitFor();
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Commit' }).click();
  await page.getByRole('dialog', { name: 'Commit plan web' }).getByRole('button', { name: 'Commit' }).click();
  await onJobPage(page);
  await page.getByRole('heading', { level: 1, name: 'plan-commit plan:web' }).waitFor();
  await followJob(page, 'succeeded', 180_000);
  assert.deepEqual(await Promise.all(MACHINES.map(state)), ['committed', 'committed', 'committed']);
  // Committed everywhere: the plan's page now offers reverse replication, and only that.
  await page.getByRole('link', { name: 'plan:web' }).click();
  await page.getByRole('heading', { level: 1, name: 'Plan web' }).waitFor();
  await page.getByRole('group', { name: 'Plan actions' }).getByRole('button', { name: 'Reverse replicate' }).waitFor();
  assert.deepEqual(await page.getByRole('group', { name: 'Plan actions' }).getByRole('button').allTextContents(), ['Reverse replicate', 'Edit groups and actions', 'Delete plan']);
  assert.deepEqual(problems, []);
  await page.context().close();
});
