// A token bucket for the policy's bandwidth cap: take(n) waits until n bytes may go. The bucket
// holds at most a quarter second of bytes so a cap is kept over short windows too.
export class Throttle {
  readonly #rate: number;
  #tokens: number;
  #last = performance.now();

  constructor(bytesPerSecond: number) {
    this.#rate = bytesPerSecond;
    this.#tokens = 0;
  }

  async take(n: number, signal?: AbortSignal): Promise<void> {
    const cap = Math.max(this.#rate / 4, n);
    for (;;) {
      const t = performance.now();
      this.#tokens = Math.min(cap, this.#tokens + ((t - this.#last) / 1000) * this.#rate);
      this.#last = t;
      if (this.#tokens >= n) {
        this.#tokens -= n;
        return;
      }
      signal?.throwIfAborted();
      const waitMs = Math.ceil(((n - this.#tokens) / this.#rate) * 1000);
      await new Promise((r) => setTimeout(r, Math.min(waitMs, 250)));
    }
  }
}
