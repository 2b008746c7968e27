// The agent reads its assignments at its poll interval, and at once when woken (the embedded
// vault wakes it when replication of an item starts, so a first copy does not wait a poll
// interval to begin). A wake during a poll is not lost: another poll follows that one at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Agent } from '../../src/replication/agent.ts';
import type { AgentLink } from '../../src/replication/link.ts';

const until = async (what: string, ok: () => boolean, ms = 2000): Promise<void> => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('wake() polls now, and a wake during a poll is followed by another poll at once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rb-agent-wake-'));
  let calls = 0;
  let hold: (() => void) | undefined;
  const link: AgentLink = {
    assignments: async () => {
      calls++;
      if (hold === undefined && calls === 3) await new Promise<void>((r) => (hold = r));
      return [];
    },
    progress: async () => undefined,
    resynced: async () => undefined,
    event: async () => undefined,
    groupPoint: async () => undefined,
  };
  const agent = new Agent({
    stateDir: dir, link, providerFor: () => { throw new Error('no machines here'); },
    transportKey: randomBytes(32), material: null, logger: pino({ level: 'silent' }), pollMs: 60_000,
  });
  try {
    agent.wake(); // before start: nothing to wake, no poll
    assert.equal(calls, 0);
    agent.start();
    await until('the first poll', () => calls === 1);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(calls, 1, 'the next poll is a minute away');
    const t0 = Date.now();
    agent.wake();
    await until('the woken poll', () => calls === 2);
    assert.ok(Date.now() - t0 < 1000, 'woken at once, not at the poll interval');
    // A poll that is still running when woken: the next one follows it without waiting.
    agent.wake();
    await until('the third poll to start', () => hold !== undefined);
    agent.wake();
    agent.wake();
    hold!();
    await until('the poll after the one that ran when woken', () => calls === 4);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(calls, 4, 'one poll for the wakes that came during a poll, then the interval again');
  } finally {
    await agent.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
