import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import {
  boundAddresses,
  Cancel,
  closeGracefully,
  type ErrorCode,
  ErrorCodes,
  isUgateError,
  type Listener,
  type Logger,
  makeTarget,
  newSid,
  Park,
  type PeerIdentity,
  parseListen,
  type StreamRequest,
  type Switch,
  type Target,
  UgateError,
} from '@ugate/core';
import {
  buildAuthStatus,
  buildMethodSelection,
  buildReply,
  type Credentials,
  parseCredentials,
  parseGreeting,
  parseRequest,
  SocksCommand,
  SocksMethod,
  SocksReply,
  type SocksRequest,
  selectMethod,
  socksReplyFor,
} from './codec.js';

const noop = (): void => {};

export interface SocksInit {
  /** `host:port` to bind; port 0 picks a free one. */
  listen: string;
  /** User name → password. When set, RFC 1929 username/password is required. */
  users?: Record<string, string>;
  /** Greeting, authentication and request must complete within this. Default 10 s. */
  handshakeTimeoutMs?: number;
}

export interface SocksComponents {
  switch: Switch;
  logger: Logger;
}

const PROTO = 'socks5';

/** SOCKS5 (RFC 1928 / RFC 1929) listener: CONNECT only. */
export function socks(init: SocksInit): (components: SocksComponents) => Listener {
  const address = parseListen(init.listen);
  const users = init.users === undefined ? undefined : new Map(Object.entries(init.users));
  for (const [name, pass] of users ?? []) {
    // RFC 1929 length fields are one byte.
    if (Buffer.byteLength(name) < 1 || Buffer.byteLength(name) > 255 || Buffer.byteLength(pass) > 255) {
      throw new UgateError(ErrorCodes.CONFIG, `socks5 user ${JSON.stringify(name)}: name must be 1-255 bytes, password at most 255`);
    }
  }
  const timeoutMs = init.handshakeTimeoutMs ?? 10_000;
  if (!(timeoutMs > 0)) throw new UgateError(ErrorCodes.CONFIG, 'socks5 handshakeTimeoutMs must be > 0');
  return (components) => new SocksListener(address, { users, timeoutMs, sw: components.switch, log: components.logger });
}

interface Context {
  readonly users: ReadonlyMap<string, string> | undefined;
  readonly timeoutMs: number;
  readonly sw: Switch;
  readonly log: Logger;
}

class SocksListener implements Listener {
  readonly name = PROTO;
  readonly #address: Target;
  readonly #ctx: Context;
  readonly #server: Server;

  constructor(address: Target, ctx: Context) {
    this.#address = address;
    this.#ctx = ctx;
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      socket.on('error', noop);
      try {
        new Handshake(socket, this.#ctx);
      } catch (e) {
        socket.destroy();
        this.#ctx.log.error({ code: ErrorCodes.INTERNAL, proto: PROTO, err: String(e) }, 'socks5 accept failed');
      }
    });
    // Errors after listen() resolved (e.g. accept failing with EMFILE) must not crash the process.
    this.#server.on('error', (e) => {
      if (this.#server.listening) this.#ctx.log.error({ code: ErrorCodes.INTERNAL, proto: PROTO, err: e.message }, 'socks5 listener error');
    });
  }

  listen(): Promise<void> {
    const { host, port } = this.#address;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) =>
        reject(new UgateError(ErrorCodes.CONFIG, `socks5 cannot listen on ${host}:${port}: ${e.message}`, { cause: e }));
      this.#server.once('error', onError);
      this.#server.listen({ host, port }, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    if (!this.#server.listening) return Promise.resolve();
    // Not waiting for the close callback: it fires only after every live stream ended.
    this.#server.close();
    return new Promise((resolve) => setImmediate(resolve));
  }

  addresses(): string[] {
    return boundAddresses(this.#server.address());
  }
}

type Phase = 'greeting' | 'auth' | 'request' | 'done';

/** One client from accept until its request is parsed (then `Park` and the switch take over). */
class Handshake {
  readonly #socket: Socket;
  readonly #ctx: Context;
  readonly #src: { address: string; port: number };
  readonly #timer: NodeJS.Timeout;
  #phase: Phase = 'greeting';
  #buf: Buffer = Buffer.alloc(0);
  #received = 0;
  #user: string | undefined;

  constructor(socket: Socket, ctx: Context) {
    this.#socket = socket;
    this.#ctx = ctx;
    this.#src = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    this.#timer = setTimeout(this.#onTimeout, ctx.timeoutMs);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onClose);
    // Already gone between accept and now: nothing to do.
    if (socket.destroyed || !socket.remoteAddress) this.#finish(() => socket.destroy());
  }

  get #srcText(): string {
    return `${this.#src.address}:${this.#src.port}`;
  }

  #onData = (chunk: Buffer): void => {
    if (this.#phase === 'done') return;
    this.#received += chunk.length;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    try {
      this.#advance();
    } catch (e) {
      this.#reject(ErrorCodes.INTERNAL, `socks5 handshake failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  #onEnd = (): void => {
    if (this.#phase === 'done') return;
    if (this.#received === 0) {
      // A connect-and-close (port scan, TCP health check) is not worth a warning.
      this.#finish(() => this.#socket.destroy());
      this.#ctx.log.debug({ src: this.#srcText, proto: PROTO }, 'client closed before sending anything');
      return;
    }
    this.#reject(ErrorCodes.BAD_REQUEST, `client closed the connection mid-handshake after ${this.#received} bytes`);
  };

  #onClose = (): void => {
    if (this.#phase === 'done') return;
    // Reset or destroyed during the handshake.
    if (this.#received > 0) this.#reject(ErrorCodes.BAD_REQUEST, `client reset the connection mid-handshake after ${this.#received} bytes`);
    else this.#finish(noop);
  };

  #onTimeout = (): void => {
    this.#reject(
      ErrorCodes.TIMEOUT,
      `handshake not completed within ${this.#ctx.timeoutMs} ms (${this.#received} bytes received)`,
      undefined,
      true,
    );
  };

  /** Leave the handshake: stop the timer and detach, exactly once. */
  #finish(then: () => void): void {
    if (this.#phase === 'done') return;
    this.#phase = 'done';
    clearTimeout(this.#timer);
    this.#socket.off('data', this.#onData);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onClose);
    then();
  }

  /** Log one warning, send `response` if the protocol has one, and close. */
  #reject(code: ErrorCode, reason: string, response?: Buffer, abrupt = false, extra: Record<string, unknown> = {}): void {
    this.#finish(() => {
      this.#ctx.log.warn({ code, src: this.#srcText, proto: PROTO, ...extra }, reason);
      if (abrupt) this.#socket.destroy();
      else closeGracefully(this.#socket, response);
    });
  }

  #advance(): void {
    for (;;) {
      switch (this.#phase) {
        case 'greeting': {
          const r = parseGreeting(this.#buf);
          if (r.kind === 'more') return;
          if (r.kind === 'invalid') return this.#reject(ErrorCodes.BAD_REQUEST, r.reason, r.response);
          this.#buf = this.#buf.subarray(r.size);
          const method = selectMethod(r.value.methods, this.#ctx.users !== undefined);
          if (method === SocksMethod.NO_ACCEPTABLE) {
            const offered = r.value.methods.map((m) => `0x${m.toString(16).padStart(2, '0')}`).join(',');
            return this.#reject(ErrorCodes.AUTH, `no acceptable authentication method (offered ${offered})`, buildMethodSelection(method));
          }
          this.#socket.write(buildMethodSelection(method));
          this.#phase = method === SocksMethod.USERNAME_PASSWORD ? 'auth' : 'request';
          break;
        }
        case 'auth': {
          const r = parseCredentials(this.#buf);
          if (r.kind === 'more') return;
          if (r.kind === 'invalid') return this.#reject(ErrorCodes.BAD_REQUEST, r.reason, r.response);
          this.#buf = this.#buf.subarray(r.size);
          const { username } = r.value;
          if (!passwordMatches(this.#ctx.users, r.value)) {
            return this.#reject(ErrorCodes.AUTH, 'bad user name or password', buildAuthStatus(false), false, { user: username });
          }
          this.#socket.write(buildAuthStatus(true));
          this.#user = username;
          this.#phase = 'request';
          break;
        }
        case 'request': {
          const r = parseRequest(this.#buf);
          if (r.kind === 'more') return;
          if (r.kind === 'invalid') return this.#reject(ErrorCodes.BAD_REQUEST, r.reason, r.response);
          return this.#request(r.value, this.#buf.subarray(r.size));
        }
        case 'done':
          return;
      }
    }
  }

  #request(r: SocksRequest, rest: Buffer): void {
    if (r.command !== SocksCommand.CONNECT) {
      const known = r.command === SocksCommand.BIND || r.command === SocksCommand.UDP_ASSOCIATE;
      const code = known ? ErrorCodes.UNSUPPORTED : ErrorCodes.BAD_REQUEST;
      return this.#reject(
        code,
        `command 0x${r.command.toString(16).padStart(2, '0')} not supported`,
        buildReply(SocksReply.COMMAND_NOT_SUPPORTED),
      );
    }
    let target: Target;
    try {
      target = makeTarget(r.host, r.port);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      return this.#reject(ErrorCodes.BAD_REQUEST, reason, buildReply(SocksReply.GENERAL_FAILURE));
    }
    this.#finish(() => openStream(this.#socket, this.#ctx, target, this.#src, this.#user, rest));
  }
}

function openStream(
  socket: Socket,
  ctx: Context,
  target: Target,
  source: { address: string; port: number },
  user: string | undefined,
  rest: Buffer,
): void {
  const cancel = new Cancel();
  const park = new Park(socket, rest, () => cancel.abort());
  const peer: PeerIdentity = user === undefined ? { kind: 'local', principals: [] } : { kind: 'password', principals: [user] };
  const req: StreamRequest = { sid: newSid(), target, protocol: PROTO, source, peer, signal: cancel };
  ctx.sw.open(req).then(
    (opened) => {
      try {
        park.release();
        if (!socket.destroyed) socket.write(buildReply(SocksReply.SUCCEEDED));
        // Even for a client that is already gone: serve() aborts the upstream and writes the access line.
        void ctx.sw.serve(req, socket, opened);
      } catch (e) {
        socket.destroy();
        opened.stream.destroy();
        ctx.log.error({ code: ErrorCodes.INTERNAL, sid: req.sid, proto: PROTO, err: String(e) }, 'socks5 hand-over failed');
      }
    },
    (e: unknown) => {
      // Switch.open already wrote the access line for this failure.
      park.release();
      const code = isUgateError(e) ? e.code : ErrorCodes.INTERNAL;
      closeGracefully(socket, buildReply(socksReplyFor(code)));
    },
  );
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time with respect to the password; an unknown user costs the same. */
function passwordMatches(users: ReadonlyMap<string, string> | undefined, c: Credentials): boolean {
  const want = users?.get(c.username);
  const ok = timingSafeEqual(digest(want ?? ''), digest(c.password));
  return ok && want !== undefined;
}
