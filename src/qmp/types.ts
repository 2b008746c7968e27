// Types for the QMP commands and events Rebound uses (QEMU 7.2's schema, trimmed to the fields
// read or sent). Commands not listed here can still be run untyped through QmpClient.execute.

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface DirtyBitmapInfo {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent?: boolean;
}

export interface NamedBlockNode {
  'node-name': string;
  drv: string;
  file: string;
  'backing_file'?: string;
  'dirty-bitmaps'?: DirtyBitmapInfo[];
  image: { 'virtual-size': number; format: string; filename: string };
}

export interface BlockJobInfo {
  type: string;
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  status: string;
}

export interface TransactionAction {
  type: 'block-dirty-bitmap-add' | 'block-dirty-bitmap-disable' | 'block-dirty-bitmap-enable' | 'block-dirty-bitmap-merge' | 'block-dirty-bitmap-remove' | 'blockdev-backup';
  data: Record<string, unknown>;
}

type Empty = Record<string, never>;

export interface QmpCommandMap {
  'query-status': { args: undefined; ret: { running: boolean; status: string; singlestep?: boolean } };
  'query-name': { args: undefined; ret: { name?: string } };
  'query-named-block-nodes': { args: { flat?: boolean } | undefined; ret: NamedBlockNode[] };
  'query-block-jobs': { args: undefined; ret: BlockJobInfo[] };
  'system_powerdown': { args: undefined; ret: Empty };
  'quit': { args: undefined; ret: Empty };
  'cont': { args: undefined; ret: Empty };
  'stop': { args: undefined; ret: Empty };
  'transaction': { args: { actions: TransactionAction[]; properties?: { 'completion-mode'?: 'individual' | 'grouped' } }; ret: Empty };
  'block-dirty-bitmap-add': { args: { node: string; name: string; granularity?: number; persistent?: boolean; disabled?: boolean }; ret: Empty };
  'block-dirty-bitmap-remove': { args: { node: string; name: string }; ret: Empty };
  'block-dirty-bitmap-enable': { args: { node: string; name: string }; ret: Empty };
  'block-dirty-bitmap-disable': { args: { node: string; name: string }; ret: Empty };
  'blockdev-add': { args: Record<string, unknown>; ret: Empty };
  'blockdev-del': { args: { 'node-name': string }; ret: Empty };
  'block-stream': { args: { 'job-id': string; device: string; base?: string }; ret: Empty };
  'block-job-cancel': { args: { device: string; force?: boolean }; ret: Empty };
  'nbd-server-start': { args: { addr: { type: 'unix'; data: { path: string } } }; ret: Empty };
  'nbd-server-stop': { args: undefined; ret: Empty };
  'block-export-add': { args: { type: 'nbd'; id: string; 'node-name': string; name?: string; writable?: boolean; bitmaps?: string[] }; ret: Empty };
  'block-export-del': { args: { id: string; mode?: 'safe' | 'hard' }; ret: Empty };
  'query-block-exports': { args: undefined; ret: { id: string; type: string; 'node-name': string; 'shutting-down': boolean }[] };
}
