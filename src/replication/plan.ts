// What one cycle sends for one disk: the point's changed (or, for a first copy, allocated)
// ranges widened to the replica's block size, clipped to the disk, and cut into frame-sized
// pieces. Pure and deterministic, so a resumed transfer rebuilds the same plan (the agent also
// saves it, since a first copy's allocation map can grow while the guest writes).
import { alignToBlocks, split, totalLength } from '../datapath/extents.ts';
import type { ByteExtent } from '../datapath/extents.ts';

/** Bytes per frame: big enough that per-frame costs vanish, small enough to resume cheaply. */
export const FRAME_BYTES = 1024 * 1024;

export interface DiskPlan {
  diskId: string;
  sizeBytes: number;
  /** Pieces in send order; frame sequence number = index. */
  extents: ByteExtent[];
  bytes: number;
}

export function planDisk(diskId: string, sizeBytes: number, ranges: readonly ByteExtent[], blockSize: number, frameBytes = FRAME_BYTES): DiskPlan {
  if (frameBytes % blockSize !== 0) throw new Error(`frame size ${frameBytes} is not a multiple of the block size ${blockSize}`);
  const clipped = ranges
    .map((r) => ({ offset: r.offset, length: Math.min(r.offset + r.length, sizeBytes) - r.offset }))
    .filter((r) => r.length > 0 && r.offset >= 0);
  const extents = [...split(alignToBlocks(clipped, blockSize, sizeBytes), frameBytes)];
  return { diskId, sizeBytes, extents, bytes: totalLength(extents) };
}
