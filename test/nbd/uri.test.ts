// NBD URIs as qemu-img and libnbd write them: parsed, printed back, and bad ones refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatNbdUri, isNbdUri, parseNbdUri } from '../../src/nbd/uri.ts';
import { ReboundError } from '../../src/domain/errors.ts';

test('unix and TCP URIs parse to addresses and print back the same', () => {
  const cases: [string, ReturnType<typeof parseNbdUri>][] = [
    ['nbd+unix:///fleece0?socket=%2Frun%2Fvm%201%2Fnbd.sock', { address: { path: '/run/vm 1/nbd.sock' }, exportName: 'fleece0' }],
    ['nbd+unix:///?socket=%2Ftmp%2Fs', { address: { path: '/tmp/s' }, exportName: '' }],
    ['nbd://127.0.0.1:10810/disk0', { address: { host: '127.0.0.1', port: 10810 }, exportName: 'disk0' }],
    ['nbd://[::1]:10809/', { address: { host: '::1', port: 10809 }, exportName: '' }],
  ];
  for (const [uri, want] of cases) {
    assert.deepEqual(parseNbdUri(uri), want, uri);
    assert.equal(formatNbdUri(want.address, want.exportName), uri);
  }
  assert.deepEqual(parseNbdUri('nbd://host/x'), { address: { host: 'host', port: 10809 }, exportName: 'x' });
  assert.deepEqual(parseNbdUri('nbd+unix:///e?socket=/tmp/a.sock'), { address: { path: '/tmp/a.sock' }, exportName: 'e' });
});

test('paths are not URIs, and bad URIs say what is wrong', () => {
  assert.equal(isNbdUri('/var/disk.qcow2'), false);
  assert.equal(isNbdUri('nbd+unix:///?socket=/s'), true);
  for (const bad of ['nbd+unix:///exp', 'nbds://h/x', 'nbd+unix://host/x?socket=/s', 'nbd://']) {
    assert.throws(() => parseNbdUri(bad), (e) => e instanceof ReboundError && e.code === 'nbd-bad-uri', bad);
  }
});
