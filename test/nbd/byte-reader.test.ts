// The NBD client's byte queue: whatever the chunking, and even when the pusher reuses its chunk
// buffer right after push (as the client's receive buffer does), reads return the stream's bytes
// in order; a failure reaches a waiting reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ByteReader } from '../../src/nbd/byte-reader.ts';

type Op = { kind: 'exact' | 'into' | 'skip'; n: number };

test('exact, into and skip see the stream in order under any chunking, transient or not', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 1, maxLength: 2000 }),
      fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.record({ kind: fc.constantFrom<Op['kind']>('exact', 'into', 'skip'), n: fc.integer({ min: 0, max: 400 }) }), { minLength: 1, maxLength: 30 }),
      fc.boolean(),
      async (data, cuts, ops, transient) => {
        const stream = Buffer.from(data);
        const r = new ByteReader();
        // Reads run concurrently with pushes that arrive on later ticks.
        const want = ops.reduce<Op[]>((acc, op) => {
          const used = acc.reduce((s, o) => s + o.n, 0);
          if (used + op.n <= stream.length) acc.push(op);
          return acc;
        }, []);
        const reading = (async () => {
          let pos = 0;
          for (const op of want) {
            if (op.kind === 'exact') {
              assert.ok((await r.exact(op.n)).equals(stream.subarray(pos, pos + op.n)));
            } else if (op.kind === 'into') {
              const dst = Buffer.alloc(op.n + 4, 0xee);
              await r.into(dst, 2, op.n);
              assert.ok(dst.subarray(2, 2 + op.n).equals(stream.subarray(pos, pos + op.n)));
              assert.equal(dst[0], 0xee);
              assert.equal(dst[op.n + 3], 0xee);
            } else {
              await r.skip(op.n);
            }
            pos += op.n;
          }
        })();
        const scratch = Buffer.alloc(300);
        let at = 0;
        for (let i = 0; at < stream.length; i++) {
          const n = Math.min(cuts[i % cuts.length]!, stream.length - at);
          if (transient) {
            stream.copy(scratch, 0, at, at + n);
            r.push(scratch.subarray(0, n), true);
            scratch.fill(0x5a); // the pusher reuses its buffer at once
          } else {
            r.push(Buffer.from(stream.subarray(at, at + n)));
          }
          at += n;
          await new Promise((res) => setImmediate(res));
        }
        await reading;
      },
    ),
    { numRuns: 150 },
  );
});

test('a failure rejects a reader waiting in exact or into, and later reads', async () => {
  const r = new ByteReader();
  const waiting = r.into(Buffer.alloc(10), 0, 10);
  r.push(Buffer.from([1, 2, 3]));
  r.fail(new Error('gone'));
  await assert.rejects(waiting, /gone/);
  await assert.rejects(r.exact(5), /gone/);
});
