// The host side of the test guest's freeze agent (guest/init): a line protocol over the VM's
// virtio-serial port `org.rebound.agent` (a unix socket in its run directory). `freeze` flushes
// and freezes the guest's data filesystem (fsfreeze) so the next point is app-consistent;
// `thaw` resumes it. Every answer must come within the deadline, else the caller treats the
// point as crash-consistent.
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { ReboundError } from '../../domain/errors.ts';

export class FreezeAgent {
  readonly #s: Socket;
  readonly #timeoutMs: number;
  #buf = '';
  #waiting: ((line: string) => void) | undefined;

  private constructor(s: Socket, timeoutMs: number) {
    this.#s = s;
    this.#timeoutMs = timeoutMs;
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      this.#buf += chunk;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl).trim();
        this.#buf = this.#buf.slice(nl + 1);
        const w = this.#waiting;
        this.#waiting = undefined;
        w?.(line);
      }
    });
    s.on('error', () => undefined);
  }

  static async connect(path: string, timeoutMs: number): Promise<FreezeAgent> {
    const s = await new Promise<Socket>((resolve, reject) => {
      const c = connect({ path }, () => resolve(c));
      c.once('error', (err) => reject(new ReboundError('unavailable', 'freeze-agent-unreachable', `the guest freeze agent socket ${path} cannot be reached: ${err.message}`)));
    });
    const a = new FreezeAgent(s, timeoutMs);
    // A stale answer from an earlier, timed-out exchange is drained by a ping first.
    await a.#ask('ping', 'pong');
    return a;
  }

  freeze(): Promise<void> { return this.#ask('freeze', 'frozen'); }
  thaw(): Promise<void> { return this.#ask('thaw', 'thawed'); }
  close(): void { this.#s.destroy(); }

  async #ask(cmd: string, want: string): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    this.#s.write(`${cmd}\n`);
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new ReboundError('unavailable', 'freeze-agent-timeout', `the guest freeze agent did not answer "${cmd}" within ${Math.round(this.#timeoutMs / 1000)} s (is the agent running in the guest?).`);
      const line = await new Promise<string | null>((resolve) => {
        const t = setTimeout(() => { this.#waiting = undefined; resolve(null); }, left);
        this.#waiting = (l) => { clearTimeout(t); resolve(l); };
      });
      if (line === null) continue;
      if (line === want) return;
      if (line.startsWith('error')) throw new ReboundError('unavailable', 'freeze-failed', `the guest could not ${cmd}: ${line.slice(6) || 'no reason given'}.`);
      // Anything else is a late answer to an earlier request: keep waiting for ours.
    }
  }
}
