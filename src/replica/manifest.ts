// The per-disk manifest of a replica: which qcow2 files form the chain, which recovery point
// each one completes, which views are open, and any merge or key rotation under way. It is the
// replica's single source of truth: a file it does not name is an orphan from an interrupted
// operation, and a point it names is complete (written, flushed, fsynced before it was named).
// Replaced atomically (write temp, fsync, rename, fsync the directory).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReboundError } from '../domain/errors.ts';
import { writeFileAtomic } from './durable.ts';

export const MANIFEST = 'manifest.json';

export interface LayerEntry {
  pointId: string;
  /** File name inside the replica directory. */
  file: string;
  sums: string;
  createdAt: string;
  bad: boolean;
}

export interface BaseEntry {
  file: string;
  /** The point the base alone represents (after merges), or null while it is only the start. */
  pointId: string | null;
  sums: string | null;
  createdAt: string | null;
  bad: boolean;
}

export interface ViewEntry {
  id: string;
  pointId: string;
  /** Path relative to the replica directory. */
  file: string;
  createdAt: string;
}

/** A point being received: its overlay and checksum journal exist but it is not a point yet.
 * `journalLength` bytes of the journal, and every write before the checkpoint that recorded
 * them, are durable; `progress` is the caller's record from that checkpoint (e.g. the transfer's
 * acknowledged sequence number), so a resumed transfer continues from there. */
export interface StagingEntry {
  pointId: string;
  file: string;
  journal: string;
  journalLength: number;
  progress: unknown;
  /** Set by commit in the same write as its last checkpoint: everything is received and durable,
   * and the point only waits to be named. A replica opened after a kill in between finishes the
   * commit (#recover), so a caller never finds its "all received" progress on a point that is
   * still staged (and answers a resend "all acknowledged" while the point is never named). */
  committing?: { createdAt: string };
}

export interface Manifest {
  version: 1;
  size: number;
  blockSize: number;
  /** Null for a plain replica; otherwise the id of the at-rest key its images open with, and
   * during a rotation the id being rotated to. */
  encryption: {
    keyId: string;
    rotatingTo: string | null;
    /** The key of the keyed block checksums (random per replica), sealed with AES-256-GCM under
     * the current at-rest key; base64 of iv | ciphertext | tag. Re-sealed on key rotation. */
    sealedSumsKey: string;
  } | null;
  base: BaseEntry;
  /** Oldest first; layers[i] is backed by layers[i-1] (layers[0] by the base). */
  layers: LayerEntry[];
  /** Point id of the oldest layer while it is being merged into the base. */
  merging: string | null;
  views: ViewEntry[];
  staging: StagingEntry | null;
}

export async function loadManifest(dir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST), 'utf8');
  } catch (err) {
    throw new ReboundError('not-found', 'replica-not-found', `There is no replica in ${dir} (no ${MANIFEST}).`, {
      hint: 'Create the replica first, or check the recovery site root.',
      cause: err,
    });
  }
  const m = JSON.parse(text) as Manifest;
  if (m.version !== 1) throw new ReboundError('internal', 'replica-manifest-version', `The replica manifest in ${dir} has version ${String(m.version)}; this Rebound reads version 1.`);
  return m;
}

export const saveManifest = (dir: string, m: Manifest): Promise<void> => writeFileAtomic(join(dir, MANIFEST), `${JSON.stringify(m, null, 1)}\n`);
