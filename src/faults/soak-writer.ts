// The soak's writer: a process of its own that writes a physical machine's image files while
// Rebound replicates them, and keeps writing whatever happens to `rebound serve`. Each tick it
// appends the next record to the records disk and rewrites one 4 KiB stamp on the stamps disk
// (mostly inside a few hot 256 KiB regions, so each cycle's changes stay bounded), fdatasyncs
// both, and only then prints `durable seq=N gen=G`: what it acknowledged. On SIGTERM it finishes
// the tick, writes its ledger (last record, last generation of every stamp it wrote) as JSON to
// the ledger file, prints `done`, and exits 0.
//
//   node src/faults/soak-writer.ts '<json WriterConfig>'
import { closeSync, fdatasyncSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { encodeRecord, RECORD_SIZE } from '../guest/records.ts';
import { Prng } from './prng.ts';
import { encodeStamp, STAMP_SIZE } from './soak-content.ts';

export interface WriterConfig {
  recordsPath: string;
  stampsPath: string;
  recordsBytes: number;
  stampsBytes: number;
  /** Decimal string (JSON has no bigint). */
  writer: string;
  /** The last record already on the disk. */
  startSeq: number;
  /** The last stamp generation already given out. */
  startGen: number;
  /** Ticks per second. */
  rate: number;
  seed: number;
  /** How many 256 KiB regions take 90 % of the stamp writes. */
  hotRegions: number;
  ledgerPath: string;
}

export interface WriterLedger {
  seq: number;
  gen: number;
  /** [block index, generation] of every stamp block this writer wrote, last write wins. */
  stamps: [number, number][];
  ticks: number;
}

const REGION = 256 * 1024;

function main(): void {
  const arg = process.argv[2];
  if (!arg) {
    process.stderr.write('usage: soak-writer.ts <json config>\n');
    process.exit(2);
  }
  const c = JSON.parse(arg) as WriterConfig;
  const writer = BigInt(c.writer);
  const rng = new Prng(c.seed);
  const blocksPerRegion = REGION / STAMP_SIZE;
  const regions = Math.floor(c.stampsBytes / REGION);
  const hot = Array.from({ length: Math.max(1, c.hotRegions) }, () => rng.int(0, regions - 1));
  const maxSeq = Math.floor(c.recordsBytes / RECORD_SIZE);
  const rf = openSync(c.recordsPath, 'r+');
  const sf = openSync(c.stampsPath, 'r+');
  const stamps = new Map<number, number>();
  let seq = c.startSeq;
  let gen = c.startGen;
  let ticks = 0;
  let stopping = false;
  process.on('SIGTERM', () => { stopping = true; });
  process.on('SIGINT', () => { stopping = true; });

  const finish = (): void => {
    closeSync(rf);
    closeSync(sf);
    const ledger: WriterLedger = { seq, gen, stamps: [...stamps.entries()], ticks };
    writeFileSync(c.ledgerPath, JSON.stringify(ledger));
    process.stdout.write('done\n', () => process.exit(0));
  };

  const period = 1000 / c.rate;
  let next = performance.now();
  const tick = (): void => {
    if (stopping) return finish();
    if (seq < maxSeq) {
      const s = seq + 1;
      writeSync(rf, encodeRecord({ seq: s, timeNs: BigInt(Date.now()) * 1_000_000n, writer, offset: (s - 1) * RECORD_SIZE }), 0, RECORD_SIZE, (s - 1) * RECORD_SIZE);
      fdatasyncSync(rf);
      seq = s;
    }
    const region = rng.float() < 0.9 ? rng.pick(hot) : rng.int(0, regions - 1);
    const block = region * blocksPerRegion + rng.int(0, blocksPerRegion - 1);
    const g = gen + 1;
    writeSync(sf, encodeStamp(block * STAMP_SIZE, g, writer), 0, STAMP_SIZE, block * STAMP_SIZE);
    fdatasyncSync(sf);
    gen = g;
    stamps.set(block, g);
    ticks++;
    process.stdout.write(`durable seq=${seq} gen=${gen}\n`);
    next += period;
    setTimeout(tick, Math.max(0, next - performance.now()));
  };
  process.stdout.write(`ready seq=${seq} gen=${gen}\n`);
  tick();
}

main();
