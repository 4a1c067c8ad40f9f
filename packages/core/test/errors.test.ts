import { connect } from 'node:net';
import { codeFromText, type ErrorCode, ErrorCodes, isUgateError, toUgateError, UgateError } from '@ugate/core';
import { describe, expect, it } from 'vitest';
import { startServer } from '../../../test/support/servers.js';

const sysError = (code: string) => Object.assign(new Error(`${code} happened`), { code });

describe('UgateError', () => {
  it('carries code, name, message and cause', () => {
    const cause = new Error('root');
    const e = new UgateError(ErrorCodes.REFUSED, 'nope', { cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('UgateError');
    expect(e.code).toBe('UGATE_ERR_REFUSED');
    expect(e.message).toBe('nope');
    expect(e.cause).toBe(cause);
    expect(isUgateError(e)).toBe(true);
    expect(isUgateError(cause)).toBe(false);
    expect(isUgateError({ code: 'UGATE_ERR_REFUSED' })).toBe(false);
  });

  it('every code value is UGATE_ERR_<KEY>', () => {
    for (const [key, value] of Object.entries(ErrorCodes)) expect(value).toBe(`UGATE_ERR_${key}`);
  });
});

describe('toUgateError', () => {
  it.each([
    ['ECONNREFUSED', ErrorCodes.REFUSED],
    ['ECONNRESET', ErrorCodes.ABORTED],
    ['EPIPE', ErrorCodes.ABORTED],
    ['ETIMEDOUT', ErrorCodes.TIMEOUT],
    ['EHOSTUNREACH', ErrorCodes.UNREACHABLE],
    ['ENETUNREACH', ErrorCodes.UNREACHABLE],
    ['EHOSTDOWN', ErrorCodes.UNREACHABLE],
    ['EADDRNOTAVAIL', ErrorCodes.UNREACHABLE],
    ['ENOTFOUND', ErrorCodes.NO_ROUTE],
    ['EAI_AGAIN', ErrorCodes.NO_ROUTE],
    ['EAI_NONAME', ErrorCodes.NO_ROUTE],
    ['EACCES', ErrorCodes.POLICY_DENIED],
  ] as [string, ErrorCode][])('maps %s to %s, keeping message and cause', (sys, code) => {
    const original = sysError(sys);
    const e = toUgateError(original);
    expect(e).toBeInstanceOf(UgateError);
    expect(e.code).toBe(code);
    expect(e.message).toBe(`${sys} happened`);
    expect(e.cause).toBe(original);
  });

  it('uses the fallback for unknown or missing codes', () => {
    expect(toUgateError(sysError('EWHATEVER')).code).toBe(ErrorCodes.INTERNAL);
    expect(toUgateError(sysError('EWHATEVER'), ErrorCodes.ABORTED).code).toBe(ErrorCodes.ABORTED);
    expect(toUgateError(new Error('plain'), ErrorCodes.UNREACHABLE).code).toBe(ErrorCodes.UNREACHABLE);
    expect(toUgateError({ code: 42 }).code).toBe(ErrorCodes.INTERNAL);
    // A known system code beats the fallback.
    expect(toUgateError(sysError('ECONNREFUSED'), ErrorCodes.UNREACHABLE).code).toBe(ErrorCodes.REFUSED);
  });

  it('handles non-Error values', () => {
    expect(toUgateError('boom')).toMatchObject({ code: ErrorCodes.INTERNAL, message: 'boom', cause: 'boom' });
    expect(toUgateError(null)).toMatchObject({ code: ErrorCodes.INTERNAL, message: 'null' });
    expect(toUgateError(undefined, ErrorCodes.CLOSED)).toMatchObject({ code: ErrorCodes.CLOSED, message: 'undefined' });
  });

  it('returns a UgateError unchanged', () => {
    const e = new UgateError(ErrorCodes.AUTH, 'x');
    expect(toUgateError(e, ErrorCodes.INTERNAL)).toBe(e);
  });

  it('maps a real refused connection on 127.0.0.1 to REFUSED', async () => {
    const srv = await startServer();
    const port = srv.port;
    await srv.close(); // nothing listens on `port` any more
    const err = await new Promise<Error>((resolve) => connect({ host: '127.0.0.1', port }).once('error', resolve));
    expect(toUgateError(err).code).toBe(ErrorCodes.REFUSED);
  });
});

describe('codeFromText', () => {
  it('finds every code at the start of a description', () => {
    for (const code of Object.values(ErrorCodes)) expect(codeFromText(`${code}: something failed`)).toBe(code);
  });

  it('finds a code anywhere as a whole word', () => {
    expect(codeFromText('open failed (UGATE_ERR_NO_ROUTE) for a.b:1')).toBe(ErrorCodes.NO_ROUTE);
    expect(codeFromText('UGATE_ERR_IDLE_TIMEOUT')).toBe(ErrorCodes.IDLE_TIMEOUT);
  });

  it('ignores unknown codes, partial words and empty text', () => {
    expect(codeFromText('UGATE_ERR_BOGUS: x')).toBeUndefined();
    expect(codeFromText('XUGATE_ERR_NO_ROUTE')).toBeUndefined();
    expect(codeFromText('UGATE_ERR_NO_ROUTEX')).toBeUndefined();
    expect(codeFromText('ugate_err_no_route')).toBeUndefined();
    expect(codeFromText('Connection refused')).toBeUndefined();
    expect(codeFromText('')).toBeUndefined();
  });
});
