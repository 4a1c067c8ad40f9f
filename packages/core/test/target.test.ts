import { ErrorCodes, formatTarget, isValidHost, makeTarget, parseListen, parseTarget, UgateError } from '@ugate/core';
import { describe, expect, it } from 'vitest';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UgateError);
    return (e as UgateError).code;
  }
  return 'no error';
}

describe('parseTarget', () => {
  it('parses IPv4 host:port', () => {
    expect(parseTarget('192.0.2.1:80')).toEqual({ host: '192.0.2.1', port: 80 });
    expect(parseTarget(' 127.0.0.1:65535 ')).toEqual({ host: '127.0.0.1', port: 65535 });
  });

  it('parses bracketed IPv6 and strips the brackets', () => {
    expect(parseTarget('[::1]:443')).toEqual({ host: '::1', port: 443 });
    expect(parseTarget('[FD00::AB:1]:8080')).toEqual({ host: 'fd00::ab:1', port: 8080 });
    expect(parseTarget('[2001:db8::1]', 22)).toEqual({ host: '2001:db8::1', port: 22 });
  });

  it('accepts a bare IPv6 literal only with a default port', () => {
    expect(parseTarget('::1', 80)).toEqual({ host: '::1', port: 80 });
    // Ambiguous on purpose: the whole text is an IPv6 address, not addr:port.
    expect(parseTarget('fd00::1:80', 443)).toEqual({ host: 'fd00::1:80', port: 443 });
    expect(codeOf(() => parseTarget('fd00::1:80'))).toBe(ErrorCodes.BAD_REQUEST);
  });

  it('normalises FQDNs: lower case, no trailing dot', () => {
    expect(parseTarget('WWW.Example.COM.:8443')).toEqual({ host: 'www.example.com', port: 8443 });
    expect(parseTarget('node-1.mesh', 22)).toEqual({ host: 'node-1.mesh', port: 22 });
    expect(parseTarget('_sip._tcp.example.org:5060')).toEqual({ host: '_sip._tcp.example.org', port: 5060 });
    expect(parseTarget('localhost:1')).toEqual({ host: 'localhost', port: 1 });
  });

  it('uses the default port only when none is given', () => {
    expect(parseTarget('example.com', 443)).toEqual({ host: 'example.com', port: 443 });
    expect(parseTarget('example.com:80', 443)).toEqual({ host: 'example.com', port: 80 });
  });

  it.each([
    ['example.com', 'missing port'],
    ['example.com:', 'empty port'],
    [':80', 'empty host'],
    ['example.com:0', 'port 0'],
    ['example.com:65536', 'port too large'],
    ['example.com:123456', 'port too long'],
    ['example.com:http', 'named port'],
    ['example.com:-1', 'negative port'],
    ['exa mple.com:80', 'space in name'],
    ['-bad.example:80', 'label starts with hyphen'],
    ['bad-.example:80', 'label ends with hyphen'],
    ['a..b:80', 'empty label'],
    ['.example.com:80', 'leading dot'],
    ['ex!ample.com:80', 'bad character'],
    [`${'a'.repeat(64)}.com:80`, 'label longer than 63'],
    [`${'a.'.repeat(127)}ab:80`, 'name longer than 253'],
    ['a:b:c', 'unbracketed colons that are not IPv6'],
    ['[::1', 'unterminated bracket'],
    ['[::1]x80', 'garbage after bracket'],
    ['[::1]:', 'bracket with empty port'],
    ['[not-an-ip:x]:80', 'bracketed non-address'],
    ['', 'empty'],
  ])('rejects %j (%s) with BAD_REQUEST', (text) => {
    expect(codeOf(() => parseTarget(text))).toBe(ErrorCodes.BAD_REQUEST);
  });

  it('accepts the longest legal label and name', () => {
    const label = 'a'.repeat(63);
    expect(parseTarget(`${label}.com:1`).host).toBe(`${label}.com`);
    const name = `${'a.'.repeat(126)}a`; // 253 characters
    expect(name.length).toBe(253);
    expect(parseTarget(`${name}:1`).host).toBe(name);
  });
});

describe('makeTarget / formatTarget / isValidHost', () => {
  it('strips brackets and validates the port', () => {
    expect(makeTarget('[::1]', 80)).toEqual({ host: '::1', port: 80 });
    expect(codeOf(() => makeTarget('example.com', 1.5))).toBe(ErrorCodes.BAD_REQUEST);
    expect(codeOf(() => makeTarget('example.com', 0))).toBe(ErrorCodes.BAD_REQUEST);
    expect(codeOf(() => makeTarget('example.com', Number.NaN))).toBe(ErrorCodes.BAD_REQUEST);
    expect(codeOf(() => makeTarget('bad host', 80))).toBe(ErrorCodes.BAD_REQUEST);
  });

  it('formats IPv6 with brackets and round-trips', () => {
    expect(formatTarget({ host: '::1', port: 443 })).toBe('[::1]:443');
    expect(formatTarget({ host: '10.0.0.1', port: 22 })).toBe('10.0.0.1:22');
    expect(formatTarget({ host: 'a.example', port: 1 })).toBe('a.example:1');
    for (const text of ['[fd00::1]:80', '10.1.2.3:9', 'x.y.z:65535']) expect(formatTarget(parseTarget(text))).toBe(text);
  });

  it('isValidHost', () => {
    expect(isValidHost('::1')).toBe(true);
    expect(isValidHost('1.2.3.4')).toBe(true);
    expect(isValidHost('example.com.')).toBe(true);
    expect(isValidHost('')).toBe(false);
    expect(isValidHost('UPPER.example')).toBe(false); // callers lower-case first
    expect(isValidHost('a b')).toBe(false);
  });
});

describe('parseListen', () => {
  it('allows port 0 (any free port) and otherwise parses like parseTarget', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[::]:0')).toEqual({ host: '::', port: 0 });
    expect(parseListen('Localhost:0')).toEqual({ host: 'localhost', port: 0 });
    expect(parseListen('0.0.0.0:1080')).toEqual({ host: '0.0.0.0', port: 1080 });
    expect(parseListen('[::1]:10')).toEqual({ host: '::1', port: 10 });
  });

  it('rejects bad listen addresses as configuration errors', () => {
    expect(codeOf(() => parseListen('bad host:0'))).toBe(ErrorCodes.CONFIG);
    expect(codeOf(() => parseListen('127.0.0.1:65536'))).toBe(ErrorCodes.CONFIG);
    expect(codeOf(() => parseListen('127.0.0.1'))).toBe(ErrorCodes.CONFIG);
  });
});

describe('parseTarget cache', () => {
  it('answers a repeated text with the same frozen target; other forms still parse', () => {
    const a = parseTarget('cache.example:8443');
    expect(parseTarget('cache.example:8443')).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(parseTarget('cache.example', 80)).toEqual({ host: 'cache.example', port: 80 });
    expect(() => parseTarget('cache.example:99999')).toThrow(/invalid port/);
    expect(() => parseTarget('cache.example:99999')).toThrow(/invalid port/);
  });
});
