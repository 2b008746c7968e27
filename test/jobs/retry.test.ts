// The retry policy's pure arithmetic: backoff grows by the coefficient, never exceeds maxMs,
// jitters within [ceiling/2, ceiling]; non-retryable codes and used-up attempts stop retries.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { backoffMs, retryPolicy, shouldRetry } from '../../src/jobs/retry.ts';

it('backoff stays within half and all of the capped exponential ceiling', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 10_000 }),
      fc.double({ min: 1, max: 4, noNaN: true }),
      fc.integer({ min: 1, max: 600_000 }),
      fc.integer({ min: 1, max: 40 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (initialMs, coefficient, maxMs, attempt, r) => {
        const p = retryPolicy({ initialMs, coefficient, maxMs, maxAttempts: 50 });
        const ceiling = Math.min(maxMs, initialMs * coefficient ** (attempt - 1));
        const d = backoffMs(p, attempt, () => r);
        assert.ok(d >= Math.floor(ceiling / 2) && d <= Math.ceil(ceiling), `${d} not in [${ceiling / 2}, ${ceiling}]`);
      },
    ),
  );
  const p = retryPolicy({ initialMs: 100, coefficient: 2, maxMs: 1000 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => backoffMs(p, a, () => 0.999999)), [100, 200, 400, 800, 1000, 1000]);
});

it('retries only retryable errors with attempts left and codes not excluded', () => {
  const p = retryPolicy({ maxAttempts: 3, nonRetryableCodes: ['disk.missing'] });
  assert.equal(shouldRetry(p, 1, 'link.down', true), true);
  assert.equal(shouldRetry(p, 2, 'link.down', true), true);
  assert.equal(shouldRetry(p, 3, 'link.down', true), false);
  assert.equal(shouldRetry(p, 1, 'disk.missing', true), false);
  assert.equal(shouldRetry(p, 1, 'bug', false), false);
  assert.equal(retryPolicy(undefined).maxAttempts, 1, 'no retries unless a kind asks for them');
});
