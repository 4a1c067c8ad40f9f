import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ErrorCodes, toUgateError, UgateError } from './errors.js';

export interface RelayOptions {
  /** Abort when no byte moved either way for this long. 0 = never. Default 0. */
  idleTimeoutMs?: number;
  /** Count into this object (live byte counts for the admin API); default a new one. */
  stats?: RelayStats;
}

export interface RelayStats {
  /** Bytes from `a` to `b`. */
  bytesAtoB: number;
  /** Bytes from `b` to `a`. */
  bytesBtoA: number;
  durationMs: number;
  /** Set when the relay ended abnormally. */
  error?: UgateError;
}

const noop = () => {};

/**
 * Idle checks share one timer per check period: a timer per stream costs more than a short
 * stream itself (measured: ~35 µs of a ~500 µs HBONE open). A sweep whose set is empty stops
 * at its next tick, so streams that come and go one after another do not restart it.
 */
const sweeps = new Map<number, Set<(now: number) => void>>();

function watchIdle(periodMs: number, check: (now: number) => void): () => void {
  let checks = sweeps.get(periodMs);
  if (!checks) {
    const set = new Set<(now: number) => void>();
    checks = set;
    sweeps.set(periodMs, set);
    const timer = setInterval(() => {
      if (set.size === 0) {
        clearInterval(timer);
        sweeps.delete(periodMs);
        return;
      }
      const now = Date.now();
      for (const c of set) c(now);
    }, periodMs);
    timer.unref();
  }
  checks.add(check);
  const set = checks;
  return () => set.delete(check);
}

/**
 * Abort a stream so the far side sees an error, not a clean end: a TCP socket
 * gets an RST, anything else is destroyed.
 */
export function abortStream(s: Duplex, err?: Error): void {
  s.on('error', noop);
  // libuv refuses an RST while our FIN is being sent (EINVAL, and node then leaves the handle open —
  // the SSH compliance suite's client-abort case hit this): after end(), just close.
  if (s instanceof Socket && !s.destroyed && s.readyState !== 'opening' && !s.writableEnded) s.resetAndDestroy();
  else s.destroy(err);
}

/**
 * Move bytes both ways between two duplexes until both directions ended.
 * Half-close travels: when one side ends its writes, the other side's
 * writable is ended and the reverse direction keeps flowing. Backpressure is
 * per direction. Any error, or a close before both directions finished,
 * aborts both sides. Never throws; always resolves once both are closed.
 */
export function relay(a: Duplex, b: Duplex, opts: RelayOptions = {}): Promise<RelayStats> {
  const started = Date.now();
  const stats: RelayStats = opts.stats ?? { bytesAtoB: 0, bytesBtoA: 0, durationMs: 0 };
  let lastActivity = started;
  let doneAtoB = false;
  let doneBtoA = false;
  let finished = false;
  let unwatch: (() => void) | undefined;

  return new Promise<RelayStats>((resolve) => {
    // Every listener the relay adds, removed when it finishes: node keeps a closed socket's
    // JS objects until a full GC (its handle wrapper survives scavenges), and our closures
    // would keep the other side, the stats and the request with it (measured: most of the
    // heap promoted per HBONE open). A noop 'error' listener stays for late errors.
    // biome-ignore lint/suspicious/noExplicitAny: the listeners of several events, as EventEmitter types them
    type Listener = (...args: any[]) => void;
    const added: [Duplex, string, Listener][] = [];
    const on = (s: Duplex, event: string, fn: Listener) => {
      s.on(event, fn);
      added.push([s, event, fn]);
    };
    const finish = (error?: UgateError) => {
      if (finished) return;
      finished = true;
      unwatch?.();
      for (const [s, event, fn] of added) s.off(event, fn);
      added.length = 0;
      a.on('error', noop);
      b.on('error', noop);
      if (error) {
        stats.error = error;
        abortStream(a, error);
        abortStream(b, error);
      } else {
        a.destroy();
        b.destroy();
      }
      stats.durationMs = Date.now() - started;
      resolve(stats);
    };

    // `ended` = we ended that stream's writable because its source ended.
    const ended = new Set<Duplex>();
    const pump = (src: Duplex, dst: Duplex, count: (n: number) => void, onDone: () => void) => {
      // Chunks that arrive in one event-loop turn leave in one writev: an HTTP/2 stream hands
      // over each DATA frame in pieces cut at TLS record boundaries (16375 + 9 bytes, ...).
      // Backpressure is judged once the batch is out: a corked write() reports false early.
      const batch = dst instanceof Socket;
      let corked = false;
      const uncork = () => {
        corked = false;
        dst.uncork();
        if (dst.writableNeedDrain) src.pause();
      };
      on(src, 'data', (chunk: Buffer) => {
        count(chunk.length);
        lastActivity = Date.now();
        if (!batch) {
          if (!dst.write(chunk)) src.pause();
          return;
        }
        if (!corked) {
          corked = true;
          dst.cork();
          setImmediate(uncork);
        }
        dst.write(chunk);
      });
      on(dst, 'drain', () => src.resume());
      const onEnd = () => {
        ended.add(dst);
        dst.end();
      };
      // A source may have ended (half-closed) while the stream was being opened.
      if (src.readableEnded) onEnd();
      else on(src, 'end', onEnd);
      on(dst, 'finish', () => {
        // Some streams (ssh2 channels) end their own writable when the peer closes.
        if (!ended.has(dst)) return finish(new UgateError(ErrorCodes.ABORTED, 'peer closed before the stream ended'));
        onDone();
        if (doneAtoB && doneBtoA) finish();
      });
    };

    const onError = (err: Error) => finish(toUgateError(err, ErrorCodes.ABORTED));
    // A side that closes after its data ended and after we ended its writable is done;
    // closing earlier is an abort. (ssh2 channels never set `destroyed`, so look at the event.)
    const onClose = (s: Duplex) => () => {
      if (!s.readableEnded || !ended.has(s)) finish(new UgateError(ErrorCodes.ABORTED, 'peer closed before the stream ended'));
    };
    for (const s of [a, b]) {
      on(s, 'error', onError);
      on(s, 'close', onClose(s));
    }
    pump(
      a,
      b,
      (n) => (stats.bytesAtoB += n),
      () => (doneAtoB = true),
    );
    pump(
      b,
      a,
      (n) => (stats.bytesBtoA += n),
      () => (doneBtoA = true),
    );
    // A listener may have paused a side while it dialed; a 'data' listener alone does not restart it.
    a.resume();
    b.resume();

    const idle = opts.idleTimeoutMs ?? 0;
    if (idle > 0 && !finished) {
      // Fires between `idle` and `idle` + one check period after the last byte.
      unwatch = watchIdle(Math.max(50, Math.min(Math.floor(idle / 4), 5000)), (now) => {
        if (now - lastActivity >= idle) finish(new UgateError(ErrorCodes.IDLE_TIMEOUT, `idle for ${idle} ms`));
      });
    }
    // A side may already be gone when we are called.
    if (a.destroyed || b.destroyed) finish(new UgateError(ErrorCodes.ABORTED, 'stream already closed'));
  });
}
