// Fixed-size block digests of a disk (image file, block device, or anything with `read`), and
// their comparison: the resync / "differences only" method for sources without changed-block
// tracking and for reverse replication. A digest is the first 16 bytes of the block's BLAKE3;
// an all-zero block gets the all-zero digest without hashing, and holes (per qemu-img map) are
// not read at all. Reads are large and double-buffered: the next read is in flight while the
// current buffer is hashed.
import { open } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { invalid } from '../domain/errors.ts';
import { dataExtents } from './allocation.ts';
import { checksum, isZero } from './checksum.ts';
import { coalesce, split } from './extents.ts';
import type { ByteExtent } from './extents.ts';

const run = promisify(execFile);

export const DIGEST_BYTES = 16;
/** 64 KiB, the replica store's block: a changed digest block is sent whole, so at 256 KiB
 * random 64 KiB writes put 3.8 bytes on the wire per changed byte (BENCHMARKS.md, replication),
 * and at 64 KiB about 1. Digesting costs little more: 3.3 GiB/s against 3.8 GiB/s at 256 KiB
 * (page-cached 512 MiB image, this machine), far above what the disks read. The digests of
 * 1 TiB take 256 MiB. Existing tracking keeps the block size it started with. */
export const DEFAULT_DIGEST_BLOCK = 64 * 1024;
const DEFAULT_READ = 8 * 1024 * 1024;

export interface DigestMap {
  blockSize: number;
  size: number;
  /** `ceil(size / blockSize) * DIGEST_BYTES` bytes; a zero block's digest is all zeros. */
  digests: Buffer;
}

/** Something to read a disk through: a file, an NbdClient (it fits), a test double. */
export interface BlockReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

export interface DigestOptions {
  blockSize?: number;
  /** Bytes per read; a multiple of the block size. */
  readSize?: number;
  /** Only these ranges may hold data (the rest is known to be zero), e.g. from qemu-img map. */
  dataExtents?: readonly ByteExtent[];
  /** Stops the pass between reads (a stopping agent must not wait for a whole disk's digests). */
  signal?: AbortSignal;
}

const ZERO_DIGEST = Buffer.alloc(DIGEST_BYTES);

/** The digest of one block as this module computes it (zero blocks → all-zero digest). */
export function blockDigest(block: Uint8Array): Buffer {
  if (isZero(block)) return ZERO_DIGEST;
  return checksum(block).subarray(0, DIGEST_BYTES);
}

/** Digests every block of a reader. */
export async function digestReader(reader: BlockReader, opts: DigestOptions = {}): Promise<DigestMap> {
  const blockSize = opts.blockSize ?? DEFAULT_DIGEST_BLOCK;
  const readSize = Math.max(blockSize, Math.floor((opts.readSize ?? DEFAULT_READ) / blockSize) * blockSize);
  if (!Number.isInteger(blockSize) || blockSize < 4096 || blockSize % 4096 !== 0) {
    throw invalid('digest-block-size', `A digest block size of ${blockSize} is not a multiple of 4096 bytes.`);
  }
  const size = reader.size;
  const digests = Buffer.alloc(Math.ceil(size / blockSize) * DIGEST_BYTES); // zeros: unread ranges are zero
  const ranges = opts.dataExtents ? coalesce(opts.dataExtents) : [{ offset: 0, length: size }];
  const pieces = [...split(ranges, readSize)];
  let next = pieces.length > 0 ? reader.read(pieces[0]!.offset, pieces[0]!.length) : undefined;
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!;
    if (opts.signal?.aborted) {
      next?.then(() => undefined, () => undefined); // the read in flight ends on its own
      opts.signal.throwIfAborted();
    }
    const buf = await next!;
    next = i + 1 < pieces.length ? reader.read(pieces[i + 1]!.offset, pieces[i + 1]!.length) : undefined;
    if (piece.offset % blockSize !== 0) throw invalid('digest-unaligned', `A data range at ${piece.offset} is not aligned to the ${blockSize}-byte digest block.`);
    for (let at = 0; at < buf.length; at += blockSize) {
      const block = buf.subarray(at, Math.min(buf.length, at + blockSize));
      blockDigest(block).copy(digests, ((piece.offset + at) / blockSize) * DIGEST_BYTES);
    }
  }
  return { blockSize, size, digests };
}

/** A reader over a file or block device, with one reusable buffer per in-flight read. */
export async function openFileReader(path: string): Promise<BlockReader & { close(): Promise<void> }> {
  const fh = await open(path, 'r');
  const st = await fh.stat();
  let size = st.size;
  if (st.isBlockDevice()) {
    const { stdout } = await run('blockdev', ['--getsize64', path]);
    size = Number(stdout.trim());
  }
  const buffers = [Buffer.allocUnsafe(0), Buffer.allocUnsafe(0)];
  let turn = 0;
  return {
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      // Two buffers alternate: the caller holds at most one while the next read fills the other.
      turn ^= 1;
      if (buffers[turn]!.length < length) buffers[turn] = Buffer.allocUnsafe(length);
      const buf = buffers[turn]!.subarray(0, length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) {
          buf.fill(0, got); // past the end of a file that shrank: reads as zeros
          break;
        }
        got += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}

/** Digests a raw image file or block device, skipping its holes. */
export async function digestFile(path: string, opts: Omit<DigestOptions, 'dataExtents'> & { skipHoles?: boolean } = {}): Promise<DigestMap> {
  const reader = await openFileReader(path);
  try {
    const blockSize = opts.blockSize ?? DEFAULT_DIGEST_BLOCK;
    const data = opts.skipHoles === false ? undefined : await dataExtents(path, blockSize, reader.size);
    return await digestReader(reader, { ...opts, blockSize, ...(data ? { dataExtents: data } : {}) });
  } finally {
    await reader.close();
  }
}

/** The byte ranges whose blocks differ between two digest maps of the same disk, coalesced.
 * A disk that grew or shrank counts its extra blocks as changed. */
export function diffDigests(a: DigestMap, b: DigestMap): ByteExtent[] {
  if (a.blockSize !== b.blockSize) {
    throw invalid('digest-block-mismatch', `Digest maps with block sizes ${a.blockSize} and ${b.blockSize} cannot be compared; digest both sides with the same block size.`);
  }
  const bs = a.blockSize;
  const size = Math.max(a.size, b.size);
  const blocks = Math.ceil(size / bs);
  const out: ByteExtent[] = [];
  for (let i = 0; i < blocks; i++) {
    const at = i * DIGEST_BYTES;
    const inA = at < a.digests.length;
    const inB = at < b.digests.length;
    const same = inA && inB && a.digests.compare(b.digests, at, at + DIGEST_BYTES, at, at + DIGEST_BYTES) === 0;
    if (same) continue;
    const offset = i * bs;
    const length = Math.min(bs, size - offset);
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
  }
  return out;
}
