// A child process for the replica kill tests: it applies a point from a source image (slowly
// enough to be killed in the middle) or runs a retention merge, and is then killed with SIGKILL
// by the test. Not a test file itself.
import { open } from 'node:fs/promises';
import { ReplicaDisk } from '../../src/replica/replica-disk.ts';
import type { ApplyExtent } from '../../src/replica/replica-disk.ts';

const [mode, dir, arg1 = '', arg2 = ''] = process.argv.slice(2);
const disk = await ReplicaDisk.open(dir!);
if (mode === 'apply') {
  // arg1: source raw image, arg2: point id. Writes every block of the source, pausing between
  // extents so the test can kill it while the overlay is half written.
  const fh = await open(arg1, 'r');
  const extents = async function* (): AsyncGenerator<ApplyExtent> {
    const chunk = 1024 * 1024;
    for (let at = 0; at < disk.size; at += chunk) {
      const data = Buffer.alloc(Math.min(chunk, disk.size - at));
      await fh.read(data, 0, data.length, at);
      yield { offset: at, data };
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await disk.applyPoint(arg2, extents());
} else if (mode === 'retain') {
  await disk.retain(arg1);
}
process.stdout.write('done\n');
