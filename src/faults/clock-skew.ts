// Test knob for wall-clock jumps (the soak's clock scenarios; RELIABILITY.md): a module loaded
// before Rebound with `NODE_OPTIONS=--import=<this file>` and REBOUND_TEST_CLOCK_FILE=<file>.
// The file holds an offset in milliseconds (text, may be negative); `Date.now()` and `new Date()`
// in the process return the real time plus that offset. The offset is read at start and again
// on SIGUSR2, so a test writes the file and signals the process to make its clock jump, as an
// NTP step or a mis-set host clock would. Monotonic clocks (performance.now, timers) are left
// alone, as a real wall-clock jump leaves them alone. Without REBOUND_TEST_CLOCK_FILE it does
// nothing. Nothing in Rebound imports it: it exists only when a test asks for it.
import { readFileSync } from 'node:fs';

const file = process.env['REBOUND_TEST_CLOCK_FILE'];

function readOffset(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    return 0;
  }
  const n = Number(text);
  if (!Number.isFinite(n)) {
    process.stderr.write(`clock-skew: ${path} holds '${text}', not a number of milliseconds; keeping the real clock\n`);
    return 0;
  }
  return n;
}

if (file) {
  let offset = readOffset(file);
  process.on('SIGUSR2', () => { offset = readOffset(file); });
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(realNow() + offset);
      else super(...(args as [string | number | Date]));
    }

    static override now(): number {
      return realNow() + offset;
    }
  }
  globalThis.Date = SkewedDate as DateConstructor;
}
