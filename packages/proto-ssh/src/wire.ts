import { codeFromText, ErrorCodes, UgateError as UErr, type UgateError } from '@ugate/core';

/** RFC 4254 §5.1 channel open failure reasons. */
export const OPEN_FAILURE = { ADMINISTRATIVELY_PROHIBITED: 1, CONNECT_FAILED: 2, UNKNOWN_CHANNEL_TYPE: 3, RESOURCE_SHORTAGE: 4 } as const;

interface WithProtocol {
  _protocol?: { channelOpenFail: (recipient: number, reason: number, description: string) => void };
}

/**
 * Reject a pending channel open, carrying the ugate error code in the failure
 * description (`UGATE_ERR_X: message`) so the next hop — ugate or an OpenSSH
 * client, which prints it — learns why. ssh2's own reject() always sends an
 * empty description, so the call is redirected for this one reply.
 */
export function rejectChannel(conn: unknown, reject: (() => void) | undefined, err: UgateError): void {
  if (!reject) return;
  const proto = (conn as WithProtocol)._protocol;
  if (!proto || typeof proto.channelOpenFail !== 'function') return reject();
  const orig = proto.channelOpenFail;
  const reason = err.code === ErrorCodes.POLICY_DENIED ? OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED : OPEN_FAILURE.CONNECT_FAILED;
  proto.channelOpenFail = (recipient) => orig.call(proto, recipient, reason, `${err.code}: ${err.message}`.slice(0, 512));
  try {
    reject();
  } finally {
    proto.channelOpenFail = orig;
  }
}

/** Turn an ssh2 channel-open error back into a UgateError. */
export function channelOpenError(err: Error & { reason?: unknown }, what: string): UgateError {
  const code = codeFromText(err.message);
  if (code) return new UErr(code, err.message.replace(/^\(SSH\) Channel open failure: (UGATE_ERR_[A-Z_]+: )?/, ''), { cause: err });
  if (err.reason === OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED) {
    return new UErr(ErrorCodes.POLICY_DENIED, `${what}: administratively prohibited`, { cause: err });
  }
  if (err.reason === OPEN_FAILURE.CONNECT_FAILED) return new UErr(ErrorCodes.REFUSED, `${what}: connect failed`, { cause: err });
  return new UErr(ErrorCodes.UNREACHABLE, `${what}: ${err.message}`, { cause: err });
}

interface ChannelLike {
  eof(): void;
  writableFinished: boolean;
  incoming: { state: string };
  listeners(event: string): ((...args: unknown[]) => void)[];
  removeListener(event: string, fn: (...args: unknown[]) => void): unknown;
  on(event: string, fn: () => void): unknown;
  emit(event: string, ...args: unknown[]): boolean;
}

/**
 * Make an ssh2 channel behave as a relay needs:
 * - Server-side channels: ssh2 sends CHANNEL_CLOSE right after EOF, turning a
 *   half-close into a full close (the peer could no longer send). Send EOF only;
 *   the relay closes the channel once both directions ended.
 * - Any channel: when the peer sends CHANNEL_CLOSE while we still had bytes to
 *   deliver (our side not finished), those bytes are lost — report it as an
 *   error. ssh2 emits nothing at that moment, and its 'close' waits for the
 *   readable side to drain, which a paused relay never does.
 */
export function adoptChannel<T extends object>(channel: T, opts: { server: boolean }): T {
  const ch = channel as unknown as ChannelLike;
  if (opts.server) {
    for (const ev of ['finish', 'prefinish']) {
      for (const fn of ch.listeners(ev)) if (fn.name === 'onFinish') ch.removeListener(ev, fn);
    }
    ch.on('finish', () => ch.eof());
  }
  let state = ch.incoming.state;
  Object.defineProperty(ch.incoming, 'state', {
    configurable: true,
    enumerable: true,
    get: () => state,
    set: (v: string) => {
      state = v;
      if (v === 'closed' && !ch.writableFinished) {
        process.nextTick(() => ch.emit('error', new UErr(ErrorCodes.ABORTED, 'peer closed the channel before our side ended')));
      }
    },
  });
  return channel;
}
