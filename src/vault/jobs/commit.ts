// `commit`: makes a failover final. The recovered machine's disks stop depending on the replica
// store (QEMU streams the chain into them while the machine runs; a stopped machine or a
// physical site's images are rebased onto nothing), then the recovery points and the replica
// are removed. On a failback it also removes the machine and disks at the recovery site. The
// machine is then not protected until reverse replication.
import { rename, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ReboundError } from '../../domain/errors.ts';
import type { JobDefinition } from '../../jobs/types.ts';
import type { AssignedDisk } from '../../replication/link.ts';
import type { Store } from '../../store/open.ts';
import type { JobParams } from '../item-actions.ts';
import type { RecoveryPlane } from '../recovery-plane.ts';
import { exists, loadRecovery, machineDir, onHost, site, updateDetails, writeKeyFile } from './recovery-context.ts';
import { stateOrNull } from './failover.ts';

const run = promisify(execFile);

export function commitJob(store: Store, plane: RecoveryPlane): JobDefinition<JobParams> {
  return {
    kind: 'commit',
    describe: (p) => [
      { name: 'make the machine independent of the replica store' },
      { name: 'remove the recovery points' },
      ...(p.plan.removeRecoveryMachine ? [{ name: 'remove the machine at the recovery site' }] : []),
    ],
    retry: { maxAttempts: 5 },
    async runTask(ctx) {
      const { itemId, machine, plan } = ctx.params;
      const rc = await loadRecovery(store, itemId);
      const rec = rc.details.failover;
      if (ctx.task.seq === 0) {
        if (!rec) {
          await ctx.log(`${machine} has no recovered machine left to consolidate (done before).`);
          return {};
        }
        const s = site(rc, rec.siteId);
        const t0 = Date.now();
        if (s.provider === 'qemu') {
          const p = plane.provider(onHost(s, rec));
          if (!p.consolidate) throw new ReboundError('conflict', 'provider-cannot-consolidate', `the ${s.provider} provider cannot make ${rec.name}'s disks standalone.`);
          await ctx.log(`copying the replica data ${rec.name} still reads into its own disks (live; the machine keeps running).`);
          await p.consolidate(rec.name, ctx.signal);
        } else {
          // A physical site's machines are plain raw images: each overlay is converted (sparse)
          // beside it, then the overlay goes.
          const secrets = await writeKeyFile(machineDir(onHost(s, rec), rec.name), await plane.secrets(rec.siteId, itemId));
          const objs = (secrets ?? []).flatMap((x) => ['--object', `secret,id=${x.id},file=${x.file},format=raw`]);
          const raws: AssignedDisk[] = [];
          for (const d of rec.disks) {
            // Converted by an earlier run of this task that was cut off (kill -9) after it
            // recorded the raw images but before the task was marked done: nothing to convert.
            // Before, the retry ran `qemu-img convert -f qcow2` on the raw image and the commit
            // failed (soak seed 12196, kill9-commit).
            if (d.format === 'raw') {
              raws.push(d);
              continue;
            }
            const raw = d.path.replace(/\.qcow2$/, '') + '.raw';
            if (!(await exists(raw)) || (await exists(d.path))) {
              await run('qemu-img', ['convert', ...objs, '-q', '-f', 'qcow2', '-O', 'raw', '-S', '64k', d.path, `${raw}.tmp`], { signal: ctx.signal });
              await rename(`${raw}.tmp`, raw);
            }
            raws.push({ ...d, path: raw, format: 'raw' as const });
          }
          for (const x of secrets ?? []) await rm(x.file, { force: true });
          await updateDetails(store, itemId, (dd) => ({ ...dd, failover: dd.failover ? { ...dd.failover, disks: raws } : dd.failover, placements: { ...(dd.placements ?? {}), [rec.siteId]: { name: rec.name, disks: raws, ...(rec.host ? { host: rec.host, root: rec.root } : {}) } } }));
          await plane.closeExports(rec.siteId, itemId, rec.tag, false);
          await ctx.log(`${rec.name}'s disks are standalone raw images (${((Date.now() - t0) / 1000).toFixed(1)} s): ${raws.map((d) => d.path).join(', ')}.`);
          return { disks: raws.map((d) => d.path) };
        }
        await ctx.log(`${rec.name}'s disks are standalone (${((Date.now() - t0) / 1000).toFixed(1)} s): ${rec.disks.map((d) => d.path).join(', ')}.`);
        return { disks: rec.disks.map((d) => d.path) };
      }
      if (ctx.task.seq === 1) {
        if (rec) await plane.closeExports(rec.siteId, itemId, rec.tag, true);
        await plane.dropReplicas(plan.to, itemId);
        const gone = await store.db.deleteFrom('recovery_points').where('item_id', '=', itemId).executeTakeFirst();
        await updateDetails(store, itemId, (d) => ({ ...d, failover: null }));
        await ctx.log(`removed ${Number(gone.numDeletedRows)} recovery point(s) and the replica at ${site(rc, plan.to).name}.`);
        if (!plan.removeRecoveryMachine) await ctx.log(`${machine} is committed at ${site(rc, plan.to).name} and not protected: run rebound reverse-replicate ${machine} to protect it back.`);
        return { removedPoints: Number(gone.numDeletedRows) };
      }
      // Failback: the machine at the recovery site (the old source) and its disks go.
      const old = rc.details.placements?.[plan.from];
      const s = site(rc, plan.from);
      if (old) {
        if (s.provider === 'qemu') {
          const p = plane.provider(onHost(s, old));
          const st = await stateOrNull(p, old.name, ctx.signal);
          if (st && st.state !== 'stopped') await p.powerOff(old.name, ctx.signal);
          if (st) await p.undefine(old.name, ctx.signal);
        }
        for (const d of old.disks) await rm(d.path, { force: true });
        await rm(machineDir(onHost(s, old), old.name), { recursive: true, force: true });
        await updateDetails(store, itemId, (d) => {
          const placements = { ...(d.placements ?? {}) };
          delete placements[plan.from];
          return { ...d, placements };
        });
        await ctx.log(`removed ${old.name} and its disks at ${s.name}.`);
      }
      await ctx.log(`${machine} is committed back at ${site(rc, plan.to).name} and not protected: run rebound reverse-replicate ${machine} to protect it toward ${s.name} again (a full copy: its disks there are gone).`);
      return { removed: old?.name ?? null };
    },
  };
}
