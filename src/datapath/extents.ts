// Byte ranges of a disk and the small algebra the data path needs on them: coalescing adjacent
// ranges, aligning to blocks, splitting for frames.

export interface ByteExtent {
  offset: number;
  length: number;
}

/** Sorts and merges overlapping or touching extents. */
export function coalesce(extents: Iterable<ByteExtent>): ByteExtent[] {
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: ByteExtent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/** Widens each extent to whole blocks (the last block clipped to `size`) and coalesces. */
export function alignToBlocks(extents: Iterable<ByteExtent>, blockSize: number, size: number): ByteExtent[] {
  const widened: ByteExtent[] = [];
  for (const e of extents) {
    const start = Math.floor(e.offset / blockSize) * blockSize;
    const end = Math.min(size, Math.ceil((e.offset + e.length) / blockSize) * blockSize);
    if (end > start) widened.push({ offset: start, length: end - start });
  }
  return coalesce(widened);
}

/** Cuts extents into pieces of at most `max` bytes (frames, NBD requests). */
export function* split(extents: Iterable<ByteExtent>, max: number): Generator<ByteExtent> {
  for (const e of extents) {
    for (let at = 0; at < e.length; at += max) yield { offset: e.offset + at, length: Math.min(max, e.length - at) };
  }
}

export const totalLength = (extents: Iterable<ByteExtent>): number => {
  let n = 0;
  for (const e of extents) n += e.length;
  return n;
};
