// One replication frame: one extent of one disk of one point, compressed (zstd, skipped when it
// does not shrink; all-zero extents carry no payload), encrypted with AES-256-GCM under the
// session key, with the header as additional authenticated data and the nonce made from the
// sequence number. The plain data's BLAKE3 travels inside the ciphertext and is checked after
// decrypting and decompressing, so corruption anywhere between the source's read and the
// receiver's write is caught. Opening a frame has no side effect: it returns the data or throws.
//
// Wire layout (big-endian):  u32 rest-length | header | ciphertext | 16-byte GCM tag
// header: "RBF1" | u8 version | u8 type | u8 flags | u8 0 | u16 header-length | u16 0 |
//         u64 seq | u64 offset | u32 plain length | u32 ciphertext length |
//         u8 n + item id | u8 n + disk id | u8 n + point id
// plaintext: 32-byte BLAKE3 of the plain data | payload (zstd, raw, or empty for zeros)
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { constants as zc, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { invalid, ReboundError } from '../domain/errors.ts';
import type { SessionKey } from './frame-key.ts';
import { checksum as blake3sum, isZero } from './checksum.ts';

export const FRAME_MAGIC = 0x52424631; // "RBF1"
export const FRAME_VERSION = 1;
export const FRAME_TYPE = { DATA: 1, END: 2 } as const;
export const FRAME_FLAG = { COMPRESSED: 1, ZERO: 2 } as const;
/** The largest extent one frame carries; the replication engine splits larger ones. */
export const MAX_FRAME_EXTENT = 16 * 1024 * 1024;
/** zstd level 1: measured fastest per saved byte here (bench/datapath.ts); higher levels cost
 * several times the CPU for a few percent. */
export const DEFAULT_ZSTD_LEVEL = 1;

const FIXED_HEADER = 36;
const TAG_BYTES = 16;
const SUM_BYTES = 32;
const MAX_ID = 255;

export interface FrameHeader {
  type: number;
  flags: number;
  seq: number;
  itemId: string;
  diskId: string;
  pointId: string;
  offset: number;
  length: number;
}

export interface DataFrame {
  header: FrameHeader;
  /** The plain extent (zeros expanded). */
  data: Buffer;
  /** BLAKE3 of `data`, already verified. */
  checksum: Buffer;
}

export interface ExtentToSend {
  itemId: string;
  diskId: string;
  pointId: string;
  offset: number;
  data: Uint8Array;
  /** The data's BLAKE3 when the caller has just verified it (a relay's cache): not hashed again. */
  checksum?: Buffer;
}

const frameError = (code: string, message: string, details?: Record<string, unknown>): ReboundError =>
  // Retryable: a damaged or lost frame is resent by resuming the transfer.
  new ReboundError('invalid', code, message, { retryable: true, details });


function nonceFor(seq: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(seq), 4);
  return n;
}

function encodeHeader(h: FrameHeader, bodyLength: number): Buffer {
  const ids = [h.itemId, h.diskId, h.pointId].map((s) => Buffer.from(s, 'utf8'));
  for (const id of ids) {
    if (id.length > MAX_ID) throw invalid('frame-id-too-long', `An id in a frame header has ${id.length} bytes; the limit is ${MAX_ID}.`);
  }
  const len = FIXED_HEADER + ids.reduce((n, id) => n + 1 + id.length, 0);
  const b = Buffer.alloc(len);
  b.writeUInt32BE(FRAME_MAGIC, 0);
  b.writeUInt8(FRAME_VERSION, 4);
  b.writeUInt8(h.type, 5);
  b.writeUInt8(h.flags, 6);
  b.writeUInt16BE(len, 8);
  b.writeBigUInt64BE(BigInt(h.seq), 12);
  b.writeBigUInt64BE(BigInt(h.offset), 20);
  b.writeUInt32BE(h.length, 28);
  b.writeUInt32BE(bodyLength, 32);
  let at = FIXED_HEADER;
  for (const id of ids) {
    b.writeUInt8(id.length, at);
    id.copy(b, at + 1);
    at += 1 + id.length;
  }
  return b;
}

function decodeHeader(b: Buffer): { header: FrameHeader; headerLength: number; bodyLength: number } {
  if (b.length < FIXED_HEADER) throw frameError('frame-truncated', `A frame of ${b.length} bytes is shorter than a frame header.`);
  if (b.readUInt32BE(0) !== FRAME_MAGIC) throw frameError('frame-malformed', 'A frame does not start with the frame magic; the stream is not a Rebound replication stream or lost its framing.');
  const version = b.readUInt8(4);
  if (version !== FRAME_VERSION) {
    throw new ReboundError('invalid', 'frame-version', `A frame has version ${version}; this side speaks version ${FRAME_VERSION}.`, {
      hint: 'Upgrade the older side so both ends run the same Rebound release.',
    });
  }
  const type = b.readUInt8(5);
  const flags = b.readUInt8(6);
  if (type !== FRAME_TYPE.DATA && type !== FRAME_TYPE.END) throw frameError('frame-malformed', `A frame has unknown type ${type}.`);
  if ((flags & ~(FRAME_FLAG.COMPRESSED | FRAME_FLAG.ZERO)) !== 0 || b.readUInt8(7) !== 0 || b.readUInt16BE(10) !== 0) {
    throw frameError('frame-malformed', 'A frame header has unknown flags or non-zero reserved bytes.');
  }
  const headerLength = b.readUInt16BE(8);
  const seq = b.readBigUInt64BE(12);
  const offset = b.readBigUInt64BE(20);
  const length = b.readUInt32BE(28);
  const bodyLength = b.readUInt32BE(32);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER)) throw frameError('frame-malformed', 'A frame header has an out-of-range sequence number or offset.');
  if (length > MAX_FRAME_EXTENT || bodyLength > MAX_FRAME_EXTENT + SUM_BYTES + 1024) throw frameError('frame-malformed', `A frame claims ${length} bytes; the limit is ${MAX_FRAME_EXTENT}.`);
  const ids: string[] = [];
  let at = FIXED_HEADER;
  for (let i = 0; i < 3; i++) {
    if (at >= headerLength || at >= b.length) throw frameError('frame-truncated', 'A frame header ends inside its ids.');
    const n = b.readUInt8(at);
    if (at + 1 + n > headerLength || at + 1 + n > b.length) throw frameError('frame-truncated', 'A frame header ends inside its ids.');
    ids.push(b.toString('utf8', at + 1, at + 1 + n));
    at += 1 + n;
  }
  if (at !== headerLength) throw frameError('frame-malformed', 'A frame header length does not match its contents.');
  const [itemId = '', diskId = '', pointId = ''] = ids;
  return { header: { type, flags, seq: Number(seq), offset: Number(offset), length, itemId, diskId, pointId }, headerLength, bodyLength };
}

/** A sealed frame as the pieces it is made of, in order (length prefix and header, ciphertext,
 * tag): a sender writes them as they are instead of joining them, one copy of the frame less. */
function seal(key: SessionKey, header: FrameHeader, plain: Buffer[]): Buffer[] {
  const bodyLength = plain.reduce((n, p) => n + p.length, 0);
  const h = encodeHeader(header, bodyLength);
  const cipher = createCipheriv('aes-256-gcm', key.key, nonceFor(header.seq));
  cipher.setAAD(h);
  const head = Buffer.allocUnsafe(4 + h.length);
  // GCM's ciphertext is as long as the plaintext: the length is known before sealing.
  head.writeUInt32BE(h.length + bodyLength + TAG_BYTES, 0);
  h.copy(head, 4);
  const parts = [head];
  for (const p of plain) if (p.length > 0) parts.push(cipher.update(p));
  const fin = cipher.final(); // empty for GCM
  if (fin.length > 0) parts.push(fin);
  parts.push(cipher.getAuthTag());
  return parts;
}

/** Seals one extent as a data frame (length prefix included). */
export function encodeDataFrame(key: SessionKey, seq: number, e: ExtentToSend, zstdLevel: number | null = DEFAULT_ZSTD_LEVEL): Buffer {
  return Buffer.concat(encodeDataFrameParts(key, seq, e, zstdLevel));
}

/** encodeDataFrame as the frame's pieces, in order, for a sender that writes them one after the other. */
export function encodeDataFrameParts(key: SessionKey, seq: number, e: ExtentToSend, zstdLevel: number | null = DEFAULT_ZSTD_LEVEL): Buffer[] {
  if (e.data.length > MAX_FRAME_EXTENT) throw invalid('frame-extent-too-large', `An extent of ${e.data.length} bytes is larger than a frame carries (${MAX_FRAME_EXTENT}); split it.`);
  const sum = e.checksum ?? blake3sum(e.data);
  let flags = 0;
  let payload: Buffer;
  if (isZero(e.data)) {
    flags = FRAME_FLAG.ZERO;
    payload = Buffer.alloc(0);
  } else {
    payload = Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength);
    if (zstdLevel !== null) {
      // One output chunk the size of the input (zlib's default of 16 KiB made a 64 KiB extent
      // four chunks and a join): 1.2-1.3x faster here; an output that does not fit is not used.
      const z = zstdCompressSync(payload, { chunkSize: Math.max(64, payload.length), params: { [zc.ZSTD_c_compressionLevel]: zstdLevel } });
      if (z.length < payload.length) {
        flags = FRAME_FLAG.COMPRESSED;
        payload = z;
      }
    }
  }
  const header: FrameHeader = { type: FRAME_TYPE.DATA, flags, seq, itemId: e.itemId, diskId: e.diskId, pointId: e.pointId, offset: e.offset, length: e.data.length };
  return seal(key, header, [sum, payload]);
}

/** Seals the end-of-transfer frame: its sequence number says how many frames came before it. */
export function encodeEndFrame(key: SessionKey, seq: number): Buffer {
  return Buffer.concat(seal(key, { type: FRAME_TYPE.END, flags: 0, seq, itemId: '', diskId: '', pointId: '', offset: 0, length: 0 }, [blake3sum(Buffer.alloc(0))]));
}

/** How many bytes the frame at the start of `buf` needs in all, or null when even its length
 * prefix has not arrived yet. */
export function frameLength(buf: Buffer): number | null {
  if (buf.length < 4) return null;
  const rest = buf.readUInt32BE(0);
  if (rest < FIXED_HEADER + TAG_BYTES || rest > MAX_FRAME_EXTENT + 64 * 1024) throw frameError('frame-malformed', `A frame claims a length of ${rest} bytes, outside what a frame can be.`);
  return 4 + rest;
}

/**
 * Opens one whole frame (length prefix included): authenticates header and body, checks the
 * sequence number is `expectedSeq`, decompresses and verifies the checksum. Throws a
 * ReboundError (frame-*) on any fault; returns nothing partial.
 */
export function decodeFrame(key: SessionKey, frame: Buffer, expectedSeq: number): DataFrame {
  const total = frameLength(frame);
  if (total === null || frame.length < total) throw frameError('frame-truncated', `A frame is cut short (${frame.length} bytes of ${total ?? 'at least 4'}).`);
  if (frame.length > total) throw frameError('frame-malformed', 'A frame has bytes after its end.');
  const body = frame.subarray(4);
  const { header, headerLength, bodyLength } = decodeHeader(body);
  if (headerLength + bodyLength + TAG_BYTES !== body.length) throw frameError('frame-malformed', 'A frame length does not match its header.');
  const decipher = createDecipheriv('aes-256-gcm', key.key, nonceFor(header.seq));
  decipher.setAAD(body.subarray(0, headerLength));
  decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
  let plain: Buffer;
  try {
    const head = decipher.update(body.subarray(headerLength, headerLength + bodyLength));
    const tail = decipher.final(); // empty for GCM: no second copy of the frame
    plain = tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch {
    throw frameError('frame-auth-failed', `Frame ${header.seq} failed authentication: it was altered in transit or sealed with another key.`, { seq: header.seq });
  }
  if (header.seq !== expectedSeq) {
    throw frameError('frame-out-of-order', `Frame ${header.seq} arrived where frame ${expectedSeq} was expected: it is a replay, reordered, or one was lost.`, {
      seq: header.seq,
      expectedSeq,
    });
  }
  if (plain.length < SUM_BYTES) throw frameError('frame-malformed', 'A frame body is shorter than its checksum.');
  const checksum = plain.subarray(0, SUM_BYTES);
  const payload = plain.subarray(SUM_BYTES);
  let data: Buffer;
  if (header.flags & FRAME_FLAG.ZERO) {
    if (payload.length !== 0) throw frameError('frame-malformed', 'A zero frame carries a payload.');
    data = Buffer.alloc(header.length);
  } else if (header.flags & FRAME_FLAG.COMPRESSED) {
    try {
      // One output chunk a byte larger than the stated length, so zlib needs no second chunk to
      // see the end: 1.7x faster here than its 16 KiB chunks and their join.
      data = zstdDecompressSync(payload, { maxOutputLength: Math.max(header.length, 1), chunkSize: Math.max(64, header.length + 1) });
    } catch {
      throw frameError('frame-malformed', `Frame ${header.seq} does not decompress to its stated ${header.length} bytes.`);
    }
  } else {
    // The decipher's fresh output, past the checksum: no copy.
    data = payload;
  }
  if (data.length !== header.length) throw frameError('frame-malformed', `Frame ${header.seq} carries ${data.length} bytes but states ${header.length}.`);
  if (!blake3sum(data).equals(checksum)) {
    throw frameError('frame-checksum-mismatch', `Frame ${header.seq} (${header.diskId} at ${header.offset}) does not match its checksum after decrypting.`, { seq: header.seq });
  }
  return { header, data, checksum: Buffer.from(checksum) };
}
