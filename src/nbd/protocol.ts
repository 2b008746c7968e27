// NBD wire constants and the few fixed layouts Rebound speaks (fixed newstyle handshake,
// structured replies, meta contexts), as in the protocol document of the NBD project
// (github.com/NetworkBlockDevice/nbd, doc/proto.md). Pure data, no I/O.

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const HANDSHAKE_FLAG = { FIXED_NEWSTYLE: 1, NO_ZEROES: 2 } as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
} as const;
const ERR = 2 ** 31;
export const REP_ERR_NAMES: Record<number, string> = {
  [ERR + 1]: 'unsupported',
  [ERR + 2]: 'refused by policy',
  [ERR + 3]: 'invalid',
  [ERR + 4]: 'unsupported on this platform',
  [ERR + 5]: 'TLS required',
  [ERR + 6]: 'unknown export',
  [ERR + 7]: 'server shutting down',
  [ERR + 8]: 'block size required',
  [ERR + 9]: 'request too big',
};
export const isReplyError = (type: number): boolean => type >= ERR;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const TRANSMISSION_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;
export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;

export const REPLY_FLAG_DONE = 1;
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 2 ** 15 + 1,
  ERROR_OFFSET: 2 ** 15 + 2,
} as const;
export const isReplyTypeError = (type: number): boolean => (type & 0x8000) !== 0;

/** base:allocation extent flags. */
export const STATE = { HOLE: 1, ZERO: 2 } as const;
/** qemu:dirty-bitmap:NAME extent flag. */
export const STATE_DIRTY = 1;

export const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};

/** Option request: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(16 + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

const str32 = (s: string): Buffer => {
  const v = Buffer.from(s, 'utf8');
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(v.length, 0);
  return Buffer.concat([len, v]);
};

/** NBD_OPT_GO / NBD_OPT_INFO payload: export name and the info items asked for. */
export function encodeGo(exportName: string, infos: readonly number[]): Buffer {
  const tail = Buffer.allocUnsafe(2 + 2 * infos.length);
  tail.writeUInt16BE(infos.length, 0);
  infos.forEach((t, i) => tail.writeUInt16BE(t, 2 + 2 * i));
  return Buffer.concat([str32(exportName), tail]);
}

/** NBD_OPT_SET_META_CONTEXT / LIST_META_CONTEXT payload. */
export function encodeMetaContexts(exportName: string, queries: readonly string[]): Buffer {
  const n = Buffer.allocUnsafe(4);
  n.writeUInt32BE(queries.length, 0);
  return Buffer.concat([str32(exportName), n, ...queries.map(str32)]);
}

/** Transmission request header (28 bytes); WRITE's payload follows it. */
export function encodeRequest(flags: number, type: number, cookie: bigint, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}
