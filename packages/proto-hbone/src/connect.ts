import { AsyncResource } from 'node:async_hooks';
import type { ClientHttp2Session, ClientHttp2Stream, Http2Session, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import {
  Cancel,
  codeFromText,
  ErrorCodes,
  type Logger,
  newSid,
  type PeerIdentity,
  parseTarget,
  type StreamRequest,
  Sweep,
  type Swept,
  type Switch,
  toUgateError,
  UgateError,
} from '@ugate/core';
import { closeWhenReset } from './keepalive.js';
import { bufferWrites } from './settings.js';

/** HBONE status for a failed open, as ztunnel answers. */
export function hboneStatusFor(err: UgateError): number {
  switch (err.code) {
    case ErrorCodes.BAD_REQUEST:
      return 400;
    case ErrorCodes.POLICY_DENIED:
    case ErrorCodes.AUTH:
      return 401;
    default:
      return 503;
  }
}

/** Answer a stream with an error status (and the ugate code, for ugate peers) and end it. */
export function replyError(stream: ServerHttp2Stream, status: number, err?: UgateError): void {
  stream.on('error', () => {});
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ':status': status, ...(err ? { 'x-ugate-error': err.code } : {}) }, { endStream: true });
}

/** Headers ztunnel sends that ugate keeps as stream labels. */
const KEPT_HEADERS = ['baggage', 'forwarded', 'traceparent', 'x-forwarded-network'] as const;

function keptLabels(headers: IncomingHttpHeaders): Record<string, string> | undefined {
  let labels: Record<string, string> | undefined;
  for (const h of KEPT_HEADERS) {
    const v = headers[h];
    if (typeof v !== 'string') continue;
    labels ??= {};
    labels[h] = v;
  }
  return labels;
}

const noop = () => {};

/** The dial's Cancel while a stream waits for it: the stream closing (the client went away) aborts the dial. */
const kCancel = Symbol('ugate.hbone.cancel');
type Waiting = ServerHttp2Stream & { [kCancel]?: Cancel };

function cancelOnClose(this: Waiting): void {
  this[kCancel]?.abort();
}

/** The address a session's streams come from, read once per session (node's session socket is a Proxy). */
const sources = new WeakMap<Http2Session, { address: string; port: number }>();
const NO_SOURCE = Object.freeze({ address: '', port: 0 });

function sourceOf(stream: ServerHttp2Stream): { address: string; port: number } {
  const session = stream.session;
  if (!session) return NO_SOURCE;
  let src = sources.get(session);
  if (!src) {
    const sock = session.socket;
    src = Object.freeze({ address: sock?.remoteAddress ?? '', port: sock?.remotePort ?? 0 });
    sources.set(session, src);
  }
  return src;
}

/**
 * Serves HBONE CONNECT streams of any HTTP/2 server session — the listener's,
 * or a reversed one (H2R) — into the switch: 400 / 401 / 503 / 200 + relay.
 */
export function connectHandler(c: { switch: Switch; logger: Logger; protocol: string; peerOf: (s: ServerHttp2Stream) => PeerIdentity }) {
  return (stream: Waiting, headers: IncomingHttpHeaders): void => {
    if (stream.listenerCount('error') === 0) stream.on('error', noop);
    const src = sourceOf(stream);
    let req: StreamRequest;
    try {
      if (headers[':method'] !== 'CONNECT') throw new Error(`method ${String(headers[':method'])} is not CONNECT`);
      if (headers[':path'] !== undefined || headers[':scheme'] !== undefined) throw new Error('extended CONNECT is not HBONE');
      const authority = headers[':authority'];
      if (typeof authority !== 'string') throw new Error('missing :authority');
      const cancel = new Cancel();
      stream[kCancel] = cancel;
      stream.on('close', cancelOnClose);
      req = {
        sid: newSid(),
        target: parseTarget(authority),
        protocol: c.protocol,
        source: src,
        peer: c.peerOf(stream),
        labels: keptLabels(headers),
        signal: cancel,
      };
    } catch (e) {
      const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
      c.logger.warn({ code: ErrorCodes.BAD_REQUEST, src: `${src.address}:${src.port}`, err: err.message }, 'hbone bad request');
      return replyError(stream, 400, err);
    }
    c.switch.open(req).then(
      (opened) => {
        // Open: the stream's close no longer has a dial to cancel (nor a DOMException to build).
        stream[kCancel] = undefined;
        if (stream.destroyed) return;
        stream.respond(OK);
        closeWhenReset(stream);
        void c.switch.serve(req, stream, opened);
      },
      (err: UgateError) => replyError(stream, hboneStatusFor(err), err),
    );
  };
}

const OK = Object.freeze({ ':status': 200 });

/**
 * Request options with every priority field filled in, at node's defaults (weight 16, no
 * parent, not exclusive): node copies the options and adds the missing fields one by one
 * on every request, which cost ~25 µs a stream in the opens benchmark. Same frames on the wire.
 */
const REQUEST_OPTIONS = { endStream: false, weight: 16, parent: 0, exclusive: false, silent: false };

/**
 * `AsyncResource#bind` as node has it, minus the deprecated (DEP0172) `asyncResource`
 * accessors it defines on each bound function with two `deprecate()` wrappers. node 20's
 * `ClientHttp2Session#request()` binds one function per request that way, ~15% of the
 * client's CPU per stream (docs/BENCHMARKS-hbone.md). The bound function is used by
 * node alone, never handed out.
 */
type AnyFn = (this: unknown, ...args: unknown[]) => unknown;
function bindWithoutAccessors(this: AsyncResource, fn: AnyFn, thisArg?: unknown): AnyFn {
  if (thisArg !== undefined) return this.runInAsyncScope.bind(this, fn, thisArg) as AnyFn;
  const resource = this;
  return function (this: unknown, ...args: unknown[]) {
    return resource.runInAsyncScope(fn, this, ...args);
  };
}

/** `session.request()` with the cheaper bind in place for the duration of the (synchronous) call. */
function submit(session: ClientHttp2Session, headers: Record<string, string>): ClientHttp2Stream {
  const proto = AsyncResource.prototype as { bind: unknown };
  const bind = proto.bind;
  proto.bind = bindWithoutAccessors;
  try {
    return session.request(headers, REQUEST_OPTIONS);
  } finally {
    proto.bind = bind;
  }
}

/** HBONE status → error code (the inverse of what a server answers). */
function codeForStatus(status: number): UgateError['code'] {
  if (status === 400) return ErrorCodes.BAD_REQUEST;
  if (status === 401 || status === 403) return ErrorCodes.POLICY_DENIED;
  if (status === 504) return ErrorCodes.TIMEOUT;
  return ErrorCodes.UNREACHABLE;
}

/** A request waiting for its answer: the stream's listeners are the shared functions below (`this` is the stream). */
interface Opening extends Swept<Opening> {
  readonly stream: OpeningStream;
  readonly headers: Record<string, string>;
  readonly what: string;
  readonly deadline: number;
  readonly onClose: (() => void) | undefined;
  readonly resolve: (s: ClientHttp2Stream) => void;
  readonly reject: (e: UgateError) => void;
  settled: boolean;
}
const kOpening = Symbol('ugate.hbone.opening');
type OpeningStream = ClientHttp2Stream & { [kOpening]?: Opening };

/** Requests waiting for an answer, with one timer for all (see `Sweep`). */
const answering = new Sweep<Opening>(checkAnswered);

function checkAnswered(o: Opening, now: number): void {
  if (now < o.deadline) return;
  failOpen(o, new UgateError(ErrorCodes.TIMEOUT, `${labelOf(o)} timed out`));
  o.stream.close();
}

/** Built only for errors: the usual open costs no strings. */
function labelOf(o: Opening): string {
  return `hbone ${o.headers[':method']} ${o.what}`;
}

/** The request is answered or has failed: from now on only its close matters. */
function settle(o: Opening): void {
  o.settled = true;
  answering.delete(o);
  o.stream.off('response', onAnswer);
}

function failOpen(o: Opening, err: UgateError): void {
  if (o.settled) return;
  settle(o);
  o.reject(err);
}

function onAnswer(this: OpeningStream, h: IncomingHttpHeaders): void {
  const o = this[kOpening];
  if (!o || o.settled) return;
  settle(o);
  const status = Number(h[':status']);
  if (status === 200) {
    closeWhenReset(this);
    bufferWrites(this);
    return o.resolve(this);
  }
  this.close();
  // A ugate peer names the far end's error code; any other peer gets the status mapping.
  const code = codeFromText(String(h['x-ugate-error'] ?? '')) ?? codeForStatus(status);
  o.reject(new UgateError(code, `${labelOf(o)}: status ${status}`));
}

/** Errors before the answer fail the open; later ones belong to whoever reads the stream (and are not thrown). */
function onOpenError(this: OpeningStream, e: Error): void {
  const o = this[kOpening];
  if (o) failOpen(o, new UgateError(ErrorCodes.UNREACHABLE, `${labelOf(o)}: ${e.message}`, { cause: e }));
}

function onOpenClose(this: OpeningStream): void {
  const o = this[kOpening];
  if (!o) return;
  this[kOpening] = undefined;
  o.onClose?.();
  // Settled already (the usual case): no error object (and stack trace) per stream.
  if (!o.settled) failOpen(o, new UgateError(ErrorCodes.UNREACHABLE, `${labelOf(o)}: stream reset (${this.rstCode})`));
}

/**
 * Send a request (CONNECT, or POST for POST mode / H2R) on a client session;
 * resolve with the stream once answered 200, else reject with the mapped code.
 * `onClose` runs once when the stream closes, whatever happened.
 */
export function openStream(
  session: ClientHttp2Session,
  headers: Record<string, string>,
  what: string,
  timeoutMs: number,
  onClose?: () => void,
): Promise<ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    let stream: OpeningStream;
    try {
      stream = submit(session, headers);
    } catch (e) {
      onClose?.();
      return reject(new UgateError(ErrorCodes.UNREACHABLE, `hbone ${headers[':method']} ${what}: ${(e as Error).message}`, { cause: e }));
    }
    const o: Opening = {
      stream,
      headers,
      what,
      deadline: Date.now() + timeoutMs,
      onClose,
      resolve,
      reject,
      settled: false,
      sweepPrev: undefined,
      sweepNext: undefined,
      inSweep: false,
    };
    stream[kOpening] = o;
    stream.on('response', onAnswer);
    stream.on('error', onOpenError);
    stream.on('close', onOpenClose);
    answering.add(o, Math.max(10, Math.floor(timeoutMs / 4)));
  });
}
