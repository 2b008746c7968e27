// The record and file formats: checksum, round trips, and what decoding calls damage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkFile, crc32c, decodeRecord, encodeFile, encodeRecord, RECORD_SIZE } from '../../src/guest/records.ts';

test('crc32c matches the published check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('crc32c gives the bytewise result at any alignment and length', () => {
  const bytewise = (b: Uint8Array): number => {
    let c = 0xffffffff;
    for (const x of b) {
      c ^= x;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return (c ^ 0xffffffff) >>> 0;
  };
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), fc.nat(7), (data, shift) => {
      const host = new Uint8Array(data.length + 8);
      host.set(data, shift);
      assert.equal(crc32c(host, shift, shift + data.length), bytewise(data));
    }),
    { numRuns: 200 },
  );
});

test('records round-trip and any single flipped byte is detected', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1e9 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: RECORD_SIZE - 1 }), (seq, writer, at) => {
      const rec = encodeRecord({ seq, timeNs: 123n, writer, offset: (seq - 1) * RECORD_SIZE });
      const d = decodeRecord(rec);
      assert.equal(d.kind, 'record');
      assert.ok(d.kind === 'record' && d.seq === seq && d.writer === writer && d.offset === (seq - 1) * RECORD_SIZE);
      rec[at]! ^= 0x01;
      assert.equal(decodeRecord(rec).kind, 'corrupt');
    }),
    { numRuns: 50 },
  );
});

test('zero blocks are empty and other data is foreign', () => {
  assert.equal(decodeRecord(new Uint8Array(RECORD_SIZE)).kind, 'empty');
  assert.equal(decodeRecord(new Uint8Array(RECORD_SIZE).fill(7)).kind, 'foreign');
});

test('fs-writer files check, and a wrong index or flipped byte does not', () => {
  const f = encodeFile({ seed: 42n, index: 3, generation: 9n, size: 4096 });
  assert.equal(checkFile(f, 3).ok, true);
  assert.equal(checkFile(f, 4).ok, false);
  f[100]! ^= 0x80;
  const r = checkFile(f, 3);
  assert.ok(!r.ok && /checksum/.test(r.reason));
});
