// Durations, names, policy defaults and limits, RPO health and roles: the small pure rules the
// API and CLI lean on, with the exact sentences people see when they get them wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReboundError } from '../../src/domain/errors.ts';
import { formatAge, formatDuration, parseDuration } from '../../src/domain/durations.ts';
import { nameProblem, validateName } from '../../src/domain/names.ts';
import { parseBandwidth, validatePolicy } from '../../src/domain/policy.ts';
import { itemHealth, rpoHealth, rpoSeconds } from '../../src/domain/health.ts';
import { assertRole, requiredRole, roleAllows } from '../../src/domain/rbac.ts';

const refusedWith = (code: string, message?: RegExp | string) => (e: unknown) => {
  assert.ok(e instanceof ReboundError, String(e));
  assert.equal(e.code, code);
  if (typeof message === 'string') assert.equal(e.message, message);
  else if (message) assert.match(e.message, message);
  return true;
};

void test('durations parse the documented forms to seconds', () => {
  assert.deepEqual(['1s', '30s', '15m', '4h', '24h', '7d', ' 2m '].map((d) => parseDuration(d)), [1, 30, 900, 14_400, 86_400, 604_800, 120]);
});

void test('durations refuse other forms with a sentence listing the accepted ones', () => {
  for (const bad of ['', '30', '1.5h', '-1s', '1w', '4H', '1h30m', 's', '10 s']) {
    assert.throws(() => parseDuration(bad, 'frequency'), refusedWith('invalid-duration'), bad);
  }
  assert.throws(
    () => parseDuration('1w', 'retention'),
    refusedWith('invalid-duration', "retention '1w' is not a duration: write a whole number followed by s, m, h or d, such as '30s', '15m', '4h' or '7d'."),
  );
});

void test('formatDuration picks the largest exact unit and round-trips', () => {
  assert.deepEqual([0, 1, 30, 90, 900, 3600, 5400, 86_400, 90_000].map(formatDuration), ['0s', '1s', '30s', '90s', '15m', '1h', '90m', '1d', '25h']);
  fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (s) => parseDuration(formatDuration(s)) === s));
  assert.equal(formatAge(75), '1m15s');
  assert.equal(formatAge(3 * 86_400 + 7200 + 5), '3d2h');
  assert.equal(formatAge(0.4), '0s');
});

void test('names: lower-case, digits, . _ -, 1-63 characters, starting with a letter or digit', () => {
  for (const good of ['a', 'web-01', 'db.primary', 'x_1', '0site', 'a'.repeat(63)]) assert.equal(nameProblem(good), null, good);
  assert.equal(nameProblem(''), 'it is empty');
  assert.equal(nameProblem('a'.repeat(64)), 'it is 64 characters long (at most 63)');
  assert.equal(nameProblem('Web-01'), "it has upper-case letters (use 'web-01')");
  assert.equal(nameProblem('-web'), 'it must start with a lower-case letter or a digit');
  assert.equal(nameProblem('web 01'), "it may only contain lower-case letters, digits, '.', '_' and '-'");
  assert.equal(nameProblem('web/01'), "it may only contain lower-case letters, digits, '.', '_' and '-'");
  assert.equal(nameProblem('a..b'), "it may not contain '..'");
  assert.throws(() => validateName('Web', 'machine'), refusedWith('invalid-name', "machine name 'Web' is not valid: it has upper-case letters (use 'web')."));
  fc.assert(
    fc.property(fc.string(), (s) => {
      const ok = nameProblem(s) === null;
      assert.equal(ok, /^[a-z0-9][a-z0-9._-]{0,62}$/.test(s) && !s.includes('..'));
    }),
  );
});

void test('policy defaults: 30s, 24h, 4h, zstd, aes-256-gcm, no cap, immediate', () => {
  assert.deepEqual(validatePolicy({ name: 'gold' }), {
    name: 'gold', frequencySeconds: 30, retentionSeconds: 86_400, appConsistentSeconds: 14_400,
    compression: 'zstd', encryption: 'aes-256-gcm', bandwidthBps: 0, initialStart: 'immediate',
  });
  // A short retention alone does not make the default app-consistent frequency invalid.
  assert.equal(validatePolicy({ name: 'p', retention: '1h' }).appConsistentSeconds, 3600);
  assert.equal(validatePolicy({ name: 'p', appConsistent: 'off' }).appConsistentSeconds, 0);
  assert.equal(validatePolicy({ name: 'p', appConsistent: '0s' }).appConsistentSeconds, 0);
  const custom = validatePolicy({ name: 'p', frequency: '1s', retention: '7d', appConsistent: '1h', compression: 'none', encryption: 'none', bandwidth: '10M', initialStart: '23:30' });
  assert.equal(custom.bandwidthBps, 10 * 1024 * 1024);
  assert.equal(custom.frequencySeconds, 1);
});

void test('policy refusals say which field, what was wrong and what is accepted', () => {
  const cases: [Parameters<typeof validatePolicy>[0], string][] = [
    [{ name: 'p', frequency: '2h' }, 'frequency 2h is out of range: choose between 1s and 1h.'],
    [{ name: 'p', frequency: '0s' }, 'frequency 0s is out of range: choose between 1s and 1h.'],
    [{ name: 'p', frequency: '10m', retention: '5m' }, 'retention 5m is shorter than the frequency 10m: the window would hold no recovery point; make the retention at least the frequency.'],
    [{ name: 'p', retention: '31d' }, 'retention 31d is too long: keep it at 30d or less.'],
    [{ name: 'p', frequency: '5m', appConsistent: '1m' }, "app-consistent frequency 1m is shorter than the frequency 5m: make it at least the frequency, or 'off'."],
    [{ name: 'p', retention: '2h', appConsistent: '4h' }, "app-consistent frequency 4h is longer than the retention 2h: an app-consistent point would be pruned before the next is taken; make it at most the retention, or 'off'."],
    [{ name: 'p', compression: 'gzip' }, "compression 'gzip' is not known: use 'zstd' or 'none'."],
    [{ name: 'p', encryption: 'rot13' }, "encryption 'rot13' is not known: use 'aes-256-gcm' or 'none'."],
    [{ name: 'p', initialStart: '25:00' }, "initial start '25:00' is not understood: use 'immediate' or a UTC time of day as HH:MM, such as '23:30'."],
  ];
  for (const [input, message] of cases) assert.throws(() => validatePolicy(input), refusedWith('invalid-policy', message));
  assert.throws(() => validatePolicy({ name: 'Gold' }), refusedWith('invalid-name'));
  assert.throws(() => validatePolicy({ name: 'p', frequency: 'often' }), refusedWith('invalid-duration', /^frequency 'often' is not a duration/));
  assert.throws(() => parseBandwidth(-1), refusedWith('invalid-policy'));
  assert.throws(() => parseBandwidth('10T'), refusedWith('invalid-policy'));
  assert.equal(parseBandwidth('512k'), 512 * 1024);
});

void test('RPO health: normal up to 2x frequency, warning up to 6x (at least 5 min grace), then critical', () => {
  const now = 1_000_000_000;
  const p30 = { frequencySeconds: 30 };
  // 30s policy: warning after 60s, critical after max(180s, 30s + 300s) = 330s.
  assert.equal(rpoHealth(now, now - 10_000, p30), 'normal');
  assert.equal(rpoHealth(now, now - 60_000, p30), 'normal');
  assert.equal(rpoHealth(now, now - 60_001, p30), 'warning');
  assert.equal(rpoHealth(now, now - 330_000, p30), 'warning');
  assert.equal(rpoHealth(now, now - 330_001, p30), 'critical');
  const p1h = { frequencySeconds: 3600 };
  assert.equal(rpoHealth(now, now - 3 * 3600_000, p1h), 'warning');
  assert.equal(rpoHealth(now, now - 7 * 3600_000, p1h), 'critical');
  // No point yet: normal during initial replication, warning once it runs past the critical threshold.
  assert.equal(rpoHealth(now, null, p30), 'normal');
  assert.equal(rpoHealth(now, null, p30, now - 100_000), 'normal');
  assert.equal(rpoHealth(now, null, p30, now - 400_000), 'warning');
  assert.equal(rpoSeconds(now, now - 61_400), 61);
  assert.equal(rpoSeconds(now, null), null);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3600 }), fc.nat(10_000_000), fc.nat(10_000_000), (f, a, b) => {
      const rank = { normal: 0, warning: 1, critical: 2 };
      const [young, old] = a <= b ? [a, b] : [b, a];
      return rank[rpoHealth(now, now - young, { frequencySeconds: f })] <= rank[rpoHealth(now, now - old, { frequencySeconds: f })];
    }),
  );
});

void test('roles: reader < operator < admin, and each API call needs the role docs/api.md gives it', () => {
  assert.ok(roleAllows('admin', 'operator') && roleAllows('operator', 'reader') && !roleAllows('reader', 'operator') && !roleAllows('operator', 'admin'));
  const table: [string, string, string][] = [
    ['GET', '/api/v1/whoami', 'reader'],
    ['GET', '/api/v1/sites', 'reader'],
    ['GET', '/api/v1/jobs/j1?limit=3', 'reader'],
    ['GET', '/api/v1/tokens', 'admin'],
    ['GET', '/api/v1/audit', 'admin'],
    ['POST', '/api/v1/tokens', 'admin'],
    ['DELETE', '/api/v1/tokens/abc', 'admin'],
    ['POST', '/api/v1/sites', 'admin'],
    ['POST', '/api/v1/sites/a/hosts', 'admin'],
    ['POST', '/api/v1/policies', 'admin'],
    ['POST', '/api/v1/pairings', 'admin'],
    ['POST', '/api/v1/machines', 'operator'],
    ['POST', '/api/v1/items/web-01/failover', 'operator'],
    ['POST', '/api/v1/items/web-01/protect', 'operator'],
    ['POST', '/api/v1/plans', 'operator'],
    ['POST', '/api/v1/plans/p1/actions', 'operator'],
    ['POST', '/api/v1/jobs/j1/cancel', 'operator'],
    ['POST', '/api/v1/jobs/j1/resume', 'operator'],
    ['POST', '/api/v1/jobs/j1/complete', 'operator'],
    ['POST', '/api/v1/something-new', 'admin'],
    ['DELETE', '/api/v1/sites/a', 'admin'],
  ];
  for (const [method, path, role] of table) assert.equal(requiredRole(method, path), role, `${method} ${path}`);
  assert.throws(
    () => assertRole('reader', 'operator', 'failover'),
    (e: unknown) => e instanceof ReboundError && e.kind === 'forbidden' && e.message === 'failover needs the operator role; this token is reader: use a token with the operator role (rebound token create NAME --role operator).',
  );
  assert.doesNotThrow(() => assertRole('admin', 'operator', 'failover'));
});

void test('item health: RPO while replicating, warning while not protected, normal while a job is on it', () => {
  const now = 1_000_000_000;
  const p = { frequencySeconds: 30 };
  const stale = now - 3_600_000;
  assert.equal(itemHealth(now, 'protected', now - 1000, p), 'normal');
  assert.equal(itemHealth(now, 'protected', stale, p), 'critical');
  assert.equal(itemHealth(now, 'test-failover', stale, p), 'critical');
  assert.equal(itemHealth(now, 'failback-ready', now - 90_000, p), 'warning');
  assert.equal(itemHealth(now, 'initial-replication', null, p, now - 1000), 'normal');
  assert.equal(itemHealth(now, 'reprotecting', null, p, now - 3_600_000), 'warning');
  for (const s of ['failover-cancelled', 'failed-over', 'committed'] as const) assert.equal(itemHealth(now, s, now, p), 'warning', s);
  for (const s of ['failing-over', 'disabling'] as const) assert.equal(itemHealth(now, s, stale, p), 'normal', s);
});
