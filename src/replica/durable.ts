// Making files durable: fsync of a file and of its directory, and the write-temp, fsync,
// rename, fsync-directory step that replaces a small file atomically (a crash leaves the old
// or the new file, never a torn one).
import { open, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export const fsyncDir = (dir: string): Promise<void> => fsyncPath(dir);

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp`);
  await writeFile(tmp, data);
  await fsyncPath(tmp);
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}
