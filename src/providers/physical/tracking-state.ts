// What digest tracking of a physical machine keeps on disk, so it outlives the process:
//   tracking.json   tracking was started (and with which digest block size)
//   base.json       the last consumed point: its id and, per disk, the digest map file
//   open.json       the point taken and not yet released: id, instant, per-disk changes, maps
//   maps/ID.N.dg    one disk's digest map (a small header, then 16 bytes per block)
//   dirty-ID        blocks of the open point that were read with other content than digested
// Maps are written and fsynced before the JSON file that names them is replaced atomically, so
// a crash at any moment leaves either the old or the new state, never one that names a missing
// or torn map. The next point's changes are the blocks whose digest differs from the base.
import { appendFile, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { DigestMap } from '../../datapath/digest.ts';
import { DIGEST_BYTES } from '../../datapath/digest.ts';
import { fsyncPath, writeFileAtomic } from '../../replica/durable.ts';
import type { DiskChanges, DiskInfo } from '../provider.ts';

const MAGIC = Buffer.from('RBDIGST1');
const HEADER = 32;

export interface TrackingMarker {
  startedAt: string;
  blockSize: number;
}

export interface BaseDisk {
  path: string;
  sizeBytes: number;
  /** File name under maps/. */
  map: string;
}

export interface BaseState {
  pointId: string;
  takenAt: string;
  disks: BaseDisk[];
}

export interface OpenDisk {
  disk: DiskInfo;
  changes: DiskChanges;
  map: string;
  /** The map is learnt from the point's reads (no earlier digests): see PhysicalProvider. */
  learn?: boolean;
}

export interface OpenState {
  id: string;
  machine: string;
  takenAt: string;
  disks: OpenDisk[];
}

/** Writes digests of consecutive blocks into a saved map. */
export interface MapUpdater {
  blockSize: number;
  /** The disk's size the map covers. */
  size: number;
  write(firstBlock: number, digests: Buffer): Promise<void>;
  close(): Promise<void>;
}

export class TrackingFiles {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  get mapsDir(): string {
    return join(this.dir, 'maps');
  }

  mapFile(name: string): string {
    return join(this.mapsDir, name);
  }

  readMarker(): Promise<TrackingMarker | undefined> {
    return this.#readJson<TrackingMarker>('tracking.json');
  }

  async writeMarker(m: TrackingMarker): Promise<void> {
    await mkdir(this.mapsDir, { recursive: true });
    await writeFileAtomic(join(this.dir, 'tracking.json'), JSON.stringify(m) + '\n');
  }

  readBase(): Promise<BaseState | undefined> {
    return this.#readJson<BaseState>('base.json');
  }

  async writeBase(b: BaseState): Promise<void> {
    await writeFileAtomic(join(this.dir, 'base.json'), JSON.stringify(b) + '\n');
  }

  readOpen(): Promise<OpenState | undefined> {
    return this.#readJson<OpenState>('open.json');
  }

  async writeOpen(o: OpenState): Promise<void> {
    await writeFileAtomic(join(this.dir, 'open.json'), JSON.stringify(o) + '\n');
  }

  async removeOpen(): Promise<void> {
    await rm(join(this.dir, 'open.json'), { force: true });
  }

  /** Records that block `block` of disk `disk` was sent with other content than the point's
   * digest says. Not fsynced: it must survive the agent being killed (the page cache keeps it),
   * and a host crash loses the open point's transfer state anyway. */
  async addDirty(pointId: string, disk: number, block: number): Promise<void> {
    await appendFile(join(this.dir, `dirty-${pointId}`), `${disk} ${block}\n`);
  }

  async readDirty(pointId: string): Promise<{ disk: number; block: number }[]> {
    const text = await readFile(join(this.dir, `dirty-${pointId}`), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    return text.split('\n').filter((l) => /^\d+ \d+$/.test(l)).map((l) => {
      const [disk, block] = l.split(' ').map(Number);
      return { disk: disk!, block: block! };
    });
  }

  async removeDirty(pointId: string): Promise<void> {
    await rm(join(this.dir, `dirty-${pointId}`), { force: true });
  }

  /** Removes map files no state names (left by released or abandoned points). */
  async pruneMaps(): Promise<void> {
    const keep = new Set<string>();
    for (const d of (await this.readBase())?.disks ?? []) keep.add(d.map);
    for (const d of (await this.readOpen())?.disks ?? []) keep.add(d.map);
    const files = await readdir(this.mapsDir).catch(() => [] as string[]);
    for (const f of files) if (!keep.has(f)) await rm(this.mapFile(f), { force: true });
  }

  async removeAll(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  async writeMap(name: string, map: DigestMap): Promise<void> {
    await mkdir(this.mapsDir, { recursive: true });
    const head = Buffer.alloc(HEADER);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(map.blockSize, 8);
    head.writeBigUInt64LE(BigInt(map.size), 16);
    head.writeUInt32LE(map.digests.length / DIGEST_BYTES, 24);
    const file = this.mapFile(name);
    await writeFile(file, Buffer.concat([head, map.digests]));
    await fsyncPath(file);
  }

  /** Opens a saved map to update digests in place (a learnt map, as its blocks are read), or a
   * sentence saying why it cannot be used. */
  async openMapForUpdate(name: string): Promise<MapUpdater | string> {
    let fh: FileHandle;
    try {
      fh = await open(this.mapFile(name), 'r+');
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? `its digest map ${name} is missing` : `its digest map ${name} cannot be opened (${(err as Error).message})`;
    }
    const head = Buffer.alloc(HEADER);
    const { bytesRead } = await fh.read(head, 0, HEADER, 0);
    const blockSize = head.readUInt32LE(8);
    if (bytesRead !== HEADER || !head.subarray(0, 8).equals(MAGIC) || blockSize === 0) {
      await fh.close();
      return `its digest map ${name} is not a digest map`;
    }
    return {
      blockSize,
      size: Number(head.readBigUInt64LE(16)),
      // Not fsynced: like the dirty list it must outlive the agent (the page cache keeps it);
      // releasing the point fsyncs it before the base names it.
      write: async (firstBlock, digests) => { await fh.write(digests, 0, digests.length, HEADER + firstBlock * DIGEST_BYTES); },
      close: () => fh.close(),
    };
  }

  /** A saved map, or a sentence saying why it cannot be used. */
  async readMap(name: string): Promise<DigestMap | string> {
    let buf: Buffer;
    try {
      buf = await readFile(this.mapFile(name));
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? `its digest map ${name} is missing` : `its digest map ${name} cannot be read (${(err as Error).message})`;
    }
    if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC)) return `its digest map ${name} is not a digest map`;
    const blockSize = buf.readUInt32LE(8);
    const size = Number(buf.readBigUInt64LE(16));
    const count = buf.readUInt32LE(24);
    if (blockSize === 0 || count !== Math.ceil(size / blockSize) || buf.length !== HEADER + count * DIGEST_BYTES) return `its digest map ${name} is truncated or damaged`;
    return { blockSize, size, digests: buf.subarray(HEADER) };
  }

  async #readJson<T>(file: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir, file), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
}
