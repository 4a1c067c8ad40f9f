import type { Http2Session } from 'node:http2';

/**
 * PING every `intervalMs`; a session with no PING ack for `timeoutMs` is
 * declared dead (`onDead`, which should destroy it so its streams end with an error).
 */
export function keepAlive(session: Http2Session, intervalMs: number, timeoutMs: number, onDead: () => void): void {
  let lastAck = Date.now();
  let lastPing = 0;
  const tick = setInterval(
    () => {
      if (session.destroyed || session.closed) return clearInterval(tick);
      const now = Date.now();
      if (now - lastAck > timeoutMs) {
        clearInterval(tick);
        return onDead();
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
 * A stream the peer reset (RST_STREAM) ends its readable side like an EOF, but
 * node then keeps it open while our writes wait for flow-control credit that
 * will never come. Close it, so the relay ends the other side instead of hanging.
 */
export function closeWhenReset(stream: import('node:http2').Http2Stream): void {
  stream.once('aborted', () => setImmediate(() => stream.destroy()));
}
