import { ErrorCodes } from '@ugate/core';
import {
  buildAuthStatus,
  buildMethodSelection,
  buildReply,
  formatIpv6,
  parseCredentials,
  parseGreeting,
  parseRequest,
  SocksReply,
  selectMethod,
  socksReplyFor,
} from '@ugate/proto-socks';
import { describe, expect, it } from 'vitest';

const b = (...bytes: number[]) => Buffer.from(bytes);

/** Every strict prefix of `full` must ask for more bytes. */
function everyPrefixNeedsMore(parse: (buf: Buffer) => { kind: string }, full: Buffer): void {
  for (let i = 0; i < full.length; i++) expect(parse(full.subarray(0, i)).kind, `prefix of ${i} bytes`).toBe('more');
}

describe('greeting', () => {
  it('parses methods and reports the size used', () => {
    expect(parseGreeting(b(5, 2, 0, 2, 0xaa))).toEqual({ kind: 'done', value: { methods: [0, 2] }, size: 4 });
    everyPrefixNeedsMore(parseGreeting, b(5, 2, 0, 2));
  });

  it('rejects another version without a reply', () => {
    expect(parseGreeting(b(4, 1, 0))).toEqual({ kind: 'invalid', reason: 'unsupported SOCKS version 0x04' });
    expect(parseGreeting(Buffer.from('GET / HTTP/1.1\r\n')).kind).toBe('invalid');
  });

  it('answers an empty method list with "no acceptable methods"', () => {
    const r = parseGreeting(b(5, 0));
    expect(r.kind).toBe('invalid');
    expect(r.kind === 'invalid' && r.response).toEqual(b(5, 0xff));
  });

  it('selects no-auth or username/password, else 0xff', () => {
    expect(selectMethod([0, 2], false)).toBe(0x00);
    expect(selectMethod([0, 2], true)).toBe(0x02);
    expect(selectMethod([2], false)).toBe(0xff);
    expect(selectMethod([0, 1], true)).toBe(0xff);
    expect(selectMethod([], false)).toBe(0xff);
    expect(buildMethodSelection(0x02)).toEqual(b(5, 2));
  });
});

describe('username/password (RFC 1929)', () => {
  const full = Buffer.concat([b(1, 5), Buffer.from('alice'), b(6), Buffer.from('s3cret'), b(9)]);

  it('parses user and password', () => {
    expect(parseCredentials(full)).toEqual({ kind: 'done', value: { username: 'alice', password: 's3cret' }, size: 14 });
    everyPrefixNeedsMore(parseCredentials, full.subarray(0, 14));
  });

  it('accepts an empty password and UTF-8 names', () => {
    const name = Buffer.from('jürgen');
    expect(parseCredentials(Buffer.concat([b(1, name.length), name, b(0)]))).toEqual({
      kind: 'done',
      value: { username: 'jürgen', password: '' },
      size: 3 + name.length,
    });
  });

  it('rejects a wrong version or an empty user with status 0x01', () => {
    for (const bad of [b(5, 1, 0x61, 1, 0x62), b(1, 0, 1, 0x62)]) {
      const r = parseCredentials(bad);
      expect(r.kind).toBe('invalid');
      expect(r.kind === 'invalid' && r.response).toEqual(b(1, 1));
    }
  });

  it('builds status replies', () => {
    expect(buildAuthStatus(true)).toEqual(b(1, 0));
    expect(buildAuthStatus(false)).toEqual(b(1, 1));
  });
});

describe('request', () => {
  it('parses IPv4', () => {
    const full = b(5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90);
    expect(parseRequest(Buffer.concat([full, b(0xee)]))).toEqual({
      kind: 'done',
      value: { command: 1, addressType: 1, host: '127.0.0.1', port: 8080 },
      size: 10,
    });
    everyPrefixNeedsMore(parseRequest, full);
  });

  it('parses IPv6 into its RFC 5952 form', () => {
    const addr = Buffer.from('20010db8000000000000000000000001', 'hex');
    const full = Buffer.concat([b(5, 1, 0, 4), addr, b(0, 7)]);
    expect(parseRequest(full)).toEqual({ kind: 'done', value: { command: 1, addressType: 4, host: '2001:db8::1', port: 7 }, size: 22 });
    everyPrefixNeedsMore(parseRequest, full);
  });

  it('parses a domain name', () => {
    const full = Buffer.concat([b(5, 1, 0, 3, 8), Buffer.from('web.test'), b(0, 80)]);
    expect(parseRequest(full)).toEqual({ kind: 'done', value: { command: 1, addressType: 3, host: 'web.test', port: 80 }, size: 15 });
    everyPrefixNeedsMore(parseRequest, full);
  });

  it('leaves the command to the caller and ignores RSV', () => {
    const r = parseRequest(b(5, 2, 0x55, 1, 10, 0, 0, 1, 0, 1));
    expect(r.kind === 'done' && r.value.command).toBe(2);
  });

  it('rejects an unknown address type with 0x08', () => {
    const r = parseRequest(b(5, 1, 0, 2, 1, 2, 3, 4));
    expect(r).toEqual({
      kind: 'invalid',
      reason: 'unsupported address type 0x02',
      response: buildReply(SocksReply.ADDRESS_TYPE_NOT_SUPPORTED),
    });
  });

  it('rejects a wrong version or an empty domain with 0x01', () => {
    for (const bad of [b(4, 1, 0, 1), b(5, 1, 0, 3, 0, 0, 80)]) {
      const r = parseRequest(bad);
      expect(r.kind).toBe('invalid');
      expect(r.kind === 'invalid' && r.response).toEqual(b(5, 1, 0, 1, 0, 0, 0, 0, 0, 0));
    }
  });
});

describe('replies', () => {
  it('builds VER REP RSV ATYP=1 0.0.0.0:0', () => {
    expect(buildReply(0)).toEqual(b(5, 0, 0, 1, 0, 0, 0, 0, 0, 0));
    expect(buildReply(7)).toEqual(b(5, 7, 0, 1, 0, 0, 0, 0, 0, 0));
  });

  it('maps every error code', () => {
    const expected: Record<string, number> = {
      [ErrorCodes.POLICY_DENIED]: 0x02,
      [ErrorCodes.NO_ROUTE]: 0x04,
      [ErrorCodes.UNREACHABLE]: 0x04,
      [ErrorCodes.TIMEOUT]: 0x04,
      [ErrorCodes.REFUSED]: 0x05,
      [ErrorCodes.BAD_REQUEST]: 0x01,
    };
    for (const code of Object.values(ErrorCodes)) expect(socksReplyFor(code), code).toBe(expected[code] ?? 0x01);
  });
});

describe('formatIpv6', () => {
  const f = (hex: string) => formatIpv6(Buffer.from(hex, 'hex'));
  it('compresses the longest zero run, first on ties, never a single group', () => {
    expect(f('00000000000000000000000000000001')).toBe('::1');
    expect(f('00000000000000000000000000000000')).toBe('::');
    expect(f('20010db8000000010000000000000001')).toBe('2001:db8:0:1::1');
    expect(f('20010db8000000000001000000000001')).toBe('2001:db8::1:0:0:1');
    expect(f('20010db8000100010001000100010001')).toBe('2001:db8:1:1:1:1:1:1');
    expect(f('20010db8000000010001000100010001')).toBe('2001:db8:0:1:1:1:1:1');
    expect(f('fe800000000000000000000000000000')).toBe('fe80::');
    expect(f('00000000000000000000ffff7f000001')).toBe('::ffff:7f00:1');
  });
});
