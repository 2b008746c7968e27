// The recovery-site end of a replication connection for one disk: frames from the stream go
// into the replica's point being received, each checkpoint of the stream is a checkpoint of the
// replica (so an acknowledgement means durable on the replica), and the end frame commits the
// point. A transfer cut off mid-way resumes from the replica's own record of what it
// acknowledged, after a restart too.
import type { Duplex } from 'node:stream';
import { conflict, invalid } from '../domain/errors.ts';
import { receiveTransfer } from '../datapath/frame-stream.ts';
import type { PointInfo, PointWriter, ReplicaDisk } from './replica-disk.ts';

interface Progress {
  transferId: string;
  ackedThrough: number;
}

const isProgress = (p: unknown): p is Progress =>
  typeof p === 'object' && p !== null && typeof (p as Progress).transferId === 'string' && typeof (p as Progress).ackedThrough === 'number';

export interface ReceivePointResult {
  transferId: string;
  /** The point committed by this session, or null when the session ended without the end frame. */
  point: PointInfo | null;
  applied: number;
}

/** Receives one transfer session into `disk`. Rejects on any fault of the stream; what was
 * acknowledged stays durable and a new session resumes after it. */
export async function receivePoint(socket: Duplex, disk: ReplicaDisk, opts: { vaultKey: Uint8Array; itemId?: string; diskId?: string }): Promise<ReceivePointResult> {
  let writer: PointWriter | undefined;
  let point: PointInfo | null = null;
  try {
    const res = await receiveTransfer(socket, {
      vaultKey: opts.vaultKey,
      ackedThrough: async (transferId) => {
        const staged = disk.staged();
        if (!staged) return -1;
        if (!isProgress(staged.progress) || staged.progress.transferId !== transferId) {
          throw conflict('replica-point-in-progress', `Point ${staged.pointId} of another transfer is still being received.`, {
            hint: 'Resume that transfer, or abort its point before starting a new one.',
          });
        }
        if (staged.committing) {
          // Received whole before; its commit was cut short: named now.
          point = await disk.finishCommit();
          return staged.progress.ackedThrough;
        }
        writer = await disk.resumePoint();
        return staged.progress.ackedThrough;
      },
      apply: async (frame, transferId) => {
        const h = frame.header;
        if ((opts.itemId !== undefined && h.itemId !== opts.itemId) || (opts.diskId !== undefined && h.diskId !== opts.diskId)) {
          throw invalid('transfer-wrong-disk', `A frame for ${h.itemId}/${h.diskId} arrived on the connection of ${opts.itemId ?? '?'}/${opts.diskId ?? '?'}.`);
        }
        if (!writer) {
          // Point ids are time-ordered: one older than the newest point, and not held, was
          // merged away by retention; applying it again would lay old data over newer.
          const pts = disk.points();
          const newest = pts.at(-1)?.id;
          if (newest !== undefined && h.pointId <= newest) {
            throw conflict(pts.some((p) => p.id === h.pointId) ? 'replica-point-exists' : 'transfer-replayed', `Point ${h.pointId} is not newer than the replica's newest point ${newest}: a replayed or stale transfer.`);
          }
          writer = await disk.beginPoint(h.pointId, { progress: { transferId, ackedThrough: -1 } satisfies Progress });
        }
        if (h.pointId !== writer.pointId) throw invalid('transfer-wrong-point', `A frame for point ${h.pointId} arrived in the transfer of point ${writer.pointId}.`);
        await writer.write(h.offset, frame.data);
      },
      checkpoint: async (transferId, seq) => {
        await writer?.checkpoint({ transferId, ackedThrough: seq } satisfies Progress);
      },
      complete: async (transferId, frames) => {
        if (writer) point = await writer.commit({ progress: { transferId, ackedThrough: frames } satisfies Progress });
        writer = undefined;
      },
    });
    return { transferId: res.transferId, point, applied: res.applied };
  } finally {
    // An unfinished point stays staged at its last checkpoint; only the connection to it closes.
    if (writer) await writer.abandon();
  }
}
