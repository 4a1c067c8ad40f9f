/**
 * SOCKS5 wire codec (RFC 1928, RFC 1929): pure parse/build functions, no sockets.
 *
 * Parsers take everything buffered so far and answer `more` (wait for bytes),
 * `done` (value plus how many bytes it used) or `invalid` (reason plus the bytes
 * to send before closing, when the protocol has an error reply for that step).
 */
import { type ErrorCode, ErrorCodes } from '@ugate/core';

export const SOCKS_VERSION = 0x05;
/** RFC 1929 sub-negotiation version. */
export const AUTH_VERSION = 0x01;

export const SocksMethod = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;

export const SocksCommand = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;

export const SocksAddressType = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

export const SocksReply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export type Parsed<T> =
  | { readonly kind: 'done'; readonly value: T; readonly size: number }
  | { readonly kind: 'more' }
  | { readonly kind: 'invalid'; readonly reason: string; readonly response?: Buffer };

export interface Greeting {
  readonly methods: readonly number[];
}

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export interface SocksRequest {
  readonly command: number;
  readonly addressType: number;
  /** Dotted IPv4, compressed IPv6 (RFC 5952) or the domain name as sent. */
  readonly host: string;
  readonly port: number;
}

const MORE = { kind: 'more' } as const;

const hex = (n: number) => `0x${n.toString(16).padStart(2, '0')}`;

/** Client greeting: VER NMETHODS METHODS… */
export function parseGreeting(buf: Uint8Array): Parsed<Greeting> {
  if (buf.length < 1) return MORE;
  // No reply: a client that is not speaking SOCKS5 would misread one.
  if (buf[0] !== SOCKS_VERSION) return { kind: 'invalid', reason: `unsupported SOCKS version ${hex(buf[0]!)}` };
  if (buf.length < 2) return MORE;
  const n = buf[1]!;
  if (n === 0) return { kind: 'invalid', reason: 'greeting offers no methods', response: buildMethodSelection(SocksMethod.NO_ACCEPTABLE) };
  if (buf.length < 2 + n) return MORE;
  return { kind: 'done', value: { methods: [...buf.subarray(2, 2 + n)] }, size: 2 + n };
}

/** The method the server picks: username/password when users are configured, else no-auth. */
export function selectMethod(offered: readonly number[], passwordRequired: boolean): number {
  const want = passwordRequired ? SocksMethod.USERNAME_PASSWORD : SocksMethod.NO_AUTH;
  return offered.includes(want) ? want : SocksMethod.NO_ACCEPTABLE;
}

export function buildMethodSelection(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** RFC 1929 request: VER ULEN UNAME PLEN PASSWD. An empty password is accepted (some clients send one). */
export function parseCredentials(buf: Uint8Array): Parsed<Credentials> {
  const fail = (reason: string) => ({ kind: 'invalid', reason, response: buildAuthStatus(false) }) as const;
  if (buf.length < 1) return MORE;
  if (buf[0] !== AUTH_VERSION) return fail(`unsupported username/password version ${hex(buf[0]!)}`);
  if (buf.length < 2) return MORE;
  const ulen = buf[1]!;
  if (ulen === 0) return fail('empty user name');
  if (buf.length < 2 + ulen + 1) return MORE;
  const plen = buf[2 + ulen]!;
  const size = 3 + ulen + plen;
  if (buf.length < size) return MORE;
  const text = (from: number, to: number) => Buffer.from(buf.subarray(from, to)).toString('utf8');
  return { kind: 'done', value: { username: text(2, 2 + ulen), password: text(3 + ulen, size) }, size };
}

export function buildAuthStatus(ok: boolean): Buffer {
  return Buffer.from([AUTH_VERSION, ok ? 0x00 : 0x01]);
}

/** Request: VER CMD RSV ATYP DST.ADDR DST.PORT. The command is not judged here. */
export function parseRequest(buf: Uint8Array): Parsed<SocksRequest> {
  if (buf.length < 1) return MORE;
  if (buf[0] !== SOCKS_VERSION) {
    return {
      kind: 'invalid',
      reason: `unsupported SOCKS version ${hex(buf[0]!)} in request`,
      response: buildReply(SocksReply.GENERAL_FAILURE),
    };
  }
  if (buf.length < 4) return MORE;
  const command = buf[1]!;
  // RSV (buf[2]) is ignored: be liberal in what we accept.
  const addressType = buf[3]!;
  let host: string;
  let at: number;
  switch (addressType) {
    case SocksAddressType.IPV4:
      if (buf.length < 4 + 4 + 2) return MORE;
      host = [...buf.subarray(4, 8)].join('.');
      at = 8;
      break;
    case SocksAddressType.IPV6:
      if (buf.length < 4 + 16 + 2) return MORE;
      host = formatIpv6(buf.subarray(4, 20));
      at = 20;
      break;
    case SocksAddressType.DOMAIN: {
      if (buf.length < 5) return MORE;
      const len = buf[4]!;
      if (len === 0) return { kind: 'invalid', reason: 'empty domain name', response: buildReply(SocksReply.GENERAL_FAILURE) };
      if (buf.length < 5 + len + 2) return MORE;
      // latin1 keeps every byte visible; the target validator rejects anything that is not a host name.
      host = Buffer.from(buf.subarray(5, 5 + len)).toString('latin1');
      at = 5 + len;
      break;
    }
    default:
      return {
        kind: 'invalid',
        reason: `unsupported address type ${hex(addressType)}`,
        response: buildReply(SocksReply.ADDRESS_TYPE_NOT_SUPPORTED),
      };
  }
  const port = (buf[at]! << 8) | buf[at + 1]!;
  return { kind: 'done', value: { command, addressType, host, port }, size: at + 2 };
}

/** Reply with BND.ADDR 0.0.0.0:0: the bound address of a mesh stream means nothing to the client. */
export function buildReply(reply: number): Buffer {
  return Buffer.from([SOCKS_VERSION, reply, 0x00, SocksAddressType.IPV4, 0, 0, 0, 0, 0, 0]);
}

/** RFC 5952 text form of a 16-byte IPv6 address. */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // Longest run of two or more zero groups, first one on ties.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = (g: number[]) => g.map((n) => n.toString(16)).join(':');
  if (best < 0) return text(groups);
  return `${text(groups.slice(0, best))}::${text(groups.slice(best + bestLen))}`;
}

/** SOCKS5 reply code for an error from `Switch.open`. */
export function socksReplyFor(code: ErrorCode): number {
  switch (code) {
    case ErrorCodes.POLICY_DENIED:
      return SocksReply.NOT_ALLOWED;
    case ErrorCodes.NO_ROUTE:
    case ErrorCodes.UNREACHABLE:
    // RFC 1928 has no timeout code; a destination that does not answer is "host unreachable".
    case ErrorCodes.TIMEOUT:
      return SocksReply.HOST_UNREACHABLE;
    case ErrorCodes.REFUSED:
      return SocksReply.CONNECTION_REFUSED;
    default:
      return SocksReply.GENERAL_FAILURE;
  }
}
