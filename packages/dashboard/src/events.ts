/**
 * Server-sent events read with fetch, so the request can carry `Authorization: Bearer` (an
 * EventSource cannot). Reconnects with backoff; a silent stream (no event for `staleMs`) is
 * dropped and dialled again.
 */

export type ConnState = 'connecting' | 'live' | 'reconnecting' | 'unauthorized';

export interface EventsInit {
  url: string;
  token: () => string | undefined;
  onEvent: (name: string, data: string) => void;
  onState: (state: ConnState, detail?: string) => void;
  staleMs?: number;
}

/** Splits an SSE byte stream into events (name, data); comments and ids are ignored. */
export class SseParser {
  private buf = '';

  constructor(private readonly emit: (name: string, data: string) => void) {}

  push(text: string): void {
    this.buf += text;
    for (;;) {
      const m = /\r\n\r\n|\n\n|\r\r/.exec(this.buf);
      if (!m) return;
      const block = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      let name = 'message';
      const data: string[] = [];
      for (const line of block.split(/\r\n|\n|\r/)) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') name = value;
        else if (field === 'data') data.push(value);
      }
      if (data.length) this.emit(name, data.join('\n'));
    }
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Opens the stream and keeps it open until `close()`; `retry()` skips the current wait. */
export function subscribe(init: EventsInit): { close(): void; retry(): void } {
  const stop = new AbortController();
  const staleMs = init.staleMs ?? 5000;
  let wake = new AbortController();
  let attempt = 0;

  const once = async (): Promise<'unauthorized' | 'ended'> => {
    const conn = new AbortController();
    const abort = () => conn.abort();
    stop.signal.addEventListener('abort', abort);
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(abort, staleMs);
    };
    try {
      const token = init.token();
      arm();
      const res = await fetch(init.url, {
        headers: { accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        cache: 'no-store',
        signal: conn.signal,
      });
      if (res.status === 401) return 'unauthorized';
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const parser = new SseParser((name, data) => {
        arm();
        attempt = 0;
        init.onState('live');
        init.onEvent(name, data);
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return 'ended';
        parser.push(value);
      }
    } catch {
      return 'ended';
    } finally {
      clearTimeout(watchdog);
      stop.signal.removeEventListener('abort', abort);
      conn.abort();
    }
  };

  void (async () => {
    init.onState('connecting');
    while (!stop.signal.aborted) {
      const how = await once();
      if (stop.signal.aborted) return;
      attempt++;
      const wait = how === 'unauthorized' ? 10_000 : Math.min(500 * 2 ** (attempt - 1), 5000);
      init.onState(how === 'unauthorized' ? 'unauthorized' : 'reconnecting', `retry in ${Math.round(wait / 1000)} s`);
      await sleep(wait, AbortSignal.any([stop.signal, wake.signal]));
      wake = new AbortController();
      if (!stop.signal.aborted) init.onState('connecting');
    }
  })();

  return {
    close: () => stop.abort(),
    retry: () => wake.abort(),
  };
}
