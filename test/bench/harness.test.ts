// The replication bench runs end to end in its smoke size (tiny images, windows of seconds) and
// prints the one JSON document the bench harness (scripts/bench.ts) reads: every figure present
// and well-formed, the RPO plot written, the summary for BENCHMARKS.md rendered. Its numbers
// are not judged here (no timing asserts); it proves the benchmark still runs against the
// current replication path, so BENCHMARKS.md can be regenerated.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');
let out: string;
let child: ChildProcess | undefined;

before(async () => {
  out = await mkdtemp(join(tmpdir(), 'rb-bench-test-'));
});

after(async () => {
  // A failed or timed-out test must not leave the bench running: SIGTERM makes it stop its
  // writers and vaults and remove its scratch directory.
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((res) => child!.once('exit', res));
    child.kill('SIGTERM');
    await exited;
  }
  await rm(out, { recursive: true, force: true });
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

test('bench/replication.ts --smoke prints every figure as one JSON line and draws the RPO plot', { timeout: 300_000 }, async () => {
  // nice(1) execs the bench, so the child's pid is the bench's own (SIGTERM reaches it).
  const bench = spawn('nice', ['-n', '10', process.execPath, join(REPO, 'bench', 'replication.ts'), '--smoke', '--out', out], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  child = bench;
  let stdout = '';
  let stderr = '';
  bench.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  bench.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((res) => bench.once('exit', (c) => res(c)));
  assert.equal(code, 0, `the bench failed:\n${stderr.slice(-4000)}`);
  const last = stdout.trim().split('\n').pop() ?? '';
  const data = JSON.parse(last) as Record<string, unknown>;

  assert.equal(data['mode'], 'smoke');
  assert.equal(typeof data['commit'], 'string');
  // 1. initial replication and its references.
  for (const p of ['initial.cat.imageMiBps', 'initial.qemuImgConvert.imageMiBps', 'initial.reboundPlain.imageMiBps', 'initial.reboundPlain.vsCat', 'initial.reboundPlain.vsConvert', 'initial.reboundDefaults.imageMiBps', 'initial.reboundDefaults.vsCat', 'initial.reboundPlain.phases.sendSeconds']) isFig(at(data, p), p);
  // 2. wire bytes of deltas, both write sizes, with and without compression.
  for (const size of ['64KiB', '4KiB']) {
    for (const k of ['wireRatioNoCompression', 'wireRatioZstd', 'agentPayloadRatio', 'digestBlockBound']) isFig(at(data, `delta.${size}.${k}`), `delta.${size}.${k}`);
    // Changed blocks cross the wire at least once: a ratio below 1 would mean bytes went uncounted.
    assert.ok((at(data, `delta.${size}.wireRatioNoCompression.median`) as number) >= 1, `delta.${size}: fewer wire bytes than changed bytes`);
  }
  // 3. RPO for every configuration, and the plot.
  for (const key of ['10MBps-1s', '50MBps-1s', '10MBps-30s', '50MBps-30s', '10MBps-1s-plain', '50MBps-1s-plain']) {
    for (const k of ['medianSeconds', 'p95Seconds', 'maxSeconds', 'achievedWriteMBps']) isFig(at(data, `rpo.${key}.${k}`), `rpo.${key}.${k}`);
  }
  isFig(at(data, 'rpo.pointCostSeconds.plain'), 'rpo.pointCostSeconds.plain');
  isFig(at(data, 'rpo.pointCostSeconds.luks'), 'rpo.pointCostSeconds.luks');
  const svg = await readFile(join(out, 'rpo.smoke.svg'), 'utf8');
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 6, 'one line per RPO configuration');
  const samples = JSON.parse(await readFile(join(out, 'rpo.smoke-samples.json'), 'utf8')) as { key: string; samples: [number, number][] }[];
  assert.equal(samples.length, 6);
  for (const s of samples) assert.ok(s.samples.length >= 2, `${s.key}: ${s.samples.length} samples`);
  // 4. replica store after the simulated day.
  for (const k of ['ratio', 'storeMiB', 'baseMiB', 'windowChangedMiB', 'layersRetained']) isFig(at(data, `store.${k}`), `store.${k}`);
  // 5. resync by digests vs rsync.
  for (const k of ['digest.seconds', 'digest.movedMiB', 'rsync.seconds', 'rsync.movedMiB', 'timeRatio', 'movedRatio']) isFig(at(data, `resync.${k}`), `resync.${k}`);
  // The summary the harness puts on BENCHMARKS.md: one row per numbered figure, the plot linked.
  const md = data['markdown'];
  assert.equal(typeof md, 'string');
  for (const n of [1, 2, 3, 4, 5]) assert.ok((md as string).includes(`| ${n} |`), `summary row ${n} missing`);
  assert.ok((md as string).includes('rpo.smoke.svg'), 'the RPO plot is not linked');
  // Nothing left behind: the bench removes its scratch directory.
  const scratch = /scratch directory (\S+)/.exec(stderr)?.[1];
  assert.ok(scratch, 'the bench did not name its scratch directory');
  assert.ok(!(await readdir(tmpdir())).includes(basename(scratch)), `${scratch} was left behind`);
});
