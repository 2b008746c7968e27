// The qemu provider: KVM/QEMU VMs on this host, each defined by ROOT/vms/NAME/vm.json and run
// as a daemonized qemu-system-x86_64 driven over QMP. It keeps no state in memory that matters:
// every call reads the definition, the pidfile and QEMU itself, so a new provider object (or a
// restarted Rebound) re-attaches to running VMs without touching them. Only open points live in
// memory; one left open by a crashed process is folded back (not lost) by the next takePoint.
// QEMU serves one QMP client at a time, so calls on one VM are serialised here and each opens
// its own short QMP connection.
import { execFile } from 'node:child_process';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { conflict, ReboundError } from '../../domain/errors.ts';
import { QmpClient } from '../../qmp/client.ts';
import type {
  DiskInfo,
  GroupPoints,
  MachineDefinition,
  MachineInfo,
  MachineProvider,
  NetworkKind,
  Point,
  ReleaseOptions,
  ReplicaSpec,
  TakePointOptions,
  TrackingStatus,
} from '../provider.ts';
import { chooseAccel } from './accel.ts';
import type { AccelProbe } from './accel.ts';
import { diskNode, qemuArgs } from './command-line.ts';
import { listDefinitionNames, readDefinition, validateDefinition, vmPaths, writeDefinition } from './definition.ts';
import type { VmPaths } from './definition.ts';
import { ensureNetwork, networkOf, removeNetwork } from './network.ts';
import type { SiteNetwork } from './network.ts';
import { FreezeAgent } from './freeze-agent.ts';
import { findQemu, isQemuFor, processGone, waitGone } from './process.ts';
import * as tracking from './tracking.ts';
import { mergeExtents } from './tracking.ts';
import type { OpenPoint } from './tracking.ts';

const run = promisify(execFile);

/** In a VM's run directory while a group barrier holds it (takeGroupPoints). */
const BARRIER_MARKER = 'barrier.json';

/** qemu-img with QEMU secret objects read from their files (the definition's secrets). */
async function runWithSecrets(args: string[], secrets: { id: string; file: string }[], signal?: AbortSignal): Promise<void> {
  const [sub, ...rest] = args;
  const objs = secrets.flatMap((s) => ['--object', `secret,id=${s.id},file=${s.file},format=raw`]);
  try {
    await run('qemu-img', [sub ?? '', ...objs, ...rest], { signal });
  } catch (err) {
    throw new ReboundError('internal', 'consolidate-failed', `qemu-img ${sub ?? ''} failed: ${((err as { stderr?: string }).stderr ?? String(err)).trim()}`, { cause: err });
  }
}

export interface QemuProviderOptions {
  /** The site's root directory (VMs under ROOT/vms). */
  root: string;
  /** Force an accelerator instead of probing. */
  accel?: 'kvm' | 'tcg';
  /** QMP command deadline. */
  qmpTimeoutMs?: number;
}

export class QemuProvider implements MachineProvider {
  readonly kind = 'qemu';
  readonly root: string;
  readonly #opts: QemuProviderOptions;
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #points = new Map<string, OpenPoint>();
  /** The accelerator chosen by the last start (for benches and diagnostics). */
  lastAccel: AccelProbe | undefined;

  constructor(opts: QemuProviderOptions) {
    this.root = opts.root;
    this.#opts = opts;
  }

  paths(name: string): VmPaths {
    return vmPaths(this.root, name);
  }

  async discover(signal?: AbortSignal): Promise<MachineInfo[]> {
    const out: MachineInfo[] = [];
    for (const name of await listDefinitionNames(this.root)) {
      signal?.throwIfAborted();
      try {
        out.push(await this.state(name, signal));
      } catch (err) {
        if (err instanceof ReboundError && err.code === 'machine-not-found') continue; // a directory without vm.json
        throw err;
      }
    }
    return out;
  }

  async define(def: MachineDefinition, signal?: AbortSignal): Promise<MachineInfo> {
    const valid = validateDefinition(this.root, def);
    return this.#locked(valid.name, async () => {
      signal?.throwIfAborted();
      const exists = await stat(this.paths(valid.name).file).then(() => true, () => false);
      if (exists) throw conflict('machine-exists', `A VM named "${valid.name}" is already defined at this site.`, { hint: 'Pick another name, or undefine the old VM first.' });
      await writeDefinition(this.root, valid);
      return { name: valid.name, state: 'stopped', definition: valid };
    });
  }

  async undefine(name: string, signal?: AbortSignal): Promise<void> {
    await this.#locked(name, async () => {
      const paths = this.paths(name);
      await readDefinition(this.root, name);
      if (await findQemu(paths)) throw conflict('machine-running', `VM "${name}" is running; stop it before removing its definition.`);
      signal?.throwIfAborted();
      await rm(paths.dir, { recursive: true, force: true });
    });
  }

  async state(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    const definition = await readDefinition(this.root, name);
    const paths = this.paths(name);
    const pid = await findQemu(paths);
    const base = { name, definition, consoleLog: paths.serialLog };
    if (pid === undefined) return { ...base, state: 'stopped' };
    // The process is the truth for running/stopped; QMP adds paused/crashed when it answers.
    let status = 'running';
    try {
      status = await this.#locked(name, () => this.#withQmp(name, async (q) => (await q.execute('query-status', undefined, { signal })).status, 3000));
    } catch {
      // QMP busy or hung: the process is alive, which is what state() promises to tell.
    }
    const state = status === 'guest-panicked' || status === 'internal-error' ? 'crashed' : status === 'paused' || status === 'prelaunch' ? 'paused' : 'running';
    return { ...base, state, pid };
  }

  async disks(name: string, signal?: AbortSignal): Promise<DiskInfo[]> {
    const def = await readDefinition(this.root, name);
    const out: DiskInfo[] = [];
    for (const [i, d] of def.disks.entries()) {
      signal?.throwIfAborted();
      const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', '-f', d.format, d.path], { signal });
      out.push({ id: diskNode(i), path: d.path, format: d.format, sizeBytes: (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'] });
    }
    return out;
  }

  async start(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    return this.#start(name, false, signal);
  }

  async startPaused(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    return this.#start(name, true, signal);
  }

  async resume(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    await this.#locked(name, async () => {
      if ((await findQemu(this.paths(name))) === undefined) throw conflict('machine-not-running', `VM "${name}" is not running; start it instead of resuming it.`);
      await this.#withQmp(name, (q) => q.execute('cont', undefined, { signal }));
    });
    return this.state(name, signal); // outside the lock: state() takes it too
  }

  async #start(name: string, paused: boolean, signal?: AbortSignal): Promise<MachineInfo> {
    return this.#locked(name, async () => {
      const def = await readDefinition(this.root, name);
      const paths = this.paths(name);
      if (await findQemu(paths)) throw conflict('machine-running', `VM "${name}" is already running.`);
      for (const d of def.disks) {
        await stat(d.path).catch((err: unknown) => {
          throw new ReboundError('invalid', 'disk-missing', `Disk image ${d.path} of VM "${name}" does not exist.`, { hint: 'Create the image or fix the path in vm.json.', cause: err });
        });
      }
      const accel = this.#opts.accel
        ? { accel: this.#opts.accel, reason: 'provider option', probedMs: 0 }
        : await chooseAccel(def.boot.kind === 'kernel' ? def.boot.kernel : undefined);
      this.lastAccel = accel;
      const net = this.#network(def);
      if (net) await ensureNetwork(net);
      // A barrier marker belongs to the QEMU that is gone: this one must not be let run by it.
      for (const f of [paths.qmp, paths.console, paths.nbd, paths.pidfile, join(paths.run, BARRIER_MARKER)]) await rm(f, { force: true });
      const args = qemuArgs(def, paths, accel.accel, net, { paused });
      const [cmd, argv] = net ? ['ip', ['netns', 'exec', net.namespace, 'qemu-system-x86_64', ...args]] : ['qemu-system-x86_64', args];
      try {
        // With -daemonize the first process exits once the VM is set up (sockets listening).
        await run(cmd, argv, { signal, timeout: 60_000 });
      } catch (err) {
        const stderr = (err as { stderr?: string }).stderr?.trim() ?? '';
        throw new ReboundError('unavailable', 'machine-start-failed', `QEMU could not start VM "${name}": ${stderr || String(err)}.`, {
          hint: 'Check the disk paths, kernel and memory in vm.json; the message above is QEMU\'s own.',
          cause: err,
        });
      }
      const pid = await findQemu(paths);
      if (pid === undefined) throw new ReboundError('unavailable', 'machine-start-failed', `QEMU started VM "${name}" but exited at once; see ${paths.serialLog}.`);
      return { name, state: paused ? 'paused' : 'running', definition: def, pid, consoleLog: paths.serialLog };
    });
  }

  async redefine(def: MachineDefinition, signal?: AbortSignal): Promise<MachineInfo> {
    const valid = validateDefinition(this.root, def);
    return this.#locked(valid.name, async () => {
      await readDefinition(this.root, valid.name);
      if (await findQemu(this.paths(valid.name))) throw conflict('machine-running', `VM "${valid.name}" is running; stop it before changing its definition.`);
      signal?.throwIfAborted();
      await writeDefinition(this.root, valid);
      return { name: valid.name, state: 'stopped', definition: valid };
    });
  }

  /**
   * Streams each disk's backing chain into its own image (QMP block-stream while the VM runs,
   * `qemu-img rebase` onto nothing when it is stopped), then drops the definition's secrets.
   * Node names stay the same, so dirty bitmaps and tracking carry on.
   */
  async consolidate(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    await this.#locked(name, async () => {
      const def = await readDefinition(this.root, name);
      const paths = this.paths(name);
      if (await findQemu(paths)) {
        await this.#withQmp(name, async (q) => {
          const nodes = await q.execute('query-named-block-nodes', { flat: true }, { signal });
          for (let i = 0; i < def.disks.length; i++) {
            const node = nodes.find((n) => n['node-name'] === diskNode(i));
            if (!node?.backing_file) continue;
            await q.execute('block-stream', { 'job-id': `consolidate${i}`, device: diskNode(i) }, { signal });
          }
          for (;;) {
            signal?.throwIfAborted();
            const jobs = (await q.execute('query-block-jobs', undefined, { signal })).filter((j) => j.device.startsWith('consolidate'));
            if (jobs.length === 0) break;
            await new Promise((r) => setTimeout(r, 200));
          }
          const after = await q.execute('query-named-block-nodes', { flat: true }, { signal });
          for (let i = 0; i < def.disks.length; i++) {
            const node = after.find((n) => n['node-name'] === diskNode(i));
            if (node?.backing_file) {
              throw new ReboundError('internal', 'consolidate-failed', `Disk ${i} of VM "${name}" still has a backing file (${node.backing_file}) after streaming; see the QEMU log.`, { retryable: true });
            }
          }
        });
      } else {
        for (const d of def.disks) {
          if (d.format !== 'qcow2') continue;
          await runWithSecrets(['rebase', '-q', '-f', 'qcow2', '-b', '', d.path], def.secrets ?? [], signal);
        }
      }
      const { secrets: _dropped, ...rest } = def;
      await writeDefinition(this.root, rest);
      for (const s of def.secrets ?? []) await rm(s.file, { force: true });
    });
    return this.state(name, signal); // outside the lock: state() takes it too
  }

  async shutdown(name: string, opts: { timeoutMs: number }, signal?: AbortSignal): Promise<void> {
    await this.#locked(name, async () => {
      const pid = await findQemu(this.paths(name));
      if (pid === undefined) return;
      await this.#withQmp(name, (q) => q.execute('system_powerdown', undefined, { signal }));
      if (await waitGone(pid, opts.timeoutMs, signal, this.paths(name))) return this.#afterExit(name);
      signal?.throwIfAborted();
      throw new ReboundError('unavailable', 'machine-shutdown-timeout', `VM "${name}" did not shut down within ${Math.round(opts.timeoutMs / 1000)} s of the ACPI power button.`, {
        hint: 'The guest may ignore ACPI (no acpid) or be busy; wait longer, or power it off (data not yet written by the guest is lost).',
        retryable: true,
      });
    });
  }

  async powerOff(name: string, signal?: AbortSignal): Promise<void> {
    await this.#locked(name, async () => {
      const pid = await findQemu(this.paths(name));
      if (pid === undefined) return;
      // `quit` closes the images cleanly, so persistent bitmaps survive; SIGKILL is the fallback.
      await this.#withQmp(name, (q) => q.execute('quit', undefined, { signal, timeoutMs: 5000 }), 3000).catch(() => undefined);
      const paths = this.paths(name);
      if (!(await waitGone(pid, 10_000, signal, paths)) && (await isQemuFor(pid, paths))) {
        process.kill(pid, 'SIGKILL');
        await waitGone(pid, 10_000, undefined, paths);
      }
      if (!(await processGone(pid)) && (await isQemuFor(pid, this.paths(name)))) throw new ReboundError('internal', 'machine-kill-failed', `QEMU (pid ${pid}) of VM "${name}" survived SIGKILL.`);
      await this.#afterExit(name);
    });
  }

  async startTracking(name: string, signal?: AbortSignal): Promise<TrackingStatus> {
    return this.#trackingOp(name, (q, def, paths) => tracking.startTracking(q, def, paths, signal));
  }

  async trackingStatus(name: string, signal?: AbortSignal): Promise<TrackingStatus> {
    return this.#trackingOp(name, async (q, def, paths) => (await tracking.inspect(q, def, paths, signal)).status);
  }

  async resetTracking(name: string, signal?: AbortSignal, opts: { baseline?: boolean } = {}): Promise<TrackingStatus> {
    return this.#trackingOp(name, async (q, def, paths) => {
      await this.#dropOpenPoint(name);
      return tracking.resetTracking(q, def, paths, signal, opts.baseline === true);
    });
  }

  async takePoint(name: string, signal?: AbortSignal, opts: TakePointOptions = {}): Promise<Point> {
    let consistency: 'crash' | 'app' = 'crash';
    let freezeError: string | undefined;
    const open = await this.#trackingOp(name, async (q, def, paths) => {
      // Checked under the VM's lock so two concurrent calls cannot both open a point.
      if (this.#points.has(name)) throw conflict('point-open', `VM "${name}" already has an open point; release it before taking the next.`);
      let agent: FreezeAgent | undefined;
      if (opts.appConsistent) {
        try {
          agent = await FreezeAgent.connect(paths.agent, opts.freezeTimeoutMs ?? 10_000);
          await agent.freeze();
          consistency = 'app';
        } catch (err) {
          freezeError = (err as Error).message;
        }
      }
      try {
        const opened = await tracking.takePoint(q, def, paths, signal);
        this.#points.set(name, opened);
        return opened;
      } finally {
        if (agent) {
          // Thawed whatever happened: a guest left frozen stops writing.
          await agent.thaw().catch((err: unknown) => {
            consistency = 'crash';
            freezeError = `thaw failed: ${(err as Error).message}`;
          });
          agent.close();
        }
      }
    });
    return { ...this.#pointOf(name, open), consistency, ...(freezeError ? { freezeError } : {}) };
  }

  /**
   * A replication group's barrier: each VM's point is prepared (overlays, no pause), the guests
   * are frozen when asked, every VM is stopped (`stop` drains its in-flight I/O), each VM's point
   * transaction runs, and every VM is let run again (`cont`) — in a finally, so no VM is left
   * stopped — then thawed. The VMs' locks are taken in name order, so two barriers never wait on
   * each other. `pauseMs` runs from the first `stop` to the last `cont`.
   */
  async takeGroupPoints(names: string[], signal?: AbortSignal, opts: TakePointOptions = {}): Promise<GroupPoints> {
    if (new Set(names).size !== names.length) throw conflict('group-duplicate-machine', `A group point names a machine twice (${names.join(', ')}).`);
    const order = [...names].sort();
    const held: { name: string; def: MachineDefinition; paths: VmPaths; q: QmpClient; prepared?: tracking.PreparedPoint; takenAt?: Date; agent?: FreezeAgent; consistency: 'crash' | 'app'; freezeError?: string }[] = [];
    const body = async (): Promise<GroupPoints> => {
      try {
        for (const name of order) {
          const def = await readDefinition(this.root, name);
          const paths = this.paths(name);
          if ((await findQemu(paths)) === undefined) throw conflict('machine-not-running', `VM "${name}" is not running; a group point needs every VM of the group running.`, { hint: 'Start the VM, or take it out of the replication group.' });
          if (this.#points.has(name)) throw conflict('point-open', `VM "${name}" already has an open point; release it before taking the next.`);
          const q = await QmpClient.connect(paths.qmp, { timeoutMs: 10_000 });
          held.push({ name, def, paths, q, consistency: 'crash' });
          await this.#unstick(q, paths);
        }
        for (const h of held) h.prepared = await tracking.preparePoint(h.q, h.def, h.paths, signal);
        // A process killed inside the barrier would leave the VMs stopped (or frozen): the marker
        // lets the next call on the VM, from any process, let it run again (#unstick).
        await Promise.all(held.map((h) => writeFile(join(h.paths.run, BARRIER_MARKER), JSON.stringify({ at: Date.now(), frozen: opts.appConsistent === true }) + '\n')));
        if (opts.appConsistent) {
          await Promise.all(held.map(async (h) => {
            try {
              h.agent = await FreezeAgent.connect(h.paths.agent, opts.freezeTimeoutMs ?? 10_000);
              await h.agent.freeze();
              h.consistency = 'app';
            } catch (err) {
              h.freezeError = (err as Error).message;
            }
          }));
        }
        let stoppedAt = 0;
        let pauseMs = 0;
        try {
          stoppedAt = performance.now();
          await Promise.all(held.map((h) => h.q.execute('stop', undefined, { signal })));
          await Promise.all(held.map(async (h) => { h.takenAt = await tracking.commitPoint(h.q, h.def, h.paths, h.prepared!, signal); }));
        } finally {
          // Every VM runs again whatever happened (a VM left stopped is an outage).
          await Promise.all(held.map((h) => h.q.execute('cont').catch(() => undefined)));
          pauseMs = stoppedAt === 0 ? 0 : performance.now() - stoppedAt;
          await Promise.all(held.map(async (h) => {
            if (!h.agent) return;
            await h.agent.thaw().catch((err: unknown) => {
              h.consistency = 'crash';
              h.freezeError = `thaw failed: ${(err as Error).message}`;
            });
            h.agent.close();
          }));
          await Promise.all(held.map((h) => rm(join(h.paths.run, BARRIER_MARKER), { force: true })));
        }
        const points: Point[] = [];
        try {
          for (const h of held) {
            const open = await tracking.openPoint(h.q, h.def, h.paths, h.prepared!, h.takenAt!, signal);
            this.#points.set(h.name, open);
            points.push({ ...this.#pointOf(h.name, open), consistency: h.consistency, ...(h.freezeError ? { freezeError: h.freezeError } : {}) });
          }
        } catch (err) {
          // All or nothing: points already opened are released unconsumed (their changes stay
          // tracked); the others were folded back by openPoint or are left for the next point.
          for (const p of points) {
            const h = held.find((x) => x.name === p.machine)!;
            await this.#releaseHeld(p, h.q, h.def, h.paths).catch(() => undefined);
          }
          throw err;
        }
        const byName = new Map(points.map((p) => [p.machine, p]));
        return { points: names.map((n) => byName.get(n)!), pauseMs: Math.round(pauseMs * 10) / 10 };
      } catch (err) {
        for (const h of held) if (h.prepared && !h.takenAt) await tracking.abandonPoint(h.q, h.def, h.paths, h.prepared).catch(() => undefined);
        throw err;
      } finally {
        for (const h of held) await h.q.close().catch(() => undefined);
      }
    };
    // Nested locks in name order: the body runs holding every VM's lock.
    const run = order.reduceRight<() => Promise<GroupPoints>>((inner, name) => () => this.#locked(name, inner), body);
    return run();
  }

  /** A VM left stopped (and perhaps frozen) by a process killed inside a group barrier runs
   * again: `cont`, then thaw when the barrier had frozen it. Called under the VM's lock. */
  async #unstick(q: QmpClient, paths: VmPaths): Promise<void> {
    const marker = join(paths.run, BARRIER_MARKER);
    const text = await readFile(marker, 'utf8').catch(() => null);
    if (text === null) return;
    let frozen = false;
    try { frozen = (JSON.parse(text) as { frozen?: boolean }).frozen === true; } catch { /* a torn marker: cont anyway */ }
    await q.execute('cont').catch(() => undefined); // running already: nothing to do
    if (frozen) {
      const agent = await FreezeAgent.connect(paths.agent, 10_000).catch(() => undefined);
      await agent?.thaw().catch(() => undefined);
      agent?.close();
    }
    await rm(marker, { force: true });
  }

  /** Releases (unconsumed) a point whose VM lock and QMP connection the caller holds. */
  async #releaseHeld(point: Point, q: QmpClient, def: MachineDefinition, paths: VmPaths): Promise<void> {
    const open = this.#points.get(point.machine);
    if (!open || open.id !== point.id) return;
    for (const d of open.disks) await d.client.disconnect().catch(() => undefined);
    this.#points.delete(point.machine);
    await tracking.releasePoint(q, def, paths, open.generation, false);
  }

  #pointOf(name: string, open: tracking.OpenPoint): Point {
    const nbd = this.paths(name).nbd;
    return {
      id: open.id,
      machine: name,
      takenAt: open.takenAt,
      disks: open.disks.map((d, i) => ({
        disk: d.info,
        changes: d.changes,
        uri: `nbd+unix:///disk${i}?socket=${nbd}`,
        // base:allocation of the overlay covers its backing disk too: flag 2 = reads as zeros.
        allocated: async (sig?: AbortSignal) => {
          sig?.throwIfAborted();
          const extents = await d.client.blockStatusAll('base:allocation');
          return mergeExtents(extents.filter((e) => (e.flags & 2) === 0));
        },
        read: (offset: number, length: number, sig?: AbortSignal) => {
          sig?.throwIfAborted();
          return d.client.read(offset, length);
        },
      })),
    };
  }

  async adoptPoint(name: string, signal?: AbortSignal): Promise<Point | null> {
    const open = await this.#trackingOp(name, async (q, def, paths) => {
      const held = this.#points.get(name);
      if (held) return held;
      const adopted = await tracking.adoptPoint(q, def, paths, signal);
      if (adopted) this.#points.set(name, adopted);
      return adopted;
    });
    return open ? this.#pointOf(name, open) : null;
  }

  async releasePoint(point: Point, opts: ReleaseOptions, signal?: AbortSignal): Promise<void> {
    const open = this.#points.get(point.machine);
    if (!open || open.id !== point.id) throw conflict('point-not-open', `Point ${point.id} is not open in this process.`);
    for (const d of open.disks) await d.client.disconnect().catch(() => undefined);
    this.#points.delete(point.machine);
    const paths = this.paths(point.machine);
    if ((await findQemu(paths)) === undefined) {
      // QEMU is gone; its overlays are useless. Bitmaps are dealt with when it runs again.
      for (let i = 0; i < open.disks.length; i++) await rm(`${paths.run}/fleece${i}.qcow2`, { force: true });
      return;
    }
    await this.#trackingOp(point.machine, (q, def) => tracking.releasePoint(q, def, paths, open.generation, opts.consumed, signal));
  }

  async createReplica(spec: ReplicaSpec, signal?: AbortSignal): Promise<MachineInfo> {
    const t = spec.template;
    const nics = t.nics.map((n) => (spec.network === 'isolated' ? { network: spec.network, mac: n.mac, isolation: spec.isolation ?? spec.name } : { network: spec.network, mac: n.mac }));
    return this.define({ name: spec.name, cpus: t.cpus, memoryMiB: t.memoryMiB, disks: spec.disks, nics, boot: t.boot, ...(spec.secrets ? { secrets: spec.secrets } : {}) }, signal);
  }

  async setNetwork(name: string, network: NetworkKind, isolation?: string, signal?: AbortSignal): Promise<MachineInfo> {
    return this.#locked(name, async () => {
      const def = await readDefinition(this.root, name);
      if (await findQemu(this.paths(name))) throw conflict('machine-running', `VM "${name}" is running; stop it before moving its NICs to another network.`);
      signal?.throwIfAborted();
      const nics = def.nics.map((n) => (network === 'isolated' ? { network, mac: n.mac, isolation: isolation ?? name } : { network, mac: n.mac }));
      const next = validateDefinition(this.root, { ...def, nics });
      await writeDefinition(this.root, next);
      return { name, state: 'stopped', definition: next };
    });
  }

  /** The network namespace and multicast group a network of this site uses. */
  network(kind: Exclude<NetworkKind, 'none'>, isolation?: string): SiteNetwork {
    return networkOf(this.root, kind, isolation);
  }

  /** Removes this site's network namespaces (after its VMs are stopped; for tests and teardown). */
  async removeNetworks(isolations: string[] = []): Promise<void> {
    await removeNetwork(this.network('production'));
    for (const iso of isolations) await removeNetwork(this.network('isolated', iso));
  }

  #network(def: MachineDefinition): SiteNetwork | undefined {
    const nic = def.nics.find((n) => n.network !== 'none');
    if (!nic) return undefined;
    return nic.network === 'production' ? this.network('production') : this.network('isolated', nic.isolation ?? def.name);
  }

  async #afterExit(name: string): Promise<void> {
    await this.#dropOpenPoint(name);
    const p = this.paths(name);
    for (const f of [p.pidfile, p.qmp, p.console, p.nbd, join(p.run, BARRIER_MARKER)]) await rm(f, { force: true });
  }

  async #dropOpenPoint(name: string): Promise<void> {
    const open = this.#points.get(name);
    if (!open) return;
    for (const d of open.disks) await d.client.disconnect().catch(() => undefined);
    this.#points.delete(name);
  }

  async #trackingOp<T>(name: string, fn: (q: QmpClient, def: MachineDefinition, paths: VmPaths) => Promise<T>): Promise<T> {
    return this.#locked(name, async () => {
      const def = await readDefinition(this.root, name);
      const paths = this.paths(name);
      if ((await findQemu(paths)) === undefined) {
        throw conflict('machine-not-running', `VM "${name}" is not running; change tracking and points need its QEMU.`, { hint: 'Start the VM first.' });
      }
      return this.#withQmp(name, async (q) => {
        await this.#unstick(q, paths);
        return fn(q, def, paths);
      });
    });
  }

  async #withQmp<T>(name: string, fn: (q: QmpClient) => Promise<T>, connectTimeoutMs = 10_000): Promise<T> {
    const q = await QmpClient.connect(this.paths(name).qmp, { timeoutMs: connectTimeoutMs });
    try {
      return await fn(q);
    } finally {
      await q.close();
    }
  }

  /** Runs fn after every earlier call on the same VM has finished. */
  async #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(() => undefined, () => undefined);
    this.#locks.set(name, settled);
    try {
      return await next;
    } finally {
      if (this.#locks.get(name) === settled) this.#locks.delete(name);
    }
  }
}
