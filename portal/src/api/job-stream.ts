// Live job progress from GET /jobs/:id/events. EventSource cannot send an Authorization header,
// so the stream is read with fetch and parsed here (the server-sent events format: blocks of
// `event:` / `data:` lines separated by a blank line). Reconnects after a dropped connection
// until the job ends or the caller stops.
import { API } from './client.ts';
import { loadSession } from './session.ts';
import type { Job } from './types.ts';

export interface JobStreamHandlers {
  onJob(job: Job): void;
  onEnd(): void;
  onError(message: string): void;
}

export function streamJob(id: string, h: JobStreamHandlers): () => void {
  const abort = new AbortController();
  let ended = false;
  const run = async (): Promise<void> => {
    for (let attempt = 0; !abort.signal.aborted && !ended; attempt++) {
      try {
        const token = loadSession()?.token ?? '';
        const res = await fetch(`${API}/jobs/${encodeURIComponent(id)}/events`, {
          headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
          signal: abort.signal,
        });
        if (!res.ok || res.body === null) {
          h.onError(`the progress stream answered ${res.status}.`);
          if (res.status >= 400 && res.status < 500) return;
        } else {
          attempt = 0;
          await readEvents(res.body, (event, data) => {
            if (event === 'job') h.onJob(JSON.parse(data) as Job);
            if (event === 'end') {
              ended = true;
              h.onEnd();
            }
          });
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        h.onError(`the progress stream broke (${(err as Error).message}); reconnecting.`);
      }
      if (!ended) await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
    }
  };
  void run();
  return () => abort.abort();
}

async function readEvents(body: ReadableStream<Uint8Array>, onEvent: (event: string, data: string) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut: number;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) onEvent(event, data.join('\n'));
    }
  }
}
