// Failback bench (issue 5 "Measure", issue 8): a physical machine of one image (full: 4 GiB
// with 512 MiB of random data, the rest holes; quick: 256 MiB, half random; --smoke: 16 MiB) replicated to a recovery
// site by a real `rebound serve`, failed over there (unplanned, over the API, as
// test/failover/physical.test.ts does) and committed; then 1 % of its disk changes at the recovery
// site (random 64 KiB-aligned 64 KiB writes), and reverse replication's first sync back to the
// original site is measured (time from the API call to the item protected again, bytes sent):
//   - by digests: the machine's old image is still at the original site (only differing blocks);
//   - full: the old image was removed (every allocated block is sent);
//   - reference: `rsync --no-whole-file --inplace` of the same image pair (the changed image onto
//     a copy of the old one), in the same run.
// Two machines with identical images and identical changes carry the two Rebound modes in one
// vault. Caches of every image are dropped before each measurement. The QEMU variant (failback
// by CBT since failover, resyncMode 'cbt') is a marked gap until that mode lands.
// Prints one JSON document (with a `markdown` summary) on its last line; asserts only that rsync
// produced an identical copy.
// Usage: [REBOUND_BENCH_RUNS=N] node bench/failback.ts [--quick | --smoke]
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { api, points, waitFor, waitJob } from '../test/replication/support.ts';
import { startServerProcess } from '../test/support/server.ts';
import type { ServerProcess } from '../test/support/server.ts';
import { benchMode, commit, evict, fig, load, MiB, run, show } from './lib/common.ts';
import type { Fig } from './lib/common.ts';

const mode = benchMode();
/** Disk size and the part of it written with random data (the rest stays holes). */
const SIZES = { full: { runs: 3, mib: 4096, dataMiB: 512 }, quick: { runs: 1, mib: 256, dataMiB: 128 }, smoke: { runs: 1, mib: 16, dataMiB: 8 } } as const;
/** REBOUND_BENCH_RUNS=N overrides the mode's run count (a shared machine may not fit 3 full runs). */
const runsEnv = Number(process.env['REBOUND_BENCH_RUNS'] ?? '');
const S = { ...SIZES[mode], ...(Number.isInteger(runsEnv) && runsEnv > 0 ? { runs: runsEnv } : {}) };
const BLOCK = 64 * 1024;
const CHANGED_FRACTION = 0.01;
const log = (m: string): void => { process.stderr.write(`[failback] ${m}\n`); };

interface Item { id: string; state: string; direction: string; details: { replication?: { bytesTotal?: number; bytesSkipped?: number }; placements?: Record<string, { disks: { path: string }[] }> } }
interface Job { id: string; state: string; createdAt: number; startedAt: number | null; finishedAt: number | null; tasks: { name: string; startedAt: number | null; finishedAt: number | null }[] }

interface RunResult {
  digests: { seconds: number; sentMiB: number; initialTaskSeconds: number };
  full: { seconds: number; sentMiB: number; initialTaskSeconds: number };
  rsync: { seconds: number; sentMiB: number; literalMiB: number };
  changedMiB: number;
}

let active: { server?: ServerProcess; dir?: string } = {};
const cleanup = async (): Promise<void> => {
  await active.server?.stop().catch(() => undefined);
  if (active.dir) await rm(active.dir, { recursive: true, force: true });
  active = {};
};
process.once('SIGTERM', () => { void cleanup().finally(() => process.exit(143)); });
process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)); });

async function start(s: ServerProcess, path: string, body: unknown = {}): Promise<string> {
  return (await api<{ job: { id: string } }>(s, 'POST', path, body)).job.id;
}

/** The same changes on every file: `n` random 64 KiB blocks at random 64 KiB-aligned offsets. */
async function change(files: string[], sizeBytes: number): Promise<number> {
  const n = Math.round((sizeBytes * CHANGED_FRACTION) / BLOCK);
  const slots = new Set<number>();
  while (slots.size < n) slots.add(Math.floor(Math.random() * (sizeBytes / BLOCK)));
  const writes = [...slots].map((slot) => ({ offset: slot * BLOCK, data: randomBytes(BLOCK) }));
  for (const f of files) {
    const fh = await open(f, 'r+');
    try {
      for (const w of writes) await fh.write(w.data, 0, BLOCK, w.offset);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  return n * BLOCK;
}

async function once(r: number): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), 'rb-fb-'));
  active.dir = dir;
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  const ref = join(dir, 'ref');
  for (const d of [a, b, ref, join(dir, 'vault')]) await mkdir(d, { recursive: true });
  const img = (m: string): string => join(a, `${m}.img`);
  log(`run ${r + 1}/${S.runs}: writing two ${S.mib} MiB images (${S.dataMiB} MiB random, the rest holes)`);
  await run('dd', ['if=/dev/urandom', `of=${img('m1')}`, 'bs=1M', `count=${S.dataMiB}`, 'status=none']);
  await run('truncate', ['-s', `${S.mib}M`, img('m1')]);
  await run('cp', ['--sparse=always', img('m1'), img('m2')]);
  const s = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: 'warn' }, timeoutMs: 120_000 });
  active.server = s;
  await api(s, 'POST', '/sites', { name: 'srv', provider: 'physical', root: a });
  await api(s, 'POST', '/sites', { name: 'dr', provider: 'physical', root: b });
  // No encryption at rest: each replica layer is then a plain qcow2 (LUKS costs apply on both
  // sides equally and are measured in the datapath section). The longest frequency: the first
  // machine's delta cycles after its reverse sync (a digest pass over its whole image each) must
  // not run beside the second machine's measured sync.
  await api(s, 'POST', '/policies', { name: 'p', frequency: '1h', retention: '1h', appConsistent: '0s', encryption: 'none' });
  await api(s, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  for (const m of ['m1', 'm2']) await api(s, 'POST', '/machines', { name: m, site: 'srv', disks: [img(m)], config: { hooks: { stop: 'true' } } });
  log(`run ${r + 1}: protecting (initial copies)`);
  for (const m of ['m1', 'm2']) await waitJob(s, await start(s, `/items/${m}/protect`), 3_600_000);
  for (const m of ['m1', 'm2']) await waitFor(`a point of ${m}`, async () => (await points(s, m)).length >= 1, 600_000, 500);
  log(`run ${r + 1}: unplanned failover and commit at dr`);
  const atDr: Record<string, string> = {};
  for (const m of ['m1', 'm2']) {
    await waitJob(s, await start(s, `/items/${m}/failover`, { mode: 'unplanned', point: 'latest' }), 1_800_000);
    await waitJob(s, await start(s, `/items/${m}/commit`), 1_800_000);
    const it = await api<Item>(s, 'GET', `/items/${m}`);
    const p = Object.values(it.details.placements ?? {}).find((x) => x.disks[0]?.path.startsWith(b));
    if (!p?.disks[0]) throw new Error(`${m}: no image at dr after commit: ${JSON.stringify(it.details.placements)}`);
    atDr[m] = p.disks[0].path;
  }
  // The rsync pair: a copy of the old image, and the changed image at dr.
  await run('cp', ['--sparse=always', img('m1'), join(ref, 'old.img')]);
  // m2 comes back without its old image: reverse replication sends a full copy.
  await rm(img('m2'));
  const changed = await change([atDr['m1']!, atDr['m2']!], S.mib * MiB);
  const measure = async (m: string): Promise<RunResult['digests']> => {
    for (const f of [atDr[m]!, ...(m === 'm1' ? [img('m1')] : [])]) await evict(f);
    const t0 = performance.now();
    const id = await start(s, `/items/${m}/reverse-replicate`);
    await waitJob(s, id, 3_600_000);
    const seconds = (performance.now() - t0) / 1000;
    const job = await api<Job>(s, 'GET', `/jobs/${id}`);
    const init = job.tasks.find((t) => t.name === 'initial replication');
    const it = await api<Item>(s, 'GET', `/items/${m}`);
    if (it.state !== 'protected' || it.direction !== 'reverse') throw new Error(`${m} is ${it.state}/${it.direction} after reverse replication`);
    return { seconds, sentMiB: (it.details.replication?.bytesTotal ?? NaN) / MiB, initialTaskSeconds: init?.startedAt && init.finishedAt ? (init.finishedAt - init.startedAt) / 1000 : NaN };
  };
  log(`run ${r + 1}: reverse replication by digests`);
  const digests = await measure('m1');
  log(`run ${r + 1}: reverse replication, full copy`);
  const full = await measure('m2');
  await s.stop();
  active.server = undefined;
  log(`run ${r + 1}: rsync --no-whole-file --inplace`);
  await evict(atDr['m1']!);
  await evict(join(ref, 'old.img'));
  const t0 = performance.now();
  const rs = await run('rsync', ['--no-whole-file', '--inplace', '--ignore-times', '--stats', atDr['m1']!, join(ref, 'old.img')], { maxBuffer: 16 * MiB });
  const rsyncSeconds = (performance.now() - t0) / 1000;
  const num = (re: RegExp): number => Number((re.exec(rs.stdout)?.[1] ?? 'NaN').replace(/,/g, ''));
  await run('cmp', [atDr['m1']!, join(ref, 'old.img')]).catch((err: unknown) => { throw new Error(`rsync did not produce an identical copy: ${String(err)}\n${rs.stdout}`); });
  await cleanup();
  return {
    digests,
    full,
    rsync: { seconds: rsyncSeconds, sentMiB: num(/Total bytes sent: ([\d,]+)/) / MiB, literalMiB: num(/Literal data: ([\d,]+)/) / MiB },
    changedMiB: changed / MiB,
  };
}

const t = performance.now();
const out: Record<string, unknown> = { mode, runs: S.runs, imageMiB: S.mib, dataMiB: S.dataMiB, commit: await commit(), loadAverageAtStart: load() };
const runs: RunResult[] = [];
try {
  for (let r = 0; r < S.runs; r++) runs.push(await once(r));
} finally {
  await cleanup();
}
const F = (f: (x: RunResult) => number, digits = 3): Fig => fig(runs.map(f), digits);
const res = {
  changedMiB: F((x) => x.changedMiB),
  digests: { seconds: F((x) => x.digests.seconds), sentMiB: F((x) => x.digests.sentMiB), initialTaskSeconds: F((x) => x.digests.initialTaskSeconds) },
  full: { seconds: F((x) => x.full.seconds), sentMiB: F((x) => x.full.sentMiB), initialTaskSeconds: F((x) => x.full.initialTaskSeconds) },
  rsync: { seconds: F((x) => x.rsync.seconds), sentMiB: F((x) => x.rsync.sentMiB), literalMiB: F((x) => x.rsync.literalMiB) },
  digestsVsRsyncTime: F((x) => x.digests.seconds / x.rsync.seconds),
  digestsVsFullTime: F((x) => x.digests.seconds / x.full.seconds),
  digestsSentVsChanged: F((x) => x.digests.sentMiB / x.changedMiB),
  digestsSentVsRsyncSent: F((x) => x.digests.sentMiB / x.rsync.sentMiB),
};
Object.assign(out, res, {
  qemuCbt: 'see the failback-qemu section (bench/failback-qemu.ts): a QEMU VM by change tracking since the failover vs digests',
  loadAverageAtEnd: load(),
  seconds: Math.round((performance.now() - t) / 1000),
  note: 'physical machine, one raw image (dataMiB of random data at its start, the rest holes); 1 % of the disk changed at dr in 64 KiB blocks; Rebound = POST /items/M/reverse-replicate until the job ends (prepare, first sync, delta replication started), sent = the first sync\'s payload bytes (bytesTotal); rsync = --no-whole-file --inplace --ignore-times --stats of the changed image onto a copy of the old one (sent = Total bytes sent); page cache of the images dropped before each; encryption at rest off',
});
out['markdown'] = [
  `Failback's first sync after 1 % of a ${S.mib} MiB physical disk (${S.dataMiB} MiB of random data, the rest holes, so initial copies fit the time on this shared machine) changed at the recovery site: ${S.runs} run(s), median (min–max, n). Rebound's time is from \`POST /items/M/reverse-replicate\` until the item is protected in reverse (first sync done); bytes are the sync's payload. Page cache dropped before each method; policy without encryption at rest.`,
  '',
  '| method | time | of which the first-sync task | sent | ratio to rsync (time) |',
  '| --- | --- | --- | --- | --- |',
  `| Rebound by digests (old disk present) | ${show(res.digests.seconds, ' s')} | ${show(res.digests.initialTaskSeconds, ' s')} | ${show(res.digests.sentMiB, ' MiB')} | ${show(res.digestsVsRsyncTime)} |`,
  `| Rebound full copy (old disk removed) | ${show(res.full.seconds, ' s')} | ${show(res.full.initialTaskSeconds, ' s')} | ${show(res.full.sentMiB, ' MiB')} | ${show(F((x) => x.full.seconds / x.rsync.seconds))} |`,
  `| \`rsync --no-whole-file --inplace\` (reference) | ${show(res.rsync.seconds, ' s')} | | ${show(res.rsync.sentMiB, ' MiB')} (literal ${res.rsync.literalMiB.median} MiB) | 1 |`,
  '| QEMU VM by CBT since failover | measured in the failback-qemu section (a QEMU VM, same disk size and change) | | | |',
  '',
  `Changed: ${res.changedMiB.median} MiB. Digests / full copy time: ${show(res.digestsVsFullTime)}; digest sync sent / changed bytes: ${show(res.digestsSentVsChanged)}. Load average ${JSON.stringify(out['loadAverageAtStart'])} at start, ${JSON.stringify(out['loadAverageAtEnd'])} at end; commit ${String(out['commit'])}. Reproduce: \`nice -n 10 npm run bench -- --only failback\` (\`--quick\`: 256 MiB, one run; \`node bench/failback.ts --smoke\`: shape only).`,
].join('\n');
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
