import { connect, type Socket } from 'node:net';
import type { AbortLike } from './cancel.js';
import { ErrorCodes, toUgateError, UgateError } from './errors.js';
import { Sweep, type Swept } from './sweep.js';
import { formatTarget, type Target } from './target.js';
import type { Dialer, StreamRequest, Upstream } from './types.js';

export interface DirectInit {
  /** Connect timeout. Default 10 s (as ztunnel). */
  connectTimeoutMs?: number;
}

/** A connect in progress: the socket's listeners are the shared functions below (`this` is the socket). */
interface Pending extends Swept<Pending> {
  readonly sock: Connecting;
  readonly dest: Target;
  readonly deadline: number;
  readonly timeoutMs: number;
  readonly signal: AbortLike | undefined;
  readonly onAbort: (() => void) | undefined;
  readonly resolve: (s: Socket) => void;
  readonly reject: (e: UgateError) => void;
}
const kPending = Symbol('ugate.direct');
type Connecting = Socket & { [kPending]?: Pending };

/** Connects in progress (see `Sweep`). A connect times out between its timeout and a quarter of it later. */
const connecting = new Sweep<Pending>(checkDeadline);

function checkDeadline(p: Pending, now: number): void {
  if (now >= p.deadline)
    fail(p.sock, new UgateError(ErrorCodes.TIMEOUT, `connect to ${formatTarget(p.dest)} timed out after ${p.timeoutMs} ms`));
}

function settle(sock: Connecting): Pending | undefined {
  const p = sock[kPending];
  if (!p) return undefined;
  sock[kPending] = undefined;
  connecting.delete(p);
  sock.off('error', onError);
  sock.off('connect', onConnect);
  if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
  return p;
}

function fail(sock: Connecting, err: UgateError): void {
  const p = settle(sock);
  if (!p) return;
  sock.destroy();
  p.reject(err);
}

function onError(this: Connecting, e: Error): void {
  fail(this, toUgateError(e, ErrorCodes.UNREACHABLE));
}

function onConnect(this: Connecting): void {
  settle(this)?.resolve(this);
}

/** Plain TCP to the target (or the route's address). */
export function direct(init: DirectInit = {}): Dialer {
  const timeoutMs = init.connectTimeoutMs ?? 10_000;
  const sweepMs = Math.max(10, Math.floor(timeoutMs / 4));
  return {
    carrier: 'direct',
    dial(req: StreamRequest, up: Upstream): Promise<Socket> {
      const dest = up.address ?? req.target;
      return new Promise((resolve, reject) => {
        const sock: Connecting = connect({ host: dest.host, port: dest.port, allowHalfOpen: true, noDelay: true });
        const signal = req.signal;
        const onAbort = signal ? () => fail(sock, new UgateError(ErrorCodes.ABORTED, 'requester went away')) : undefined;
        const p: Pending = {
          sock,
          dest,
          deadline: Date.now() + timeoutMs,
          timeoutMs,
          signal,
          onAbort,
          resolve,
          reject,
          sweepPrev: undefined,
          sweepNext: undefined,
          inSweep: false,
        };
        sock[kPending] = p;
        sock.on('error', onError);
        sock.on('connect', onConnect);
        if (signal && onAbort) signal.addEventListener('abort', onAbort, { once: true });
        connecting.add(p, sweepMs);
      });
    },
  };
}
