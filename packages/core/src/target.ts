import { type AddressInfo, isIP } from 'node:net';
import { ErrorCodes, UgateError } from './errors.js';

/** A destination: host is a lower-case FQDN or a bare IP literal (no brackets). */
export interface Target {
  readonly host: string;
  readonly port: number;
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

export function isValidHost(host: string): boolean {
  if (isIP(host)) return true;
  if (host.length === 0 || host.length > 253) return false;
  const h = host.endsWith('.') ? host.slice(0, -1) : host;
  return h.split('.').every((l) => LABEL.test(l));
}

export function makeTarget(host: string, port: number): Target {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.') && !isIP(h)) h = h.slice(0, -1);
  if (!isValidHost(h)) throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid host ${JSON.stringify(host)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid port ${port}`);
  }
  return { host: h, port };
}

/**
 * Recently parsed `host:port` texts (the same authorities arrive over and over at a gateway),
 * frozen so that sharing them is safe. Cleared when full: a bound, not an LRU.
 */
const parsed = new Map<string, Target>();
const PARSED_MAX = 1024;

/** Parse `host:port`, `[v6]:port`. Throws BAD_REQUEST. */
export function parseTarget(text: string, defaultPort?: number): Target {
  if (defaultPort !== undefined) return parseTargetText(text, defaultPort);
  const hit = parsed.get(text);
  if (hit) return hit;
  const t = Object.freeze(parseTargetText(text));
  if (parsed.size >= PARSED_MAX) parsed.clear();
  parsed.set(text, t);
  return t;
}

function parseTargetText(text: string, defaultPort?: number): Target {
  const s = text.trim();
  let host: string;
  let port: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid address ${JSON.stringify(text)}`);
    host = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest.length > 0) {
      if (!rest.startsWith(':')) throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid address ${JSON.stringify(text)}`);
      port = rest.slice(1);
    }
  } else {
    const i = s.lastIndexOf(':');
    if (i >= 0 && s.indexOf(':') === i) {
      host = s.slice(0, i);
      port = s.slice(i + 1);
    } else if (i >= 0 && isIP(s) === 6) {
      host = s;
    } else if (i >= 0) {
      throw new UgateError(ErrorCodes.BAD_REQUEST, `IPv6 address needs brackets: ${JSON.stringify(text)}`);
    } else {
      host = s;
    }
  }
  if (port === undefined) {
    if (defaultPort === undefined) throw new UgateError(ErrorCodes.BAD_REQUEST, `missing port in ${JSON.stringify(text)}`);
    return makeTarget(host, defaultPort);
  }
  if (!/^\d{1,5}$/.test(port)) throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid port in ${JSON.stringify(text)}`);
  return makeTarget(host, Number(port));
}

export function formatTarget(t: Target): string {
  // Only an IPv6 literal has a colon in a valid host.
  return t.host.includes(':') && isIP(t.host) === 6 ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/** Parse a bind address `host:port` where port 0 means "any free port". */
export function parseListen(text: string): Target {
  try {
    const m = /^(.*):0$/.exec(text.trim());
    if (m) return { ...parseTarget(`${m[1]}:1`), port: 0 };
    return parseTarget(text);
  } catch (e) {
    throw new UgateError(ErrorCodes.CONFIG, `listen address must be host:port or [v6]:port, got ${JSON.stringify(text)}`, { cause: e });
  }
}

/** A bound server's address as `host:port` strings (empty when not listening). */
export function boundAddresses(a: AddressInfo | string | null): string[] {
  return a && typeof a === 'object' ? [formatTarget({ host: a.address, port: a.port })] : [];
}
