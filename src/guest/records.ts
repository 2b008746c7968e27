// The on-disk formats of the guest workloads (guest/common.h is the C side; keep them in step):
// the record writer's fixed-size self-checking records and the fs writer's files. Pure encode /
// decode, no I/O, so the verifier and the tests share one definition.

export const RECORD_MAGIC = 'RBNDREC1';
export const RECORD_VERSION = 1;
export const RECORD_SIZE = 4096;
export const RECORD_HEADER = 48;
export const FILE_MAGIC = 'RBNDFIL1';
export const FILE_HEADER = 40;

// Slicing-by-8 tables: eight bytes per step, about twice the speed of a bytewise loop in JavaScript
// (~850 vs ~460 MiB/s measured here). The verifier checksums every record, so this bounds its speed.
const CRC32C_TABLES = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      const prev = t[(k - 1) * 256 + i]!;
      t[k * 256 + i] = ((prev >>> 8) ^ t[prev & 0xff]!) >>> 0;
    }
  }
  return t;
})();

/** CRC-32C (Castagnoli), as the guest computes it. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  const t = CRC32C_TABLES;
  let c = 0xffffffff;
  let i = start;
  // Word loads need 4-byte alignment (disk reads are; odd slices take the bytewise loop).
  // Little-endian host assumed, as everywhere Rebound runs (x86-64, arm64).
  if (((buf.byteOffset + i) & 3) === 0 && end - i >= 8) {
    const w = new Uint32Array(buf.buffer, buf.byteOffset + i, ((end - i) >>> 3) << 1);
    for (let j = 0; j < w.length; j += 2) {
      const a = w[j]! ^ c;
      const b = w[j + 1]!;
      c =
        t[1792 + (a & 0xff)]! ^ t[1536 + ((a >>> 8) & 0xff)]! ^ t[1280 + ((a >>> 16) & 0xff)]! ^ t[1024 + (a >>> 24)]! ^
        t[768 + (b & 0xff)]! ^ t[512 + ((b >>> 8) & 0xff)]! ^ t[256 + ((b >>> 16) & 0xff)]! ^ t[b >>> 24]!;
    }
    i += w.length * 4;
  }
  for (; i < end; i++) c = t[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const FILE_GEN_MUL = 0xc2b2ae3d27d4eb4fn;

/** The writer's filler: splitmix64 words, little endian, from `seed` (n a multiple of 8). */
export function fillBytes(out: Uint8Array, seed: bigint): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let s = seed & MASK64;
  for (let i = 0; i + 8 <= out.length; i += 8) {
    s = (s + GOLDEN) & MASK64;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    view.setBigUint64(i, z ^ (z >> 31n), true);
  }
}

export interface RecordHeader {
  seq: number;
  timeNs: bigint;
  writer: bigint;
  /** The byte offset the writer put the record at. */
  offset: number;
}

/** Encodes one record exactly as the guest's record writer does. */
export function encodeRecord(h: RecordHeader): Uint8Array {
  const r = new Uint8Array(RECORD_SIZE);
  const v = new DataView(r.buffer);
  r.set(Buffer.from(RECORD_MAGIC, 'latin1'), 0);
  v.setUint32(8, RECORD_VERSION, true);
  v.setUint32(12, RECORD_SIZE, true);
  v.setBigUint64(16, BigInt(h.seq), true);
  v.setBigUint64(24, h.timeNs, true);
  v.setBigUint64(32, h.writer, true);
  v.setBigUint64(40, BigInt(h.offset), true);
  fillBytes(r.subarray(RECORD_HEADER, RECORD_SIZE - 8), h.writer ^ ((BigInt(h.seq) * GOLDEN) & MASK64));
  v.setUint32(RECORD_SIZE - 4, crc32c(r, 0, RECORD_SIZE - 4), true);
  return r;
}

export type DecodedRecord =
  | { kind: 'empty' }
  | { kind: 'foreign' }
  | { kind: 'corrupt'; reason: string; seq?: number }
  | ({ kind: 'record' } & RecordHeader);

/**
 * Classifies the RECORD_SIZE bytes at `at`: all zero (never written), not a record at all, a
 * record whose checksum or fields are wrong, or a good record. The filler is covered by the
 * checksum, so it is not regenerated here (that would cost more than reading the disk).
 */
export function decodeRecord(buf: Uint8Array, at = 0): DecodedRecord {
  const r = buf.subarray(at, at + RECORD_SIZE);
  if (r.length < RECORD_SIZE) return { kind: 'corrupt', reason: 'short read' };
  const magic = Buffer.from(r.buffer, r.byteOffset, 8).toString('latin1');
  if (magic !== RECORD_MAGIC) {
    if (isZero(r)) return { kind: 'empty' };
    // A torn or damaged magic still leaves the rest of a record recognisable.
    const v0 = new DataView(r.buffer, r.byteOffset, RECORD_SIZE);
    if (v0.getUint32(12, true) === RECORD_SIZE && v0.getUint32(8, true) === RECORD_VERSION) {
      return { kind: 'corrupt', reason: 'bad magic', seq: Number(v0.getBigUint64(16, true)) };
    }
    return { kind: 'foreign' };
  }
  const v = new DataView(r.buffer, r.byteOffset, RECORD_SIZE);
  const seq = Number(v.getBigUint64(16, true));
  if (v.getUint32(8, true) !== RECORD_VERSION) return { kind: 'corrupt', reason: 'unknown version', seq };
  if (v.getUint32(12, true) !== RECORD_SIZE) return { kind: 'corrupt', reason: 'wrong record size', seq };
  const want = v.getUint32(RECORD_SIZE - 4, true);
  const got = crc32c(r, 0, RECORD_SIZE - 4);
  if (want !== got) return { kind: 'corrupt', reason: `checksum mismatch (stored ${hex(want)}, computed ${hex(got)})`, seq };
  return {
    kind: 'record',
    seq,
    timeNs: v.getBigUint64(24, true),
    writer: v.getBigUint64(32, true),
    offset: Number(v.getBigUint64(40, true)),
  };
}

export interface FileHeader {
  seed: bigint;
  index: number;
  generation: bigint;
  size: number;
}

/** Encodes one fs-writer file (size a multiple of 8). */
export function encodeFile(h: FileHeader): Uint8Array {
  const f = new Uint8Array(h.size);
  const v = new DataView(f.buffer);
  f.set(Buffer.from(FILE_MAGIC, 'latin1'), 0);
  v.setBigUint64(8, h.seed, true);
  v.setBigUint64(16, BigInt(h.index), true);
  v.setBigUint64(24, h.generation, true);
  v.setBigUint64(32, BigInt(h.size), true);
  const seed = h.seed ^ ((BigInt(h.index) * GOLDEN) & MASK64) ^ ((h.generation * FILE_GEN_MUL) & MASK64);
  fillBytes(f.subarray(FILE_HEADER, h.size - 8), seed);
  v.setUint32(h.size - 4, crc32c(f, 0, h.size - 4), true);
  return f;
}

/** Checks one fs-writer file: header, length, checksum and the index its name implies. */
export function checkFile(data: Uint8Array, expectIndex: number): { ok: true; header: FileHeader } | { ok: false; reason: string } {
  if (data.length < FILE_HEADER + 8) return { ok: false, reason: `too short (${data.length} bytes)` };
  if (Buffer.from(data.buffer, data.byteOffset, 8).toString('latin1') !== FILE_MAGIC) return { ok: false, reason: 'bad magic' };
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const header: FileHeader = {
    seed: v.getBigUint64(8, true),
    index: Number(v.getBigUint64(16, true)),
    generation: v.getBigUint64(24, true),
    size: Number(v.getBigUint64(32, true)),
  };
  if (header.size !== data.length) return { ok: false, reason: `length ${data.length} but header says ${header.size}` };
  if (header.index !== expectIndex) return { ok: false, reason: `holds index ${header.index}, expected ${expectIndex}` };
  const want = v.getUint32(data.length - 4, true);
  const got = crc32c(data, 0, data.length - 4);
  if (want !== got) return { ok: false, reason: `checksum mismatch (stored ${hex(want)}, computed ${hex(got)})` };
  return { ok: true, header };
}

const ZERO_BLOCK = new Uint8Array(RECORD_SIZE);

/** True when every byte is zero (a native compare, many times faster than a loop). */
export function isZero(b: Uint8Array): boolean {
  for (let at = 0; at < b.length; at += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, b.length - at);
    if (Buffer.compare(b.subarray(at, at + n), ZERO_BLOCK.subarray(0, n)) !== 0) return false;
  }
  return true;
}

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;
