import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import {
  ErrorCodes,
  type Logger,
  newSid,
  type PeerIdentity,
  parseTarget,
  type StreamRequest,
  type Switch,
  toUgateError,
  type UgateError,
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
      stream.once('close', () => ac.abort());
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
        if (stream.destroyed) return;
        stream.respond({ ':status': 200 });
        closeWhenReset(stream);
        void c.switch.serve(req, stream, opened);
      },
      (err: UgateError) => replyError(stream, hboneStatusFor(err), err),
    );
  };
}
