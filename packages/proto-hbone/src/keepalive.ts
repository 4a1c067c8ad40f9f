import type { Http2Session, Http2Stream } from 'node:http2';
import { Sweep, type Swept } from '@ugate/core';

/** Why `keepAlive` gave up on a session. */
export type DeadSession =
  /** No PING ack for `timeoutMs`. */
  | 'timeout'
  /** nghttp2 has ended the session (a connection error: it sent GOAWAY), but node keeps the socket. */
  | 'ended';

/**
 * PING every `intervalMs`; a session with no PING ack for `timeoutMs` is
 * declared dead (`onDead('timeout')`, which should destroy it so its streams end
 * with an error). Checked on the same tick: a session nghttp2 is done with
 * (`onDead('ended')`, see `nghttp2Done`).
 */
export function keepAlive(session: Http2Session, intervalMs: number, timeoutMs: number, onDead: (why: DeadSession) => void): void {
  let lastAck = Date.now();
  let lastPing = 0;
  const tick = setInterval(
    () => {
      if (session.destroyed || session.closed) return clearInterval(tick);
      if (nghttp2Done(session)) {
        clearInterval(tick);
        return onDead('ended');
      }
      const now = Date.now();
      if (now - lastAck > timeoutMs) {
        clearInterval(tick);
        return onDead('timeout');
      }
      if (now - lastPing >= intervalMs) {
        lastPing = now;
        try {
          session.ping((err) => {
            if (!err) lastAck = Date.now();
          });
        } catch {
          // too many outstanding pings: the timeout decides
        }
      }
    },
    Math.min(1000, intervalMs),
  );
  tick.unref();
  session.once('close', () => clearInterval(tick));
}

/**
 * True once nghttp2 neither wants to read nor to write on the session: after a
 * connection-level error (e.g. COMPRESSION_ERROR for an undecodable header
 * block) it sends GOAWAY and stops. node has no event for that: it stops
 * reading the socket and keeps it open, so only the PING timeout would end it.
 * (Also true once GOAWAY went either way and no stream is left; the session is
 * over then too.) node's binding exposes the check as `hasPendingData()` (what
 * its own graceful close waits for); without it, the PING timeout remains.
 */
function nghttp2Done(session: Http2Session): boolean {
  kHandle ??= Object.getOwnPropertySymbols(session).find((s) => s.description === 'kHandle');
  const handle = kHandle ? (session as unknown as Record<symbol, { hasPendingData?: () => boolean } | undefined>)[kHandle] : undefined;
  return typeof handle?.hasPendingData === 'function' && !handle.hasPendingData();
}
/** node's (module-private) symbol for a session's native handle, found once. */
let kHandle: symbol | undefined;

/**
 * A stream the peer reset (RST_STREAM) ends its readable side like an EOF, but
 * node then keeps it open while our writes wait for flow-control credit that
 * will never come. Close it, so the relay ends the other side instead of hanging.
 * Also keeps a clean end clean (see `cleanDestroy`). Shared listener functions and
 * one grace sweep: nothing is allocated per stream.
 */
export function closeWhenReset(stream: Http2Stream): void {
  stream.once('aborted', onAborted);
  (stream as Closing).destroy = cleanDestroy;
}

function onAborted(this: Http2Stream): void {
  setImmediate(destroyNow, this);
}

function destroyNow(stream: Http2Stream): void {
  stream.destroy();
}

/** How long a cleanly ended stream may take to close by itself before it is destroyed anyway. */
const CLEAN_CLOSE_GRACE_MS = 2_000;

/** A clean destroy() waiting for its stream to close. */
interface Waiter extends Swept<Waiter> {
  readonly stream: Http2Stream;
  readonly since: number;
}
const kWaiting = Symbol('ugate.hbone.waiting');
type Closing = Http2Stream & { [kWaiting]?: Waiter };

/** node's own destroy() (ours is an own property that shadows it). */
function destroyFor(stream: Http2Stream): (this: Http2Stream, err?: Error) => Http2Stream {
  return Object.getPrototypeOf(stream).destroy;
}

/**
 * The relay destroy()s both sides once both directions have ended. For an HTTP/2
 * stream that is still open in nghttp2 (our END_STREAM submitted but not written
 * yet), node then sends RST_STREAM(NO_ERROR), and nghttp2 sends it ahead of the
 * pending END_STREAM, which is dropped: under load the peer sees a reset instead
 * of the end of the response (Go's client reports "stream error: NO_ERROR").
 * So a destroy() without an error, after both sides ended, waits for nghttp2 to
 * close the stream (END_STREAM written), bounded by a grace period.
 */
function cleanDestroy(this: Closing, err?: Error): Http2Stream {
  if (err || this.closed || this.destroyed || !this.writableFinished || !this.readableEnded) return destroyFor(this).call(this, err);
  if (this[kWaiting] !== undefined) return this;
  const w: Waiter = { stream: this, since: Date.now(), sweepPrev: undefined, sweepNext: undefined, inSweep: false };
  this[kWaiting] = w;
  waiting.add(w, CLEAN_CLOSE_GRACE_MS / 4);
  this.once('close', stopWaiting);
  return this;
}

function stopWaiting(this: Closing): void {
  const w = this[kWaiting];
  if (w) waiting.delete(w);
}

/** Streams a clean destroy() waits for; one sweep destroys those past the grace period. */
const waiting = new Sweep<Waiter>(destroyPastGrace);

function destroyPastGrace(w: Waiter, now: number): void {
  if (now - w.since < CLEAN_CLOSE_GRACE_MS) return;
  waiting.delete(w);
  destroyFor(w.stream).call(w.stream);
}
