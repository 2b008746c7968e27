// Test-side builders of the replication wire (src/datapath/frame-stream.ts) so that hostile
// tests can send exactly the bytes they mean: hellos with any window, id or salt, frames sealed
// under any key, and a raw TCP exchange that writes chunks and collects what the receiver said.
import { connect } from 'node:net';
import { deriveSessionKey, newSessionSalt } from '../../src/datapath/frame-key.ts';
import type { SessionKey } from '../../src/datapath/frame-key.ts';
import { encodeDataFrame, encodeEndFrame } from '../../src/datapath/frame.ts';

export const HELLO_MAGIC = 0x52424831; // "RBH1"
export const READY_MAGIC = 0x52425231; // "RBR1"
export const ACK_MAGIC = 0x52424131; // "RBA1"

export interface Extent {
  offset: number;
  data: Buffer;
}

export function hello(transferId: string, salt: Buffer, window = 64): Buffer {
  const id = Buffer.from(transferId, 'utf8');
  const body = Buffer.alloc(4 + 2 + 1 + id.length + salt.length);
  body.writeUInt32BE(HELLO_MAGIC, 0);
  body.writeUInt16BE(window, 4);
  body.writeUInt8(id.length, 6);
  id.copy(body, 7);
  salt.copy(body, 7 + id.length);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

export interface Session {
  transferId: string;
  salt: Buffer;
  key: SessionKey;
  hello: Buffer;
  frames: Buffer[];
  end: Buffer;
  /** hello, frames and end, in order. */
  all(): Buffer[];
}

/** A whole well-formed session of one transfer: one frame per extent, then END. */
export function session(vaultKey: Buffer, transferId: string, pointId: string, extents: readonly Extent[], opts: { itemId?: string; diskId?: string; window?: number; salt?: Buffer } = {}): Session {
  const salt = opts.salt ?? newSessionSalt();
  const key = deriveSessionKey(vaultKey, transferId, salt);
  const frames = extents.map((e, seq) => encodeDataFrame(key, seq, { itemId: opts.itemId ?? 'vm1', diskId: opts.diskId ?? 'vda', pointId, offset: e.offset, data: e.data }));
  const h = hello(transferId, salt, opts.window ?? 64);
  const end = encodeEndFrame(key, extents.length);
  return { transferId, salt, key, hello: h, frames, end, all: () => [h, ...frames, end] };
}

export interface Exchange {
  /** Everything the receiver wrote back (READY, ACKs). */
  received: Buffer;
}

/** Connects to 127.0.0.1:port, writes the chunks (with a pause between them when asked, so
 * they arrive as separate TCP segments), half-closes (unless `keepOpen`: a session that ends
 * with its END frame waits for the receiver's acknowledgement and close, as a real sender
 * does), and waits until the peer closes. */
export function exchange(port: number, chunks: readonly Buffer[], opts: { gapMs?: number; keepOpen?: boolean } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    const s = connect({ port, host: '127.0.0.1', noDelay: true });
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => {}); // the receiver hangs up on hostile input: that is the point
    s.on('close', () => resolve({ received: Buffer.concat(got) }));
    s.once('connect', () => {
      void (async () => {
        for (const c of chunks) {
          if (s.destroyed) return;
          s.write(c);
          if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
        }
        if (!s.destroyed && !opts.keepOpen) s.end();
      })();
    });
  });
}

/** The control messages in a receiver's answer: [magic, value] pairs. */
export function controls(b: Buffer): { magic: number; value: bigint }[] {
  const out: { magic: number; value: bigint }[] = [];
  let at = 0;
  while (at + 16 <= b.length) {
    out.push({ magic: b.readUInt32BE(at + 4), value: b.readBigInt64BE(at + 8) });
    at += 4 + b.readUInt32BE(at);
  }
  return out;
}

export function flipBit(b: Buffer, bit: number): Buffer {
  const c = Buffer.from(b);
  c[bit >> 3]! ^= 1 << (bit & 7);
  return c;
}
