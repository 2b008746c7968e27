// `rebound demo` — the README's first command — runs the whole cycle on a real tiny VM through a
// real server and says, with record numbers, that nothing was lost; it leaves no VM or server
// running behind it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const BIN = resolve(import.meta.dirname, '../../bin/rebound');

test('rebound demo narrates protect, drill, failover, commit, reverse, failback with nothing lost', { timeout: 600_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rb-demo-'));
  try {
    const { stdout } = await run(BIN, ['demo', '--dir', join(dir, 'demo')], { cwd: dir, timeout: 580_000, maxBuffer: 16 * 2 ** 20 });
    for (const step of ['1. Start web1', '3. Protect web1', '4. Test failover', '5. Planned failover', '6. Commit', '7. Reverse replication', '8. Failback', '9. Commit the failback', 'Done in']) {
      assert.ok(stdout.includes(step), `the narration has "${step}":\n${stdout}`);
    }
    assert.equal([...stdout.matchAll(/: nothing lost\./g)].length, 2, stdout);
    assert.doesNotMatch(stdout, /MISSING/);
    const left = await run('pgrep', ['-f', join(dir, 'demo')]).then((r) => r.stdout.trim(), () => '');
    assert.equal(left, '', 'no process of the demo is left running');
  } finally {
    await run('pkill', ['-9', '-f', join(dir, 'demo')]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});
