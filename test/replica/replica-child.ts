// A child process for the replica kill tests: it receives a point from a source image with
// checkpoints (slowly enough to be killed in the middle) or runs a retention merge, and is then killed with SIGKILL
// by the test. Not a test file itself.
import { open } from 'node:fs/promises';
import { ReplicaDisk } from '../../src/replica/replica-disk.ts';

const [mode, dir, arg1 = '', arg2 = ''] = process.argv.slice(2);
const disk = await ReplicaDisk.open(dir!);
if (mode === 'apply') {
  // arg1: source raw image, arg2: point id. Writes every 1 MiB of the source, checkpointing every
  // 4 MiB with progress = MiB done, pausing between writes so the test can kill it mid-way.
  const fh = await open(arg1, 'r');
  const chunk = 1024 * 1024;
  const w = await disk.beginPoint(arg2, { progress: 0 });
  for (let i = 0; i * chunk < disk.size; i++) {
    const data = Buffer.alloc(Math.min(chunk, disk.size - i * chunk));
    await fh.read(data, 0, data.length, i * chunk);
    await w.write(i * chunk, data);
    if ((i + 1) % 4 === 0) await w.checkpoint(i + 1);
    await new Promise((r) => setTimeout(r, 5));
  }
  // The commit's progress says all was received (as the master target's does).
  await w.commit({ progress: 'all-received' });
} else if (mode === 'retain') {
  await disk.retain(arg1);
}
process.stdout.write('done\n');
