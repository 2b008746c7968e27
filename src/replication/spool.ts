// The process server's disk cache: one directory per transfer, holding the header, an append-only
// log of the received extents (offset, length, the source's BLAKE3, data) and a small state file
// saying how much of the log is durable and acknowledged. The agent's transfer is acknowledged
// once its frames are here, fsynced; the forwarder then replays the log to the master target at
// whatever pace the link allows. So when the link is slower than the churn, the cache grows
// instead of the agent stalling, and a killed process server resumes both sides from the state
// file: the log is cut back to its durable length, nothing acknowledged is lost.
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { checksum } from '../datapath/checksum.ts';
import { ReboundError } from '../domain/errors.ts';
import { fsyncDir, writeFileAtomic } from '../replica/durable.ts';
import type { TransferHeader } from './wire.ts';

const RECORD_HEAD = 8 + 4 + 32;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

interface SpoolState {
  ackedThrough: number;
  bytes: number;
  complete: boolean;
}

export class SpoolEntry {
  readonly dir: string;
  readonly header: TransferHeader;
  #fh: FileHandle;
  #state: SpoolState;
  /** Records in the log (acknowledged, then appended since). */
  #records: number;
  #end: number;

  private constructor(dir: string, header: TransferHeader, fh: FileHandle, state: SpoolState, records: number) {
    this.dir = dir;
    this.header = header;
    this.#fh = fh;
    this.#state = state;
    this.#records = records;
    this.#end = state.bytes;
  }

  static async open(dir: string, header?: TransferHeader): Promise<SpoolEntry> {
    await mkdir(dir, { recursive: true });
    let h: TransferHeader;
    const headerFile = join(dir, 'header.json');
    try {
      h = JSON.parse(await readFile(headerFile, 'utf8')) as TransferHeader;
    } catch {
      if (!header) throw new ReboundError('not-found', 'spool-missing', `No cached transfer in ${dir}.`);
      h = header;
      await writeFileAtomic(headerFile, JSON.stringify(h));
    }
    let state: SpoolState = { ackedThrough: -1, bytes: 0, complete: false };
    try {
      state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as SpoolState;
    } catch {
      // new
    }
    const fh = await open(join(dir, 'data.log'), 'a+');
    // Whatever was written after the last checkpoint was never acknowledged: cut it off.
    const size = (await fh.stat()).size;
    if (size > state.bytes) await fh.truncate(state.bytes);
    if (size < state.bytes) {
      await fh.close();
      throw new ReboundError('internal', 'spool-damaged', `The cache of transfer ${h.transferId} is shorter than its state says (${size} < ${state.bytes}).`);
    }
    let records = 0;
    const head = Buffer.alloc(RECORD_HEAD);
    for (let pos = 0; pos < state.bytes; records++) {
      await fh.read(head, 0, RECORD_HEAD, pos);
      pos += RECORD_HEAD + head.readUInt32BE(8);
    }
    if (records !== state.ackedThrough + 1) {
      await fh.close();
      throw new ReboundError('internal', 'spool-damaged', `The cache of transfer ${h.transferId} holds ${records} records, its state says ${state.ackedThrough + 1}.`);
    }
    return new SpoolEntry(dir, h, fh, state, records);
  }

  get ackedThrough(): number { return this.#state.ackedThrough; }
  get complete(): boolean { return this.#state.complete; }
  get records(): number { return this.#records; }
  get bytes(): number { return this.#end; }

  /** Appends frame `seq` (must be the next one). Not durable until checkpoint. */
  async append(seq: number, offset: number, data: Uint8Array, sum: Uint8Array): Promise<void> {
    if (seq !== this.#records) throw new ReboundError('internal', 'spool-out-of-order', `Frame ${seq} arrived for cache record ${this.#records}.`);
    const head = Buffer.alloc(RECORD_HEAD);
    head.writeBigUInt64BE(BigInt(offset), 0);
    head.writeUInt32BE(data.length, 8);
    Buffer.from(sum).copy(head, 12);
    const pos = this.#end;
    await this.#fh.write(head, 0, RECORD_HEAD, pos);
    await this.#fh.write(data, 0, data.length, pos + RECORD_HEAD);
    this.#end = pos + RECORD_HEAD + data.length;
    this.#records++;
  }

  async checkpoint(ackedThrough: number, complete = false): Promise<void> {
    await this.#fh.datasync();
    this.#state = { ackedThrough, bytes: this.#end, complete };
    await writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify(this.#state));
  }

  async close(): Promise<void> { await this.#fh.close(); }
}

/**
 * Reads a cached transfer's records in order, each checked against the source's checksum, with
 * a handle of its own: the forwarder reads while the receiver may still append to the log (and,
 * after a reconnect, cut off what it never made durable). The caller reads only records the
 * receiver has made durable, so nothing it reads is ever cut off.
 */
export class SpoolReader {
  readonly #fh: FileHandle;
  readonly #transferId: string;
  /** The next record's index and position in the log. */
  #index = 0;
  #pos = 0;
  readonly #head = Buffer.alloc(RECORD_HEAD);

  private constructor(fh: FileHandle, transferId: string) {
    this.#fh = fh;
    this.#transferId = transferId;
  }

  static async open(dir: string, transferId: string): Promise<SpoolReader> {
    return new SpoolReader(await open(join(dir, 'data.log'), 'r'), transferId);
  }

  /** Record `i` (at or after the last one read: records between are passed over by their heads). */
  async read(i: number): Promise<{ offset: number; data: Buffer; checksum: Buffer }> {
    if (i < this.#index) throw new ReboundError('internal', 'spool-read-backwards', `Cache record ${i} of transfer ${this.#transferId} was asked for after record ${this.#index - 1}.`);
    for (;;) {
      const { bytesRead } = await this.#fh.read(this.#head, 0, RECORD_HEAD, this.#pos);
      if (bytesRead !== RECORD_HEAD) throw new ReboundError('internal', 'spool-damaged', `Cache record ${this.#index} of transfer ${this.#transferId} is missing from its log.`);
      const length = this.#head.readUInt32BE(8);
      const at = this.#pos + RECORD_HEAD;
      this.#pos = at + length;
      if (this.#index++ < i) continue;
      const data = Buffer.allocUnsafe(length);
      const got = length === 0 ? 0 : (await this.#fh.read(data, 0, length, at)).bytesRead;
      if (got !== length) throw new ReboundError('internal', 'spool-damaged', `Cache record ${i} of transfer ${this.#transferId} is cut short in its log.`);
      const sum = Buffer.from(this.#head.subarray(12, 44));
      if (!checksum(data).equals(sum)) {
        throw new ReboundError('internal', 'spool-checksum-mismatch', `Cache record ${i} of transfer ${this.#transferId} (offset ${Number(this.#head.readBigUInt64BE(0))}) no longer matches the source's checksum: the cache disk corrupted it.`, {
          hint: 'The transfer is dropped from the cache and the agent resends the point.',
        });
      }
      return { offset: Number(this.#head.readBigUInt64BE(0)), data, checksum: sum };
    }
  }

  async close(): Promise<void> { await this.#fh.close(); }
}

export class Spool {
  readonly root: string;
  constructor(root: string) { this.root = root; }

  dirOf(transferId: string): string {
    if (!ID_RE.test(transferId)) throw new ReboundError('invalid', 'transfer-id-invalid', `Transfer id '${transferId}' has characters a cache directory cannot use.`);
    return join(this.root, transferId);
  }

  async open(header: TransferHeader): Promise<SpoolEntry> {
    await mkdir(this.root, { recursive: true });
    const e = await SpoolEntry.open(this.dirOf(header.transferId), header);
    await fsyncDir(this.root);
    return e;
  }

  /** Transfers in the cache (after a restart): header, whether each is complete and the last
   * record it made durable. */
  async list(): Promise<{ transferId: string; header: TransferHeader; complete: boolean; ackedThrough: number }[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const out: { transferId: string; header: TransferHeader; complete: boolean; ackedThrough: number }[] = [];
    for (const n of names) {
      try {
        const header = JSON.parse(await readFile(join(this.root, n, 'header.json'), 'utf8')) as TransferHeader;
        let state: SpoolState = { ackedThrough: -1, bytes: 0, complete: false };
        try {
          state = JSON.parse(await readFile(join(this.root, n, 'state.json'), 'utf8')) as SpoolState;
        } catch { /* nothing acknowledged yet */ }
        out.push({ transferId: n, header, complete: state.complete, ackedThrough: state.ackedThrough });
      } catch {
        // A directory whose header never became durable: nothing in it was acknowledged.
        await rm(join(this.root, n), { recursive: true, force: true });
      }
    }
    return out;
  }
}
