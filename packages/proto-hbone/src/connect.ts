import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import {
  codeFromText,
  ErrorCodes,
  type Logger,
  newSid,
  type PeerIdentity,
  parseTarget,
  type StreamRequest,
  type Switch,
  toUgateError,
  UgateError,
} from '@ugate/core';
import { closeWhenReset } from './keepalive.js';

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

/**
 * Serves HBONE CONNECT streams of any HTTP/2 server session — the listener's,
 * or a reversed one (H2R) — into the switch: 400 / 401 / 503 / 200 + relay.
 */
export function connectHandler(c: { switch: Switch; logger: Logger; protocol: string; peerOf: (s: ServerHttp2Stream) => PeerIdentity }) {
  return (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    stream.on('error', () => {});
    const sock = stream.session?.socket;
    const src = { address: sock?.remoteAddress ?? '', port: sock?.remotePort ?? 0 };
    let req: StreamRequest;
    // Aborts the dial when the client goes away meanwhile; not needed (nor its DOMException) once open.
    let onClose: (() => void) | undefined;
    try {
      if (headers[':method'] !== 'CONNECT') throw new Error(`method ${String(headers[':method'])} is not CONNECT`);
      if (headers[':path'] !== undefined || headers[':scheme'] !== undefined) throw new Error('extended CONNECT is not HBONE');
      const authority = headers[':authority'];
      if (typeof authority !== 'string') throw new Error('missing :authority');
      const labels: Record<string, string> = {};
      for (const h of KEPT_HEADERS) {
        const v = headers[h];
        if (typeof v === 'string') labels[h] = v;
      }
      const ac = new AbortController();
      onClose = () => ac.abort();
      stream.once('close', onClose);
      req = {
        sid: newSid(),
        target: parseTarget(authority),
        protocol: c.protocol,
        source: src,
        peer: c.peerOf(stream),
        labels,
        signal: ac.signal,
      };
    } catch (e) {
      const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
      c.logger.warn({ code: ErrorCodes.BAD_REQUEST, src: `${src.address}:${src.port}`, err: err.message }, 'hbone bad request');
      return replyError(stream, 400, err);
    }
    c.switch.open(req).then(
      (opened) => {
        if (onClose) stream.off('close', onClose);
        if (stream.destroyed) return;
        stream.respond({ ':status': 200 });
        closeWhenReset(stream);
        void c.switch.serve(req, stream, opened);
      },
      (err: UgateError) => replyError(stream, hboneStatusFor(err), err),
    );
  };
}

/** HBONE status → error code (the inverse of what a server answers). */
function codeForStatus(status: number): UgateError['code'] {
  if (status === 400) return ErrorCodes.BAD_REQUEST;
  if (status === 401 || status === 403) return ErrorCodes.POLICY_DENIED;
  if (status === 504) return ErrorCodes.TIMEOUT;
  return ErrorCodes.UNREACHABLE;
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
  const label = `hbone ${headers[':method']} ${what}`;
  return new Promise((resolve, reject) => {
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch (e) {
      onClose?.();
      return reject(new UgateError(ErrorCodes.UNREACHABLE, `${label}: ${(e as Error).message}`, { cause: e }));
    }
    if (onClose) stream.once('close', onClose);
    let settled = false;
    const timer = setTimeout(() => {
      stream.close();
      reject(new UgateError(ErrorCodes.TIMEOUT, `${label} timed out`));
    }, timeoutMs);
    stream.once('response', (h) => {
      clearTimeout(timer);
      settled = true;
      const status = Number(h[':status']);
      if (status === 200) {
        closeWhenReset(stream);
        return resolve(stream);
      }
      stream.close();
      // A ugate peer names the far end's error code; any other peer gets the status mapping.
      const code = codeFromText(String(h['x-ugate-error'] ?? '')) ?? codeForStatus(status);
      reject(new UgateError(code, `${label}: status ${status}`));
    });
    stream.once('error', (e: Error) => {
      clearTimeout(timer);
      reject(new UgateError(ErrorCodes.UNREACHABLE, `${label}: ${e.message}`, { cause: e }));
    });
    stream.once('close', () => {
      clearTimeout(timer);
      // Settled already (the usual case): no error object (and stack trace) per stream.
      if (settled) return;
      reject(new UgateError(ErrorCodes.UNREACHABLE, `${label}: stream reset (${stream.rstCode})`));
    });
  });
}
