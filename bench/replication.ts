// Replication bench (issue 4 "Measure"): Rebound's real replication path — the embedded vault,
// agent, process server and master target composed as `rebound serve` composes them
// (src/server/data-roles.ts, mutual TLS between the roles, REST API on loopback), a physical
// source machine made of a raw image file, the recovery site on the same filesystem — measured
// side by side with references:
//   1. initial replication of a half-zero image vs `cat` (cold) and `qemu-img convert`;
//   2. wire bytes / changed bytes of deltas (random 64 KiB and 4 KiB writes), with and without
//      compression, counted by byte-counting TCP relays on both data links;
//   3. RPO under steady paced writes (fio) of 10 and 50 MB/s with 1 s and 30 s policies,
//      sampled every 0.5 s (plot: OUT/rpo.svg);
//   4. replica-store bytes after a "simulated day" of cycles with a retention window;
//   5. resync by block digests (src/datapath/digest.ts) vs `rsync --inplace --no-whole-file`.
// Prints one JSON document (the harness renders its `markdown` and tabulates the rest). It
// measures; it asserts only that each method produced a correct copy.
// Usage: node bench/replication.ts [--quick | --smoke] [--out DIR] [--parts initial,delta,rpo,store,resync] [--rpo KEY,…] [--runs N] [--resume] [--keep]
//   --quick: one run of smaller sizes; --smoke: tiny sizes and windows, for the CI shape test
//   (its numbers mean nothing); --resume: reuse parts saved in OUT/replication.partial.MODE.json by
//   an interrupted run of the same commit (or REBOUND_BENCH_RESUME=1 through the harness); --keep: leave the scratch directory. Run it niced.
import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomFillSync, randomInt, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { buildApp } from '../src/api/app.ts';
import { createToken } from '../src/api/auth.ts';
import { mapImage } from '../src/datapath/allocation.ts';
import { diffDigests, digestFile } from '../src/datapath/digest.ts';
import { startFaultProxy } from '../src/faults/tcp-proxy.ts';
import type { FaultProxy } from '../src/faults/tcp-proxy.ts';
import { JobEngine } from '../src/jobs/engine.ts';
import { loadEmbeddedTls } from '../src/pki/embedded.ts';
import { PHYSICAL_DIGEST_BLOCK } from '../src/providers/physical/physical-provider.ts';
import { readSums } from '../src/replica/block-sums.ts';
import { loadManifest } from '../src/replica/manifest.ts';
import { deriveAtRestKey, ReplicaDisk } from '../src/replica/replica-disk.ts';
import { parseAddress } from '../src/replication/wire.ts';
import { startDataRoles } from '../src/server/data-roles.ts';
import { openStore } from '../src/store/open.ts';
import { loadVaultKeys } from '../src/vault/keys.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '..');
const KiB = 1024;
const MiB = 1024 * KiB;
const args = process.argv.slice(2);
const argValue = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
type Mode = 'full' | 'quick' | 'smoke';
const mode: Mode = args.includes('--smoke') ? 'smoke' : args.includes('--quick') ? 'quick' : 'full';
const outDir = resolve(argValue('--out') ?? join(REPO, 'bench', 'out'));
const PARTS = ['initial', 'delta', 'rpo', 'store', 'resync'] as const;
type Part = (typeof PARTS)[number];
// REBOUND_BENCH_PARTS does what --parts does, through the harness (npm run bench passes no arguments).
const parts = new Set<Part>(((argValue('--parts') ?? process.env['REBOUND_BENCH_PARTS'])?.split(',') ?? [...PARTS]).map((p) => {
  if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--parts: '${p}' is not one of ${PARTS.join(', ')}.`);
  return p as Part;
}));

interface Sizes {
  runs: number;
  initialMiB: number;
  deltaDiskMiB: number;
  /** Policy frequency (s) of the delta runs: long enough that writes land between digest passes. */
  deltaFrequency: number;
  delta64: number;
  delta4: number;
  rpoDiskMiB: number;
  /** Sampling window (s) by policy frequency (s). */
  rpoWindow: Record<1 | 30, number>;
  /** Seconds of writes before sampling starts, by policy frequency (s). */
  rpoWarmup: Record<1 | 30, number>;
  /** Wait for a delta point after the first copy before writing (smoke: no, to stay short). */
  rpoSettle: boolean;
  dayDiskMiB: number;
  dayCycles: number;
  dayRetentionCycles: number;
  dayRateBps: number;
  resyncMiB: number;
  /** Encryption at rest of the RPO and store runs (smoke: none, to stay short). */
  atRest: 'aes-256-gcm' | 'none';
}
const SIZES: Record<Mode, Sizes> = {
  full: { runs: 3, initialMiB: 4096, deltaDiskMiB: 512, deltaFrequency: 5, delta64: 512, delta4: 2048, rpoDiskMiB: 256, rpoWindow: { 1: 90, 30: 180 }, rpoWarmup: { 1: 10, 30: 30 }, rpoSettle: true, dayDiskMiB: 256, dayCycles: 300, dayRetentionCycles: 60, dayRateBps: 1_000_000, resyncMiB: 2048, atRest: 'aes-256-gcm' },
  quick: { runs: 1, initialMiB: 512, deltaDiskMiB: 256, deltaFrequency: 5, delta64: 256, delta4: 512, rpoDiskMiB: 256, rpoWindow: { 1: 20, 30: 45 }, rpoWarmup: { 1: 5, 30: 0 }, rpoSettle: true, dayDiskMiB: 128, dayCycles: 30, dayRetentionCycles: 6, dayRateBps: 1_000_000, resyncMiB: 256, atRest: 'aes-256-gcm' },
  smoke: { runs: 1, initialMiB: 16, deltaDiskMiB: 16, deltaFrequency: 2, delta64: 16, delta4: 32, rpoDiskMiB: 16, rpoWindow: { 1: 2, 30: 2 }, rpoWarmup: { 1: 0, 30: 0 }, rpoSettle: false, dayDiskMiB: 16, dayCycles: 4, dayRetentionCycles: 2, dayRateBps: 500_000, resyncMiB: 16, atRest: 'none' },
};
/** --runs N: N runs of each figure instead of the mode's (quick mode's sizes with a spread). */
const S: Sizes = ((runs) => {
  if (runs === undefined) return SIZES[mode];
  const n = Number(runs);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--runs: '${runs}' is not a whole number of at least 1.`);
  return { ...SIZES[mode], runs: n };
})(argValue('--runs'));
interface RpoConfig { key: string; rateBps: number; frequency: 1 | 30; encryption: 'aes-256-gcm' | 'none'; label: string }
/** The default policy's transport (zstd, AES-256 at rest) at both rates and frequencies, and the
 * 1 s policy without encryption at rest (each point's LUKS overlay costs seconds to create). */
const ALL_RPO_CONFIGS: RpoConfig[] = [
  ...([[10, 1], [50, 1], [10, 30], [50, 30]] as const).map(([mb, fq]) => ({ key: `${mb}MBps-${fq}s`, rateBps: mb * 1e6, frequency: fq, encryption: S.atRest, label: `${mb} MB/s, ${fq} s policy` })),
  ...([10, 50] as const).map((mb) => ({ key: `${mb}MBps-1s-plain`, rateBps: mb * 1e6, frequency: 1 as const, encryption: 'none' as const, label: `${mb} MB/s, 1 s, no LUKS` })),
];
/** --rpo KEY,KEY: only these RPO configurations (to look into one; the report wants them all). */
const RPO_CONFIGS = ((only) => {
  if (only === undefined) return ALL_RPO_CONFIGS;
  const keys = only.split(',');
  for (const k of keys) if (!ALL_RPO_CONFIGS.some((c) => c.key === k)) throw new Error(`--rpo: '${k}' is not one of ${ALL_RPO_CONFIGS.map((c) => c.key).join(', ')}.`);
  return ALL_RPO_CONFIGS.filter((c) => keys.includes(c.key));
})(argValue('--rpo'));

// ---------------------------------------------------------------- small helpers

const started = performance.now();
/** What to stop if the bench is interrupted: running writers and vaults. */
const active = new Set<() => Promise<void>>();
const log = (msg: string): void => { process.stderr.write(`[replication ${((performance.now() - started) / 1000).toFixed(0)} s] ${msg}\n`); };

interface Fig { median: number; min: number; max: number; n: number }
const round = (v: number, digits = 3): number => Number(v.toPrecision(digits));
function fig(values: number[], digits = 3): Fig {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { median: round(mid, digits), min: round(s[0] ?? NaN, digits), max: round(s.at(-1) ?? NaN, digits), n: s.length };
}
/** Nearest-rank percentile of sorted values. */
const pct = (sorted: number[], p: number): number => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;

/** Writes the file's dirty pages out, then drops the file from the page cache (posix_fadvise
 * DONTNEED through GNU dd's iflag=nocache), so the next read comes from the disk. Per file: the
 * rest of the shared machine keeps its cache. */
async function evict(path: string): Promise<void> {
  await run('sync', [path]);
  await run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - t) / 1000, value };
}

/** Removes a tree, retrying while files still appear in it: a closed vault's master target may
 * still be finishing (abandoning) a transfer it was receiving, and rm would meet ENOTEMPTY. */
async function rmrf(path: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await rm(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
      return;
    } catch (err) {
      if (i >= 10) throw err;
      await sleep(1000);
    }
  }
}

/** Allocated bytes of every file under `dir` (what the filesystem really holds). */
async function duBytes(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const st = await stat(join(e.parentPath, e.name));
    bytes += st.blocks * 512;
    files++;
  }
  return { bytes, files };
}

async function allocatedBytes(path: string): Promise<number> {
  return (await mapImage(path)).filter((e) => e.data && !e.zero).reduce((n, e) => n + e.length, 0);
}

// ---------------------------------------------------------------- disk content

/** 1 MiB of log-like text: compressible like real data, not trivially. */
const TEXT = (() => {
  const lines: string[] = [];
  let n = 0;
  while (n < 2 * MiB) {
    const l = `2026-11-23T10:${String(randomInt(60)).padStart(2, '0')}:${String(randomInt(60)).padStart(2, '0')}Z svc=orders id=${randomInt(1e9)} user=${randomInt(5000)} status=${randomInt(3) === 0 ? 'retry' : 'ok'} latency_ms=${randomInt(900)}\n`;
    lines.push(l);
    n += l.length;
  }
  return Buffer.from(lines.join(''));
})();

/** Fills `buf` like a disk of mixed content: each 4 KiB (or smaller) piece is half random
 * bytes and half log text from a random place. zstd makes it about 0.55 of its size. */
function fillMixed(buf: Buffer): Buffer {
  const piece = Math.min(4 * KiB, buf.length);
  for (let at = 0; at < buf.length; at += piece) {
    const half = piece / 2;
    randomFillSync(buf, at, half);
    const from = randomInt(TEXT.length - half);
    TEXT.copy(buf, at + half, from, from + half);
  }
  return buf;
}

/** A raw image of `mib` MiB: fully written with mixed content, or (halfZero) data and holes
 * alternating in chunks of 1/8 of the image, at most 16 MiB. */
async function makeImage(path: string, mib: number, halfZero = false): Promise<void> {
  const size = mib * MiB;
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    const chunk = halfZero ? Math.min(16 * MiB, size / 8) : 8 * MiB;
    const buf = Buffer.alloc(Math.min(chunk, 8 * MiB));
    for (let c = 0; c * chunk < size; c++) {
      if (halfZero && c % 2 === 1) continue;
      for (let at = 0; at < chunk; at += buf.length) await fh.write(fillMixed(buf), 0, buf.length, c * chunk + at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------- a vault with the embedded roles

interface Vault {
  url: string;
  dataDir: string;
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** rebound_replication_bytes from /metrics (agent_sent, process_server_out, …). */
  counters(): Promise<Record<string, number>>;
  /** Byte-counting relays on the data links (agent → process server, process server → master
   * target), when asked for. */
  wire?: { agentToPs: FaultProxy; psToMt: FaultProxy };
  close(): Promise<void>;
}

/** The embedded mode as src/server/serve.ts composes it: store, job engine, vault keys, the
 * roles' TLS material from the vault CA, the data roles, the REST API on a loopback port. */
async function startVault(dataDir: string, opts: { wire?: boolean } = {}): Promise<Vault> {
  await mkdir(dataDir, { recursive: true });
  const logger = pino({ level: process.env['REBOUND_LOG_LEVEL'] ?? 'warn' }, pino.destination(2));
  const store = await openStore({ dataDir });
  const jobs = new JobEngine({ store, logger: logger.child({ role: 'jobs' }) });
  const keys = await loadVaultKeys(store);
  const { material } = await loadEmbeddedTls(store, keys.wrap);
  const roles = await startDataRoles({ store, jobs, logger, dataDir, keys, material });
  const closers: (() => Promise<void>)[] = [async () => { await roles.close(); await jobs.stop(); await store.close(); }];
  try {
    let wire: Vault['wire'];
    if (opts.wire) {
      // Each data connection goes through a relay that counts the bytes both ways (TLS records,
      // frame headers, acknowledgements: what a WAN link would carry). The roles' advertised
      // addresses point at the relays; everything else is unchanged.
      const ps = roles.processServer!;
      const mt = roles.masterTarget!;
      const agentToPs = await startFaultProxy({ target: parseAddress(ps.address) });
      const psToMt = await startFaultProxy({ target: parseAddress(mt.address) });
      closers.unshift(() => agentToPs.close(), () => psToMt.close());
      Object.defineProperty(ps, 'address', { get: () => `127.0.0.1:${agentToPs.port}` });
      Object.defineProperty(mt, 'address', { get: () => `127.0.0.1:${psToMt.port}` });
      wire = { agentToPs, psToMt };
    }
    const app = await buildApp({ store, jobs, logger, version: 'bench', actions: roles.actions, catalogue: roles.catalogue, dataStats: () => roles.stats() });
    closers.unshift(() => app.close());
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { token } = await createToken(store, 'bench', 'admin');
    jobs.start();
    const addr = app.server.address();
    const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${url}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
      return JSON.parse(text) as T;
    };
    const counters = async (): Promise<Record<string, number>> => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const out: Record<string, number> = {};
      for (const m of text.matchAll(/^rebound_replication_bytes\{counter="([a-z_]+)"\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm)) out[m[1]!] = Number(m[2]);
      return out;
    };
    let closed = false;
    const self: Vault = {
      url,
      dataDir,
      api,
      counters,
      ...(wire ? { wire } : {}),
      async close() {
        if (closed) return;
        closed = true;
        active.delete(self.close);
        for (const c of closers) await c().catch((err: unknown) => log(`closing the vault: ${(err as Error).message}`));
      },
    };
    active.add(self.close);
    return self;
  } catch (err) {
    for (const c of closers) await c().catch(() => undefined);
    throw err;
  }
}

interface ItemLike { state: string; lastPointAt: number | null; details: { replication?: { bytesTotal?: number; bytesDone?: number; phase?: string } } }

interface MachineSetup {
  name: string;
  disk: string;
  srcRoot: string;
  dstRoot: string;
  frequency: string;
  retention: string;
  compression: 'zstd' | 'none';
  encryption: 'aes-256-gcm' | 'none';
}

/** Sites, policy, pairing and machine through the REST API (names unique per vault). */
async function defineMachine(v: Vault, m: MachineSetup): Promise<void> {
  await v.api('POST', '/sites', { name: `src-${m.name}`, provider: 'physical', root: m.srcRoot });
  await v.api('POST', '/sites', { name: `dr-${m.name}`, provider: 'qemu', root: m.dstRoot });
  await v.api('POST', '/policies', { name: `pol-${m.name}`, frequency: m.frequency, retention: m.retention, appConsistent: 'off', compression: m.compression, encryption: m.encryption });
  await v.api('POST', '/pairings', { primary: `src-${m.name}`, recovery: `dr-${m.name}`, policy: `pol-${m.name}` });
  await v.api('POST', '/machines', { name: m.name, site: `src-${m.name}`, disks: [m.disk] });
}

const item = (v: Vault, name: string): Promise<ItemLike> => v.api<ItemLike>('GET', `/items/${name}`);

interface ProtectTiming { seconds: number; planSeconds: number | null; sendSeconds: number | null; tailSeconds: number | null; bytesTotal: number | null }

/** Enables replication and times it from the request to the first recovery point in the vault,
 * with the phases the agent reports: planned (point taken, ranges known), every byte
 * acknowledged by the process server, point recorded by the master target. */
async function protectTimed(v: Vault, name: string, timeoutMs: number): Promise<ProtectTiming> {
  const t0 = performance.now();
  const { job } = await v.api<{ job: { id: string } }>('POST', `/items/${name}/protect`, {});
  let planAt: number | null = null;
  let sentAt: number | null = null;
  let bytesTotal: number | null = null;
  for (;;) {
    const it = await item(v, name);
    const now = performance.now();
    const r = it.details.replication;
    if (planAt === null && typeof r?.bytesTotal === 'number') { planAt = now; bytesTotal = r.bytesTotal; }
    if (sentAt === null && r?.phase === 'initial-sent') sentAt = now;
    if (it.lastPointAt !== null) {
      if (sentAt === null) sentAt = now;
      const s = (x: number | null, y: number | null): number | null => (x === null || y === null ? null : round((y - x) / 1000));
      const timing = { seconds: round((now - t0) / 1000), planSeconds: s(t0, planAt), sendSeconds: s(planAt, sentAt), tailSeconds: s(sentAt, now), bytesTotal };
      log(`${name}: first point after ${timing.seconds} s (plan ${timing.planSeconds} s, send ${timing.sendSeconds} s, forward + apply ${timing.tailSeconds} s; ${((bytesTotal ?? 0) / MiB).toFixed(0)} MiB)`);
      await waitJob(v, job.id, timeoutMs);
      return timing;
    }
    if (now - t0 > timeoutMs) throw new Error(`${name}: no first recovery point after ${timeoutMs} ms`);
    await sleep(100);
  }
}

async function waitJob(v: Vault, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await v.api<{ state: string; error?: unknown }>('GET', `/jobs/${id}`);
    if (j.state === 'succeeded') return;
    if (j.state === 'failed' || j.state === 'cancelled') throw new Error(`job ${id} ${j.state}: ${JSON.stringify(j.error)}`);
    if (Date.now() > deadline) throw new Error(`job ${id} still ${j.state} after ${timeoutMs} ms`);
    await sleep(200);
  }
}

/** Waits for a recovery point taken after `after` (epoch ms); returns its time. */
async function pointAfter(v: Vault, name: string, after: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const it = await item(v, name);
    if (it.lastPointAt !== null && it.lastPointAt > after) return it.lastPointAt;
    if (Date.now() > deadline) throw new Error(`${name}: no recovery point taken after ${new Date(after).toISOString()} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Stops a vault and removes the physical provider's tracking state it left under the source
 * root (digest maps), so the next run of the same image starts clean. */
async function closeVault(v: Vault, srcRoot: string, name: string): Promise<void> {
  await v.close();
  await rmrf(join(srcRoot, '.rebound', 'physical', name));
}

// ---------------------------------------------------------------- fio as the paced writer

interface Writer { done: Promise<{ writtenBytes: number; seconds: number }>; stop(): void }

/** fio writing random `bs` blocks over the whole image at `rateBps` bytes/s (buffered, like an
 * application: the page cache takes the writes; half of each buffer compressible). */
function startWriter(path: string, sizeBytes: number, rateBps: number, seconds: number, bs = '64k'): Writer {
  const p = spawn('fio', [
    '--name=rebound-bench', `--filename=${path}`, '--rw=randwrite', `--bs=${bs}`, '--ioengine=psync', `--size=${sizeBytes}`,
    `--rate=${rateBps}`, '--time_based', `--runtime=${Math.max(1, Math.ceil(seconds))}`, '--randrepeat=0', '--norandommap',
    '--buffer_compress_percentage=50', '--refill_buffers', '--allow_file_create=0', '--fallocate=none', '--output-format=json',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<{ writtenBytes: number; seconds: number }>((res, rej) => {
    p.once('error', (e) => rej(new Error(`fio did not start (${e.message}); install the fio package.`)));
    // 'close', not 'exit': 'exit' can come before fio's stdout is all read (an empty JSON then).
    p.once('close', (code, signal) => {
      if (code !== 0) return rej(new Error(`fio exited with ${code ?? signal}: ${err.slice(-2000)}`));
      try {
        const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { write: { io_bytes: number; runtime: number } }[] }).jobs[0]!;
        res({ writtenBytes: job.write.io_bytes, seconds: job.write.runtime / 1000 });
      } catch (e) {
        rej(new Error(`fio's output is not the JSON expected: ${(e as Error).message}: ${out.slice(0, 500)}`));
      }
    });
  });
  const stop = (): void => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM'); };
  const interrupt = async (): Promise<void> => { stop(); await done.catch(() => undefined); };
  active.add(interrupt);
  void done.catch(() => undefined).finally(() => active.delete(interrupt));
  return { done, stop };
}

// ---------------------------------------------------------------- 1. initial replication

async function benchInitial(base: string): Promise<Record<string, unknown>> {
  const srcRoot = join(base, 'is');
  await mkdir(srcRoot, { recursive: true });
  const img = join(srcRoot, 'disk.raw');
  log(`initial: writing a ${S.initialMiB} MiB image, half zeros`);
  await makeImage(img, S.initialMiB, true);
  const size = S.initialMiB * MiB;
  const data = await allocatedBytes(img);
  const t: Record<'cat' | 'convert' | 'plain' | 'defaults', number[]> = { cat: [], convert: [], plain: [], defaults: [] };
  const phases: Record<'plain' | 'defaults', ProtectTiming[]> = { plain: [], defaults: [] };
  for (let r = 0; r < S.runs; r++) {
    // cat: the read limit of this image from a cold cache.
    await evict(img);
    t.cat.push((await timed(() => run('sh', ['-c', `cat '${img}' > /dev/null`]))).seconds);
    // qemu-img convert to a qcow2 on the same filesystem as the replica, made durable (its
    // default cache mode for the target is unsafe, so the fsync is timed explicitly).
    const convDir = join(base, `ic${r}`);
    await mkdir(convDir);
    await evict(img);
    const target = join(convDir, 'copy.qcow2');
    t.convert.push((await timed(async () => {
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img, target]);
      await run('sync', [target]);
    })).seconds);
    await rmrf(convDir);
    for (const variant of ['plain', 'defaults'] as const) {
      const name = `init${r}${variant}`;
      const dstRoot = join(base, `id${r}${variant[0]}`);
      const vaultDir = join(base, `iv${r}${variant[0]}`);
      await mkdir(dstRoot);
      const v = await startVault(vaultDir);
      try {
        await defineMachine(v, { name, disk: img, srcRoot, dstRoot, frequency: '1h', retention: '1h', ...(variant === 'plain' ? { compression: 'none', encryption: 'none' } : { compression: 'zstd', encryption: 'aes-256-gcm' }) });
        await evict(img);
        log(`initial: run ${r + 1}/${S.runs}, ${variant} policy`);
        const p = await protectTimed(v, name, 3600_000);
        t[variant].push(p.seconds);
        phases[variant].push(p);
      } finally {
        await closeVault(v, srcRoot, name);
        await rmrf(vaultDir);
        await rmrf(dstRoot);
      }
    }
  }
  await rmrf(srcRoot);
  const rate = (secs: number[], bytes: number): Fig => fig(secs.map((s) => bytes / MiB / s));
  const ratio = (a: number[], b: number[]): Fig => fig(a.map((x, i) => x / b[i]!));
  const phase = (ps: ProtectTiming[], k: 'planSeconds' | 'sendSeconds' | 'tailSeconds'): Fig | null => (ps.every((p) => p[k] !== null) ? fig(ps.map((p) => p[k]!)) : null);
  const rebound = (k: 'plain' | 'defaults') => ({
    seconds: fig(t[k]),
    imageMiBps: rate(t[k], size),
    dataMiBps: rate(t[k], data),
    vsCat: ratio(t.cat, t[k]),
    vsConvert: ratio(t.convert, t[k]),
    phases: { planSeconds: phase(phases[k], 'planSeconds'), sendSeconds: phase(phases[k], 'sendSeconds'), tailSeconds: phase(phases[k], 'tailSeconds') },
  });
  return {
    imageMiB: S.initialMiB,
    dataMiB: round(data / MiB),
    cache: 'source image evicted from the page cache (fsync + posix_fadvise DONTNEED) before every method and run',
    cat: { seconds: fig(t.cat), imageMiBps: rate(t.cat, size) },
    qemuImgConvert: { seconds: fig(t.convert), imageMiBps: rate(t.convert, size), note: 'qemu-img convert -O qcow2 + fsync of the target' },
    reboundPlain: { ...rebound('plain'), policy: 'compression none, encryption at rest none' },
    reboundDefaults: { ...rebound('defaults'), policy: 'defaults: zstd on the wire, AES-256 (LUKS) at rest' },
    aim: 0.8,
  };
}

// ---------------------------------------------------------------- 2. wire bytes of deltas

interface DeltaFigure { changedBytes: number; agentPayload: number; psToMtWire: number; agentToPsWire: number; bound256: number }

/** Random distinct aligned writes of `bs` bytes, fsynced. Returns changed bytes and the distinct
 * digest blocks (PHYSICAL_DIGEST_BLOCK) they touch. */
async function randomWrites(path: string, sizeBytes: number, bs: number, n: number): Promise<{ changed: number; blocks256: number }> {
  const slots = new Set<number>();
  while (slots.size < n) slots.add(randomInt(sizeBytes / bs));
  const fh = await open(path, 'r+');
  try {
    const buf = Buffer.alloc(bs);
    for (const s of slots) await fh.write(fillMixed(buf), 0, bs, s * bs);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const blocks = new Set([...slots].map((s) => Math.floor((s * bs) / PHYSICAL_DIGEST_BLOCK)));
  return { changed: n * bs, blocks256: blocks.size };
}

async function benchDelta(base: string): Promise<Record<string, unknown>> {
  const sizes = [{ key: '64KiB', bs: 64 * KiB, n: S.delta64 }, { key: '4KiB', bs: 4 * KiB, n: S.delta4 }];
  const res: Record<string, Record<'none' | 'zstd', DeltaFigure[]>> = {};
  for (const s of sizes) res[s.key] = { none: [], zstd: [] };
  const idle: number[] = [];
  for (let r = 0; r < S.runs; r++) {
    for (const compression of ['none', 'zstd'] as const) {
      const name = `delta${r}${compression}`;
      const srcRoot = join(base, `ds${r}${compression[0]}`);
      const dstRoot = join(base, `dd${r}${compression[0]}`);
      const vaultDir = join(base, `dv${r}${compression[0]}`);
      await mkdir(srcRoot);
      await mkdir(dstRoot);
      const img = join(srcRoot, 'disk.raw');
      await makeImage(img, S.deltaDiskMiB);
      const v = await startVault(vaultDir, { wire: true });
      try {
        // 5 s cycles: a point lands well before the next digest pass, so the writes made right
        // after it are all in the next point.
        await defineMachine(v, { name, disk: img, srcRoot, dstRoot, frequency: `${S.deltaFrequency}s`, retention: '1h', compression, encryption: 'none' });
        log(`delta: run ${r + 1}/${S.runs}, compression ${compression}: initial copy`);
        await protectTimed(v, name, 3600_000);
        const snap = async () => {
          const c = await v.counters();
          return { agent: c['agent_sent'] ?? 0, a2p: v.wire!.agentToPs.stats().forwarded['to-target'], p2m: v.wire!.psToMt.stats().forwarded['to-target'] };
        };
        // One idle cycle: what a point without changes costs on the wire (TLS handshake, preamble, end frame).
        {
          const last = (await item(v, name)).lastPointAt ?? 0;
          const at = await pointAfter(v, name, last, 600_000);
          const before = await snap();
          await pointAfter(v, name, at, 600_000);
          idle.push((await snap()).p2m - before.p2m);
        }
        for (const s of sizes) {
          const last = (await item(v, name)).lastPointAt ?? 0;
          await pointAfter(v, name, last, 600_000); // a fresh point: the next digest pass is a cycle away
          const before = await snap();
          const w = await randomWrites(img, S.deltaDiskMiB * MiB, s.bs, s.n);
          const wroteAt = Date.now();
          await pointAfter(v, name, wroteAt, 1800_000);
          const after = await snap();
          res[s.key]![compression].push({ changedBytes: w.changed, agentPayload: after.agent - before.agent, agentToPsWire: after.a2p - before.a2p, psToMtWire: after.p2m - before.p2m, bound256: (w.blocks256 * PHYSICAL_DIGEST_BLOCK) / w.changed });
          log(`delta: ${s.key} × ${s.n}, ${compression}: changed ${(w.changed / MiB).toFixed(1)} MiB, process server → master target ${((after.p2m - before.p2m) / MiB).toFixed(1)} MiB`);
        }
      } finally {
        await closeVault(v, srcRoot, name);
        for (const d of [srcRoot, dstRoot, vaultDir]) await rmrf(d);
      }
    }
  }
  const out: Record<string, unknown> = {};
  for (const s of sizes) {
    const f = res[s.key]!;
    out[s.key] = {
      writes: s.n,
      changedMiB: round(s.n * s.bs / MiB),
      wireRatioNoCompression: fig(f.none.map((x) => x.psToMtWire / x.changedBytes)),
      wireRatioZstd: fig(f.zstd.map((x) => x.psToMtWire / x.changedBytes)),
      zstdVsNone: fig(f.zstd.map((x, i) => x.psToMtWire / f.none[i]!.psToMtWire)),
      agentToPsWireRatio: fig([...f.none, ...f.zstd].map((x) => x.agentToPsWire / x.changedBytes)),
      agentPayloadRatio: fig([...f.none, ...f.zstd].map((x) => x.agentPayload / x.changedBytes)),
      digestBlockBound: fig([...f.none, ...f.zstd].map((x) => x.bound256)),
    };
  }
  return {
    ...out,
    idleCycleWireBytes: fig(idle),
    note: `wire = bytes through a counting relay on the process server → master target link (TLS, frame headers; data direction); changed = bytes the writes replaced; digestBlockBound = distinct digest blocks touched × the digest block (${PHYSICAL_DIGEST_BLOCK / 1024} KiB) / changed`,
    aim: 1.1,
  };
}

// ---------------------------------------------------------------- 3. RPO under steady writes

interface RpoRun { key: string; label: string; pipelineMiBps: number; rateBps: number; frequency: number; samples: [number, number][]; writtenMBps: number }

async function benchRpo(base: string): Promise<{ result: Record<string, unknown>; runs: RpoRun[] }> {
  const runs: RpoRun[] = [];
  for (let r = 0; r < S.runs; r++) {
    for (const c of RPO_CONFIGS) {
      const key = c.key;
      const name = `rpo${r}x${RPO_CONFIGS.indexOf(c)}`;
      const srcRoot = join(base, `rs${r}${RPO_CONFIGS.indexOf(c)}`);
      const dstRoot = join(base, `rd${r}${RPO_CONFIGS.indexOf(c)}`);
      const vaultDir = join(base, `rv${r}${RPO_CONFIGS.indexOf(c)}`);
      await mkdir(srcRoot);
      await mkdir(dstRoot);
      const img = join(srcRoot, 'disk.raw');
      await makeImage(img, S.rpoDiskMiB);
      const v = await startVault(vaultDir);
      let writer: Writer | undefined;
      try {
        await defineMachine(v, { name, disk: img, srcRoot, dstRoot, frequency: `${c.frequency}s`, retention: '1h', compression: 'zstd', encryption: c.encryption });
        log(`rpo: run ${r + 1}/${S.runs}, ${key}: initial copy`);
        const seed = await protectTimed(v, name, 3600_000);
        // From a settled start: one delta cycle after the first copy, so the copy's own age is
        // not counted as RPO under writes.
        if (S.rpoSettle) await pointAfter(v, name, Date.now(), 600_000);
        const warmup = S.rpoWarmup[c.frequency];
        const window = S.rpoWindow[c.frequency];
        writer = startWriter(img, S.rpoDiskMiB * MiB, c.rateBps, warmup + window + 1);
        const start = Date.now();
        await sleep(warmup * 1000);
        log(`rpo: ${key}: sampling ${window} s`);
        const samples: [number, number][] = [];
        const t0 = Date.now();
        for (let k = 0; Date.now() - t0 < window * 1000; k++) {
          const it = await item(v, name);
          const now = Date.now();
          samples.push([round((now - start) / 1000, 4), it.lastPointAt === null ? NaN : round((now - it.lastPointAt) / 1000, 4)]);
          const next = t0 + (k + 1) * 500 - Date.now();
          if (next > 0) await sleep(next);
        }
        const w = await writer.done;
        runs.push({ key, label: c.label, pipelineMiBps: round((seed.bytesTotal ?? 0) / MiB / seed.seconds), rateBps: c.rateBps, frequency: c.frequency, samples, writtenMBps: round(w.writtenBytes / 1e6 / w.seconds) });
      } finally {
        writer?.stop();
        await writer?.done.catch(() => undefined);
        await closeVault(v, srcRoot, name);
        for (const d of [srcRoot, dstRoot, vaultDir]) await rmrf(d);
      }
    }
  }
  const result: Record<string, unknown> = {};
  for (const c of RPO_CONFIGS) {
    const key = c.key;
    const mine = runs.filter((x) => x.key === key);
    const per = mine.map((x) => [...x.samples.map((s) => s[1])].sort((a, b) => a - b));
    result[key] = {
      policySeconds: c.frequency,
      writeMBps: c.rateBps / 1e6,
      atRest: c.encryption,
      achievedWriteMBps: fig(mine.map((x) => x.writtenMBps)),
      firstCopyMiBps: fig(mine.map((x) => x.pipelineMiBps)),
      medianSeconds: fig(per.map((s) => pct(s, 50))),
      p95Seconds: fig(per.map((s) => pct(s, 95))),
      maxSeconds: fig(per.map((s) => s.at(-1) ?? NaN)),
      samplesPerRun: Math.min(...mine.map((x) => x.samples.length)),
    };
  }
  return {
    result: { ...result, diskMiB: S.rpoDiskMiB, pointCostSeconds: await pointCost(base), note: 'age of the newest recovery point (now − its time) every 0.5 s while fio writes random 64 KiB blocks at the given rate; zstd on the wire; atRest per configuration; pointCostSeconds = fixed cost of one point at the replica store (overlay, qemu-nbd, one 64 KiB block, flush, fsync, commit)' },
    runs,
  };
}

/** The fixed cost of one recovery point at the replica store, plain and LUKS-encrypted: a new
 * overlay, qemu-nbd, one 64 KiB block written, flushed, fsynced and named (ReplicaDisk.applyPoint). */
async function pointCost(base: string): Promise<Record<'plain' | 'luks', Fig>> {
  const out: Partial<Record<'plain' | 'luks', Fig>> = {};
  for (const kind of ['plain', 'luks'] as const) {
    const dir = join(base, `pc${kind[0]}`);
    const disk = await ReplicaDisk.create(dir, { size: 64 * MiB, ...(kind === 'luks' ? { key: deriveAtRestKey(randomBytes(32), 'bench') } : {}) });
    const times: number[] = [];
    for (let i = 0; i < (mode === 'full' ? 5 : 2); i++) {
      const data = fillMixed(Buffer.alloc(64 * KiB));
      times.push((await timed(() => disk.applyPoint(randomUUID(), [{ offset: i * MiB, data }]))).seconds);
    }
    out[kind] = fig(times);
    await rmrf(dir);
  }
  return out as Record<'plain' | 'luks', Fig>;
}

/** A hand-written SVG of RPO over time: one line per configuration (first run). */
function rpoSvg(runs: RpoRun[]): string {
  const W = 900;
  const H = 440;
  const m = { l: 60, r: 200, t: 40, b: 50 };
  const first = RPO_CONFIGS.map((c) => runs.find((x) => x.key === c.key)).filter((x): x is RpoRun => x !== undefined);
  const maxT = Math.max(1, ...first.flatMap((x) => x.samples.map((s) => s[0])));
  const maxY = Math.max(1, ...first.flatMap((x) => x.samples.map((s) => s[1]).filter(Number.isFinite)));
  const niceStep = (v: number): number => { const p = 10 ** Math.floor(Math.log10(v / 5)); return [1, 2, 5, 10].map((k) => k * p).find((s) => v / s <= 6) ?? 10 * p; };
  const yStep = niceStep(maxY);
  const yTop = Math.ceil(maxY / yStep) * yStep;
  const xStep = niceStep(maxT);
  const X = (t: number): number => m.l + (t / maxT) * (W - m.l - m.r);
  const Y = (a: number): number => H - m.b - (a / yTop) * (H - m.t - m.b);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#17becf', '#ff7f0e'];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="15">RPO achieved (age of the newest recovery point) under steady writes — ${mode} mode</text>`,
  ];
  for (let y = 0; y <= yTop + 1e-9; y += yStep) parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${Y(y)}" y2="${Y(y)}" stroke="#ddd"/><text x="${m.l - 6}" y="${Y(y) + 4}" text-anchor="end">${round(y)}</text>`);
  for (let x = 0; x <= maxT + 1e-9; x += xStep) parts.push(`<line x1="${X(x)}" x2="${X(x)}" y1="${H - m.b}" y2="${H - m.b + 5}" stroke="#333"/><text x="${X(x)}" y="${H - m.b + 18}" text-anchor="middle">${round(x)}</text>`);
  parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/><line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">seconds since the writer started</text>`);
  parts.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">RPO (s)</text>`);
  first.forEach((x, i) => {
    const pts = x.samples.filter((s) => Number.isFinite(s[1])).map((s) => `${X(s[0]).toFixed(1)},${Y(s[1]).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${colors[i]}" stroke-width="1.6" points="${pts}"/>`);
    parts.push(`<line x1="${W - m.r + 15}" x2="${W - m.r + 40}" y1="${m.t + 10 + i * 22}" y2="${m.t + 10 + i * 22}" stroke="${colors[i]}" stroke-width="3"/><text x="${W - m.r + 46}" y="${m.t + 14 + i * 22}">${x.label}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

// ---------------------------------------------------------------- 4. replica store after a "simulated day"

async function benchStore(base: string): Promise<Record<string, unknown>> {
  const ratios: number[] = [];
  const detail: { storeMiB: number; baseMiB: number; windowMiB: number; layers: number; layersInWindow: number; cycleSeconds: number; files: number }[] = [];
  for (let r = 0; r < S.runs; r++) {
    const name = `day${r}`;
    const srcRoot = join(base, `ys${r}`);
    const dstRoot = join(base, `yd${r}`);
    const vaultDir = join(base, `yv${r}`);
    await mkdir(srcRoot);
    await mkdir(dstRoot);
    const img = join(srcRoot, 'disk.raw');
    await makeImage(img, S.dayDiskMiB);
    const v = await startVault(vaultDir);
    let writer: Writer | undefined;
    let itemId: string;
    let cycleSeconds: number;
    try {
      await defineMachine(v, { name, disk: img, srcRoot, dstRoot, frequency: '1s', retention: `${S.dayRetentionCycles}s`, compression: 'zstd', encryption: S.atRest });
      log(`store: run ${r + 1}/${S.runs}: initial copy, then ${S.dayCycles} cycles at ${S.dayRateBps / 1e6} MB/s of writes`);
      await protectTimed(v, name, 3600_000);
      itemId = (await v.api<{ id: string }>('GET', `/items/${name}`)).id;
      const points0 = (await v.counters())['master_target_points'] ?? 0;
      writer = startWriter(img, S.dayDiskMiB * MiB, S.dayRateBps, 24 * 3600);
      const t0 = Date.now();
      let lastLog = t0;
      for (;;) {
        const n = ((await v.counters())['master_target_points'] ?? 0) - points0;
        if (n >= S.dayCycles) { cycleSeconds = (Date.now() - t0) / 1000 / n; break; }
        if (Date.now() - lastLog > 60_000) { log(`store: ${n}/${S.dayCycles} cycles`); lastLog = Date.now(); }
        await sleep(250);
      }
    } finally {
      writer?.stop();
      await writer?.done.catch(() => undefined);
      await closeVault(v, srcRoot, name);
    }
    // The replica as the master target left it: every file it holds, and what the window's
    // points hold (each layer's block-checksum file lists the blocks it stores).
    const dir = join(dstRoot, 'replicas', itemId);
    const disks = (await readdir(dir)).filter((d) => !d.startsWith('.'));
    let storeBytes = 0;
    let files = 0;
    let windowBytes = 0;
    let layers = 0;
    let inWindow = 0;
    for (const d of disks) {
      const ddir = join(dir, d);
      const du = await duBytes(ddir);
      storeBytes += du.bytes;
      files += du.files;
      const m = await loadManifest(ddir);
      const newest = Date.parse(m.layers.at(-1)?.createdAt ?? m.base.createdAt ?? '0');
      layers += m.layers.length;
      for (const l of m.layers) {
        if (Date.parse(l.createdAt) < newest - S.dayRetentionCycles * 1000) continue;
        inWindow++;
        windowBytes += (await readSums(join(ddir, l.sums), m.blockSize)).size * m.blockSize;
      }
    }
    const baseBytes = await allocatedBytes(img);
    ratios.push(storeBytes / (baseBytes + windowBytes));
    detail.push({ storeMiB: round(storeBytes / MiB), baseMiB: round(baseBytes / MiB), windowMiB: round(windowBytes / MiB), layers, layersInWindow: inWindow, cycleSeconds: round(cycleSeconds), files });
    for (const d of [srcRoot, dstRoot, vaultDir]) await rmrf(d);
  }
  return {
    cycles: S.dayCycles,
    policy: `1 s frequency, ${S.dayRetentionCycles} s retention (${S.dayRetentionCycles} cycles at the policy's pace), zstd, encryption at rest ${S.atRest}`,
    diskMiB: S.dayDiskMiB,
    writeMBps: S.dayRateBps / 1e6,
    ratio: fig(ratios),
    storeMiB: fig(detail.map((d) => d.storeMiB)),
    baseMiB: fig(detail.map((d) => d.baseMiB)),
    windowChangedMiB: fig(detail.map((d) => d.windowMiB)),
    layersRetained: fig(detail.map((d) => d.layers)),
    layersInWindow: fig(detail.map((d) => d.layersInWindow)),
    files: fig(detail.map((d) => d.files)),
    cycleSeconds: fig(detail.map((d) => d.cycleSeconds)),
    note: 'store = allocated bytes of every file of the replica; base = allocated bytes of the source disk; window = blocks held by the layers of the retention window (their checksum files)',
  };
}

// ---------------------------------------------------------------- 5. resync by digests vs rsync

async function copyExtents(from: string, to: string, extents: { offset: number; length: number }[]): Promise<void> {
  const src = await open(from, 'r');
  const dst = await open(to, 'r+');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (const e of extents) {
      for (let at = e.offset; at < e.offset + e.length; at += buf.length) {
        const n = Math.min(buf.length, e.offset + e.length - at);
        const { bytesRead } = await src.read(buf, 0, n, at);
        await dst.write(buf, 0, bytesRead, at);
      }
    }
    await dst.sync();
  } finally {
    await src.close();
    await dst.close();
  }
}

async function benchResync(base: string): Promise<Record<string, unknown>> {
  const dir = join(base, 'rz');
  await mkdir(dir);
  const a = join(dir, 'current.raw');
  const old = join(dir, 'old.raw');
  const size = S.resyncMiB * MiB;
  log(`resync: two ${S.resyncMiB} MiB images differing by random 64 KiB and 4 KiB writes`);
  await makeImage(a, S.resyncMiB);
  await run('cp', ['--sparse=always', a, old]);
  // ~1 % of the disk in 64 KiB writes and as many 4 KiB writes: the source moved on.
  const n64 = Math.max(4, Math.round((size * 0.01) / (64 * KiB)));
  const w64 = await randomWrites(a, size, 64 * KiB, n64);
  const w4 = await randomWrites(a, size, 4 * KiB, n64);
  const changed = w64.changed + w4.changed;
  const digest: { s: number; moved: number }[] = [];
  const rsync: { s: number; moved: number; literal: number }[] = [];
  for (let r = 0; r < S.runs; r++) {
    for (const method of ['digest', 'rsync'] as const) {
      const b = join(dir, `target-${method}.raw`);
      await run('cp', ['--sparse=always', old, b]);
      await evict(a);
      await evict(b);
      if (method === 'digest') {
        // Both sides digested (at two sites this runs in parallel), the maps compared, the
        // differing blocks copied in place and made durable. Moved: those blocks + one map.
        const { seconds, value } = await timed(async () => {
          const [ma, mb] = await Promise.all([digestFile(a), digestFile(b)]);
          const diff = diffDigests(mb, ma);
          await copyExtents(a, b, diff);
          return diff.reduce((n, e) => n + e.length, 0) + mb.digests.length;
        });
        digest.push({ s: seconds, moved: value });
      } else {
        const { seconds, value } = await timed(async () => {
          // --ignore-times: a resync must compare content, not trust sizes and modification times.
          const { stdout } = await run('rsync', ['--inplace', '--no-whole-file', '--ignore-times', '--stats', a, b], { maxBuffer: 16 * MiB });
          await run('sync', [b]);
          return stdout;
        });
        const num = (label: string): number => Number((new RegExp(`${label}: ([\\d,]+)`).exec(value)?.[1] ?? 'NaN').replaceAll(',', ''));
        rsync.push({ s: seconds, moved: num('Total bytes sent') + num('Total bytes received'), literal: num('Literal data') });
      }
      // A resync that leaves a different disk would be measuring the wrong thing.
      await run('cmp', ['--silent', a, b]).catch(() => { throw new Error(`resync by ${method} left ${b} different from ${a}`); });
      await rm(b, { force: true });
    }
  }
  await rmrf(dir);
  return {
    imageMiB: S.resyncMiB,
    changedMiB: round(changed / MiB),
    writes: `${n64} × 64 KiB + ${n64} × 4 KiB at random places`,
    digest: { seconds: fig(digest.map((x) => x.s)), movedMiB: fig(digest.map((x) => x.moved / MiB)), method: `digestFile of both images (BLAKE3, ${PHYSICAL_DIGEST_BLOCK / 1024} KiB blocks, holes skipped), diffDigests, copy the differing blocks in place, fsync` },
    rsync: { seconds: fig(rsync.map((x) => x.s)), movedMiB: fig(rsync.map((x) => x.moved / MiB)), literalMiB: fig(rsync.map((x) => x.literal / MiB)), method: 'rsync --inplace --no-whole-file --ignore-times (local), then fsync' },
    timeRatio: fig(digest.map((x, i) => x.s / rsync[i]!.s)),
    movedRatio: fig(digest.map((x, i) => x.moved / rsync[i]!.moved)),
    cache: 'both images evicted from the page cache before every run',
  };
}

// ---------------------------------------------------------------- report

const f = (x: Fig | null | undefined, unit = ''): string => (x ? (x.n > 1 ? `${x.median}${unit} (${x.min}–${x.max}, n=${x.n})` : `${x.median}${unit}`) : '—');

function markdown(out: Record<string, unknown>, svgPath: string | null): string {
  const L: string[] = [];
  L.push(`Mode ${mode}: ${S.runs} run(s) of each figure, shown as "median (min–max, n)". Rebound runs as \`rebound serve\` composes it (vault, agent, process server and master target in one process, mutual TLS between the roles, REST API on loopback), replicating a physical machine (a raw image file) to a recovery site on the same filesystem. Everything runs niced on a 2-core machine shared with other work: load average (1, 5, 15 min) ${JSON.stringify(out['loadAverageAtStart'])} at the start and ${JSON.stringify(out['loadAverageAtEnd'])} at the end; commit ${String(out['commit'])}; ${String(out['seconds'])} s in all.`);
  const measured = out['measured'] as { quickParts?: Record<string, string>; note?: string } | undefined;
  const quickParts = Object.keys(measured?.quickParts ?? {});
  if (quickParts.length > 0) L.push('', `**Not all of this is full mode:** ${quickParts.join(', ')} ${quickParts.length === 1 ? 'was' : 'were'} measured in quick mode (one run, smaller sizes: n = 1, no spread) beside the full run. ${measured?.note ?? ''}`);
  L.push('', '| # | figure | Rebound | reference | ratio | aim | verdict |', '| --- | --- | --- | --- | --- | --- | --- |');
  const verdict = (ok: boolean): string => (ok ? 'met' : '**missed**');
  type Init = { imageMiB: number; dataMiB: number; cat: { imageMiBps: Fig }; qemuImgConvert: { imageMiBps: Fig }; reboundPlain: { imageMiBps: Fig; vsCat: Fig; vsConvert: Fig; seconds: Fig; phases: Record<string, Fig | null> }; reboundDefaults: { imageMiBps: Fig; vsCat: Fig; vsConvert: Fig; seconds: Fig; phases: Record<string, Fig | null> } };
  const init = out['initial'] as Init | undefined;
  if (init) {
    L.push(`| 1 | initial replication of a ${init.imageMiB} MiB image (${init.dataMiB} MiB data, rest holes), no compression or encryption at rest; MiB/s of image | ${f(init.reboundPlain.imageMiBps)} | cat (cold cache) ${f(init.cat.imageMiBps)}; qemu-img convert ${f(init.qemuImgConvert.imageMiBps)} | ${f(init.reboundPlain.vsCat)} of cat; ${f(init.reboundPlain.vsConvert)} of convert | ≥ 0.8 of cat | ${verdict(init.reboundPlain.vsCat.median >= 0.8)} |`);
    L.push(`| 1 | same, default policy (zstd, LUKS at rest) | ${f(init.reboundDefaults.imageMiBps)} | as above | ${f(init.reboundDefaults.vsCat)} of cat; ${f(init.reboundDefaults.vsConvert)} of convert | ≥ 0.8 of cat | ${verdict(init.reboundDefaults.vsCat.median >= 0.8)} |`);
  }
  const delta = out['delta'] as undefined | Record<string, { changedMiB: number; wireRatioNoCompression: Fig; wireRatioZstd: Fig; agentPayloadRatio: Fig; digestBlockBound: Fig }>;
  if (delta) {
    for (const k of ['64KiB', '4KiB']) {
      const d = delta[k]!;
      L.push(`| 2 | WAN wire bytes / changed bytes, random ${k} writes (${d.changedMiB} MiB changed), no compression | ${f(d.wireRatioNoCompression)} | 1.0 (the changed bytes alone) | ${f(d.wireRatioNoCompression)} | ≤ 1.1 | ${verdict(d.wireRatioNoCompression.median <= 1.1)} |`);
      L.push(`| 2 | same, zstd | ${f(d.wireRatioZstd)} | 1.0 | ${f(d.wireRatioZstd)} | — | — |`);
    }
  }
  type Rpo = { medianSeconds: Fig; p95Seconds: Fig; maxSeconds: Fig; achievedWriteMBps: Fig };
  const rpo = out['rpo'] as undefined | (Record<string, Rpo> & { pointCostSeconds: Record<'plain' | 'luks', Fig> });
  if (rpo) {
    for (const c of RPO_CONFIGS) {
      const r = rpo[c.key];
      if (!r) continue;
      L.push(`| 3 | RPO, ${c.rateBps / 1e6} MB/s of writes (fio wrote ${f(r.achievedWriteMBps)}), ${c.frequency} s policy${c.encryption === 'none' ? ', no encryption at rest' : ''}: median / p95 / max (s) | ${f(r.medianSeconds)} / ${f(r.p95Seconds)} / ${f(r.maxSeconds)} | the policy's ${c.frequency} s | p95 = ${round(r.p95Seconds.median / c.frequency)} × policy | — | — |`);
    }
  }
  type Store = { cycles: number; ratio: Fig; storeMiB: Fig; baseMiB: Fig; windowChangedMiB: Fig; layersInWindow: Fig; layersRetained: Fig; files: Fig };
  const store = out['store'] as Store | undefined;
  if (store) L.push(`| 4 | replica store after ${store.cycles} cycles: store / (base + window's changes) | ${f(store.storeMiB, ' MiB')} | base ${f(store.baseMiB, ' MiB')} + window ${f(store.windowChangedMiB, ' MiB')} | ${f(store.ratio)} | ≈ 1 (≤ 1.1 taken here) | ${verdict(store.ratio.median <= 1.1)} |`);
  const rs = out['resync'] as undefined | { imageMiB: number; changedMiB: number; digest: { seconds: Fig; movedMiB: Fig }; rsync: { seconds: Fig; movedMiB: Fig }; timeRatio: Fig; movedRatio: Fig };
  if (rs) {
    L.push(`| 5 | resync of a ${rs.imageMiB} MiB image (${rs.changedMiB} MiB changed) by digests: time (s) | ${f(rs.digest.seconds)} | rsync --inplace --no-whole-file ${f(rs.rsync.seconds)} | ${f(rs.timeRatio)} | — | — |`);
    L.push(`| 5 | same: MiB moved | ${f(rs.digest.movedMiB)} | rsync ${f(rs.rsync.movedMiB)} | ${f(rs.movedRatio)} | — | — |`);
  }
  L.push('');
  const why: string[] = [];
  if (init && (init.reboundPlain.vsCat.median < 0.8 || init.reboundDefaults.vsCat.median < 0.8)) {
    const p = init.reboundPlain.phases;
    const q = init.reboundDefaults.phases;
    why.push(`- **Initial replication** reaches ${f(init.reboundPlain.vsCat)} of cold \`cat\` and ${f(init.reboundPlain.vsConvert)} of \`qemu-img convert\`, not 0.8. Of the plain run's ${f(init.reboundPlain.seconds, ' s')}: ${f(p['planSeconds'], ' s')} before the first byte is sent (the agent's assignment poll, up to 1 s, and the point: a first copy of a physical disk is not digested first, its digests are learnt as it is sent), ${f(p['sendSeconds'], ' s')} sending to the process server (which writes each frame to its cache, fsyncs every half window before acknowledging, and forwards what is durable meanwhile), and ${f(p['tailSeconds'], ' s')} from the last acknowledgement until the master target had the rest, written into the qcow2 through qemu-nbd, and the point was named. Both hops run in one Node thread, which checksums (BLAKE3) and seals (AES-GCM) every frame and encrypts it again for TLS on both links. With the default policy the tail is ${f(q['tailSeconds'], ' s')}: zstd on the forwarding link, LUKS images created for the base and the first layer.`);
    why.push(`  A CPU profile of the server during a quick plain first copy (\`node --cpu-prof bench/replication.ts --quick --parts initial\`, commit e3df043) found the thread idle 29 % of the time (the cache's fsyncs, qemu-nbd), garbage collection 13.5 %, BLAKE3 7.7 %, TLS writes 6.2 %, AES-GCM 5.9 %: the cost is spread over per-byte passes, no single one of which would reach the aim if removed. Under 50 MB/s of 64 KiB random writes (RPO) the thread was busy 87 % of the time, much of it per frame (one frame per changed 64 KiB block: a cipher, a zstd context, two cache writes, an NBD write).`);
  }
  if (delta && (delta['64KiB']!.wireRatioNoCompression.median > 1.1 || delta['4KiB']!.wireRatioNoCompression.median > 1.1)) {
    const d64 = delta['64KiB']!;
    const d4 = delta['4KiB']!;
    why.push(`- **Deltas** put ${f(d64.wireRatioNoCompression)} (64 KiB writes) and ${f(d4.wireRatioNoCompression)} (4 KiB writes) bytes on the wire per changed byte, not ≤ 1.1. The physical provider finds changes by comparing ${PHYSICAL_DIGEST_BLOCK / 1024} KiB block digests, so a changed block is sent whole: the agent's payload per changed byte is ${f(d64.agentPayloadRatio)} and ${f(d4.agentPayloadRatio)}, and the bound from the distinct ${PHYSICAL_DIGEST_BLOCK / 1024} KiB blocks the writes touched is ${f(d64.digestBlockBound)} and ${f(d4.digestBlockBound)} — the payload is the whole excess; TLS, frame headers and checksums add little. zstd recovers part of it because the unchanged rest of each block is sent too. Any 64 KiB-granular tracking (these digests, the replica store's blocks, QEMU's dirty bitmaps) sends 16× for scattered 4 KiB writes; 4 KiB tracking would need the replica store to checksum 4 KiB blocks.`);
  }
  if (rpo) {
    const pc = rpo.pointCostSeconds;
    const fast = (k: string): Rpo | undefined => rpo[k];
    const a = fast('10MBps-1s');
    const b = fast('10MBps-1s-plain');
    if (a && b) why.push(`- **RPO with a 1 s policy** is ${f(a.p95Seconds, ' s')} (p95) at 10 MB/s with encryption at rest and ${f(b.p95Seconds, ' s')} without. Each cycle digests the whole ${S.rpoDiskMiB} MiB disk and sends every touched ${PHYSICAL_DIGEST_BLOCK / 1024} KiB block: scattered writes touch more block bytes than they change (see 2), while the whole pipeline moved ${f((rpo as unknown as Record<string, { firstCopyMiBps: Fig }>)['10MBps-1s-plain']?.firstCopyMiBps, ' MiB/s')} during the first copy of the same disk here. A cycle's changes then take longer to move than the cycle, so cycles stretch until each covers much of the disk, and the RPO follows. On top, the master target writes each point as a new qcow2 overlay: the fixed cost of one point at the replica store is ${f(pc.plain, ' s')} plain and ${f(pc.luks, ' s')} with LUKS (creating an encrypted overlay runs QEMU's PBKDF benchmark), so with encryption at rest no cycle is shorter than that.`);
  }
  if (store && store.ratio.median > 1.1) {
    const extra = (store.storeMiB.median - store.baseMiB.median - store.windowChangedMiB.median) / store.files.median;
    why.push(`- **Replica store** holds ${f(store.ratio)} × (base + window's changes): ${f(store.layersRetained)} layers were kept for ${f(store.layersInWindow)} points in the window, and the store spends about ${round(extra, 2)} MiB per file beyond the data (${f(store.files)} files: a qcow2 and a checksum file per point; an encrypted qcow2 carries a LUKS header of about 2 MiB).`);
  }
  if (why.length > 0) L.push('**Where figures miss their aim, and the causes measured:**', '', ...why, '');
  if (svgPath) L.push(`RPO over time (first run of each configuration): ![RPO over time](${svgPath})`, '');
  L.push(`Reproduce: \`nice -n 10 npm run bench -- --only replication\` (\`--quick\`: one run of smaller sizes; \`node bench/replication.ts --smoke\` checks the shape only). Every figure is in the JSON (and the table below); RPO samples are in \`${svgPath ? svgPath.replace(/\.svg$/, '-samples.json') : 'OUT/rpo-samples.json'}\`.`);
  return L.join('\n');
}

// ---------------------------------------------------------------- main

// Short paths on purpose: the master target puts qemu-nbd's UNIX socket inside the replica
// directory (SITE_ROOT/replicas/ITEM/DISK/.nbd-….sock), and a socket path must stay under 108
// bytes, so a site root longer than ~30 characters cannot receive at all (replica-disk.ts).
const base = await mkdtemp(join(tmpdir(), 'rbb-'));
const out: Record<string, unknown> = { mode, runs: S.runs };
let svgRel: string | null = null;
const cleanup = async (): Promise<void> => {
  for (const stop of [...active]) await stop().catch(() => undefined);
  if (!args.includes('--keep')) await rmrf(base);
};
// Interrupted: stop the writers and vaults (and with them their qemu-nbd children) first.
process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)); });
process.once('SIGTERM', () => { void cleanup().finally(() => process.exit(143)); });
out['commit'] = process.env['REBOUND_BENCH_COMMIT'] ?? (await run('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).then((r) => r.stdout.trim(), () => 'unknown'));
out['loadAverageAtStart'] = loadavg().map((x) => round(x, 2));
log(`${mode} mode, scratch directory ${base}`);
// Each finished part is saved at once; --resume takes finished parts of the same mode and commit
// from that file instead of measuring them again (a crash hours in loses only the part it hit).
const partialFile = join(outDir, `replication.partial.${mode}.json`);
const done: Record<string, unknown> = {};
if (args.includes('--resume') || process.env['REBOUND_BENCH_RESUME'] === '1') {
  try {
    const prev = JSON.parse(await readFile(partialFile, 'utf8')) as Record<string, unknown>;
    if (prev['commit'] === out['commit']) {
      Object.assign(done, prev['parts']);
      // Parts measured by earlier processes: their start (load average, time) is the run's.
      const meta = prev['meta'] as { loadAverageAtStart?: number[]; startedAt?: string; seconds?: number; note?: string } | undefined;
      if (meta?.loadAverageAtStart) out['loadAverageAtStart'] = meta.loadAverageAtStart;
      if (meta) out['measured'] = meta;
    }
    log(`resuming: ${Object.keys(done).join(', ') || 'nothing'} already measured`);
  } catch {
    log('resuming: no earlier partial results');
  }
}
const measure = async (part: Part, fn: () => Promise<unknown>): Promise<void> => {
  if (!parts.has(part)) return;
  out[part] = done[part] ?? (await fn());
  done[part] = out[part];
  await mkdir(outDir, { recursive: true });
  await writeFile(partialFile, JSON.stringify({ commit: out['commit'], parts: done, ...(out['measured'] ? { meta: out['measured'] } : {}) }));
};
try {
  await measure('initial', () => benchInitial(base));
  await measure('delta', () => benchDelta(base));
  await measure('rpo', async () => {
    const { result, runs } = await benchRpo(base);
    await mkdir(outDir, { recursive: true });
    const stem = mode === 'full' ? 'rpo' : `rpo.${mode}`;
    await writeFile(join(outDir, `${stem}.svg`), rpoSvg(runs));
    await writeFile(join(outDir, `${stem}-samples.json`), JSON.stringify(runs));
    return { ...result, svg: relative(REPO, join(outDir, `${stem}.svg`)) };
  });
  const svg = (out['rpo'] as { svg?: unknown } | undefined)?.svg;
  if (typeof svg === 'string') svgRel = svg;
  await measure('store', () => benchStore(base));
  await measure('resync', () => benchResync(base));
  out['loadAverageAtEnd'] = loadavg().map((x) => round(x, 2));
  out['seconds'] = (out['measured'] as { seconds?: number } | undefined)?.seconds ?? round((performance.now() - started) / 1000);
  out['markdown'] = markdown(out, svgRel);
} finally {
  await cleanup();
}
console.log(JSON.stringify(out));
