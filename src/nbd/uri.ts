// NBD URIs as QEMU and libnbd write them (the NBD project's doc/uri.md): `nbd://HOST[:PORT]/EXPORT`
// and `nbd+unix:///EXPORT?socket=PATH`. Lets a caller hand Rebound an export where it takes a
// disk image path (verify-disk of a live fleecing export, for example). Pure, no I/O.
import { ReboundError } from '../domain/errors.ts';
import type { NbdAddress } from './client.ts';

export interface NbdTarget {
  address: NbdAddress;
  exportName: string;
}

export const isNbdUri = (s: string): boolean => /^nbd(\+unix|\+tcp)?:\/\//.test(s);

/** Parses an NBD URI; throws a ReboundError naming what is wrong with it. */
export function parseNbdUri(uri: string): NbdTarget {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw bad(uri, 'it is not a URI');
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw bad(uri, 'nbd+unix needs ?socket=PATH');
    if (u.host !== '') throw bad(uri, 'nbd+unix takes no host (three slashes: nbd+unix:///EXPORT?socket=PATH)');
    return { address: { path: socket }, exportName };
  }
  if (u.protocol === 'nbd:' || u.protocol === 'nbd+tcp:') {
    if (!u.hostname) throw bad(uri, 'it names no host');
    const port = u.port === '' ? 10809 : Number(u.port);
    return { address: { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port }, exportName };
  }
  throw bad(uri, `scheme ${u.protocol} is not nbd, nbd+tcp or nbd+unix (TLS schemes are not supported)`);
}

/** The URI for an address and export, as qemu-img, nbdinfo and nbdcopy accept it. */
export function formatNbdUri(address: NbdAddress, exportName = ''): string {
  const exp = encodeURIComponent(exportName);
  if ('path' in address) return `nbd+unix:///${exp}?socket=${encodeURIComponent(address.path)}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${exp}`;
}

function bad(uri: string, why: string): ReboundError {
  return new ReboundError('invalid', 'nbd-bad-uri', `Cannot use NBD URI ${uri}: ${why}.`, {
    hint: 'Write nbd+unix:///EXPORT?socket=/path/to.sock or nbd://HOST:PORT/EXPORT.',
  });
}
