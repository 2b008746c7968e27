// A real master target (src/replication/master-target.ts) for tests that drive its data
// connections directly, with its vault link recorded in memory: the points it names, the
// verdict the test wants the vault to give, and the events it tells.
import { pino } from 'pino';
import type { MasterTargetLink, PointRecord, PointVerdict } from '../../src/replication/link.ts';
import { MasterTarget } from '../../src/replication/master-target.ts';

export interface RecordingMasterTarget {
  mt: MasterTarget;
  /** Every point it asked the vault to record, with the verdict it got. */
  recorded: { p: PointRecord; verdict: PointVerdict }[];
  events: { kind: string; message: string }[];
  /** What the "vault" answers from now on (default 'recorded'). */
  verdict: PointVerdict;
}

/** Starts a master target whose recovery site root is `site`; close it with `mt.close()`. */
export async function startRecordingMasterTarget(site: string, transportKey: Buffer): Promise<RecordingMasterTarget> {
  const r = { recorded: [], events: [], verdict: 'recorded' } as unknown as RecordingMasterTarget;
  const link: MasterTargetLink = {
    siteRoot: async () => site,
    recordPoint: async (p) => { r.recorded.push({ p, verdict: r.verdict }); return r.verdict; },
    prunePoints: async () => undefined,
    markBad: async () => undefined,
    requestResync: async () => undefined,
    event: async (_item, kind, message) => { r.events.push({ kind, message }); },
  };
  r.mt = new MasterTarget({ transportKey, atRestKeys: [], material: null, logger: pino({ level: 'silent' }), link });
  await r.mt.start();
  return r;
}
