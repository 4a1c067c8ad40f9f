/**
 * HTTP/1.1 forward-proxy wire helpers: pure functions, no sockets. Parsing of the
 * request itself is node:http's; this is what a proxy adds on top.
 */
import { STATUS_CODES } from 'node:http';
import { type ErrorCode, ErrorCodes, UgateError } from '@ugate/core';

export const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

export const PROXY_AUTHENTICATE = 'Basic realm="ugate"';

/** Headers that describe one hop only (RFC 9110 §7.6.1, plus the de-facto Proxy-Connection). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export interface AbsoluteUri {
  /** `host`, `host:port` or `[v6]:port`, without user info: the Host header for the origin. */
  readonly authority: string;
  /** Origin-form: path and query, never empty, no fragment. */
  readonly path: string;
}

function bad(reason: string): UgateError {
  return new UgateError(ErrorCodes.BAD_REQUEST, reason);
}

/** Split an absolute-form request target (`http://host[:port]/path?q`). Throws BAD_REQUEST. */
export function parseAbsoluteUri(url: string): AbsoluteUri {
  if (url.startsWith('/') || url === '*')
    throw bad(`${JSON.stringify(url.slice(0, 100))} is not a proxy request (use an absolute URI or CONNECT)`);
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (!m) throw bad(`${JSON.stringify(url.slice(0, 100))} is not an absolute URI`);
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'https') throw bad('https absolute URIs are not supported: use CONNECT');
  if (scheme !== 'http') throw bad(`unsupported scheme ${scheme}`);
  let authority = m[2]!;
  const at = authority.lastIndexOf('@');
  if (at >= 0) authority = authority.slice(at + 1);
  if (authority === '') throw bad('absolute URI without a host');
  let path = m[3]!;
  if (path === '') path = '/';
  else if (path.startsWith('?')) path = `/${path}`;
  // node:http refuses to send such a path; say so as a bad request, not a crash.
  if (/[^\u0021-\u00ff]/.test(path)) throw bad('request target contains characters that cannot be forwarded');
  return { authority, path };
}

export interface BasicCredentials {
  readonly username: string;
  readonly password: string;
}

/** `Proxy-Authorization: Basic base64(user:pass)`; undefined when absent or not Basic. */
export function parseBasicAuth(header: string | undefined): BasicCredentials | undefined {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = text.indexOf(':');
  if (i < 0) return undefined;
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

/** HTTP status for an error from `Switch.open` (or a failed exchange). */
export function statusFor(code: ErrorCode): number {
  switch (code) {
    case ErrorCodes.POLICY_DENIED:
      return 403;
    case ErrorCodes.BAD_REQUEST:
      return 400;
    case ErrorCodes.TIMEOUT:
    case ErrorCodes.IDLE_TIMEOUT:
      return 504;
    default:
      return 502;
  }
}

/** Short text/plain body naming the code. */
export function errorBody(status: number, code: string): string {
  return `${status} ${STATUS_CODES[status] ?? 'Error'}: ${code}\n`;
}

/** Headers of an error response; the connection is closed after it. */
export function errorHeaders(status: number, code: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(errorBody(status, code))),
    Connection: 'close',
    ...extra,
  };
}

/** A complete error response as bytes, for sockets node:http no longer owns (CONNECT, client errors). */
export function buildErrorResponse(status: number, code: string, extra: Record<string, string> = {}): Buffer {
  const head = Object.entries(errorHeaders(status, code, extra))
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${head}\r\n${errorBody(status, code)}`, 'latin1');
}

/** Drop hop-by-hop headers and those named in Connection from a flat raw header list. */
export function stripHopByHop(raw: readonly string[], alsoDrop: readonly string[] = []): string[] {
  const drop = new Set([...HOP_BY_HOP, ...alsoDrop]);
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1]!.split(',')) {
      const t = token.trim().toLowerCase();
      if (t) drop.add(t);
    }
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!drop.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/**
 * Headers for the request to the origin: Host from the absolute URI (RFC 9112
 * §3.2.2), no hop-by-hop headers, no Expect (the proxy answers it itself),
 * `Transfer-Encoding: chunked` again when the client's body had no length, and
 * `Connection: close`: one request per mesh stream. (node:http without an agent
 * would otherwise ask for keep-alive on requests with a body and never end the stream.)
 */
export function forwardRequestHeaders(raw: readonly string[], authority: string, chunked: boolean): string[] {
  const out = ['Host', authority, ...stripHopByHop(raw, ['host', 'expect'])];
  if (chunked) out.push('Transfer-Encoding', 'chunked');
  out.push('Connection', 'close');
  return out;
}
