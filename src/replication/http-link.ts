// The vault links of a role running as its own process: the same calls as the embedded links,
// made to the vault's /api/v1/replication routes with the component's token. Failures are
// ReboundErrors marked retryable when the vault is unreachable, so a role rides out a vault
// restart.
import { ReboundError } from '../domain/errors.ts';
import type { AgentLink, Assignment, GroupPointRecord, MasterTargetLink, PointRecord, PointVerdict, ProcessServerLink, ProgressReport } from './link.ts';

export class VaultClient {
  readonly url: string;
  readonly #token: string;
  constructor(url: string, token: string) {
    this.url = url.replace(/\/+$/, '');
    this.#token = token;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.url}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(15_000),
      });
    } catch (err) {
      throw new ReboundError('unavailable', 'vault-unreachable', `The vault at ${this.url} cannot be reached: ${(err as Error).message}`, { retryable: true });
    }
    const text = await res.text();
    if (!res.ok) {
      let e: { code?: string; message?: string } = {};
      try { e = (JSON.parse(text) as { error?: typeof e }).error ?? {}; } catch { /* not JSON */ }
      const kind = res.status === 401 ? 'unauthenticated' : res.status === 403 ? 'forbidden' : res.status === 404 ? 'not-found' : res.status === 409 ? 'conflict' : res.status >= 500 ? 'unavailable' : 'invalid';
      throw new ReboundError(kind, e.code ?? `http-${res.status}`, e.message ?? `${method} ${path} answered ${res.status}.`, { retryable: res.status >= 500 });
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  agentLink(site?: string): AgentLink {
    return {
      assignments: () => this.call<Assignment[]>('GET', `/replication/assignments${site ? `?site=${encodeURIComponent(site)}` : ''}`),
      progress: async (r: ProgressReport) => { await this.call('POST', '/replication/progress', r); },
      resynced: async (itemId) => { await this.call('POST', '/replication/resynced', { itemId }); },
      event: async (itemId, kind, message, data) => { await this.call('POST', '/replication/events', { itemId, kind, message, ...(data ? { data } : {}) }); },
      groupPoint: async (r: GroupPointRecord) => { await this.call('POST', '/replication/group-points', r); },
    };
  }

  masterTargetLink(): MasterTargetLink {
    const roots = new Map<string, string>();
    return {
      siteRoot: async (id) => {
        let r = roots.get(id);
        if (!r) {
          r = (await this.call<{ root: string }>('GET', `/replication/sites/${encodeURIComponent(id)}/root`)).root;
          roots.set(id, r);
        }
        return r;
      },
      recordPoint: async (p: PointRecord) => (await this.call<{ verdict: PointVerdict }>('POST', '/replication/points', p)).verdict,
      prunePoints: async (itemId, pointIds) => { await this.call('POST', '/replication/points/prune', { itemId, pointIds }); },
      markBad: async (itemId, pointIds, reason) => { await this.call('POST', '/replication/points/bad', { itemId, pointIds, reason }); },
      requestResync: async (itemId, reason) => { await this.call('POST', '/replication/resync', { itemId, reason }); },
    };
  }

  processServerLink(): ProcessServerLink {
    return { requestResync: async (itemId, reason) => { await this.call('POST', '/replication/resync', { itemId, reason }); } };
  }
}
