// Verifies what the guest workloads left on a disk image, without modifying it.
// verifyDisk: the record writer's disk (raw read directly, skipping holes; qcow2 and qcow2
// chains read through qemu-nbd and Rebound's NBD client, skipping unallocated ranges; or a live
// NBD export given as an nbd:// or nbd+unix:// URI): the records must run 1..N from offset 0 with good checksums and
// nothing valid after the first break. A torn record just after N is allowed (it was in flight,
// never reported durable) unless `strict`.
// Why NBD for qcow2 and not `qemu-img convert` to a scratch raw file: measured on a 1 GiB qcow2
// holding 256 MiB of records, NBD took 0.83 s in all; convert alone took 0.5 s and the raw scan
// after it another 0.84 s, plus the scratch space. Raw files are read directly because NBD was
// slower on a dense raw image (2.0-2.7 s vs 1.0-1.4 s for 1 GiB).
// verifyFs: the fs writer's ext4 disk: journal replay and `e2fsck -fn` on a scratch copy, then
// every file the writer completed must check.
import { execFile } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ReboundError } from '../domain/errors.ts';
import { NbdClient } from '../nbd/client.ts';
import { STATE } from '../nbd/protocol.ts';
import { serveImage } from '../nbd/qemu-nbd.ts';
import { isNbdUri, parseNbdUri } from '../nbd/uri.ts';
import type { NbdTarget } from '../nbd/uri.ts';
import { checkFile, decodeRecord, RECORD_SIZE } from './records.ts';

const run = promisify(execFile);

export interface VerifyOptions {
  /** The console's last `REBOUND seq=N durable`: the disk must hold at least records 1..N. */
  expectSeq?: number;
  /** Treat a torn record right after the contiguous run as corruption too. */
  strict?: boolean;
  /** Largest number of entries kept per list (counts stay exact). */
  maxEntries?: number;
  /** Read a qcow2 image another process (a running VM) holds open for writing. Its metadata may
   * be mid-update, so damage found this way needs a second look on a stopped image or a point. */
  forceShare?: boolean;
  /** Stops the scan (the promise rejects) when aborted. */
  signal?: AbortSignal;
}

export interface VerifyReport {
  image: string;
  format: string;
  size: number;
  method: 'file' | 'nbd';
  ok: boolean;
  /** Valid records found anywhere. */
  records: number;
  /** Records 1..highestContiguousSeq are all present, valid and in place. */
  highestContiguousSeq: number;
  writers: number;
  /** When the guest wrote record highestContiguousSeq (its clock, ISO 8601): the newest data
   * this disk or recovery point holds, so `now - this` is the data a failover to it would lose. */
  lastRecordTime?: string;
  corrupt: { offset: number; reason: string; seq?: number }[];
  outOfOrder: { offset: number; seq: number; expectedSeq: number; reason: string }[];
  /** Never-written (zero) slots inside the run, i.e. with valid records after them. */
  gaps: { offset: number; expectedSeq: number }[];
  /** The in-flight record the run ends on, when it is torn (tolerated unless strict). */
  tornTail?: { offset: number; reason: string };
  expectSeq?: number;
  counts: { corrupt: number; outOfOrder: number; gaps: number };
  elapsedMs: number;
}

export async function imageFormat(image: string): Promise<{ format: string; size: number }> {
  try {
    const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', image]);
    const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
    return { format: info.format, size: info['virtual-size'] };
  } catch (err) {
    throw new ReboundError('invalid', 'image-unreadable', `Cannot read disk image ${image}: ${(err as { stderr?: string }).stderr?.trim() || String(err)}.`, { cause: err });
  }
}

/** Streams the image's slots into the analysis: data chunks (reused once data() returns), and
 * zero runs that need no read. */
interface Sink {
  data(offset: number, buf: Buffer): void;
  zeros(offset: number, length: number): void;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * Where a raw image holds data: `qemu-img map` asks the filesystem (SEEK_DATA/SEEK_HOLE), so a
 * sparse 8 GiB image with 256 MiB written is scanned in ~0.7 s instead of 5-19 s of reading
 * zeros. Without an answer, everything counts as data.
 */
async function rawDataExtents(image: string, size: number): Promise<{ offset: number; length: number; zero: boolean }[]> {
  try {
    const { stdout } = await run('qemu-img', ['map', '--output=json', '-U', '-f', 'raw', image], { maxBuffer: 64 * 1024 * 1024 });
    const map = JSON.parse(stdout) as { start: number; length: number; zero: boolean; data: boolean }[];
    return map.map((m) => ({ offset: m.start, length: m.length, zero: m.zero && !m.data }));
  } catch {
    return [{ offset: 0, length: size, zero: false }];
  }
}

async function scanFile(image: string, size: number, sink: Sink, signal: AbortSignal | undefined): Promise<void> {
  const extents = await rawDataExtents(image, size);
  const fh = await open(image, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK); // the sink is done with it when data() returns
    for (const e of extents) {
      if (e.zero) {
        sink.zeros(e.offset, e.length);
        continue;
      }
      for (let off = e.offset; off < e.offset + e.length; off += CHUNK) {
        signal?.throwIfAborted();
        const n = Math.min(CHUNK, e.offset + e.length - off);
        const { bytesRead } = await fh.read(buf, 0, n, off);
        if (bytesRead < n) buf.fill(0, bytesRead, n);
        sink.data(off, buf.subarray(0, n));
      }
    }
  } finally {
    await fh.close();
  }
}

async function scanImageNbd(image: string, format: string, forceShare: boolean, sink: Sink, signal: AbortSignal | undefined): Promise<void> {
  const served = await serveImage(image, { format, readOnly: true, forceShare });
  try {
    await scanNbd({ address: served.address, exportName: '' }, sink, signal);
  } catch (err) {
    const why = signal?.aborted ? undefined : await served.failure();
    if (why === undefined) throw err;
    throw new ReboundError('unavailable', 'nbd-server-failed', `qemu-nbd could not serve ${image}: ${why}.`, {
      hint: /lock/i.test(why) ? 'Another process (a running VM?) holds the image; verify a stopped copy or a recovery point, or pass forceShare.' : 'Check that the image and its backing files exist and are readable.',
      cause: err,
    });
  } finally {
    await served.close();
  }
}

/** Reads the export's data extents (zero ranges are only reported); returns the export size. */
async function scanNbd(target: NbdTarget, sink: Sink, signal: AbortSignal | undefined): Promise<number> {
  const c = await NbdClient.connect(target.address, { exportName: target.exportName, metaContexts: ['base:allocation'], ...(signal ? { signal } : {}) });
  try {
    const extents = await c.blockStatusAll('base:allocation');
    // Keep a few reads in flight into reused buffers (the sink is done with a buffer when it
    // returns); hand results to the sink in disk order.
    const pool = Array.from({ length: 4 }, () => Buffer.allocUnsafe(CHUNK));
    let next = 0;
    const window: { offset: number; buf: Buffer; p: Promise<void> }[] = [];
    const drain = async (): Promise<void> => {
      const head = window.shift()!;
      await head.p;
      sink.data(head.offset, head.buf);
    };
    try {
      for (const e of extents) {
        if (e.flags & STATE.ZERO) {
          while (window.length > 0) await drain();
          sink.zeros(e.offset, e.length);
          continue;
        }
        for (let off = e.offset; off < e.offset + e.length; off += CHUNK) {
          const n = Math.min(CHUNK, e.offset + e.length - off);
          const buf = pool[next++ % pool.length]!.subarray(0, n);
          window.push({ offset: off, buf, p: c.readInto(off, buf) });
          if (window.length >= pool.length) await drain();
        }
      }
      while (window.length > 0) await drain();
    } finally {
      // A failed drain leaves reads in flight; they fail with the connection, unobserved.
      for (const w of window) w.p.catch(() => {});
    }
    return c.size;
  } finally {
    await c.disconnect();
  }
}

/** Checks the record writer's disk. Never writes to the image. */
export async function verifyDisk(image: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const t0 = performance.now();
  const nbd = isNbdUri(image) ? parseNbdUri(image) : undefined;
  const { format, size: imageSize } = nbd ? { format: 'nbd', size: -1 } : await imageFormat(image);
  const max = opts.maxEntries ?? 1000;
  const corrupt: VerifyReport['corrupt'] = [];
  const outOfOrder: VerifyReport['outOfOrder'] = [];
  const gaps: VerifyReport['gaps'] = [];
  const counts = { corrupt: 0, outOfOrder: 0, gaps: 0 };
  const writers = new Set<bigint>();
  let records = 0;
  let contiguous = 0; // records 1..contiguous in place
  let lastTimeNs: bigint | undefined;
  // The first slot that broke the run, what it held, and whether anything valid came after it.
  let brk: { offset: number; kind: 'empty' | 'corrupt' | 'foreign' | 'misplaced'; reason: string } | undefined;
  let validAfterBreak = false;
  let carry = Buffer.alloc(0); // a slot split across chunks (only when a chunk is not slot-aligned)

  const addCorrupt = (e: VerifyReport['corrupt'][number]): void => {
    counts.corrupt++;
    if (corrupt.length < max) corrupt.push(e);
  };
  const slot = (offset: number, buf: Buffer, at: number): void => {
    const d = decodeRecord(buf, at);
    const expectedSeq = offset / RECORD_SIZE + 1;
    if (d.kind === 'record') {
      records++;
      writers.add(d.writer);
      if (d.seq === expectedSeq && d.offset === offset) {
        if (!brk) {
          contiguous = d.seq;
          lastTimeNs = d.timeNs;
        }
        else validAfterBreak = true;
        return;
      }
      counts.outOfOrder++;
      const reason = d.offset !== offset ? `record says it belongs at offset ${d.offset}` : `sequence ${d.seq} where ${expectedSeq} belongs`;
      if (outOfOrder.length < max) outOfOrder.push({ offset, seq: d.seq, expectedSeq, reason });
      brk ??= { offset, kind: 'misplaced', reason };
      return;
    }
    if (!brk) {
      brk = { offset, kind: d.kind, reason: d.kind === 'corrupt' ? d.reason : d.kind === 'foreign' ? 'not a record' : 'never written' };
      return;
    }
    if (d.kind === 'corrupt') addCorrupt({ offset, reason: d.reason, ...(d.seq !== undefined ? { seq: d.seq } : {}) });
  };
  const sink: Sink = {
    data(offset, buf) {
      let start = offset;
      if (carry.length > 0) {
        buf = Buffer.concat([carry, buf]);
        start -= carry.length;
        carry = Buffer.alloc(0);
      }
      let at = 0;
      for (; at + RECORD_SIZE <= buf.length; at += RECORD_SIZE) slot(start + at, buf, at);
      if (at < buf.length) carry = Buffer.from(buf.subarray(at));
    },
    zeros(offset, length) {
      const first = Math.ceil(offset / RECORD_SIZE) * RECORD_SIZE;
      if (first < offset + length && !brk) brk = { offset: first, kind: 'empty', reason: 'never written' };
    },
  };

  const method = format === 'raw' ? 'file' : 'nbd';
  let size = imageSize;
  if (nbd) size = await scanNbd(nbd, sink, opts.signal);
  else if (method === 'file') await scanFile(image, size, sink, opts.signal);
  else await scanImageNbd(image, format, opts.forceShare ?? false, sink, opts.signal);

  let tornTail: VerifyReport['tornTail'];
  if (brk && brk.kind !== 'misplaced') {
    const expectedSeq = brk.offset / RECORD_SIZE + 1;
    if (validAfterBreak) {
      if (brk.kind === 'empty') {
        counts.gaps++;
        gaps.push({ offset: brk.offset, expectedSeq });
      } else {
        addCorrupt({ offset: brk.offset, reason: brk.reason, seq: expectedSeq });
      }
    } else if (brk.kind === 'corrupt') {
      if (opts.strict) addCorrupt({ offset: brk.offset, reason: brk.reason, seq: expectedSeq });
      else tornTail = { offset: brk.offset, reason: brk.reason };
    }
  }
  corrupt.sort((a, b) => a.offset - b.offset);
  const meetsExpectation = opts.expectSeq === undefined || contiguous >= opts.expectSeq;
  return {
    image,
    format,
    size,
    method,
    ok: counts.corrupt === 0 && counts.outOfOrder === 0 && counts.gaps === 0 && meetsExpectation,
    records,
    highestContiguousSeq: contiguous,
    ...(lastTimeNs !== undefined ? { lastRecordTime: new Date(Number(lastTimeNs / 1_000_000n)).toISOString() } : {}),
    writers: writers.size,
    corrupt,
    outOfOrder,
    gaps,
    ...(tornTail ? { tornTail } : {}),
    ...(opts.expectSeq !== undefined ? { expectSeq: opts.expectSeq } : {}),
    counts,
    elapsedMs: Math.round(performance.now() - t0),
  };
}

export interface VerifyFsReport {
  image: string;
  ok: boolean;
  /** e2fsck -fn after journal replay: 0 clean, 4 errors left (see e2fsck(8)). */
  fsck: { exitCode: number; output: string };
  journalReplayed: boolean;
  files: number;
  /** Each good file's index and generation: a console line `REBOUND file=I gen=G durable` means
   * file I must be here with generation G or later. */
  goodFiles: { index: number; generation: number }[];
  badFiles: { name: string; reason: string }[];
  elapsedMs: number;
}

async function exitCodeOf(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, out: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

/**
 * Checks the fs writer's ext4 disk on a scratch raw copy; the image itself is never touched.
 * `image` may also be an nbd:// or nbd+unix:// URI (qemu-img reads it).
 */
export async function verifyFs(image: string): Promise<VerifyFsReport> {
  const t0 = performance.now();
  const { format } = await imageFormat(image);
  const dir = await mkdtemp(join(tmpdir(), 'rebound-verifyfs-'));
  try {
    const copy = join(dir, 'disk.raw');
    await run('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', image, copy]);
    // Replaying the journal is what mounting would do; a crash-consistent copy needs it.
    const replay = await exitCodeOf('e2fsck', ['-E', 'journal_only', '-y', copy]);
    const fsck = await exitCodeOf('e2fsck', ['-fn', copy]);
    const out = join(dir, 'files');
    await run('mkdir', [out]);
    await exitCodeOf('debugfs', ['-R', `rdump /rebound ${out}`, copy]);
    const badFiles: VerifyFsReport['badFiles'] = [];
    const goodFiles: VerifyFsReport['goodFiles'] = [];
    let files = 0;
    const names = await readdir(join(out, 'rebound')).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const m = /^f(\d{6})$/.exec(name);
      if (!m) continue; // .tmp: a rewrite in flight, never reported durable
      files++;
      const res = checkFile(await readFile(join(out, 'rebound', name)), Number(m[1]));
      if (!res.ok) badFiles.push({ name, reason: res.reason });
      else goodFiles.push({ index: res.header.index, generation: Number(res.header.generation) });
    }
    return {
      image,
      ok: fsck.code === 0 && badFiles.length === 0,
      fsck: { exitCode: fsck.code, output: fsck.out.trim() },
      journalReplayed: replay.code === 1 || /recovering journal/i.test(replay.out),
      files,
      goodFiles,
      badFiles,
      elapsedMs: Math.round(performance.now() - t0),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
