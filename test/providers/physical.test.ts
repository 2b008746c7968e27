// The physical provider against real files and real hook scripts: definitions and power by
// hooks, digest points (first = all allocated, then exactly the written blocks), unconsumed
// points keeping their changes, a restarted provider adopting the open point, freeze/thaw
// around the digest pass, and replicas converted from qcow2 overlays into raw images.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ReboundError } from '../../src/domain/errors.ts';
import { physicalMachine } from '../../src/providers/physical/definition.ts';
import { PHYSICAL_DIGEST_BLOCK, PhysicalProvider } from '../../src/providers/physical/physical-provider.ts';
import type { Extent, Point } from '../../src/providers/provider.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = PHYSICAL_DIGEST_BLOCK; // the provider's default digest block

let dir: string;
let root: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rebound-physical-'));
  root = join(dir, 'root');
  await mkdir(join(root, 'hooks'), { recursive: true });
  // Power hooks as a real host's would be: scripts acting on a state file, told the machine by env.
  await writeFile(join(root, 'hooks', 'start.sh'), 'touch "power-$REBOUND_MACHINE"\nprintf "%s\\n" "$REBOUND_DISKS" > "disks-$REBOUND_MACHINE"\n');
  await writeFile(join(root, 'hooks', 'stop.sh'), 'echo "$REBOUND_ACTION" >> "stops-$REBOUND_MACHINE"\nrm -f "power-$REBOUND_MACHINE"\n');
  await writeFile(join(root, 'hooks', 'status.sh'), 'test -f "power-$REBOUND_MACHINE"\n');
  await writeFile(join(root, 'hooks', 'freeze.sh'), 'echo freeze >> "log-$REBOUND_MACHINE"\n');
  await writeFile(join(root, 'hooks', 'thaw.sh'), 'echo thaw >> "log-$REBOUND_MACHINE"\n');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const hooks = { start: 'sh hooks/start.sh', stop: 'sh hooks/stop.sh', status: 'sh hooks/status.sh' };

async function sparseDisk(name: string, size: number): Promise<string> {
  const path = join(root, name);
  await run('truncate', ['-s', String(size), path]);
  return path;
}

/** Writes `length` random bytes at `offset` in place, as a running machine would. */
async function ddWrite(path: string, offset: number, length: number): Promise<Buffer> {
  const data = randomBytes(length);
  const src = join(dir, `dd-${offset}-${length}`);
  await writeFile(src, data);
  await run('dd', [`if=${src}`, `of=${path}`, 'bs=4096', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
  return data;
}

/** The digest blocks that a set of writes touches, as coalesced byte extents. */
function blocksOf(writes: Extent[], size: number): Extent[] {
  const blocks = new Set<number>();
  for (const w of writes) for (let b = Math.floor(w.offset / BLOCK); b * BLOCK < w.offset + w.length; b++) blocks.add(b);
  const out: Extent[] = [];
  for (const b of [...blocks].sort((x, y) => x - y)) {
    const offset = b * BLOCK;
    const length = Math.min(BLOCK, size - offset);
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
  }
  return out;
}

function changedExtents(p: Point): Extent[] {
  const c = p.disks[0]!.changes;
  assert.equal(c.kind, 'extents');
  assert.equal(c.granularity, BLOCK);
  return c.extents;
}

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ReboundError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ReboundError, `expected a ReboundError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe('definitions and power hooks', () => {
  test('define, discover, state/start/shutdown/powerOff through the hooks', async () => {
    const p = new PhysicalProvider({ root });
    const disk = await sparseDisk('web.raw', 4 * MiB);
    const info = await p.define(physicalMachine('web', [disk], hooks));
    assert.equal(info.state, 'stopped'); // the status hook finds no power file
    const def = JSON.parse(await readFile(join(root, '.rebound/physical/web/machine.json'), 'utf8'));
    assert.deepEqual(def.hooks, hooks);
    assert.deepEqual(def.disks, [{ path: disk, format: 'raw' }]);

    assert.equal((await p.start('web')).state, 'running');
    assert.equal(await readFile(join(root, 'disks-web'), 'utf8'), `${disk}\n`);
    assert.deepEqual((await p.discover()).map((m) => [m.name, m.state]), [['web', 'running']]);
    await p.shutdown('web', { timeoutMs: 5000 });
    assert.equal((await p.state('web')).state, 'stopped');
    await p.powerOff('web');
    assert.equal(await readFile(join(root, 'stops-web'), 'utf8'), 'shutdown\npoweroff\n');
    assert.deepEqual((await p.disks('web')).map((d) => [d.id, d.sizeBytes]), [['disk0', 4 * MiB]]);

    await rejectsWith(p.define(physicalMachine('web', [disk])), 'machine-exists');
    await p.undefine('web');
    assert.deepEqual(await p.discover(), []);
  });

  test('ensureDefined writes the vault\'s view of a machine only when it differs', async () => {
    const p = new PhysicalProvider({ root });
    const disk = await sparseDisk('ens.raw', MiB);
    const file = join(root, '.rebound/physical/ens/machine.json');
    await p.ensureDefined(physicalMachine('ens', [disk]));
    const first = await readFile(file, 'utf8');
    await writeFile(file, first.replace('"memoryMiB": 1024', '"memoryMiB":  1024')); // same content, other bytes
    await p.ensureDefined(physicalMachine('ens', [disk]));
    assert.match(await readFile(file, 'utf8'), /"memoryMiB": {2}1024/); // left alone
    await p.ensureDefined(physicalMachine('ens', [disk], { status: 'false' }));
    assert.equal((await p.state('ens')).state, 'stopped');
    await rejectsWith(p.ensureDefined(physicalMachine('ens', [join(dir, 'nowhere.raw')])), 'machine-definition-invalid');
    await p.undefine('ens');
  });

  test('without hooks: running, and shutdown is refused with the reason', async () => {
    const p = new PhysicalProvider({ root });
    const disk = await sparseDisk('bare.raw', MiB);
    assert.equal((await p.define(physicalMachine('bare', [disk]))).state, 'running');
    await rejectsWith(p.shutdown('bare', { timeoutMs: 1000 }), 'machine-no-stop-hook', /planned failover needs one/);
    await rejectsWith(p.powerOff('bare'), 'machine-no-stop-hook');
    await p.undefine('bare');
  });

  test('a hook past its deadline is killed and reported', async () => {
    const p = new PhysicalProvider({ root, hookTimeoutMs: 300 });
    const disk = await sparseDisk('slow.raw', MiB);
    // Hangs (with a child of its own) once the flag exists; the deadline must kill both.
    const status = 'if test -f slow-flag; then sleep 30 & echo $! > slow-child; wait; fi; false';
    await rejectsWith(p.define(physicalMachine('slow', [disk], { status: 'sleep 30' })), 'machine-hook-timeout', /0\.3 s/);
    assert.equal((await p.define(physicalMachine('slow', [disk], { status }))).state, 'stopped');
    await writeFile(join(root, 'slow-flag'), '');
    const t0 = Date.now();
    try {
      await rejectsWith(p.state('slow'), 'machine-hook-timeout');
      assert.ok(Date.now() - t0 < 5000);
      const child = Number(await readFile(join(root, 'slow-child'), 'utf8'));
      const alive = (): boolean => {
        try {
          // A zombie (killed, not yet reaped by whoever inherited it) counts as gone.
          return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${child}/stat`, 'utf8'));
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 40 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(alive(), false, 'the hook\'s child outlived the deadline');
    } finally {
      await rm(join(root, 'slow-flag'));
      await p.undefine('slow');
    }
  });

  test('disk paths must stay under the root', async () => {
    const p = new PhysicalProvider({ root });
    const outside = join(dir, 'outside.raw');
    await run('truncate', ['-s', String(MiB), outside]);
    await rejectsWith(p.define(physicalMachine('x', [outside])), 'machine-definition-invalid', /outside the site root/);
    await rejectsWith(p.define(physicalMachine('x', [`${root}/../outside.raw`])), 'machine-definition-invalid', /'\.\.'/);
    await symlink(outside, join(root, 'link.raw'));
    await rejectsWith(p.define(physicalMachine('x', [join(root, 'link.raw')])), 'machine-definition-invalid', /resolves to/);
    await rejectsWith(p.define(physicalMachine('x', [join(root, 'missing.raw')])), 'physical-disk-missing');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(root, 'img.qcow2'), '1M']);
    await rejectsWith(p.define(physicalMachine('x', [join(root, 'img.qcow2')])), 'physical-disk-format', /qcow2/);
    await rejectsWith(p.define({ ...physicalMachine('x', [join(root, 'img.qcow2')]), disks: [{ path: join(root, 'img.qcow2'), format: 'qcow2' }] }), 'physical-disk-format');
    await rejectsWith(p.define({ ...physicalMachine('x', [join(root, 'db.raw')]), hooks: { reboot: 'true' } as never }), 'machine-definition-invalid', /not a hook/);
    assert.deepEqual(await p.discover(), []);
  });
});

describe('points by digest', () => {
  const size = 16 * MiB + 100 * KiB; // not a whole number of digest blocks
  let disk: string;
  let p: PhysicalProvider;

  before(async () => {
    p = new PhysicalProvider({ root });
    disk = await sparseDisk('db.raw', size);
    await ddWrite(disk, 0, MiB);
    await ddWrite(disk, 8 * MiB, 300 * KiB);
    await p.define(physicalMachine('db', [disk], { freeze: 'sh hooks/freeze.sh', thaw: 'sh hooks/thaw.sh' }));
  });

  test('first point is all, holes skipped; then exactly the written blocks; unconsumed changes carry over', async () => {
    assert.equal((await p.trackingStatus('db')).state, 'off');
    await rejectsWith(p.takePoint('db'), 'cbt-not-started');
    assert.equal((await p.startTracking('db')).state, 'active');

    const first = await p.takePoint('db');
    assert.equal(first.disks[0]!.changes.kind, 'all');
    assert.equal(first.disks[0]!.disk.sizeBytes, size);
    // No digest pass: the disk is read as it is sent, so there is nothing to freeze around.
    assert.equal(first.consistency, 'crash');
    assert.match(first.freezeError ?? '', /read as it is sent/);
    assert.equal(await readFile(join(root, 'log-db'), 'utf8').catch(() => ''), '');
    const allocated = await first.disks[0]!.allocated!();
    const total = allocated.reduce((n, e) => n + e.length, 0);
    assert.ok(allocated.some((e) => e.offset <= 0 && e.offset + e.length >= MiB), JSON.stringify(allocated));
    assert.ok(allocated.some((e) => e.offset <= 8 * MiB && e.offset + e.length >= 8 * MiB + 300 * KiB), JSON.stringify(allocated));
    assert.ok(total < 2 * MiB, `allocated ${total} bytes of a mostly sparse disk`);
    await rejectsWith(p.takePoint('db'), 'point-open');
    // As the agent does: every allocated range is read (sent), and its digests are learnt.
    for (const e of allocated) await first.disks[0]!.read(e.offset, e.length);
    await p.releasePoint(first, { consumed: true });

    const nothing = await p.takePoint('db');
    assert.deepEqual(changedExtents(nothing), [], 'the learnt digests are what the disk holds');
    assert.equal(nothing.consistency, 'app');
    assert.deepEqual(await readFile(join(root, 'log-db'), 'utf8'), 'freeze\nthaw\n');
    await p.releasePoint(nothing, { consumed: true });

    const writes = [
      { offset: 3 * BLOCK + 4096, length: 4096 },
      { offset: 12 * MiB, length: 2 * BLOCK }, // into a hole
      { offset: size - 4096, length: 4096 }, // the short last block
    ];
    const data: Buffer[] = [];
    for (const w of writes) data.push(await ddWrite(disk, w.offset, w.length));
    const second = await p.takePoint('db');
    assert.deepEqual(changedExtents(second), blocksOf(writes, size));
    assert.deepEqual(await second.disks[0]!.read(writes[1]!.offset, writes[1]!.length), data[1]);
    await p.releasePoint(second, { consumed: false });

    const more = { offset: 5 * MiB, length: 4096 };
    await ddWrite(disk, more.offset, more.length);
    const third = await p.takePoint('db');
    assert.deepEqual(changedExtents(third), blocksOf([...writes, more], size));
    await p.releasePoint(third, { consumed: true });
    const fourth = await p.takePoint('db');
    assert.deepEqual(changedExtents(fourth), []);
    await p.releasePoint(fourth, { consumed: true });
    await rejectsWith(second.disks[0]!.read(0, 4096), 'point-released');
  });

  test('a block sent newer than digested is sent again, even if it changes back', async () => {
    const at = { offset: 9 * MiB, length: BLOCK };
    const a = await ddWrite(disk, at.offset, at.length);
    const point = await p.takePoint('db');
    assert.deepEqual(changedExtents(point), [at]);
    const b = await ddWrite(disk, at.offset, at.length); // after the digest pass, before the read
    assert.deepEqual(await point.disks[0]!.read(at.offset, at.length), b);
    await p.releasePoint(point, { consumed: true });
    await writeFile(join(dir, 'a'), a);
    await run('dd', [`if=${join(dir, 'a')}`, `of=${disk}`, `seek=${at.offset}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
    const next = await p.takePoint('db');
    assert.deepEqual(changedExtents(next), [at]); // the replica holds b, the disk a again
    // Read in part (the block's last 64 KiB): the whole block is checked, and it matches.
    assert.deepEqual(await next.disks[0]!.read(at.offset + BLOCK - 65536, 65536), a.subarray(BLOCK - 65536));
    await p.releasePoint(next, { consumed: true });
    const after = await p.takePoint('db');
    assert.deepEqual(changedExtents(after), []);
    await p.releasePoint(after, { consumed: true });
  });

  test('a new provider (restarted agent) adopts the open point: same id, instant, changes', async () => {
    const write = { offset: 2 * MiB, length: 8192 };
    await ddWrite(disk, write.offset, write.length);
    const open = await p.takePoint('db');
    const restarted = new PhysicalProvider({ root });
    const adopted = await restarted.adoptPoint('db');
    assert.ok(adopted);
    assert.equal(adopted.id, open.id);
    assert.equal(adopted.takenAt.getTime(), open.takenAt.getTime());
    assert.deepEqual(adopted.disks.map((d) => [d.disk, d.changes]), open.disks.map((d) => [d.disk, d.changes]));
    assert.deepEqual(changedExtents(adopted), blocksOf([write], size));
    assert.deepEqual(await adopted.disks[0]!.read(write.offset, write.length), await open.disks[0]!.read(write.offset, write.length));
    await restarted.releasePoint(adopted, { consumed: true });
    assert.equal(await new PhysicalProvider({ root }).adoptPoint('db'), null);
    const next = await restarted.takePoint('db');
    assert.deepEqual(changedExtents(next), []); // the adopted point's release moved the base
    await restarted.releasePoint(next, { consumed: true });
  });

  test('an open point left by a dead process is folded into the next one', async () => {
    const write = { offset: 6 * MiB, length: 4096 };
    await ddWrite(disk, write.offset, write.length);
    const abandoned = await new PhysicalProvider({ root }).takePoint('db');
    assert.deepEqual(changedExtents(abandoned), blocksOf([write], size));
    const fresh = new PhysicalProvider({ root });
    const next = await fresh.takePoint('db');
    assert.notEqual(next.id, abandoned.id);
    assert.deepEqual(changedExtents(next), blocksOf([write], size));
    await fresh.releasePoint(next, { consumed: true });
  });

  test('a first point learns its digests from what it sends, across a restart; a block read only in part is sent again, a hole only once written', async () => {
    const path = await sparseDisk('learn.raw', 4 * MiB);
    const x = await ddWrite(path, 0, 4 * BLOCK); // blocks 0-3
    await ddWrite(path, MiB, 2 * BLOCK); // blocks 16-17
    const q = new PhysicalProvider({ root });
    await q.define(physicalMachine('learn', [path]));
    await q.startTracking('learn');
    const first = await q.takePoint('learn');
    assert.deepEqual(first.disks[0]!.changes, { kind: 'all', reason: 'first point since tracking started: no earlier digests to compare with' });
    // Blocks 0-1 are sent, then the agent restarts; the new one sends blocks 2-3 and 16-17.
    assert.deepEqual(await first.disks[0]!.read(0, 2 * BLOCK), x.subarray(0, 2 * BLOCK));
    const restarted = new PhysicalProvider({ root });
    const adopted = await restarted.adoptPoint('learn');
    assert.equal(adopted?.id, first.id);
    await adopted!.disks[0]!.read(2 * BLOCK, 2 * BLOCK);
    await adopted!.disks[0]!.read(MiB + BLOCK / 2, BLOCK / 2); // block 16 only in part
    await adopted!.disks[0]!.read(MiB + BLOCK, BLOCK);
    await restarted.releasePoint(adopted!, { consumed: true });
    // Block 17 was zeroed since it was sent, and a hole was written (block 40).
    await writeFile(join(dir, 'zeros'), Buffer.alloc(BLOCK));
    await run('dd', [`if=${join(dir, 'zeros')}`, `of=${path}`, `seek=${MiB + BLOCK}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
    await ddWrite(path, 40 * BLOCK, 4096);
    const next = await restarted.takePoint('learn');
    assert.deepEqual(changedExtents(next), [
      // Blocks 0-1, sent by the process that died, are not sent again: what it learnt is kept.
      { offset: MiB, length: 2 * BLOCK }, // 16 read in part; 17 zeroed since
      { offset: 40 * BLOCK, length: BLOCK }, // a hole then, written since
    ]);
    await restarted.releasePoint(next, { consumed: true });
    await q.releasePoint(first, { consumed: false }); // closes the dead process's handles: nothing else
  });

  test('a failed freeze takes no point and thaws; a damaged base is lost, not a silent full copy', async () => {
    const q = new PhysicalProvider({ root });
    const failing = await sparseDisk('fz.raw', MiB);
    await q.define(physicalMachine('fz', [failing], { freeze: 'echo cannot freeze >&2; exit 3', thaw: 'sh hooks/thaw.sh' }));
    await q.startTracking('fz');
    const firstFz = await q.takePoint('fz'); // read as it is sent: no freeze
    await q.releasePoint(firstFz, { consumed: true });
    await rejectsWith(q.takePoint('fz'), 'machine-freeze-failed', /cannot freeze/);
    assert.equal(await readFile(join(root, 'log-fz'), 'utf8'), 'thaw\n');
    assert.equal(await q.adoptPoint('fz'), null);

    const files = p.tracking('db');
    const base = await files.readBase();
    assert.ok(base);
    await writeFile(files.mapFile(base.disks[0]!.map), 'garbage');
    const status = await p.trackingStatus('db');
    assert.equal(status.state, 'lost');
    const err = await rejectsWith(p.takePoint('db'), 'cbt-lost');
    assert.equal(err.details?.fallback, 'digest-resync');
    assert.equal((await p.resetTracking('db')).state, 'active');
    const again = await p.takePoint('db');
    assert.equal(again.disks[0]!.changes.kind, 'all');
    await p.releasePoint(again, { consumed: true });
  });
});

describe('replicas at a physical recovery site', () => {
  test('createReplica converts qcow2 overlays into raw images with the same content and runs the start hook', async () => {
    const store = join(dir, 'replica-store'); // the replica store may live outside the root
    await mkdir(store, { recursive: true });
    const base = join(store, 'base.raw');
    await run('truncate', ['-s', String(8 * MiB), base]);
    await run('dd', ['if=/dev/urandom', `of=${base}`, 'bs=64K', 'count=40', 'conv=notrunc', 'status=none']);
    const overlay = join(store, 'view.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', overlay]);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0x5c 7M 4k', overlay]);
    const second = join(store, 'data.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', second, '3M']);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 512k', second]);

    const p = new PhysicalProvider({ root });
    const template = physicalMachine('app', [join(root, 'unused.raw')]);
    const info = await p.createReplica({ name: 'app-recovered', disks: [{ path: overlay, format: 'qcow2' }, { path: second, format: 'qcow2' }], template, network: 'production', hooks });
    assert.equal(info.state, 'running'); // the start hook ran; the status hook says so
    const disks = await p.disks('app-recovered');
    assert.deepEqual(disks.map((d) => [d.path, d.format, d.sizeBytes]), [
      [join(root, 'machines/app-recovered/disk0.raw'), 'raw', 8 * MiB],
      [join(root, 'machines/app-recovered/disk1.raw'), 'raw', 3 * MiB],
    ]);
    // Byte-identical: qemu-img compares the qcow2 view (with its backing file) with the raw image.
    await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', overlay, disks[0]!.path]);
    await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', second, disks[1]!.path]);
    const raw = await readFile(disks[0]!.path);
    assert.ok(raw.subarray(MiB, MiB + 64 * KiB).every((b) => b === 0xab));
    assert.deepEqual(raw.subarray(0, 64 * KiB), (await readFile(base)).subarray(0, 64 * KiB));

    await rejectsWith(p.createReplica({ name: 'app-recovered', disks: [{ path: overlay, format: 'qcow2' }], template, network: 'none' }), 'machine-exists');
    await rejectsWith(p.createReplica({ name: 'gone', disks: [{ path: join(store, 'missing.qcow2'), format: 'qcow2' }], template, network: 'none' }), 'replica-source-missing');
    await rejectsWith(p.createReplica({ name: 'bad', disks: [{ path: base, format: 'qcow2' }], template, network: 'none' }), 'replica-convert-failed');
    const names = (await p.discover()).map((m) => m.name);
    assert.ok(names.includes('app-recovered') && !names.includes('gone') && !names.includes('bad'), names.join(','));
    assert.deepEqual(await readdir(join(root, 'machines')), ['app-recovered']); // failed ones left nothing
  });
});
