// Many frames over one connection, with acknowledgements and resumption. A transfer is a fixed,
// ordered plan of extents (known up front, or as its data comes: a relay forwarding what still
// arrives); frame sequence number = index in the plan, and the END frame's
// sequence number is the plan's length. The receiver applies frames as they come and, every
// half window of frames and at the end, checkpoints (makes everything applied durable) and then
// acknowledges cumulatively up to there; it keeps `ackedThrough` itself, tells the sender on
// reconnect, and the sender sends only what follows. A resumed transfer must send the same plan. The receiver accepts exactly the next sequence number,
// so a replayed, reordered or dropped frame stops the transfer with a clear error and nothing
// applied from it; a truncated stream ends without an END and is an error too.
//
// Messages are length-prefixed (u32 BE). Frames start "RBF1"; control messages:
//   HELLO  sender → receiver  "RBH1" | u16 window | u8 n + transfer id | 16-byte session salt
//   READY  receiver → sender  "RBR1" | i64 acked-through (-1: nothing yet)
//   ACK    receiver → sender  "RBA1" | u64 seq (every frame up to seq is durable)
import type { Duplex } from 'node:stream';
import { ReboundError } from '../domain/errors.ts';
import { decodeFrame, encodeDataFrameParts, encodeEndFrame, FRAME_MAGIC, FRAME_TYPE, frameLength, MAX_FRAME_EXTENT, DEFAULT_ZSTD_LEVEL } from './frame.ts';
import type { DataFrame } from './frame.ts';
import { deriveSessionKey, newSessionSalt, SESSION_SALT_BYTES } from './frame-key.ts';

const HELLO = 0x52424831; // "RBH1"
const READY = 0x52425231; // "RBR1"
const ACK = 0x52424131; // "RBA1"
const MAX_CONTROL = 512;

export interface PlannedExtent {
  itemId: string;
  diskId: string;
  pointId: string;
  offset: number;
  length: number;
}

/** A plan whose extents become known as their data does: a relay forwarding a transfer that is
 * still arriving. `next` is called with each sequence number to send, in increasing order. */
export interface StreamedPlan {
  frames: number;
  /** The bytes its frames carry, when known (they size the default window). */
  bytes?: number;
  /** `checksum`: the data's BLAKE3, when the source has just verified it (not hashed again). */
  next(seq: number): Promise<{ extent: PlannedExtent; data: Uint8Array; checksum?: Buffer }>;
}

interface SendCommon {
  vaultKey: Uint8Array;
  transferId: string;
  /** Frames in flight before waiting for acknowledgements; default windowFor the plan. */
  window?: number;
  zstdLevel?: number | null;
  /** Called after each acknowledgement (progress, checkpoints). */
  onAck?(seq: number): void;
}

export type SendOptions = SendCommon & (
  | { plan: readonly PlannedExtent[]; read(extent: PlannedExtent): Promise<Uint8Array> }
  | { stream: StreamedPlan }
);

/** A fixed plan as a stream: every extent is checked before anything is sent. */
function planStream(plan: readonly PlannedExtent[], read: (e: PlannedExtent) => Promise<Uint8Array>): StreamedPlan {
  for (const e of plan) {
    if (e.length > MAX_FRAME_EXTENT) throw new ReboundError('invalid', 'frame-extent-too-large', `A planned extent of ${e.length} bytes is larger than one frame carries (${MAX_FRAME_EXTENT}).`);
  }
  return { frames: plan.length, bytes: plan.reduce((n, e) => n + e.length, 0), next: async (seq) => { const extent = plan[seq]!; return { extent, data: await read(extent) }; } };
}

export interface SendResult {
  /** Frames sent in this session (END excluded). */
  sent: number;
  /** Frames skipped because an earlier session had them acknowledged. */
  skipped: number;
}

export interface ReceiveOptions {
  vaultKey: Uint8Array;
  /** The highest sequence number already applied for this transfer, -1 if none. */
  ackedThrough(transferId: string): Promise<number>;
  /** Applies one frame (it need not be durable yet). */
  apply(frame: DataFrame, transferId: string): Promise<void>;
  /** Makes every frame applied so far (through `seq`) durable; they are acknowledged after. */
  checkpoint(transferId: string, seq: number): Promise<void>;
  /** Called once the END frame is in: every frame of the transfer is applied. */
  complete?(transferId: string, frames: number): Promise<void>;
}

/** Bytes a sender aims to have unacknowledged: at 1 MiB frames, the window of 32 frames. */
export const WINDOW_BYTES = 32 * 1024 * 1024;
const MAX_WINDOW = 4096;

/**
 * The window (frames in flight) for a transfer of `frames` frames carrying `bytes`: `min`
 * frames, or more when its frames are small, so that about WINDOW_BYTES are in flight and the
 * receiver, which checkpoints (an fsync, a manifest write) every half window of frames, does so
 * about every WINDOW_BYTES / 2 of data whatever the frame size. With a window of 32 frames a
 * delta of scattered 64 KiB blocks was checkpointed at every MiB on both hops, and the sender
 * waited on those checkpoints with 2 MiB in flight. The bound is on the transfer's average
 * frame, so a stretch of large frames in a transfer of small ones may put more in flight.
 */
export function windowFor(bytes: number, frames: number, min = 32): number {
  if (frames <= 0 || bytes <= 0) return min;
  return Math.max(min, Math.min(MAX_WINDOW, Math.ceil(WINDOW_BYTES / (bytes / frames))));
}

const streamError = (code: string, message: string): ReboundError => new ReboundError('unavailable', code, message, { retryable: true });

/** Splits a byte stream into length-prefixed messages. Incoming chunks are queued and joined
 * once per message, when all of it is here: joining each chunk onto the partial message (as
 * before) copied a 1 MiB frame arriving in 16 KiB pieces about 32 times, and a CPU profile of
 * the first copy put that copying first. */
async function* messages(socket: Duplex): AsyncGenerator<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  /** The first `n` bytes (n <= have) as one buffer, which becomes the queue's head. */
  const head = (n: number): Buffer => {
    let first = chunks[0]!;
    if (first.length >= n) return first;
    let k = 0;
    let total = 0;
    while (total < n) total += chunks[k++]!.length;
    first = Buffer.concat(chunks.splice(0, k), total);
    chunks.unshift(first);
    return first;
  };
  const take = (n: number): Buffer => {
    const h = head(n);
    const out = h.subarray(0, n);
    if (h.length === n) chunks.shift();
    else chunks[0] = h.subarray(n);
    have -= n;
    return out;
  };
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    if (chunk.length === 0) continue;
    chunks.push(chunk);
    have += chunk.length;
    for (;;) {
      // Frame or control message is told by bytes 4..8: wait until they are all here.
      if (have < 8) break;
      const h = head(8);
      if (h.readUInt32BE(4) !== FRAME_MAGIC) {
        const n = h.readUInt32BE(0);
        if (n > MAX_CONTROL) throw new ReboundError('invalid', 'frame-malformed', `A control message claims ${n} bytes; the stream lost its framing.`);
        if (have < 4 + n) break;
        yield take(4 + n);
        continue;
      }
      const need = frameLength(h);
      if (need === null || have < need) break;
      yield take(need);
    }
  }
  if (have > 0) throw new ReboundError('invalid', 'frame-truncated', `The connection closed inside a message (${have} bytes left over).`, { retryable: true });
}

function control(magic: number, body: Buffer): Buffer {
  const b = Buffer.alloc(8 + body.length);
  b.writeUInt32BE(4 + body.length, 0);
  b.writeUInt32BE(magic, 4);
  body.copy(b, 8);
  return b;
}

const magicOf = (m: Buffer): number => (m.length >= 8 ? m.readUInt32BE(4) : 0);

/** Writes one message, or the pieces of one frame (corked, so they go out together). */
function write(socket: Duplex, b: Buffer | Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return reject(streamError('transfer-connection-lost', 'The replication connection closed.'));
    let room: boolean;
    if (Array.isArray(b)) {
      socket.cork();
      room = true;
      for (const piece of b) room = socket.write(piece);
      socket.uncork();
    } else {
      room = socket.write(b);
    }
    if (room) return resolve();
    const onDrain = (): void => { socket.off('close', onClose); resolve(); };
    const onClose = (): void => { socket.off('drain', onDrain); reject(streamError('transfer-connection-lost', 'The replication connection closed while sending.')); };
    socket.once('drain', onDrain);
    socket.once('close', onClose);
  });
}

/** Sends a transfer's plan over `socket`, skipping what the receiver already acknowledged. */
export async function sendTransfer(socket: Duplex, opts: SendOptions): Promise<SendResult> {
  const source = 'stream' in opts ? opts.stream : planStream(opts.plan, opts.read);
  const salt = newSessionSalt();
  const key = deriveSessionKey(opts.vaultKey, opts.transferId, salt);
  const id = Buffer.from(opts.transferId, 'utf8');
  const window = Math.max(1, Math.min(opts.window ?? windowFor(source.bytes ?? 0, source.frames), 0xffff));
  const w16 = Buffer.alloc(2);
  w16.writeUInt16BE(window);
  await write(socket, control(HELLO, Buffer.concat([w16, Buffer.from([id.length]), id, salt])));
  const incoming = messages(socket);
  const first = await incoming.next();
  if (first.done || magicOf(first.value) !== READY || first.value.length !== 16) throw streamError('transfer-handshake-failed', 'The receiver did not answer the transfer hello.');
  const ackedThrough = Number(first.value.readBigInt64BE(8));
  const endSeq = source.frames;
  if (ackedThrough >= endSeq) {
    // Everything, the end frame included, was acknowledged in an earlier session.
    socket.end();
    return { sent: 0, skipped: endSeq };
  }
  let lastAck = ackedThrough;
  let ackWaiter: (() => void) | undefined;
  let ackError: unknown;
  const acks = (async () => {
    try {
      for await (const m of incoming) {
        if (magicOf(m) !== ACK || m.length !== 16) throw new ReboundError('invalid', 'frame-malformed', 'The receiver sent something other than an acknowledgement.');
        const seq = Number(m.readBigUInt64BE(8));
        if (seq <= lastAck || seq > endSeq) throw new ReboundError('invalid', 'frame-out-of-order', `The receiver acknowledged frame ${seq} after ${lastAck}.`);
        lastAck = seq;
        if (seq < endSeq) opts.onAck?.(seq);
        ackWaiter?.();
        if (seq === endSeq) return;
      }
      throw streamError('transfer-connection-lost', `The replication connection closed after frame ${lastAck} was acknowledged.`);
    } catch (err) {
      ackError = err;
      ackWaiter?.();
    }
  })();
  const waitAcks = async (until: number): Promise<void> => {
    while (lastAck < until) {
      if (ackError !== undefined) throw ackError;
      await new Promise<void>((r) => (ackWaiter = r));
      ackWaiter = undefined;
    }
    if (ackError !== undefined && lastAck < until) throw ackError;
  };
  let sent = 0;
  // One frame is read ahead, so the source's read (a disk, a cache) overlaps the sealing and
  // sending of the frame before it.
  let ahead: Promise<Awaited<ReturnType<StreamedPlan['next']>>> | undefined;
  const fetch = (seq: number): void => {
    ahead = seq < endSeq ? source.next(seq) : undefined;
    ahead?.catch(() => undefined); // awaited below; a send that fails first leaves it unread
  };
  try {
    fetch(ackedThrough + 1);
    for (let seq = ackedThrough + 1; seq < endSeq; seq++) {
      const { extent: e, data, checksum } = await ahead!;
      fetch(seq + 1);
      if (data.length !== e.length) throw new ReboundError('internal', 'transfer-short-read', `Reading ${e.diskId} at ${e.offset} gave ${data.length} bytes instead of ${e.length}.`);
      await waitAcks(seq - window);
      await write(socket, encodeDataFrameParts(key, seq, { ...e, data, ...(checksum ? { checksum } : {}) }, opts.zstdLevel === undefined ? DEFAULT_ZSTD_LEVEL : opts.zstdLevel));
      sent++;
    }
    await write(socket, encodeEndFrame(key, endSeq));
    await waitAcks(endSeq);
    socket.end();
  } finally {
    if (lastAck < endSeq) socket.destroy();
    await acks;
  }
  return { sent, skipped: ackedThrough + 1 };
}

/** Receives one transfer session on `socket`: applies frames in order and acknowledges them.
 * Resolves when the END frame is in; rejects (and closes the socket) on any fault. */
export async function receiveTransfer(socket: Duplex, opts: ReceiveOptions): Promise<{ transferId: string; frames: number; applied: number }> {
  const incoming = messages(socket);
  try {
    const hello = await incoming.next();
    if (hello.done || magicOf(hello.value) !== HELLO || hello.value.length < 11) throw streamError('transfer-handshake-failed', 'The sender did not start with a transfer hello.');
    const m = hello.value;
    const window = m.readUInt16BE(8);
    const n = m.readUInt8(10);
    if (m.length !== 11 + n + SESSION_SALT_BYTES || window === 0) throw new ReboundError('invalid', 'frame-malformed', 'A transfer hello is malformed.');
    const transferId = m.toString('utf8', 11, 11 + n);
    const key = deriveSessionKey(opts.vaultKey, transferId, m.subarray(11 + n));
    // Checkpoint often enough that the sender, which stops at `window` unacknowledged frames,
    // never waits on us.
    const every = Math.max(1, Math.floor(window / 2));
    const ackedThrough = await opts.ackedThrough(transferId);
    const ready = Buffer.alloc(8);
    ready.writeBigInt64BE(BigInt(ackedThrough));
    await write(socket, control(READY, ready));
    let expected = ackedThrough + 1;
    let durable = ackedThrough;
    let applied = 0;
    let any = false;
    const ack = async (seq: number): Promise<void> => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(seq));
      await write(socket, control(ACK, b));
    };
    for await (const msg of incoming) {
      any = true;
      const frame = decodeFrame(key, msg, expected);
      if (frame.header.type === FRAME_TYPE.END) {
        if (durable < expected - 1) await opts.checkpoint(transferId, expected - 1);
        await opts.complete?.(transferId, expected);
        await ack(expected);
        socket.end();
        return { transferId, frames: expected, applied };
      }
      await opts.apply(frame, transferId);
      applied++;
      if (expected - durable >= every) {
        await opts.checkpoint(transferId, expected);
        durable = expected;
        await ack(expected);
      }
      expected++;
    }
    // A sender whose whole transfer (end frame included) was acknowledged before closes at once;
    // whether that transfer completed is the caller's record (complete() was called then).
    if (!any) return { transferId, frames: ackedThrough, applied: 0 };
    throw streamError('transfer-truncated', `The replication stream ended after frame ${expected - 1} without its end frame; resume the transfer.`);
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
