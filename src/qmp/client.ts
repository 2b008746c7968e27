// A typed QMP (QEMU Machine Protocol) client over a unix socket: reads the greeting, negotiates
// capabilities, runs commands with ids and deadlines, and delivers asynchronous events to
// listeners, async iterators and `waitEvent`. QEMU's errors keep their class and description.
//
// QEMU serves one client per monitor socket at a time, so callers should hold a connection only
// for the operation at hand (the qemu provider opens one per operation); a second client waits
// in the socket's backlog until the first leaves, which shows here as a greeting timeout.
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { ReboundError } from '../domain/errors.ts';
import type { QmpCommandMap, QmpEvent } from './types.ts';

export interface QmpConnectOptions {
  /** Deadline for connect + greeting + qmp_capabilities. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface QmpExecuteOptions {
  /** Deadline for the reply; the connection stays usable after a timeout (the reply is dropped). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A command QEMU refused: `qmpClass` is QMP's error class (GenericError, DeviceNotFound, …). */
export class QmpError extends ReboundError {
  readonly qmpClass: string;
  readonly command: string;
  constructor(command: string, qmpClass: string, desc: string) {
    super('conflict', 'qmp-command-failed', `QEMU refused ${command}: ${desc} (${qmpClass}).`, {
      details: { command, qmpClass, desc },
    });
    this.qmpClass = qmpClass;
    this.command = command;
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

type Listener = (event: QmpEvent) => void;

const DEFAULT_TIMEOUT_MS = 30_000;

function closedError(path: string, why: string): ReboundError {
  return new ReboundError('unavailable', 'qmp-closed', `The QMP connection to ${path} closed: ${why}.`, {
    hint: 'The VM may have exited; check its state and serial log.',
  });
}

function abortError(what: string, signal: AbortSignal): ReboundError {
  return new ReboundError('unavailable', 'aborted', `${what} was aborted.`, { cause: signal.reason, retryable: false });
}

export class QmpClient {
  readonly path: string;
  /** The greeting's version and capabilities. */
  readonly greeting: { version: { qemu: { major: number; minor: number; micro: number }; package: string }; capabilities: string[] };
  readonly #socket: Socket;
  readonly #pending = new Map<string, Pending>();
  readonly #listeners = new Set<Listener>();
  #nextId = 1;
  #closed: ReboundError | undefined;
  #buffer = '';
  readonly #closedPromise: Promise<void>;

  private constructor(path: string, socket: Socket, greeting: QmpClient['greeting'], rest: string) {
    this.path = path;
    this.#socket = socket;
    this.greeting = greeting;
    let markClosed!: () => void;
    this.#closedPromise = new Promise((r) => (markClosed = r));
    socket.on('data', (c: Buffer) => this.#onData(c.toString('utf8')));
    socket.on('error', (err) => this.#shutdown(closedError(path, err.message)));
    socket.on('close', () => {
      this.#shutdown(closedError(path, 'the socket was closed'));
      markClosed();
    });
    if (rest !== '') this.#onData(rest);
  }

  /** Connects to the monitor socket and enters command mode. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const signal = opts.signal;
    if (signal?.aborted) throw abortError('Connecting to QMP', signal);
    const socket = netConnect({ path });
    let buffered = '';
    let onLine: ((line: string) => void) | undefined;
    let fail: ((err: Error) => void) | undefined;
    const lines: string[] = [];
    const onData = (c: Buffer): void => {
      buffered += c.toString('utf8');
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === '') continue;
        if (onLine) onLine(line);
        else lines.push(line);
      }
    };
    const nextLine = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const first = lines.shift();
        if (first !== undefined) return resolve(first);
        onLine = (l) => {
          onLine = undefined;
          resolve(l);
        };
        fail = reject;
      });
    socket.on('data', onData);
    const failAll = (err: Error): void => {
      onLine = undefined;
      fail?.(err);
    };
    socket.on('error', (err) =>
      failAll(new ReboundError('unavailable', 'qmp-connect-failed', `Cannot connect to QMP at ${path}: ${err.message}.`, {
        hint: 'Check that the VM is running (its pidfile and QMP socket are under its run directory).',
        cause: err,
      })),
    );
    socket.on('close', () => failAll(closedError(path, 'closed during the handshake')));
    const timer = setTimeout(() => {
      failAll(new ReboundError('unavailable', 'qmp-timeout', `QMP at ${path} did not greet within ${timeoutMs} ms.`, {
        hint: 'QEMU serves one QMP client at a time; another client may be connected, or QEMU is hung.',
      }));
      socket.destroy();
    }, timeoutMs);
    const onAbort = (): void => {
      failAll(abortError('Connecting to QMP', signal!));
      socket.destroy();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let greetingLine = await nextLine();
      let parsed = JSON.parse(greetingLine) as { QMP?: QmpClient['greeting'] };
      while (!parsed.QMP) {
        greetingLine = await nextLine();
        parsed = JSON.parse(greetingLine) as { QMP?: QmpClient['greeting'] };
      }
      socket.write(JSON.stringify({ execute: 'qmp_capabilities', id: 'caps' }) + '\n');
      for (;;) {
        const reply = JSON.parse(await nextLine()) as { id?: string; return?: unknown; error?: { class: string; desc: string } };
        if (reply.id !== 'caps') continue; // events cannot arrive before capabilities, but be lenient
        if (reply.error) throw new QmpError('qmp_capabilities', reply.error.class, reply.error.desc);
        break;
      }
      socket.removeAllListeners('data');
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      const rest = lines.map((l) => l + '\n').join('') + buffered;
      return new QmpClient(path, socket, parsed.QMP, rest);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Runs a command and returns its `return` value; QEMU's refusal becomes a QmpError. */
  execute<K extends keyof QmpCommandMap>(command: K, args?: QmpCommandMap[K]['args'], opts?: QmpExecuteOptions): Promise<QmpCommandMap[K]['ret']>;
  execute(command: string, args?: Record<string, unknown>, opts?: QmpExecuteOptions): Promise<unknown>;
  execute(command: string, args?: object, opts: QmpExecuteOptions = {}): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(abortError(`QMP ${command}`, signal));
    const id = `r${this.#nextId++}`;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.get(id)?.cleanup();
        reject(new ReboundError('unavailable', 'qmp-timeout', `QEMU did not answer ${command} within ${timeoutMs} ms.`, {
          hint: 'QEMU may be hung or very busy; check the VM and try again.',
        }));
      }, timeoutMs);
      const onAbort = (): void => {
        this.#pending.get(id)?.cleanup();
        reject(abortError(`QMP ${command}`, signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#pending.delete(id);
      };
      this.#pending.set(id, { command, resolve, reject, cleanup });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg['arguments'] = args;
      this.#socket.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Calls fn for every event until the returned function is called. */
  onEvent(fn: Listener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Resolves with the first event named `name` (and matching `predicate`) that arrives after this
   * call. Start waiting before running the command that causes the event, then await both.
   */
  waitEvent(name: string, predicate: (data: Record<string, unknown>) => boolean = () => true, timeoutMs = DEFAULT_TIMEOUT_MS, signal?: AbortSignal): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        off();
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#socket.off('close', onClose);
      };
      const off = this.onEvent((ev) => {
        if (ev.event === name && predicate(ev.data ?? {})) {
          done();
          resolve(ev);
        }
      });
      const timer = setTimeout(() => {
        done();
        reject(new ReboundError('unavailable', 'qmp-event-timeout', `QEMU did not send ${name} within ${timeoutMs} ms.`));
      }, timeoutMs);
      const onAbort = (): void => {
        done();
        reject(abortError(`Waiting for ${name}`, signal!));
      };
      const onClose = (): void => {
        done();
        reject(this.#closed ?? closedError(this.path, `closed while waiting for ${name}`));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#socket.once('close', onClose);
    });
  }

  /** Events as an async iterator, buffered from the moment of this call (not of the first
   * next()); ends when the connection closes or the signal fires. */
  events(signal?: AbortSignal): AsyncIterableIterator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const off = this.onEvent((ev) => {
      queue.push(ev);
      wake?.();
    });
    const onEnd = (): void => {
      ended = true;
      wake?.();
    };
    this.#socket.on('close', onEnd);
    signal?.addEventListener('abort', onEnd);
    if (this.#closed || signal?.aborted) ended = true;
    const finish = (): IteratorResult<QmpEvent> => {
      off();
      this.#socket.off('close', onEnd);
      signal?.removeEventListener('abort', onEnd);
      ended = true;
      return { done: true, value: undefined };
    };
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next: async () => {
        for (;;) {
          const ev = queue.shift();
          if (ev) return { done: false, value: ev };
          if (ended) return finish();
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      },
      return: async () => finish(),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** Closes the connection; resolves when the socket is gone. Pending commands are rejected. */
  async close(): Promise<void> {
    if (!this.#socket.destroyed) this.#socket.end();
    const t = setTimeout(() => this.#socket.destroy(), 1000);
    await this.#closedPromise;
    clearTimeout(t);
  }

  /** Resolves when the connection has closed (for instance because QEMU exited). */
  whenClosed(): Promise<void> {
    return this.#closedPromise;
  }

  #onData(text: string): void {
    this.#buffer += text;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line !== '') this.#onMessage(line);
    }
  }

  #onMessage(line: string): void {
    let msg: { id?: string; return?: unknown; error?: { class: string; desc: string }; event?: string; data?: Record<string, unknown>; timestamp?: { seconds: number; microseconds: number } };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      return; // QEMU only sends JSON; a torn line means the socket is going away
    }
    if (msg.event !== undefined) {
      const ev: QmpEvent = { event: msg.event, data: msg.data ?? {}, timestamp: msg.timestamp ?? { seconds: 0, microseconds: 0 } };
      for (const l of [...this.#listeners]) l(ev);
      return;
    }
    if (msg.id === undefined) return;
    const p = this.#pending.get(msg.id);
    if (!p) return; // timed out or aborted earlier
    p.cleanup();
    if (msg.error) p.reject(new QmpError(p.command, msg.error.class, msg.error.desc));
    else p.resolve(msg.return);
  }

  #shutdown(err: ReboundError): void {
    if (this.#closed) return;
    this.#closed = err;
    for (const p of [...this.#pending.values()]) {
      p.cleanup();
      p.reject(err);
    }
    this.#socket.destroy();
  }
}
