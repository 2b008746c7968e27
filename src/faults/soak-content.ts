// What the soak's writer puts on a physical machine's image files, and how a copy is checked.
// Two disks:
//   - the records disk: the guest record writer's format (src/guest/records.ts), appended in
//     sequence at (seq-1)*4096, so src/guest/verify.ts `verifyDisk` checks it (records 1..N in
//     place, checksummed) and `expectSeq` says how many the writer acknowledged;
//   - the stamps disk: 4 KiB blocks rewritten at random offsets; each block is self-checking
//     (magic, its own offset, a generation, a filler and a CRC-32C), so any copy can be checked
//     block by block, and generations tell whether a later recovery point holds older data
//     than an earlier one (which would mean replayed or lost writes).
// Pure encode/decode plus the prefill; the writer process is soak-writer.ts.
import { open } from 'node:fs/promises';
import { crc32c, encodeRecord, fillBytes, isZero, RECORD_SIZE } from '../guest/records.ts';

export const STAMP_SIZE = 4096;
export const STAMP_MAGIC = 'RBNDSTM1';

/** Where the writer writes and how. */
export interface ContentSpec {
  recordsPath: string;
  stampsPath: string;
  recordsBytes: number;
  stampsBytes: number;
  /** Writer id in every record and stamp. */
  writer: bigint;
}

/** The stamps disk's blocks hold generations; gen 0 means a zero (never written) block. */
export function encodeStamp(offset: number, gen: number, writer: bigint): Uint8Array {
  const b = new Uint8Array(STAMP_SIZE);
  const v = new DataView(b.buffer);
  b.set(Buffer.from(STAMP_MAGIC, 'latin1'), 0);
  v.setBigUint64(8, BigInt(offset), true);
  v.setBigUint64(16, BigInt(gen), true);
  v.setBigUint64(24, writer, true);
  fillBytes(b.subarray(32, STAMP_SIZE - 8), writer ^ (BigInt(gen) * 0x9e3779b97f4a7c15n) ^ BigInt(offset));
  v.setUint32(STAMP_SIZE - 4, crc32c(b, 0, STAMP_SIZE - 4), true);
  return b;
}

export type DecodedStamp = { kind: 'zero' } | { kind: 'stamp'; gen: number } | { kind: 'bad'; reason: string };

export function decodeStamp(buf: Uint8Array, offset: number): DecodedStamp {
  if (buf.length !== STAMP_SIZE) return { kind: 'bad', reason: `short block (${buf.length} bytes)` };
  if (isZero(buf)) return { kind: 'zero' };
  if (Buffer.from(buf.buffer, buf.byteOffset, 8).toString('latin1') !== STAMP_MAGIC) return { kind: 'bad', reason: 'not a stamp (bad magic)' };
  const v = new DataView(buf.buffer, buf.byteOffset, STAMP_SIZE);
  const want = v.getUint32(STAMP_SIZE - 4, true);
  const got = crc32c(buf, 0, STAMP_SIZE - 4);
  if (want !== got) return { kind: 'bad', reason: `checksum mismatch (stored ${want.toString(16)}, computed ${got.toString(16)})` };
  const at = Number(v.getBigUint64(8, true));
  if (at !== offset) return { kind: 'bad', reason: `stamp of offset ${at} found at ${offset}` };
  return { kind: 'stamp', gen: Number(v.getBigUint64(16, true)) };
}

export interface StampScan {
  /** Generation per 4 KiB block (0: zero block). */
  gens: Float64Array;
  bad: { offset: number; reason: string }[];
}

/** Checks every block of a stamps disk read through `read` (a file, an NBD export, …). */
export async function scanStamps(read: (offset: number, length: number) => Promise<Uint8Array>, size: number, chunk = 1024 * 1024): Promise<StampScan> {
  const gens = new Float64Array(Math.floor(size / STAMP_SIZE));
  const bad: StampScan['bad'] = [];
  for (let at = 0; at < size; at += chunk) {
    const n = Math.min(chunk, size - at);
    const buf = await read(at, n);
    for (let o = 0; o + STAMP_SIZE <= buf.length; o += STAMP_SIZE) {
      const d = decodeStamp(buf.subarray(o, o + STAMP_SIZE), at + o);
      if (d.kind === 'stamp') gens[(at + o) / STAMP_SIZE] = d.gen;
      else if (d.kind === 'bad' && bad.length < 50) bad.push({ offset: at + o, reason: d.reason });
    }
  }
  return { gens, bad };
}

/** Blocks whose generation went back between an earlier and a later copy. */
export function genRegressions(earlier: Float64Array, later: Float64Array, max = 20): { offset: number; earlier: number; later: number }[] {
  const out: { offset: number; earlier: number; later: number }[] = [];
  for (let i = 0; i < Math.min(earlier.length, later.length); i++) {
    if (later[i]! < earlier[i]!) {
      out.push({ offset: i * STAMP_SIZE, earlier: earlier[i]!, later: later[i]! });
      if (out.length >= max) break;
    }
  }
  return out;
}

export interface Prefill {
  /** Records 1..records are on the records disk. */
  records: number;
  /** Generations given out so far (stamps 1..gen). */
  gen: number;
}

/**
 * Creates both image files (sparse, then written): `records` records, and a stamp of generation
 * 1.. in every `stampEvery`-th block of the stamps disk (1 = every block).
 */
export async function prefill(spec: ContentSpec, opts: { records: number; stampEvery: number }): Promise<Prefill> {
  const r = await open(spec.recordsPath, 'w');
  try {
    await r.truncate(spec.recordsBytes);
    const batch = 256;
    for (let seq = 1; seq <= opts.records; seq += batch) {
      const n = Math.min(batch, opts.records - seq + 1);
      const buf = Buffer.alloc(n * RECORD_SIZE);
      for (let k = 0; k < n; k++) buf.set(encodeRecord({ seq: seq + k, timeNs: BigInt(Date.now()) * 1_000_000n, writer: spec.writer, offset: (seq + k - 1) * RECORD_SIZE }), k * RECORD_SIZE);
      await r.write(buf, 0, buf.length, (seq - 1) * RECORD_SIZE);
    }
    await r.sync();
  } finally {
    await r.close();
  }
  const s = await open(spec.stampsPath, 'w');
  let gen = 0;
  try {
    await s.truncate(spec.stampsBytes);
    const blocks = spec.stampsBytes / STAMP_SIZE;
    const per = 256;
    for (let b0 = 0; b0 < blocks; b0 += per) {
      const buf = Buffer.alloc(Math.min(per, blocks - b0) * STAMP_SIZE);
      let any = false;
      for (let k = 0; k < buf.length / STAMP_SIZE; k++) {
        if ((b0 + k) % opts.stampEvery !== 0) continue;
        buf.set(encodeStamp((b0 + k) * STAMP_SIZE, ++gen, spec.writer), k * STAMP_SIZE);
        any = true;
      }
      if (any) await s.write(buf, 0, buf.length, b0 * STAMP_SIZE);
    }
    await s.sync();
  } finally {
    await s.close();
  }
  return { records: opts.records, gen };
}
