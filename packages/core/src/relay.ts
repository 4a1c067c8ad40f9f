import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ErrorCodes, toUgateError, UgateError } from './errors.js';
import { Sweep, type Swept } from './sweep.js';

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

/** Idle checks, one sweep per check period (see `Sweep`). */
const idleSweeps = new Map<number, Sweep<Run>>();

function idleSweep(periodMs: number): Sweep<Run> {
  let sweep = idleSweeps.get(periodMs);
  if (!sweep) {
    sweep = new Sweep(checkIdle);
    idleSweeps.set(periodMs, sweep);
  }
  return sweep;
}

function checkIdle(run: Run, now: number): void {
  if (now - run.lastActivity >= run.idleMs) run.finish(new UgateError(ErrorCodes.IDLE_TIMEOUT, `idle for ${run.idleMs} ms`));
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
 * The relay's state hangs off each stream under this key, and its listeners are the shared
 * functions below (`this` is the stream): no closures per stream. When the relay finishes it
 * clears the key, which cuts every path from one side to the other: node keeps a closed
 * socket's JS objects until a full GC (its handle wrapper survives scavenges), and anything they
 * reach would be kept with them. The listeners stay, doing nothing (the 'error' one still
 * catches late errors).
 */
const kSide = Symbol('ugate.relay');
type Relayed = Duplex & { [kSide]?: Side };

interface Side {
  /** The direction this stream is the source of. */
  readonly out: Direction;
  /** The direction this stream is the destination of. */
  readonly in: Direction;
}

/** One direction: `src`'s bytes into `dst`. */
class Direction {
  /** We ended `dst`'s writable because `src` ended. */
  ended = false;
  /** `dst` finished after we ended it. */
  done = false;
  corked = false;
  /**
   * Chunks that arrive in one event-loop turn leave in one writev: an HTTP/2 stream hands over
   * each DATA frame in pieces cut at TLS record boundaries (16375 + 9 bytes, ...). Backpressure
   * is judged once the batch is out: a corked write() reports false early.
   */
  readonly batch: boolean;
  constructor(
    readonly run: Run,
    readonly src: Relayed,
    readonly dst: Relayed,
    readonly aToB: boolean,
  ) {
    this.batch = dst instanceof Socket;
  }
}

class Run implements Swept<Run> {
  finished = false;
  lastActivity: number;
  sweepPrev: Run | undefined = undefined;
  sweepNext: Run | undefined = undefined;
  inSweep = false;
  readonly ab: Direction;
  readonly ba: Direction;
  #idle: Sweep<Run> | undefined;

  constructor(
    readonly a: Relayed,
    readonly b: Relayed,
    readonly stats: RelayStats,
    readonly started: number,
    readonly idleMs: number,
    readonly resolve: (s: RelayStats) => void,
  ) {
    this.lastActivity = started;
    this.ab = new Direction(this, a, b, true);
    this.ba = new Direction(this, b, a, false);
    a[kSide] = { out: this.ab, in: this.ba };
    b[kSide] = { out: this.ba, in: this.ab };
  }

  watch(periodMs: number): void {
    this.#idle = idleSweep(periodMs);
    this.#idle.add(this, periodMs);
  }

  finish(error?: UgateError): void {
    if (this.finished) return;
    this.finished = true;
    this.#idle?.delete(this);
    const { a, b, stats } = this;
    a[kSide] = undefined;
    b[kSide] = undefined;
    if (error) {
      stats.error = error;
      abortStream(a, error);
      abortStream(b, error);
    } else {
      a.destroy();
      b.destroy();
    }
    stats.durationMs = Date.now() - this.started;
    this.resolve(stats);
  }
}

function onData(this: Relayed, chunk: Buffer): void {
  const d = this[kSide]?.out;
  if (!d) return;
  const run = d.run;
  if (d.aToB) run.stats.bytesAtoB += chunk.length;
  else run.stats.bytesBtoA += chunk.length;
  run.lastActivity = Date.now();
  const dst = d.dst;
  if (!d.batch) {
    if (!dst.write(chunk)) this.pause();
    return;
  }
  if (!d.corked) {
    d.corked = true;
    dst.cork();
    setImmediate(uncork, d);
  }
  dst.write(chunk);
}

function uncork(d: Direction): void {
  d.corked = false;
  d.dst.uncork();
  if (d.dst.writableNeedDrain) d.src.pause();
}

function onDrain(this: Relayed): void {
  this[kSide]?.in.src.resume();
}

function endOf(d: Direction): void {
  d.ended = true;
  d.dst.end();
}

function onEnd(this: Relayed): void {
  const d = this[kSide]?.out;
  if (d) endOf(d);
}

function onFinish(this: Relayed): void {
  const d = this[kSide]?.in;
  if (!d) return;
  // Some streams (ssh2 channels) end their own writable when the peer closes.
  if (!d.ended) return d.run.finish(new UgateError(ErrorCodes.ABORTED, 'peer closed before the stream ended'));
  d.done = true;
  if (d.run.ab.done && d.run.ba.done) d.run.finish();
}

function onError(this: Relayed, err: Error): void {
  this[kSide]?.out.run.finish(toUgateError(err, ErrorCodes.ABORTED));
}

/**
 * A side that closes after its data ended and after we ended its writable is done; closing
 * earlier is an abort. (ssh2 channels never set `destroyed`, so look at the event.)
 */
function onClose(this: Relayed): void {
  const side = this[kSide];
  if (side && (!this.readableEnded || !side.in.ended))
    side.out.run.finish(new UgateError(ErrorCodes.ABORTED, 'peer closed before the stream ended'));
}

function attach(s: Relayed): void {
  s.on('error', onError);
  s.on('close', onClose);
}

function flow(d: Direction): void {
  d.src.on('data', onData);
  d.dst.on('drain', onDrain);
  // A source may have ended (half-closed) while the stream was being opened.
  if (d.src.readableEnded) endOf(d);
  else d.src.on('end', onEnd);
  d.dst.on('finish', onFinish);
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
  const idle = opts.idleTimeoutMs ?? 0;
  return new Promise<RelayStats>((resolve) => {
    const run = new Run(a, b, stats, started, idle, resolve);
    attach(a);
    attach(b);
    flow(run.ab);
    flow(run.ba);
    // A listener may have paused a side while it dialed; a 'data' listener alone does not restart it.
    a.resume();
    b.resume();
    // Fires between `idle` and `idle` + one check period after the last byte.
    if (idle > 0 && !run.finished) run.watch(Math.max(50, Math.min(Math.floor(idle / 4), 5000)));
    // A side may already be gone when we are called.
    if (a.destroyed || b.destroyed) run.finish(new UgateError(ErrorCodes.ABORTED, 'stream already closed'));
  });
}
