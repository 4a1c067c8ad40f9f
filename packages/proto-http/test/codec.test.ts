import { ErrorCodes, isUgateError } from '@ugate/core';
import {
  buildErrorResponse,
  CONNECT_ESTABLISHED,
  errorBody,
  errorHeaders,
  forwardRequestHeaders,
  parseAbsoluteUri,
  parseBasicAuth,
  statusFor,
  stripHopByHop,
} from '@ugate/proto-http';
import { describe, expect, it } from 'vitest';

function badRequest(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(isUgateError(e) && e.code).toBe(ErrorCodes.BAD_REQUEST);
    return (e as Error).message;
  }
  throw new Error('expected BAD_REQUEST');
}

describe('parseAbsoluteUri', () => {
  it('splits authority and origin-form path', () => {
    expect(parseAbsoluteUri('http://web.test/x/y?q=1&r')).toEqual({ authority: 'web.test', path: '/x/y?q=1&r' });
    expect(parseAbsoluteUri('http://web.test')).toEqual({ authority: 'web.test', path: '/' });
    expect(parseAbsoluteUri('http://web.test?q')).toEqual({ authority: 'web.test', path: '/?q' });
    expect(parseAbsoluteUri('HTTP://Web.Test:8080/a#frag')).toEqual({ authority: 'Web.Test:8080', path: '/a' });
    expect(parseAbsoluteUri('http://user:pw@web.test/')).toEqual({ authority: 'web.test', path: '/' });
    expect(parseAbsoluteUri('http://[::1]:8080/p')).toEqual({ authority: '[::1]:8080', path: '/p' });
    // The path is passed on as sent, not normalised.
    expect(parseAbsoluteUri('http://web.test/a/../b/%2e')).toEqual({ authority: 'web.test', path: '/a/../b/%2e' });
  });

  it('refuses what a forward proxy cannot serve', () => {
    expect(badRequest(() => parseAbsoluteUri('/x'))).toContain('not a proxy request');
    expect(badRequest(() => parseAbsoluteUri('*'))).toContain('not a proxy request');
    expect(badRequest(() => parseAbsoluteUri('https://web.test/'))).toContain('use CONNECT');
    expect(badRequest(() => parseAbsoluteUri('ftp://web.test/'))).toContain('unsupported scheme ftp');
    expect(badRequest(() => parseAbsoluteUri('web.test:80'))).toContain('not an absolute URI');
    expect(badRequest(() => parseAbsoluteUri('http:///path'))).toContain('without a host');
    expect(badRequest(() => parseAbsoluteUri('http://web.test/a b'))).toContain('cannot be forwarded');
  });
});

describe('parseBasicAuth', () => {
  const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
  it('decodes user and password', () => {
    expect(parseBasicAuth(basic('alice:wonderland'))).toEqual({ username: 'alice', password: 'wonderland' });
    expect(parseBasicAuth(basic('alice:a:b'))).toEqual({ username: 'alice', password: 'a:b' });
    expect(parseBasicAuth(`basic  ${Buffer.from('a:').toString('base64')}`)).toEqual({ username: 'a', password: '' });
    expect(parseBasicAuth(basic('jürgen:pä'))).toEqual({ username: 'jürgen', password: 'pä' });
  });

  it('returns undefined for anything else', () => {
    expect(parseBasicAuth(undefined)).toBeUndefined();
    expect(parseBasicAuth('')).toBeUndefined();
    expect(parseBasicAuth('Bearer abc')).toBeUndefined();
    expect(parseBasicAuth(basic('no-colon'))).toBeUndefined();
    expect(parseBasicAuth('Basic !!!')).toBeUndefined();
  });
});

describe('status mapping', () => {
  it('maps every error code', () => {
    const expected: Record<string, number> = {
      [ErrorCodes.POLICY_DENIED]: 403,
      [ErrorCodes.BAD_REQUEST]: 400,
      [ErrorCodes.TIMEOUT]: 504,
      [ErrorCodes.IDLE_TIMEOUT]: 504,
    };
    for (const code of Object.values(ErrorCodes)) expect(statusFor(code), code).toBe(expected[code] ?? 502);
  });
});

describe('responses', () => {
  it('builds the CONNECT success line', () => {
    expect(CONNECT_ESTABLISHED).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
  });

  it('builds short text/plain errors that close the connection', () => {
    expect(errorBody(403, ErrorCodes.POLICY_DENIED)).toBe('403 Forbidden: UGATE_ERR_POLICY_DENIED\n');
    expect(errorHeaders(502, 'X', { A: 'b' })).toEqual({
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': String('502 Bad Gateway: X\n'.length),
      Connection: 'close',
      A: 'b',
    });
    expect(buildErrorResponse(407, ErrorCodes.AUTH, { 'Proxy-Authenticate': 'Basic realm="ugate"' }).toString()).toBe(
      'HTTP/1.1 407 Proxy Authentication Required\r\n' +
        'Content-Type: text/plain; charset=utf-8\r\n' +
        'Content-Length: 50\r\n' +
        'Connection: close\r\n' +
        'Proxy-Authenticate: Basic realm="ugate"\r\n' +
        '\r\n' +
        '407 Proxy Authentication Required: UGATE_ERR_AUTH\n',
    );
  });
});

describe('hop-by-hop headers', () => {
  const raw = [
    'Host',
    'web.test',
    'Connection',
    'keep-alive, X-Private',
    'connection',
    'x-other',
    'X-Private',
    'secret',
    'X-Other',
    'also dropped',
    'Keep-Alive',
    'timeout=5',
    'Proxy-Authorization',
    'Basic eDp5',
    'Proxy-Connection',
    'keep-alive',
    'TE',
    'trailers',
    'Trailer',
    'X-T',
    'Transfer-Encoding',
    'chunked',
    'Upgrade',
    'h2c',
    'Proxy-Authenticate',
    'Basic',
    'Expect',
    '100-continue',
    'X-Keep',
    'one',
    'x-keep',
    'two',
    'Content-Length',
    '5',
  ];

  it('drops hop-by-hop headers and those named in Connection, keeping order and repeats', () => {
    expect(stripHopByHop(raw)).toEqual([
      'Host',
      'web.test',
      'Expect',
      '100-continue',
      'X-Keep',
      'one',
      'x-keep',
      'two',
      'Content-Length',
      '5',
    ]);
  });

  it('builds origin request headers: Host from the URI first, no Expect, chunked when asked, Connection: close', () => {
    expect(forwardRequestHeaders(raw, 'web.test:8080', false)).toEqual([
      'Host',
      'web.test:8080',
      'X-Keep',
      'one',
      'x-keep',
      'two',
      'Content-Length',
      '5',
      'Connection',
      'close',
    ]);
    expect(forwardRequestHeaders(['X-A', '1'], 'h', true)).toEqual([
      'Host',
      'h',
      'X-A',
      '1',
      'Transfer-Encoding',
      'chunked',
      'Connection',
      'close',
    ]);
  });
});
