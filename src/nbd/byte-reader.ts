// An awaitable byte queue over a socket's incoming chunks: exact(n) resolves with the next n
// bytes, into(dst, at, n) copies the next n bytes straight into a caller's buffer. While an
// into() is waiting and nothing is queued, push() copies arriving bytes directly into its
// destination, so a read payload is copied once, even out of a reused receive buffer
// (`transient` chunks); only what is left over is queued (and copied, if transient). One reader
// at a time, which the NBD client's single reply loop guarantees.

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Sink {
  dst: Buffer;
  at: number;
  left: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class ByteReader {
  #chunks: Buffer[] = [];
  #head = 0; // bytes of #chunks[0] already consumed
  #available = 0;
  #waiter: Waiter | undefined;
  #sink: Sink | undefined;
  #error: Error | undefined;

  /** Adds bytes; `transient` means the caller reuses `chunk` after this call returns. */
  push(chunk: Buffer, transient = false): void {
    const s = this.#sink;
    if (s && this.#available === 0) {
      const take = Math.min(s.left, chunk.length);
      chunk.copy(s.dst, s.at, 0, take);
      s.at += take;
      s.left -= take;
      if (s.left === 0) {
        this.#sink = undefined;
        s.resolve();
      }
      if (take === chunk.length) return;
      chunk = chunk.subarray(take);
    }
    this.#chunks.push(transient ? Buffer.from(chunk) : chunk);
    this.#available += chunk.length;
    const w = this.#waiter;
    if (w && this.#available >= w.n) {
      this.#waiter = undefined;
      w.resolve();
    }
  }

  /** Ends the stream: pending and later reads fail with err. */
  fail(err: Error): void {
    this.#error ??= err;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#error);
    const s = this.#sink;
    this.#sink = undefined;
    s?.reject(this.#error);
  }

  async exact(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    await this.#want(n);
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#consume(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.#copy(out, 0, n);
    return out;
  }

  async into(dst: Buffer, at: number, n: number): Promise<void> {
    const now = Math.min(this.#available, n);
    if (now > 0) this.#copy(dst, at, now);
    if (now === n) return;
    if (this.#error) throw this.#error;
    // The rest goes straight from push() into dst.
    await new Promise<void>((resolve, reject) => {
      this.#sink = { dst, at: at + now, left: n - now, resolve, reject };
    });
  }

  async skip(n: number): Promise<void> {
    let done = 0;
    while (done < n) {
      if (this.#available === 0) await this.#want(1);
      const take = Math.min(this.#available, n - done);
      this.#consume(take);
      done += take;
    }
  }

  #want(n: number): Promise<void> {
    if (this.#available >= n) return Promise.resolve();
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject };
    });
  }

  #copy(dst: Buffer, at: number, n: number): void {
    let done = 0;
    while (done < n) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length - this.#head, n - done);
      c.copy(dst, at + done, this.#head, this.#head + take);
      done += take;
      this.#consume(take);
    }
  }

  #consume(n: number): void {
    this.#available -= n;
    while (n > 0) {
      const c = this.#chunks[0]!;
      const left = c.length - this.#head;
      if (n >= left) {
        this.#chunks.shift();
        this.#head = 0;
        n -= left;
      } else {
        this.#head += n;
        n = 0;
      }
    }
  }
}
