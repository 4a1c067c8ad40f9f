import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  boundAddresses,
  Cancel,
  closeGracefully,
  type ErrorCode,
  ErrorCodes,
  isUgateError,
  type Listener,
  type Logger,
  newSid,
  type Opened,
  Park,
  type PeerIdentity,
  parseListen,
  parseTarget,
  type StreamRequest,
  type Switch,
  type Target,
  toUgateError,
  UgateError,
} from '@ugate/core';
import {
  type AbsoluteUri,
  type BasicCredentials,
  buildErrorResponse,
  CONNECT_ESTABLISHED,
  errorBody,
  errorHeaders,
  forwardRequestHeaders,
  PROXY_AUTHENTICATE,
  parseAbsoluteUri,
  parseBasicAuth,
  statusFor,
  stripHopByHop,
} from './codec.js';
import { pipePair } from './pair.js';

const noop = (): void => {};

export interface HttpProxyInit {
  /** `host:port` to bind; port 0 picks a free one. */
  listen: string;
  /** User name → password. When set, `Proxy-Authorization: Basic` is required. */
  users?: Record<string, string>;
  /** Request headers must arrive within this. Default 10 s. */
  handshakeTimeoutMs?: number;
}

export interface HttpProxyComponents {
  switch: Switch;
  logger: Logger;
}

const CONNECT = 'http-connect';
const FORWARD = 'http-forward';
/** For errors before the request line tells which of the two it is. */
const HTTP = 'http';

/** Methods node:http sends chunked when no length is given; a bodiless one gets Content-Length: 0 instead. */
const BODILESS_BY_DEFAULT = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

/** HTTP/1.1 forward proxy listener: CONNECT tunnels and absolute-URI (`http://`) requests. */
export function httpProxy(init: HttpProxyInit): (components: HttpProxyComponents) => Listener {
  const address = parseListen(init.listen);
  const users = init.users === undefined ? undefined : new Map(Object.entries(init.users));
  for (const name of users?.keys() ?? []) {
    // RFC 7617: the user id cannot contain a colon.
    if (name === '' || name.includes(':'))
      throw new UgateError(ErrorCodes.CONFIG, `http proxy user ${JSON.stringify(name)}: must be non-empty without ':'`);
  }
  const timeoutMs = init.handshakeTimeoutMs ?? 10_000;
  if (!(timeoutMs > 0)) throw new UgateError(ErrorCodes.CONFIG, 'http proxy handshakeTimeoutMs must be > 0');
  return (components) => new HttpProxyListener(address, { users, timeoutMs, sw: components.switch, log: components.logger });
}

interface Context {
  readonly users: ReadonlyMap<string, string> | undefined;
  readonly timeoutMs: number;
  readonly sw: Switch;
  readonly log: Logger;
}

interface Source {
  readonly address: string;
  readonly port: number;
}

function sourceOf(s: Duplex): Source {
  return s instanceof Socket ? { address: s.remoteAddress ?? '', port: s.remotePort ?? 0 } : { address: '', port: 0 };
}

const srcText = (s: Source) => `${s.address}:${s.port}`;

class HttpProxyListener implements Listener {
  readonly name = 'http-proxy';
  readonly #address: Target;
  readonly #ctx: Context;
  readonly #server: Server;

  constructor(address: Target, ctx: Context) {
    this.#address = address;
    this.#ctx = ctx;
    this.#server = createServer({
      headersTimeout: ctx.timeoutMs,
      // 0, not the handshake timeout: it would cap the whole body, and an upload may
      // stream for as long as it takes. Stalls are the relay's idle timeout's business.
      requestTimeout: 0,
      // How often node checks headersTimeout; its 30 s default would stretch a 10 s timeout to 40 s.
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(ctx.timeoutMs / 4))),
      noDelay: true,
    });
    this.#server.on('request', (req, res) => void this.#forward(req, res, false));
    // Handled here so that 100 Continue is sent only once the mesh stream is open:
    // a client refused with 407/403/502 then never starts its upload.
    this.#server.on('checkContinue', (req, res) => void this.#forward(req, res, true));
    this.#server.on('connect', (req, socket, head) => this.#connect(req, socket, head));
    this.#server.on('clientError', (err, socket) => this.#clientError(err, socket));
    this.#server.on('error', (e) => {
      if (this.#server.listening)
        this.#ctx.log.error({ code: ErrorCodes.INTERNAL, proto: HTTP, err: e.message }, 'http proxy listener error');
    });
  }

  listen(): Promise<void> {
    const { host, port } = this.#address;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) =>
        reject(new UgateError(ErrorCodes.CONFIG, `http proxy cannot listen on ${host}:${port}: ${e.message}`, { cause: e }));
      this.#server.once('error', onError);
      this.#server.listen({ host, port }, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    if (!this.#server.listening) return Promise.resolve();
    // Stops accepting and drops idle keep-alive connections; CONNECT tunnels and
    // requests in flight go on. The close callback would wait for all of them.
    this.#server.close();
    return new Promise((resolve) => setImmediate(resolve));
  }

  addresses(): string[] {
    return boundAddresses(this.#server.address());
  }

  /** The peer for this request, or undefined when it must get a 407 (logged here). */
  #authenticate(req: IncomingMessage, proto: string, src: Source): PeerIdentity | undefined {
    const users = this.#ctx.users;
    if (users === undefined) return { kind: 'local', principals: [] };
    const header = req.headers['proxy-authorization'];
    const creds = parseBasicAuth(header);
    if (creds === undefined) {
      // Clients commonly try without credentials first: only a malformed header is worth a warning.
      if (header !== undefined) this.#ctx.log.warn({ code: ErrorCodes.AUTH, src: srcText(src), proto }, 'unsupported Proxy-Authorization');
      return undefined;
    }
    if (!passwordMatches(users, creds)) {
      this.#ctx.log.warn({ code: ErrorCodes.AUTH, src: srcText(src), proto, user: creds.username }, 'bad user name or password');
      return undefined;
    }
    return { kind: 'password', principals: [creds.username] };
  }

  #connect(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!(socket instanceof Socket)) {
      socket.destroy();
      return;
    }
    // node:http removed its own listeners when it handed the socket over.
    socket.on('error', noop);
    const source = sourceOf(socket);
    try {
      const peer = this.#authenticate(req, CONNECT, source);
      if (!peer) {
        closeGracefully(socket, buildErrorResponse(407, ErrorCodes.AUTH, { 'Proxy-Authenticate': PROXY_AUTHENTICATE }));
        return;
      }
      let target: Target;
      try {
        target = parseTarget(req.url ?? '');
      } catch (e) {
        const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
        this.#ctx.log.warn({ code: err.code, src: srcText(source), proto: CONNECT }, err.message);
        closeGracefully(socket, buildErrorResponse(400, err.code));
        return;
      }
      const cancel = new Cancel();
      const park = new Park(socket, head, () => cancel.abort());
      const sreq: StreamRequest = { sid: newSid(), target, protocol: CONNECT, source, peer, signal: cancel };
      const sw = this.#ctx.sw;
      sw.open(sreq).then(
        (opened) => {
          try {
            park.release();
            if (!socket.destroyed) socket.write(CONNECT_ESTABLISHED);
            // Even for a client that is already gone: serve() aborts the upstream and writes the access line.
            void sw.serve(sreq, socket, opened);
          } catch (e) {
            socket.destroy();
            opened.stream.destroy();
            this.#ctx.log.error({ code: ErrorCodes.INTERNAL, sid: sreq.sid, proto: CONNECT, err: String(e) }, 'CONNECT hand-over failed');
          }
        },
        (e: unknown) => {
          // Switch.open already wrote the access line for this failure.
          park.release();
          const code = isUgateError(e) ? e.code : ErrorCodes.INTERNAL;
          closeGracefully(socket, buildErrorResponse(statusFor(code), code));
        },
      );
    } catch (e) {
      socket.destroy();
      this.#ctx.log.error({ code: ErrorCodes.INTERNAL, src: srcText(source), proto: CONNECT, err: String(e) }, 'CONNECT failed');
    }
  }

  async #forward(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    const source = sourceOf(req.socket);
    try {
      const peer = this.#authenticate(req, FORWARD, source);
      if (!peer) return respondError(res, 407, ErrorCodes.AUTH, { 'Proxy-Authenticate': PROXY_AUTHENTICATE });
      let uri: AbsoluteUri;
      let target: Target;
      try {
        uri = parseAbsoluteUri(req.url ?? '');
        target = parseTarget(uri.authority, 80);
      } catch (e) {
        const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
        this.#ctx.log.warn({ code: err.code, src: srcText(source), proto: FORWARD }, err.message);
        return respondError(res, 400, err.code);
      }
      const cancel = new Cancel();
      const gone = () => cancel.abort();
      res.once('close', gone);
      const sreq: StreamRequest = { sid: newSid(), target, protocol: FORWARD, source, peer, signal: cancel };
      let opened: Opened;
      try {
        opened = await this.#ctx.sw.open(sreq);
      } catch (e) {
        // Switch.open already wrote the access line for this failure.
        const code = isUgateError(e) ? e.code : ErrorCodes.INTERNAL;
        return respondError(res, statusFor(code), code);
      } finally {
        res.off('close', gone);
      }
      this.#exchange(req, res, sreq, opened, uri, expectContinue);
    } catch (e) {
      this.#ctx.log.error({ code: ErrorCodes.INTERNAL, src: srcText(source), proto: FORWARD, err: String(e) }, 'forward request failed');
      res.destroy();
    }
  }

  /**
   * One request/response over an opened stream. node:http speaks to the stream
   * through an in-memory pipe whose other end goes to `Switch.serve`, so the
   * exchange is counted, can be drained, and gets exactly one access line.
   */
  #exchange(
    req: IncomingMessage,
    res: ServerResponse,
    sreq: StreamRequest,
    opened: Opened,
    uri: AbsoluteUri,
    expectContinue: boolean,
  ): void {
    const [near, far] = pipePair();
    void this.#ctx.sw.serve(sreq, far, opened);
    if (res.destroyed) {
      near.destroy(new UgateError(ErrorCodes.ABORTED, 'client went away'));
      return;
    }
    const method = req.method ?? 'GET';
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const headers = forwardRequestHeaders(req.rawHeaders, uri.authority, chunked);
    if (!chunked && req.headers['content-length'] === undefined && !BODILESS_BY_DEFAULT.has(method)) headers.push('Content-Length', '0');
    // No `agent`: with `agent: false` node ignores createConnection and dials host:port itself.
    const upstream = httpRequest({ createConnection: () => near, method, path: uri.path, headers });
    let answered = false;
    upstream.on('response', (ures) => {
      try {
        res.writeHead(ures.statusCode ?? 502, ures.statusMessage, stripHopByHop(ures.rawHeaders));
      } catch (e) {
        // A status line or header node refuses to repeat.
        answered = true;
        respondError(res, 502, ErrorCodes.ABORTED);
        upstream.destroy(toUgateError(e, ErrorCodes.ABORTED));
        return;
      }
      ures.pipe(res);
      ures.on('close', () => {
        if (!ures.complete) res.destroy();
      });
    });
    upstream.on('error', (e) => {
      if (answered) return;
      const err = toUgateError(e, ErrorCodes.ABORTED);
      respondError(res, statusFor(err.code), err.code);
    });
    res.on('close', () => {
      // The client went away before the whole response was written.
      if (!res.writableFinished) upstream.destroy();
    });
    if (expectContinue) res.writeContinue();
    req.pipe(upstream);
  }

  #clientError(err: Error & { code?: string }, socket: Duplex): void {
    socket.on('error', noop);
    if (!(socket instanceof Socket) || err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    const code: ErrorCode = timeout ? ErrorCodes.TIMEOUT : ErrorCodes.BAD_REQUEST;
    const status = timeout ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const reason = timeout ? `request headers not received within ${this.#ctx.timeoutMs} ms` : `malformed request: ${err.message}`;
    this.#ctx.log.warn({ code, src: srcText(sourceOf(socket)), proto: HTTP }, reason);
    closeGracefully(socket, buildErrorResponse(status, code));
  }
}

/** Short text/plain error with Connection: close; or cut the response if it already started. */
function respondError(res: ServerResponse, status: number, code: string, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  res.writeHead(status, errorHeaders(status, code, extra));
  res.end(errorBody(status, code));
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time with respect to the password; an unknown user costs the same. */
function passwordMatches(users: ReadonlyMap<string, string>, c: BasicCredentials): boolean {
  const want = users.get(c.username);
  const ok = timingSafeEqual(digest(want ?? ''), digest(c.password));
  return ok && want !== undefined;
}
