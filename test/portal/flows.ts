// Helpers for the portal's failover-flow tests: a physical machine of image files (the cheapest
// real machine: replication by block digests, failover to images), and following a job on its
// page until it reaches a state, recording what the page showed on the way (every change arrives
// over the job's event stream; nothing reloads the page).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';

const run = promisify(execFile);

/** A sparse image of `mib` MiB with `dataKiB` of random data at its start. */
export async function makeImage(file: string, mib: number, dataKiB: number): Promise<void> {
  await run('truncate', ['-s', `${mib}M`, file]);
  await run('dd', ['if=/dev/urandom', `of=${file}`, 'bs=64K', `count=${Math.ceil(dataKiB / 64)}`, 'conv=notrunc', 'status=none']);
}

export interface Followed {
  /** Distinct snapshots the page showed: "jobState|task states". */
  seen: string[];
  state: string;
}

const TERMINAL = ['succeeded', 'failed', 'cancelled'];

/**
 * Waits on a job's page until its state is `want`, recording each distinct snapshot of the job's
 * state and its tasks' states. A terminal state other than `want` fails with the page's log.
 */
export async function followJob(page: Page, want: string, timeoutMs: number): Promise<Followed> {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // One look per round: the job's state and its tasks' together (the page may change between two reads).
    const { state, tasks } = await page.locator('main').evaluate((main) => ({
      state: (main.querySelector('[data-testid="job-state"] .badge')?.textContent ?? '').trim(),
      tasks: [...main.querySelectorAll('[data-testid="task"]')].map((r) => r.querySelector('.badge')?.textContent ?? ''),
    }));
    const snap = `${state}|${tasks.join(',')}`;
    if (seen[seen.length - 1] !== snap) seen.push(snap);
    if (state === want) return { seen, state };
    if (TERMINAL.includes(state)) {
      const log = (await page.locator('ol.log').textContent().catch(() => '')) ?? '';
      assert.fail(`the job ended ${state} on its page, not ${want}; seen ${seen.join(' → ')}\n${log.slice(-3000)}`);
    }
    assert.ok(Date.now() < deadline, `the job did not reach ${want} on its page within ${timeoutMs / 1000} s; seen ${seen.join(' → ')}`);
    await page.waitForTimeout(100);
  }
}

/** The job id of the job page the browser is on. */
export async function onJobPage(page: Page): Promise<string> {
  await page.waitForURL(/\/jobs\/[0-9a-f-]+$/);
  return page.url().split('/').pop() ?? '';
}

/** Buttons in the page's main region, by their text. */
export async function mainButtons(page: Page): Promise<string[]> {
  return page.locator('main button').evaluateAll((els) => els.map((e) => (e.textContent ?? '').trim()));
}
