// Store rows → the API's view objects (domain/model.ts shapes): JSON columns parsed, foreign keys
// replaced by the names people use.
import type { Row } from '../store/schema.ts';
import { parseJson } from '../store/open.ts';
import type { Host, Machine, MachineDisk, Pairing, Policy, ProtectedItem, Site, TokenView } from '../domain/model.ts';

const obj = (text: string | null): Record<string, unknown> => {
  const v = parseJson<unknown>(text, {});
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
};

export function siteView(r: Row<'sites'>): Site {
  return { id: r.id, name: r.name, provider: r.provider as Site['provider'], root: r.root, config: obj(r.config), createdAt: r.created_at };
}

export function hostView(r: Row<'hosts'>, site: string): Host {
  return { id: r.id, site, name: r.name, address: r.address, config: obj(r.config), createdAt: r.created_at };
}

export function policyView(r: Row<'policies'>): Policy {
  return {
    id: r.id,
    name: r.name,
    frequencySeconds: r.frequency_s,
    retentionSeconds: r.retention_s,
    appConsistentSeconds: r.app_consistent_s,
    compression: r.compression as Policy['compression'],
    encryption: r.encryption as Policy['encryption'],
    bandwidthBps: r.bandwidth_bps,
    initialStart: r.initial_start,
    createdAt: r.created_at,
  };
}

export function pairingView(r: { id: string; created_at: number; primary: string; recovery: string; policy: string }): Pairing {
  return { id: r.id, primary: r.primary, recovery: r.recovery, policy: r.policy, createdAt: r.created_at };
}

export function machineView(r: Row<'machines'> & { site: string; host: string | null }): Machine {
  return {
    id: r.id,
    name: r.name,
    site: r.site,
    host: r.host,
    kind: r.kind as Machine['kind'],
    disks: parseJson<MachineDisk[]>(r.disks, []),
    config: obj(r.config),
    createdAt: r.created_at,
  };
}

export function itemView(r: Row<'protected_items'> & { machine: string; active_site: string }, at: number): ProtectedItem {
  return {
    id: r.id,
    machine: r.machine,
    pairing: r.pairing_id,
    state: r.state as ProtectedItem['state'],
    direction: r.direction as ProtectedItem['direction'],
    activeSite: r.active_site,
    group: r.group_name,
    health: r.health as ProtectedItem['health'],
    lastPointAt: r.last_point_at,
    rpoSeconds: r.last_point_at === null ? null : Math.max(0, Math.floor((at - r.last_point_at) / 1000)),
    details: obj(r.details),
    version: r.version,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function tokenView(r: Row<'tokens'>): TokenView {
  return {
    id: r.id,
    name: r.name,
    role: r.role as TokenView['role'],
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    lastUsedAt: r.last_used_at,
  };
}
