// Networks of a qemu site. Each network is a Linux network namespace holding only a loopback
// with a multicast route, and a UDP multicast group inside it that QEMU's `-netdev socket,mcast`
// NICs join: every VM started in the namespace shares one L2 segment (a hub), and nothing else.
//   production            → namespace rb-<site>-prod, shared by the site's production VMs
//   isolated (name N)     → namespace rb-<site>-iso-<N>, one per isolated network (test failover)
// Isolation is enforced by the kernel twice over: a different namespace (no route, no interface
// in common, no uplink) and a different multicast group. QEMU runs inside the namespace
// (`ip netns exec`); its QMP and console sockets are files, so the host still reaches them.
// Needs root (CAP_SYS_ADMIN) for `ip netns`; VMs without NICs need nothing.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ReboundError } from '../../domain/errors.ts';
import type { NetworkKind } from '../provider.ts';

const run = promisify(execFile);

export interface SiteNetwork {
  namespace: string;
  /** Multicast group and port the VMs' NICs join. */
  group: string;
  port: number;
}

const short = (s: string, n: number): string => createHash('sha256').update(s).digest('hex').slice(0, n);

/** The namespace and multicast group of a network of the site at `root`. */
export function networkOf(root: string, kind: Exclude<NetworkKind, 'none'>, isolation = ''): SiteNetwork {
  const site = short(root, 8);
  const key = kind === 'production' ? 'prod' : `iso-${short(isolation, 8)}`;
  const h = createHash('sha256').update(`${root}\0${key}`).digest();
  // 239.0.0.0/8 is administratively scoped; the port keeps groups apart even in one namespace.
  return { namespace: `rb-${site}-${key}`, group: `239.${h[0]! % 254 + 1}.${h[1]}.${h[2]! % 254 + 1}`, port: 20000 + (h.readUInt16BE(3) % 40000) };
}

/** Creates the namespace if it does not exist (idempotent, safe to race with itself). */
export async function ensureNetwork(net: SiteNetwork): Promise<void> {
  if (await exists(net.namespace)) return;
  try {
    await run('ip', ['netns', 'add', net.namespace]);
  } catch (err) {
    if (!(await exists(net.namespace))) {
      throw new ReboundError('unavailable', 'network-unavailable', `Cannot create the network namespace ${net.namespace}: ${(err as { stderr?: string }).stderr?.trim() ?? String(err)}.`, {
        hint: 'VM networks need `ip netns` (root, iproute2). Run Rebound as root, or give the VM no NICs.',
        cause: err,
      });
    }
  }
  const inNs = (...args: string[]): Promise<unknown> => run('ip', ['netns', 'exec', net.namespace, 'ip', ...args]);
  await inNs('link', 'set', 'lo', 'up');
  await inNs('link', 'set', 'lo', 'multicast', 'on');
  await inNs('route', 'replace', '224.0.0.0/4', 'dev', 'lo');
}

/** Removes the namespace (VMs still in it keep running, cut off; callers stop them first). */
export async function removeNetwork(net: SiteNetwork): Promise<void> {
  if (await exists(net.namespace)) await run('ip', ['netns', 'del', net.namespace]).catch(() => undefined);
}

async function exists(ns: string): Promise<boolean> {
  try {
    await access(`/run/netns/${ns}`);
    return true;
  } catch {
    return false;
  }
}

/** The `-netdev`/`-device` arguments for NIC `index` on this network. */
export function nicArgs(net: SiteNetwork, index: number, mac: string): string[] {
  return [
    '-netdev', `socket,id=net${index},mcast=${net.group}:${net.port},localaddr=127.0.0.1`,
    '-device', `virtio-net-pci,netdev=net${index},mac=${mac}`,
  ];
}
