// Per-block checksums of what a replica layer holds, kept in a file beside the layer, so that
// scrub can re-read each written block and prove it is still what was received. Blocks are the
// store's block size (= the qcow2 cluster size), keyed by block index; the file ends with a
// BLAKE3 of its own contents, so a damaged sums file is detected as such.
//
// Layout: "RBS1" | u32 block size | u32 count | count × (u64 block index | 32-byte BLAKE3) | BLAKE3
import { readFile } from 'node:fs/promises';
import { ReboundError } from '../domain/errors.ts';
import { checksum, CHECKSUM_BYTES } from '../datapath/checksum.ts';
import { writeFileAtomic } from './durable.ts';

const MAGIC = 0x52425331; // "RBS1"
const ENTRY = 8 + CHECKSUM_BYTES;

export type BlockSums = Map<number, Buffer>;

export function encodeSums(blockSize: number, sums: BlockSums): Buffer {
  const keys = [...sums.keys()].sort((a, b) => a - b);
  const b = Buffer.alloc(12 + keys.length * ENTRY);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(blockSize, 4);
  b.writeUInt32BE(keys.length, 8);
  keys.forEach((k, i) => {
    b.writeBigUInt64BE(BigInt(k), 12 + i * ENTRY);
    sums.get(k)!.copy(b, 12 + i * ENTRY + 8);
  });
  return Buffer.concat([b, checksum(b)]);
}

export function decodeSums(file: string, b: Buffer, blockSize: number): BlockSums {
  const bad = (why: string) => new ReboundError('internal', 'replica-sums-damaged', `The block checksums in ${file} are damaged (${why}).`, {
    hint: 'Run a scrub: the point this file belongs to cannot be verified and will be marked bad.',
  });
  if (b.length < 12 + CHECKSUM_BYTES) throw bad('too short');
  const body = b.subarray(0, b.length - CHECKSUM_BYTES);
  if (!checksum(body).equals(b.subarray(b.length - CHECKSUM_BYTES))) throw bad('its own checksum does not match');
  if (body.readUInt32BE(0) !== MAGIC || body.readUInt32BE(4) !== blockSize) throw bad('wrong header');
  const n = body.readUInt32BE(8);
  if (body.length !== 12 + n * ENTRY) throw bad('wrong length');
  const sums: BlockSums = new Map();
  for (let i = 0; i < n; i++) {
    const at = 12 + i * ENTRY;
    sums.set(Number(body.readBigUInt64BE(at)), Buffer.from(body.subarray(at + 8, at + ENTRY)));
  }
  return sums;
}

export const writeSums = (path: string, blockSize: number, sums: BlockSums): Promise<void> => writeFileAtomic(path, encodeSums(blockSize, sums));

export async function readSums(path: string, blockSize: number): Promise<BlockSums> {
  return decodeSums(path, await readFile(path), blockSize);
}
