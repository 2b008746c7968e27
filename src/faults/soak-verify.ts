// The soak's checks on the replica of one run, after `rebound serve` stopped: every retained
// point of both disks is read through a copy-on-write view served by qemu-nbd (as failover
// would use it) and checked — the records disk with the record verifier, the stamps disk block
// by block (checksums, offsets, generations never going back from one point to the next, never
// below what was there before protection) — the chosen latest point is compared byte for byte
// with the source images, and every disk is scrubbed (the replica store's own block checksums).
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { verifyDisk } from '../guest/verify.ts';
import { NbdClient } from '../nbd/client.ts';
import { parseNbdUri } from '../nbd/uri.ts';
import { ReplicaDisk } from '../replica/replica-disk.ts';
import { serveReplicaImage } from '../replica/serve-view.ts';
import { openStore } from '../store/open.ts';
import { loadVaultKeys } from '../vault/keys.ts';
import { genRegressions, scanStamps } from './soak-content.ts';

const MIB = 1024 * 1024;

export interface ReplicaCheckInput {
  dataDir: string;
  recoveryRoot: string;
  itemId: string;
  /** Source images in disk order: disk0 = records, disk1 = stamps. */
  sources: [string, string];
  /** The writer acknowledged records 1..ackedSeq. */
  ackedSeq: number;
  /** Generation per stamp block expected on the source (and the latest point). */
  expectedGens: Float64Array;
  /** Generation per stamp block before protection: no point may hold less. */
  prefillGens: Float64Array;
  /** The first point the vault named that was taken after the writer stopped (server clock);
   * null when replication never caught up (then only the retained points are checked). The
   * replica's newest point, at least as new as this one, must equal the source. */
  caughtUp: { id: string; takenAt: number } | null;
}

export interface PointCheck {
  pointId: string;
  recordsContiguous: number;
  /** Records missing inside the run: a physical point read while the writer wrote (no freeze hook). */
  recordGaps: number;
  problems: string[];
}

export interface ReplicaCheck {
  points: PointCheck[];
  /** What failed, each a sentence; empty when the replica passed. */
  failures: string[];
  /** Acknowledged data missing at the latest point (the "data lost" column). */
  dataLost: boolean;
  notes: string[];
}

async function withView<T>(disk: ReplicaDisk, pointId: string, fn: (uri: string) => Promise<T>): Promise<T> {
  const view = await disk.openView(pointId);
  try {
    const served = await serveReplicaImage(view.drive, disk.secrets());
    try {
      return await fn(served.uri);
    } finally {
      await served.close();
    }
  } finally {
    await disk.closeView(view.id);
  }
}

async function withNbd<T>(uri: string, fn: (c: NbdClient) => Promise<T>): Promise<T> {
  const c = await NbdClient.connect(parseNbdUri(uri).address, { exportName: '' });
  try {
    return await fn(c);
  } finally {
    await c.disconnect();
  }
}

async function readFileRange(path: string): Promise<{ read(at: number, n: number): Promise<Buffer>; close(): Promise<void> }> {
  const fh = await open(path, 'r');
  return {
    async read(at, n) {
      const b = Buffer.alloc(n);
      const { bytesRead } = await fh.read(b, 0, n, at);
      return bytesRead === n ? b : b.subarray(0, bytesRead);
    },
    close: () => fh.close(),
  };
}

/** Checks the source images against the writer's ledger (a harness self-check). */
export async function checkSource(input: Pick<ReplicaCheckInput, 'sources' | 'ackedSeq' | 'expectedGens'>): Promise<string[]> {
  const out: string[] = [];
  const r = await verifyDisk(input.sources[0]);
  if (r.highestContiguousSeq < input.ackedSeq || r.counts.corrupt > 0 || r.counts.outOfOrder > 0) {
    out.push(`source records disk holds records 1..${r.highestContiguousSeq} (corrupt ${r.counts.corrupt}, out of order ${r.counts.outOfOrder}) but the writer acknowledged ${input.ackedSeq}`);
  }
  const f = await readFileRange(input.sources[1]);
  try {
    const size = input.expectedGens.length * 4096;
    const s = await scanStamps((at, n) => f.read(at, n), size);
    if (s.bad.length > 0) out.push(`source stamps disk has ${s.bad.length} bad blocks, first at ${s.bad[0]!.offset}: ${s.bad[0]!.reason}`);
    for (let i = 0; i < s.gens.length; i++) {
      if (s.gens[i] !== input.expectedGens[i]) {
        out.push(`source stamps block at ${i * 4096} holds generation ${s.gens[i]}, the writer acknowledged ${input.expectedGens[i]}`);
        break;
      }
    }
  } finally {
    await f.close();
  }
  return out;
}

export async function checkReplica(input: ReplicaCheckInput): Promise<ReplicaCheck> {
  const failures: string[] = [];
  const notes: string[] = [];
  let dataLost = false;
  // Read after the server stopped: a running master target keeps merging and pruning.
  const store = await openStore({ dataDir: input.dataDir });
  const { keys, catalogue } = await (async () => {
    const k = await loadVaultKeys(store);
    const rows = await store.db.selectFrom('recovery_points').select('id').where('item_id', '=', input.itemId).where('status', '=', 'ok').execute();
    return { keys: k, catalogue: rows.map((r) => r.id) };
  })().finally(() => store.close());
  const dir = join(input.recoveryRoot, 'replicas', input.itemId);
  const names = (await readdir(dir)).sort();
  if (names.join(',') !== 'disk0,disk1') {
    return { points: [], failures: [`the replica directory holds ${names.join(', ') || 'nothing'}, not disk0 and disk1`], dataLost: true, notes };
  }
  const [records, stamps] = await Promise.all(names.map((n) => ReplicaDisk.open(join(dir, n), { keys: keys.atRestKeys })));
  const recPoints = records!.points();
  const stPoints = stamps!.points();
  // A point is one when both disks hold it; a stop can fall between the two disks' transfers of
  // the newest point (the vault names it only once both are in).
  const ids = recPoints.map((p) => p.id).filter((id) => stPoints.some((q) => q.id === id));
  const partial = [...recPoints, ...stPoints].filter((p) => !ids.includes(p.id));
  if (partial.length > 0) notes.push(`${partial.length} disk point(s) on one disk only when the server stopped (the newest still arriving, or a retention merge done on one disk)`);
  for (const p of [...recPoints, ...stPoints]) if (p.bad) failures.push(`point ${p.id} is marked bad`);
  for (const id of catalogue) {
    if (!ids.includes(id)) failures.push(`the vault lists point ${id}, which the replica does not hold`);
  }
  const extra = ids.filter((id) => !catalogue.includes(id));
  if (extra.length > 0) notes.push(`${extra.length} replica point(s) not in the vault catalogue (committed just before a stop)`);
  // The point to hold against the source: the newest in the chain (later points than the one
  // the harness saw first may have arrived before the stop, and retention may merge that one).
  const recCommon = recPoints.filter((p) => ids.includes(p.id));
  const newest = recCommon.at(-1);
  let latestId: string | null = null;
  if (input.caughtUp !== null) {
    if (!newest || Date.parse(newest.createdAt) < input.caughtUp.takenAt) {
      failures.push(`the replica's newest point ${newest?.id ?? '(none)'} (${newest?.createdAt ?? '-'}) is older than point ${input.caughtUp.id}, which the vault named after the writer stopped`);
      dataLost = true;
    } else {
      latestId = newest.id;
    }
  }

  // The latest point, byte for byte against the source images.
  const compareWithSource = async (i: number, size: number, uri: string): Promise<void> => {
    const src = await readFileRange(input.sources[i]!);
    try {
      const differs = await withNbd(uri, async (c) => {
        for (let at = 0; at < size; at += MIB) {
          const n = Math.min(MIB, size - at);
          const [want, got] = await Promise.all([src.read(at, n), c.read(at, n)]);
          if (!want.equals(got)) return at;
        }
        return null;
      });
      if (differs !== null) {
        failures.push(`disk${i} at the latest point differs from the source in the MiB at ${differs}`);
        dataLost = true;
      }
    } finally {
      await src.close();
    }
  };

  const checks: PointCheck[] = [];
  let prev: Float64Array | undefined;
  let prevSeq = 0;
  const stampsSize = stamps!.size;
  for (const id of ids) {
    const problems: string[] = [];
    const latest = id === latestId;
    // One view per disk and point (an encrypted view costs a LUKS setup): the latest point is
    // compared with the source through the same view.
    const rec = await withView(records!, id, async (uri) => {
      const r = await verifyDisk(uri, latest ? { expectSeq: input.ackedSeq } : {});
      if (latest) await compareWithSource(0, records!.size, uri);
      return r;
    });
    if (rec.counts.corrupt > 0) problems.push(`records disk: ${rec.counts.corrupt} corrupt record(s), first at ${rec.corrupt[0]?.offset}: ${rec.corrupt[0]?.reason}`);
    if (rec.counts.outOfOrder > 0) problems.push(`records disk: ${rec.counts.outOfOrder} misplaced record(s), first: ${rec.outOfOrder[0]?.reason}`);
    if (latest && (rec.counts.gaps > 0 || rec.highestContiguousSeq < input.ackedSeq)) {
      problems.push(`records disk at the latest point holds records 1..${rec.highestContiguousSeq} with ${rec.counts.gaps} gap(s); the writer acknowledged ${input.ackedSeq}`);
      dataLost = true;
    }
    if (rec.highestContiguousSeq < prevSeq && rec.counts.gaps === 0) problems.push(`records disk went back from record ${prevSeq} to ${rec.highestContiguousSeq}`);
    prevSeq = Math.max(prevSeq, rec.highestContiguousSeq);
    const scan = await withView(stamps!, id, async (uri) => {
      const r = await withNbd(uri, (c) => scanStamps((at, n) => c.read(at, n), stampsSize));
      if (latest) await compareWithSource(1, stampsSize, uri);
      return r;
    });
    if (scan.bad.length > 0) problems.push(`stamps disk: ${scan.bad.length} bad block(s), first at ${scan.bad[0]!.offset}: ${scan.bad[0]!.reason}`);
    const belowPrefill = genRegressions(input.prefillGens, scan.gens, 3);
    if (belowPrefill.length > 0) {
      problems.push(`stamps disk: block at ${belowPrefill[0]!.offset} holds generation ${belowPrefill[0]!.later}, older than before protection (${belowPrefill[0]!.earlier})`);
      dataLost = true;
    }
    if (prev) {
      const back = genRegressions(prev, scan.gens, 3);
      if (back.length > 0) problems.push(`stamps disk: block at ${back[0]!.offset} went back from generation ${back[0]!.earlier} to ${back[0]!.later} since the previous point`);
    }
    if (latest) {
      for (let i = 0; i < scan.gens.length; i++) {
        if (scan.gens[i] !== input.expectedGens[i]) {
          problems.push(`stamps disk at the latest point: block at ${i * 4096} holds generation ${scan.gens[i]}, the writer acknowledged ${input.expectedGens[i]}`);
          dataLost = true;
          break;
        }
      }
    }
    prev = scan.gens;
    checks.push({ pointId: id, recordsContiguous: rec.highestContiguousSeq, recordGaps: rec.counts.gaps, problems });
    for (const p of problems) failures.push(`point ${id}: ${p}`);
  }

  for (const [i, disk] of [records!, stamps!].entries()) {
    const s = await disk.scrub();
    if (s.badPoints.length > 0 || s.damaged.length > 0) failures.push(`scrub of disk${i}: ${s.damaged.length} damaged block(s), bad points ${s.badPoints.join(', ') || 'none'}${s.damaged[0]?.reason ? ` (${s.damaged[0].reason})` : ''}`);
  }
  return { points: checks, failures, dataLost, notes };
}
