// The bench sections added for issue 8's report (failback, plan-100, cpu-per-mb, vault-api,
// vault-jobs) run end to end in their --smoke size and print the one JSON document the harness
// (scripts/bench.ts) reads: every figure present as median/min/max/n, the summary for
// BENCHMARKS.md rendered with its commit and load average. Numbers are not judged (no timing
// asserts); this proves the sections still run against the current code. The four run at once to
// stay within a few minutes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');
const children = new Set<ChildProcess>();

after(async () => {
  // A failed or timed-out test must not leave a bench running: SIGTERM makes it clean up.
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((res) => c.once('exit', res));
    c.kill('SIGTERM');
    await exited;
  }
});

interface Fig { median: number; min: number; max: number; n: number }
function isFig(v: unknown, what: string): asserts v is Fig {
  assert.ok(v !== null && typeof v === 'object', `${what} is missing`);
  const f = v as Record<string, unknown>;
  for (const k of ['median', 'min', 'max']) assert.ok(typeof f[k] === 'number' && Number.isFinite(f[k]), `${what}.${k} is ${String(f[k])}, not a finite number`);
  assert.ok(Number.isInteger(f['n']) && (f['n'] as number) >= 1, `${what}.n is ${String(f['n'])}`);
  assert.ok((f['min'] as number) <= (f['median'] as number) && (f['median'] as number) <= (f['max'] as number), `${what}: min ≤ median ≤ max`);
}
const at = (o: unknown, path: string): unknown => path.split('.').reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o);

async function bench(name: string): Promise<Record<string, unknown>> {
  // nice(1) execs node, so the child's pid is the bench's own (SIGTERM reaches it).
  const c = spawn('nice', ['-n', '10', process.execPath, join(REPO, 'bench', `${name}.ts`), '--smoke'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(c);
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  c.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((res) => c.once('exit', (x) => res(x)));
  assert.equal(code, 0, `bench/${name}.ts failed:\n${stderr.slice(-4000)}`);
  const data = JSON.parse(stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>;
  assert.equal(typeof data['commit'], 'string', `${name}: commit`);
  assert.ok(Array.isArray(data['loadAverageAtStart']) && (data['loadAverageAtStart'] as unknown[]).length === 3, `${name}: load average`);
  assert.equal(typeof data['markdown'], 'string', `${name}: summary`);
  assert.match(data['markdown'] as string, /Reproduce: `nice -n 10 npm run bench -- --only /, `${name}: how to reproduce`);
  return data;
}

test('failback, plan-100, cpu-per-mb, vault-api and vault-jobs --smoke print well-formed figures', { timeout: 600_000 }, async () => {
  const before = new Set(await readdir(tmpdir()));
  type R = Record<string, unknown>;
  const [fb, plan, cpu, api, jobs] = (await Promise.all(['failback', 'plan-100', 'cpu-per-mb', 'vault-api', 'vault-jobs'].map(bench))) as [R, R, R, R, R];

  for (const p of ['digests.seconds', 'digests.sentMiB', 'full.seconds', 'full.sentMiB', 'rsync.seconds', 'rsync.sentMiB', 'digestsVsRsyncTime', 'digestsVsFullTime', 'changedMiB']) isFig(at(fb, p), `failback.${p}`);
  // Differences only: the digest sync sends less than the full copy.
  assert.ok((at(fb, 'digests.sentMiB.median') as number) < (at(fb, 'full.sentMiB.median') as number), 'failback: the digest sync sent less than the full copy');
  assert.match(fb['markdown'] as string, /CBT/, 'failback: the CBT row (measured or marked as a gap)');

  for (const p of ['planSeconds', 'sumSlowestPerGroupSeconds', 'overheadSeconds', 'sumGroupSpansSeconds', 'overheadBeyondSpansSeconds', 'machineFailoverMedianSeconds']) isFig(at(plan, p), `plan-100.${p}`);
  assert.equal(plan['groups'], 5);
  assert.match(plan['markdown'] as string, /aim \(≤ 30 s\)/);

  for (const p of ['initialCpuMsPerMBSent', 'idleCpuPercent', 'deltaCpuMsPerMBChanged', 'deltaCpuMsPerMBSent', 'refSha256CpuMsPerMB', 'initialVsSha256']) isFig(at(cpu, p), `cpu-per-mb.${p}`);
  assert.ok((at(cpu, 'initialSentMB.median') as number) > 0, 'cpu-per-mb: the agent sent the first copy');

  for (const d of ['sqlite', 'postgres']) {
    for (const k of ['itemsPageP50Ms', 'itemsPageP99Ms', 'jobStartP50Ms', 'jobStartP99Ms']) isFig(at(api, `${d}.${k}`), `vault-api.${d}.${k}`);
    for (const k of ['jobsPerSecond1Server', 'jobsPerSecond2Servers', 'enqueuesPerSecond']) isFig(at(jobs, `${d}.${k}`), `vault-jobs.${d}.${k}`);
  }
  // Nothing left behind in the temp directory by the benches' own scratch trees.
  const left = (await readdir(tmpdir())).filter((n) => !before.has(n) && /^(rb-fb-|rb-plan100-|rb-cpu-|rb-vjobs-)/.test(n));
  assert.deepEqual(left, [], 'scratch directories left behind');
});

test('datapath and nbd --smoke print every figure as median/min/max/n with their references', { timeout: 300_000 }, async () => {
  const before = new Set(await readdir(tmpdir()));
  const [dp, nbd] = await Promise.all(['datapath', 'nbd'].map(bench)) as [Record<string, unknown>, Record<string, unknown>];
  for (const p of ['digest.catMiBps', 'digest.64KiB.MiBps', 'allocation.mapMs', 'allocation.readToFindZerosMs', 'checksum.blake3MiBps', 'checksum.sha256MiBps', 'frames.noCompression.encodeMiBps', 'frames.zstd3.wireRatio', 'apply.plain.MiBps', 'apply.luks.MiBps', 'view.1GiBMs', 'view.1GiBLuksMs', 'keyRotation.1GiB3ImagesMs']) isFig(dp[p], `datapath.${p}`);
  // Mixed blocks are a third zeros and a third text: zstd must shrink them.
  assert.ok((dp['frames.zstd3.wireRatio'] as Fig).median < 0.9, 'datapath: zstd shrinks mixed data');
  for (const p of ['nbdClient.MiBps', 'nbdcopy.MiBps', 'cat.MiBps', 'nbdClient.write.MiBps', 'nbdcopy.write.MiBps']) isFig(nbd[p], `nbd.${p}`);
  assert.match(nbd['markdown'] as string, /nbdcopy/);
  const left = (await readdir(tmpdir())).filter((n) => !before.has(n) && /^rebound-bench-(datapath|nbd)-/.test(n));
  assert.deepEqual(left, [], 'scratch directories left behind');
});
