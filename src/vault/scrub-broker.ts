// Scrubs for master targets that run as their own processes (`rebound master-target`): the
// vault cannot call into them, so a scrub job leaves a request here and waits; the master target
// asks for the requests of its sites every few seconds, scrubs, marks damaged points bad through
// the vault as the embedded one does, and answers with its result. A request a master target took
// but stopped reporting on (it was killed) is offered again, so the job never waits on a process
// that is gone. Requests live in the vault process: after a vault restart the scrub job runs
// again (its task is retried) and asks anew.
import { ReboundError } from '../domain/errors.ts';
import { newId } from '../store/ids.ts';

export interface ScrubRequest {
  id: string;
  siteId: string;
  itemId: string;
}

export interface ScrubResult {
  checkedBlocks: number;
  badPoints: string[];
}

interface Open {
  req: ScrubRequest;
  /** When a master target last said it works on it (0: not taken). */
  seenAt: number;
  done(r: ScrubResult | Error): void;
}

export class ScrubBroker {
  readonly #open = new Map<string, Open>();
  readonly #staleMs: number;
  readonly #now: () => number;

  constructor(o: { staleMs?: number; now?: () => number } = {}) {
    this.#staleMs = o.staleMs ?? 30_000;
    this.#now = o.now ?? Date.now;
  }

  /** Leaves a request and resolves with the master target's result (or rejects with its error). */
  ask(siteId: string, itemId: string, signal?: AbortSignal): Promise<ScrubResult> {
    signal?.throwIfAborted();
    const id = newId();
    return new Promise<ScrubResult>((resolve, reject) => {
      const onAbort = (): void => {
        this.#open.delete(id);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#open.set(id, {
        req: { id, siteId, itemId },
        seenAt: 0,
        done: (r) => {
          signal?.removeEventListener('abort', onAbort);
          this.#open.delete(id);
          if (r instanceof Error) reject(r);
          else resolve(r);
        },
      });
    });
  }

  /**
   * What a master target serving `siteIds` (null: every site) should do now: requests nobody
   * works on, and those whose taker went quiet. `working` are the ids it is still scrubbing (they
   * stay its own). Every request returned counts as taken from now. `more` false: only say which
   * it still works on, take nothing new.
   */
  take(siteIds: readonly string[] | null, working: readonly string[], more = true): ScrubRequest[] {
    const now = this.#now();
    for (const id of working) {
      const o = this.#open.get(id);
      if (o) o.seenAt = now;
    }
    if (!more) return [];
    const out: ScrubRequest[] = [];
    for (const o of this.#open.values()) {
      if (siteIds && !siteIds.includes(o.req.siteId)) continue;
      if (o.seenAt !== 0 && now - o.seenAt < this.#staleMs) continue;
      o.seenAt = now;
      out.push(o.req);
    }
    return out;
  }

  /** The master target's answer; false when nobody waits for it any more (cancelled, answered). */
  finish(id: string, r: ScrubResult | { error: string }): boolean {
    const o = this.#open.get(id);
    if (!o) return false;
    o.done('error' in r ? new ReboundError('unavailable', 'scrub-failed', `the master target could not scrub: ${r.error}`, { retryable: true }) : r);
    return true;
  }

  /** Requests waiting or under way (for tests and diagnostics). */
  get size(): number {
    return this.#open.size;
  }
}
