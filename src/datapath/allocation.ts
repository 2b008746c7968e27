// Where a disk image holds data. Node's fs has no SEEK_DATA/SEEK_HOLE, so this asks
// `qemu-img map --output=json`, which uses them for raw files and reads qcow2 metadata: it maps
// a sparse 16 GiB file in milliseconds, where reading it to find zeros would take seconds
// (bench/datapath.ts). Block devices have no holes to report: everything comes back as data,
// and the digest tracker's zero-block check does the rest.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ReboundError } from '../domain/errors.ts';
import { alignToBlocks } from './extents.ts';
import type { ByteExtent } from './extents.ts';

const run = promisify(execFile);

export interface MappedExtent extends ByteExtent {
  /** The range reads as zeros (a hole or a zero cluster). */
  zero: boolean;
  /** The range is stored in this image (false: unallocated, or from a backing file). */
  data: boolean;
}

/** `qemu-img map` of an image, as ranges. */
export async function mapImage(path: string, format = 'raw', imageOpts?: { objects: string[]; opts: string }): Promise<MappedExtent[]> {
  const args = imageOpts
    ? ['map', '--output=json', ...imageOpts.objects.flatMap((o) => ['--object', o]), '--image-opts', imageOpts.opts]
    : ['map', '--output=json', '-f', format, path];
  let stdout: string;
  try {
    ({ stdout } = await run('qemu-img', args, { maxBuffer: 512 * 1024 * 1024 }));
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new ReboundError('unavailable', 'image-map-failed', `Cannot map the allocation of ${path}: ${stderr.trim() || String(err)}.`, {
      hint: 'Check that the image exists, is readable and its format is right.',
      cause: err,
    });
  }
  const rows = JSON.parse(stdout) as { start: number; length: number; zero: boolean; data: boolean }[];
  return rows.map((r) => ({ offset: r.start, length: r.length, zero: r.zero, data: r.data }));
}

/** The ranges of an image that may hold non-zero data, widened to whole blocks: what initial
 * replication must read. Holes and zero clusters are left out. */
export async function dataExtents(path: string, blockSize: number, size: number, format = 'raw'): Promise<ByteExtent[]> {
  const map = await mapImage(path, format);
  return alignToBlocks(map.filter((e) => !e.zero), blockSize, size);
}
