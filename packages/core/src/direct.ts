import { connect, type Socket } from 'node:net';
import { ErrorCodes, toUgateError, UgateError } from './errors.js';
import { formatTarget } from './target.js';
import type { Dialer, StreamRequest, Upstream } from './types.js';

export interface DirectInit {
  /** Connect timeout. Default 10 s (as ztunnel). */
  connectTimeoutMs?: number;
}

/** Plain TCP to the target (or the route's address). */
export function direct(init: DirectInit = {}): Dialer {
  const timeout = init.connectTimeoutMs ?? 10_000;
  return {
    carrier: 'direct',
    dial(req: StreamRequest, up: Upstream): Promise<Socket> {
      const dest = up.address ?? req.target;
      return new Promise((resolve, reject) => {
        const sock = connect({ host: dest.host, port: dest.port, allowHalfOpen: true, noDelay: true });
        const fail = (err: UgateError) => {
          cleanup();
          sock.destroy();
          reject(err);
        };
        const onError = (e: Error) => fail(toUgateError(e, ErrorCodes.UNREACHABLE));
        const onAbort = () => fail(new UgateError(ErrorCodes.ABORTED, 'requester went away'));
        const timer = setTimeout(
          () => fail(new UgateError(ErrorCodes.TIMEOUT, `connect to ${formatTarget(dest)} timed out after ${timeout} ms`)),
          timeout,
        );
        const cleanup = () => {
          clearTimeout(timer);
          sock.off('error', onError);
          req.signal?.removeEventListener('abort', onAbort);
        };
        sock.once('error', onError);
        req.signal?.addEventListener('abort', onAbort, { once: true });
        sock.once('connect', () => {
          cleanup();
          resolve(sock);
        });
      });
    },
  };
}
