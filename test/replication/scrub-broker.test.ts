// The scrub broker between scrub jobs and master targets running as their own processes: a
// request is offered once, stays with the master target that reports working on it, is offered
// again when that one goes quiet, and its answer (or error) reaches the job.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ScrubBroker } from '../../src/vault/scrub-broker.ts';

test('offers a request once, keeps it with a working taker, re-offers it when the taker goes quiet, and delivers the answer', async () => {
  let now = 1000;
  const b = new ScrubBroker({ staleMs: 30_000, now: () => now });
  const answer = b.ask('site-b', 'item-1');
  assert.deepEqual(b.take(['site-a'], []), [], 'another site does not see it');
  const [r] = b.take(['site-b'], []);
  assert.ok(r);
  assert.equal(r.itemId, 'item-1');
  assert.deepEqual(b.take(null, []), [], 'taken: not offered again at once');
  now += 25_000;
  assert.deepEqual(b.take(['site-b'], [r.id], false), [], 'a poll that only reports work takes nothing');
  now += 25_000;
  assert.deepEqual(b.take(['site-b'], []), [], 'still its taker\'s: it reported 25 s ago');
  now += 31_000;
  assert.deepEqual(b.take(null, []).map((x) => x.id), [r.id], 'the taker went quiet: offered again');
  assert.equal(b.finish(r.id, { checkedBlocks: 12, badPoints: ['p1'] }), true);
  assert.deepEqual(await answer, { checkedBlocks: 12, badPoints: ['p1'] });
  assert.equal(b.finish(r.id, { checkedBlocks: 1, badPoints: [] }), false, 'nobody waits for a second answer');
  assert.equal(b.size, 0);
});

test('an error answer rejects the job\'s wait; a cancelled job withdraws its request', async () => {
  const b = new ScrubBroker();
  const failing = b.ask('s', 'i');
  const [r] = b.take(null, []);
  b.finish(r!.id, { error: 'disk gone' });
  await assert.rejects(failing, (e: Error & { code?: string }) => e.code === 'scrub-failed' && /disk gone/.test(e.message));
  const ac = new AbortController();
  const cancelled = b.ask('s', 'i', ac.signal);
  assert.equal(b.size, 1);
  ac.abort(new Error('cancelled'));
  await assert.rejects(cancelled, /cancelled/);
  assert.equal(b.size, 0);
  assert.deepEqual(b.take(null, []), []);
});
