// Helpers for replication tests against a real `rebound serve`: API calls with the admin token,
// waiting for jobs and points, and reading every retained point of a replica after the server
// stopped (views served over qemu-nbd, checked with the record verifier).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { open, readdir } from 'node:fs/promises';
import { call } from '../api/helpers.ts';
import { verifyDisk } from '../../src/guest/verify.ts';
import type { VerifyReport } from '../../src/guest/verify.ts';
import { ReplicaDisk } from '../../src/replica/replica-disk.ts';
import { serveReplicaImage } from '../../src/replica/serve-view.ts';
import { openStore } from '../../src/store/open.ts';
import { loadVaultKeys } from '../../src/vault/keys.ts';
import type { ServerProcess } from '../support/server.ts';

/** An API call as the server's admin (or `token`); throws with the answer unless it is 2xx. */
export async function api<T = unknown>(s: Pick<ServerProcess, 'url' | 'token'>, method: string, path: string, body?: unknown): Promise<T> {
  const r = await call(s.url, method, `/api/v1${path}`, { token: s.token, ...(body === undefined ? {} : { body }) });
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path} → ${r.status}: ${r.text}`);
  return r.body as T;
}

export interface JobLike { id: string; state: string; progress: number; error?: { code: string; message: string }; tasks: { name: string; state: string; progress: number }[] }

export async function waitJob(s: Pick<ServerProcess, 'url' | 'token' | 'logs'>, id: string, timeoutMs: number, want = 'succeeded'): Promise<JobLike> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await api<JobLike>(s, 'GET', `/jobs/${id}`);
    if (['succeeded', 'failed', 'cancelled'].includes(j.state) || j.state === want) {
      assert.equal(j.state, want, `job ${id} ended ${j.state}: ${JSON.stringify(j.error)}\n${s.logs().slice(-3000)}`);
      return j;
    }
    if (Date.now() > deadline) throw new Error(`job ${id} still ${j.state} (${j.progress}%) after ${timeoutMs} ms; tasks ${JSON.stringify(j.tasks.map((t) => [t.name, t.state]))}; log ${JSON.stringify((j as { log?: unknown }).log)}\n${s.logs().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface PointLike { id: string; takenAt: number; status: string; kind: string }

export async function points(s: Pick<ServerProcess, 'url' | 'token'>, machine: string): Promise<PointLike[]> {
  return (await api<{ items: PointLike[] }>(s, 'GET', `/items/${machine}/points?limit=500`)).items;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The replica disks of an item under a site root (diskId → ReplicaDisk), opened with the vault's keys. */
export async function openReplicas(dataDir: string, siteRoot: string, itemId: string): Promise<Map<string, ReplicaDisk>> {
  const store = await openStore({ dataDir });
  const keys = await loadVaultKeys(store);
  await store.close();
  const dir = join(siteRoot, 'replicas', itemId);
  const out = new Map<string, ReplicaDisk>();
  for (const n of (await readdir(dir)).sort()) out.set(n, await ReplicaDisk.open(join(dir, n), { keys: keys.atRestKeys }));
  return out;
}

/** Verifies one disk of a point through a fresh view (then closed). */
export async function verifyPoint(disk: ReplicaDisk, pointId: string, opts: { expectSeq?: number } = {}): Promise<VerifyReport> {
  const view = await disk.openView(pointId);
  try {
    const served = await serveReplicaImage(view.drive, disk.secrets());
    try {
      return await verifyDisk(served.uri, opts);
    } finally {
      await served.close();
    }
  } finally {
    await disk.closeView(view.id);
  }
}

/** Where guest offset `g` of a qcow2 layer lives in its file (null when that layer does not hold
 * it): read from the header, L1 and L2 tables, so it works for encrypted images too, whose host
 * offsets qemu-img map does not show. */
export async function qcow2HostOffset(file: string, g: number): Promise<number | null> {
  const fh = await open(file, 'r');
  try {
    const h = Buffer.alloc(48);
    await fh.read(h, 0, 48, 0);
    const clusterBits = h.readUInt32BE(20);
    const l1Size = h.readUInt32BE(36);
    const l1Offset = Number(h.readBigUInt64BE(40));
    const l2Entries = 2 ** (clusterBits - 3);
    const l1Index = Math.floor(g / 2 ** clusterBits / l2Entries);
    if (l1Index >= l1Size) return null;
    const e = Buffer.alloc(8);
    await fh.read(e, 0, 8, l1Offset + 8 * l1Index);
    const l2Offset = Number(e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    if (l2Offset === 0) return null;
    await fh.read(e, 0, 8, l2Offset + 8 * (Math.floor(g / 2 ** clusterBits) % l2Entries));
    const host = Number(e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    return host === 0 ? null : host + (g % 2 ** clusterBits);
  } finally {
    await fh.close();
  }
}
