// The guest console parser: what each REBOUND line means, in whatever chunks it arrives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleParser, parseConsole } from '../../src/guest/console.ts';

const transcript = [
  '[    2.1] virtio_blk virtio1: [vda] 32768 512-byte logical blocks',
  'REBOUND boot kernel=6.1.0-56-amd64 workload=records uptime=2.95',
  'REBOUND net eth0 10.0.2.15/24',
  'REBOUND ready workload=records disk=/dev/vda size=16777216 writer=42 resume_seq=400 rate=200',
  'REBOUND seq=401 durable',
  '[    3.0] random: crng init done\rREBOUND seq=402 durable',
  'REBOUND file=3 gen=7 durable',
  'REBOUND file=3 gen=5 durable',
  'REBOUND error write seq=403: No space left on device',
  'REBOUND done workload=records seq=402',
  'REBOUND poweroff',
].join('\r\n');

test('a transcript yields boot, network, ready, durable progress, errors and the end', () => {
  const s = parseConsole(transcript);
  assert.equal(s.booted, true);
  assert.equal(s.kernel, '6.1.0-56-amd64');
  assert.equal(s.workload, 'records');
  assert.equal(s.address, '10.0.2.15/24');
  assert.equal(s.ready, true);
  assert.equal(s.writer, '42');
  assert.equal(s.resumeSeq, 400);
  assert.equal(s.lastDurableSeq, 402);
  assert.deepEqual([...s.durableFiles], [[3, 7]]);
  assert.deepEqual(s.errors, ['error write seq=403: No space left on device']);
  assert.equal(s.done, true);
  assert.equal(s.poweroff, true);
  assert.deepEqual([...s.disks], [['/dev/vda', { writer: '42', resumeSeq: 400, durableSeq: 402, done: true }]]);
});

test('with one writer per disk, lastDurableSeq is what every disk has, and done waits for all', () => {
  const p = new ConsoleParser();
  p.feed('REBOUND boot kernel=k workload=records uptime=1\n');
  p.feed('REBOUND ready workload=records disk=/dev/vdb size=1 writer=1 resume_seq=0 rate=0\n');
  p.feed('REBOUND ready workload=records disk=/dev/vdc size=1 writer=2 resume_seq=5 rate=0\n');
  p.feed('REBOUND seq=10 durable disk=/dev/vdb\nREBOUND seq=7 durable disk=/dev/vdc\nREBOUND seq=12 durable disk=/dev/vdb\n');
  assert.equal(p.state.lastDurableSeq, 7);
  assert.deepEqual([...p.state.disks.keys()], ['/dev/vdb', '/dev/vdc']);
  p.feed('REBOUND done workload=records seq=12 disk=/dev/vdb\n');
  assert.equal(p.state.done, false);
  p.feed('REBOUND seq=20 durable disk=/dev/vdc\nREBOUND done workload=records seq=20 disk=/dev/vdc\n');
  assert.equal(p.state.done, true);
  assert.equal(p.state.lastDurableSeq, 12);
  assert.equal(p.state.disks.get('/dev/vdc')?.resumeSeq, 5);
});

test('chunks split anywhere give the same state, and a partial line is not counted', () => {
  const whole = parseConsole(transcript);
  for (const size of [1, 7, 64]) {
    const p = new ConsoleParser();
    for (let i = 0; i < transcript.length; i += size) p.feed(transcript.slice(i, i + size));
    p.feed('\n');
    assert.deepEqual(p.state, whole, `chunks of ${size}`);
  }
  const p = new ConsoleParser();
  p.feed('REBOUND seq=9 durable\nREBOUND seq=10 dur');
  assert.equal(p.state.lastDurableSeq, 9);
});
