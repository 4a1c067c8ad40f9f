import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ErrorCode, ErrorCodes, type Listener, type Switch } from '@ugate/core';
import { socks } from '@ugate/proto-socks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BIG,
  buildSwitch,
  curl,
  fakeDialer,
  linesFrom,
  portOf,
  recordingLogger,
  sha256,
  sleep,
  startUpstreams,
  type Upstreams,
  Wire,
  waitFor,
} from '../../../test/support/listener.js';

const b = (...bytes: number[]) => Buffer.from(bytes);
const GREETING = b(5, 1, 0);
const reply = (rep: number) => b(5, rep, 0, 1, 0, 0, 0, 0, 0, 0);
const port16 = (p: number) => b(p >> 8, p & 0xff);
const domainRequest = (host: string, port: number, cmd = 1) =>
  Buffer.concat([b(5, cmd, 0, 3, host.length), Buffer.from(host, 'latin1'), port16(port)]);

const log = recordingLogger();
const fake = fakeDialer();
let up: Upstreams;
let sw: Switch;
let listener: Listener;
let port: number;
let tmp: string;

beforeAll(async () => {
  up = await startUpstreams();
  sw = buildSwitch(up, log, fake);
  listener = socks({ listen: '127.0.0.1:0', handshakeTimeoutMs: 1_000 })({ switch: sw, logger: log });
  await listener.listen();
  port = portOf(listener.addresses()[0]);
  tmp = mkdtempSync(join(tmpdir(), 'ugate-socks-'));
});

afterAll(async () => {
  await listener.close();
  await up.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** Greeting + domain CONNECT; returns the 10-byte reply. */
async function connectVia(wire: Wire, host: string, p: number): Promise<Buffer> {
  await wire.write(GREETING);
  expect(await wire.read(2)).toEqual(b(5, 0));
  await wire.write(domainRequest(host, p));
  return wire.read(10);
}

/** The one access line the switch writes for a client, once its stream has ended. */
/** The debug-level access line of a stream aborted while it opened. */
function abortedLine(w: Wire) {
  return waitFor(
    () => log.lines.find((l) => l.fields.src === w.src && l.at >= w.openedAt && l.msg === 'stream'),
    3_000,
    `access line for ${w.src}`,
  );
}

async function accessLine(w: Wire) {
  return waitFor(() => linesFrom(log, w).find((l) => l.msg === 'stream'), 3_000, `access line for ${w.src}`);
}

describe('socks5 listener', () => {
  it('reports the address it bound', () => {
    expect(listener.addresses()).toEqual([`127.0.0.1:${port}`]);
    expect(port).toBeGreaterThan(0);
  });

  it('serves curl --socks5-hostname with a mesh name', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, 'http://web.test/hello']);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe('hello world\n');
    const line = await waitFor(() => log.lines.find((l) => l.fields.target === 'web.test:80' && l.fields.result === 'ok'));
    expect(line.level).toBe('info');
    expect(line.fields).toMatchObject({ proto: 'socks5', peer: 'local', carrier: 'direct' });
  });

  it('carries a few MiB up and 1 MiB down intact through curl', async () => {
    const file = join(tmp, 'upload.bin');
    const data = randomBytes(3 << 20);
    writeFileSync(file, data);
    const upload = await curl(['--socks5-hostname', `127.0.0.1:${port}`, '--data-binary', `@${file}`, 'http://web.test/upload']);
    expect(upload.stderr).toBe('');
    expect(upload.stdout.toString()).toBe(sha256(data));
    const down = await curl(['--socks5-hostname', `127.0.0.1:${port}`, 'http://web.test/big']);
    expect(sha256(down.stdout)).toBe(sha256(BIG));
  });

  it('parses a handshake that arrives one byte at a time', async () => {
    const w = await Wire.open(port);
    for (const byte of Buffer.concat([GREETING, domainRequest('echo.test', 7)])) {
      await w.write(b(byte));
      await sleep(2);
    }
    expect(await w.read(2)).toEqual(b(5, 0));
    expect(await w.read(10)).toEqual(reply(0));
    await w.write('ping');
    expect((await w.read(4)).toString()).toBe('ping');
    w.end();
    expect((await w.readToEnd()).length).toBe(0);
    const line = await accessLine(w);
    expect(line.fields).toMatchObject({ result: 'ok', bytesIn: 4, bytesOut: 4, target: 'echo.test:7' });
    expect(linesFrom(log, w)).toHaveLength(1);
  });

  it('keeps payload pipelined in the same segment as the request', async () => {
    const w = await Wire.open(port);
    const payload = Buffer.from('pipelined payload');
    w.end(Buffer.concat([GREETING, domainRequest('echo.test', 7), payload]));
    expect(await w.read(2)).toEqual(b(5, 0));
    expect(await w.read(10)).toEqual(reply(0));
    expect(await w.readToEnd()).toEqual(payload);
    const line = await accessLine(w);
    expect(line.fields).toMatchObject({ result: 'ok', bytesIn: payload.length, bytesOut: payload.length });
  });

  it('passes on a FIN that arrives while the stream is still opening', async () => {
    const w = await Wire.open(port);
    w.end(Buffer.concat([GREETING, domainRequest('hash.test', 9)]));
    expect(await w.read(12)).toEqual(Buffer.concat([b(5, 0), reply(0)]));
    expect((await w.readToEnd()).toString()).toBe(sha256(''));
    expect((await accessLine(w)).fields.result).toBe('ok');
  });

  it('connects to IPv4 and IPv6 address types', async () => {
    const v4 = await Wire.open(port);
    await v4.write(Buffer.concat([GREETING, b(5, 1, 0, 1, 127, 0, 0, 1), port16(up.echo)]));
    expect(await v4.read(12)).toEqual(Buffer.concat([b(5, 0), reply(0)]));
    v4.end('v4');
    expect((await v4.readToEnd()).toString()).toBe('v4');

    // 2001:db8::1 is a service name mapped to 127.0.0.1; nothing IPv6 is dialed.
    const v6 = await Wire.open(port);
    const addr = Buffer.from('20010db8000000000000000000000001', 'hex');
    await v6.write(Buffer.concat([GREETING, b(5, 1, 0, 4), addr, port16(7)]));
    expect(await v6.read(12)).toEqual(Buffer.concat([b(5, 0), reply(0)]));
    v6.end('v6');
    expect((await v6.readToEnd()).toString()).toBe('v6');
    expect((await accessLine(v6)).fields.target).toBe('[2001:db8::1]:7');
  });

  it('half-close, client first: the reply still arrives after the client ended', async () => {
    const w = await Wire.open(port);
    expect(await connectVia(w, 'hash.test', 9)).toEqual(reply(0));
    const data = randomBytes(1 << 20);
    for (let i = 0; i < data.length; i += 64 << 10) await w.write(data.subarray(i, i + (64 << 10)));
    w.end();
    expect((await w.readToEnd()).toString()).toBe(sha256(data));
    const line = await accessLine(w);
    expect(line.fields).toMatchObject({ result: 'ok', bytesIn: data.length, bytesOut: 64 });
  });

  it('half-close, server first: the client keeps sending after the server ended', async () => {
    const w = await Wire.open(port);
    expect(await connectVia(w, 'first.test', 9)).toEqual(reply(0));
    const received = up.firstEndsReceived();
    expect((await w.readToEnd()).toString()).toBe('bye\n');
    expect(w.closed).toBe(false);
    const data = randomBytes(256 << 10);
    await w.write(data);
    w.end();
    expect(await received).toBe(sha256(data));
    await w.waitClosed();
    expect((await accessLine(w)).fields).toMatchObject({ result: 'ok', bytesIn: data.length, bytesOut: 4 });
  });

  const failures: [string, string, number, number, ErrorCode][] = [
    ['policy deny', 'denied.test', 80, 0x02, ErrorCodes.POLICY_DENIED],
    ['unknown name', 'nowhere.test', 80, 0x04, ErrorCodes.NO_ROUTE],
    ['refused', 'refused.test', 9, 0x05, ErrorCodes.REFUSED],
    ['timeout', 'timeout.fake', 1, 0x04, ErrorCodes.TIMEOUT],
    ['unreachable', 'unreachable.fake', 1, 0x04, ErrorCodes.UNREACHABLE],
    ['internal', 'internal.fake', 1, 0x01, ErrorCodes.INTERNAL],
    ['bad request from the dialer', 'badreq.fake', 1, 0x01, ErrorCodes.BAD_REQUEST],
  ];
  it.each(failures)('%s → reply %s:%s 0x0%s, one access line', async (_name, host, p, rep, code) => {
    const w = await Wire.open(port);
    expect(await connectVia(w, host, p)).toEqual(reply(rep));
    expect((await w.readToEnd()).length).toBe(0);
    const lines = linesFrom(log, w);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', msg: 'stream', fields: { code, result: code, proto: 'socks5' } });
  });

  /** Send `bytes` after the greeting; expect `expected` then close, and exactly one warning with `code`. */
  async function rejected(bytes: Buffer, expected: Buffer, code: ErrorCode, greeting: Buffer | null = GREETING) {
    const w = await Wire.open(port);
    if (greeting) {
      await w.write(greeting);
      expect(await w.read(2)).toEqual(b(5, 0));
    }
    await w.write(bytes);
    expect(await w.readToEnd()).toEqual(expected);
    const lines = await waitFor(() => linesFrom(log, w).length > 0 && linesFrom(log, w));
    await sleep(20);
    expect(linesFrom(log, w)).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', fields: { code, proto: 'socks5', src: w.src } });
    w.end();
    await w.waitClosed();
    return lines[0]!;
  }

  it('answers BIND and UDP ASSOCIATE with 0x07', async () => {
    await rejected(domainRequest('echo.test', 7, 0x02), reply(0x07), ErrorCodes.UNSUPPORTED);
    await rejected(domainRequest('echo.test', 7, 0x03), reply(0x07), ErrorCodes.UNSUPPORTED);
    await rejected(domainRequest('echo.test', 7, 0x09), reply(0x07), ErrorCodes.BAD_REQUEST);
  });

  it('answers an unknown address type with 0x08', async () => {
    await rejected(b(5, 1, 0, 0x02, 127, 0, 0, 1, 0, 7), reply(0x08), ErrorCodes.BAD_REQUEST);
  });

  it('answers an invalid host name, port 0 or a wrong request version with 0x01', async () => {
    const line = await rejected(domainRequest('bad_host!.test', 80), reply(0x01), ErrorCodes.BAD_REQUEST);
    expect(line.msg).toContain('invalid host');
    await rejected(domainRequest('echo.test', 0), reply(0x01), ErrorCodes.BAD_REQUEST);
    await rejected(b(4, 1, 0, 1, 127, 0, 0, 1, 0, 7), reply(0x01), ErrorCodes.BAD_REQUEST);
  });

  it('answers a greeting without no-auth with 0xff', async () => {
    await rejected(b(5, 1, 2), b(5, 0xff), ErrorCodes.AUTH, null);
    await rejected(b(5, 0), b(5, 0xff), ErrorCodes.BAD_REQUEST, null);
  });

  it('closes on garbage with one warning while a good stream on the listener goes on', async () => {
    const good = await Wire.open(port);
    expect(await connectVia(good, 'echo.test', 7)).toEqual(reply(0));
    const garbage = randomBytes(4096);
    garbage[0] = 0x16; // a TLS record type: not SOCKS version 5
    const line = await rejected(garbage, Buffer.alloc(0), ErrorCodes.BAD_REQUEST, null);
    expect(line.msg).toBe('unsupported SOCKS version 0x16');
    await rejected(Buffer.from('GET http://web.test/ HTTP/1.1\r\n\r\n'), Buffer.alloc(0), ErrorCodes.BAD_REQUEST, null);
    await good.write('still alive');
    expect((await good.read(11)).toString()).toBe('still alive');
    good.end();
    expect((await good.readToEnd()).length).toBe(0);
  });

  it('closes a truncated handshake with one warning', async () => {
    for (const partial of [b(5, 2, 0), Buffer.concat([GREETING, b(5, 1, 0, 3, 9), Buffer.from('echo')])]) {
      const w = await Wire.open(port);
      w.end(partial);
      await w.readToEnd();
      await w.waitClosed();
      const lines = await waitFor(() => linesFrom(log, w).length > 0 && linesFrom(log, w));
      await sleep(20);
      expect(linesFrom(log, w)).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.BAD_REQUEST, proto: 'socks5' } });
      expect(lines[0]!.msg).toContain('mid-handshake');
    }
  });

  it('times out a stalled handshake with one warning', async () => {
    const w = await Wire.open(port);
    await w.write(b(5));
    const started = Date.now();
    expect((await w.readToEnd(3_000)).length).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(linesFrom(log, w)).toHaveLength(1);
    expect(linesFrom(log, w)[0]).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.TIMEOUT, proto: 'socks5' } });
  });

  it('does not warn about a connection that sends nothing and closes', async () => {
    const w = await Wire.open(port);
    w.end();
    await w.waitClosed();
    await sleep(20);
    expect(linesFrom(log, w)).toHaveLength(0);
  });

  it('aborts the dial when the client goes away while the stream opens', async () => {
    const w = await Wire.open(port);
    await w.write(Buffer.concat([GREETING, domainRequest('hang.fake', 1)]));
    expect(await w.read(2)).toEqual(b(5, 0));
    const before = fake.aborted.length;
    await sleep(50);
    // A FIN would be a half-close (the stream still opens); going away is a reset.
    w.socket.resetAndDestroy();
    await waitFor(() => fake.aborted.length > before, 2_000, 'dial abort');
    // Aborted while opening: the access line is kept at debug, so floods of these cannot flood the log.
    const line = await abortedLine(w);
    expect(line).toMatchObject({ level: 'debug', fields: { code: ErrorCodes.ABORTED } });
    expect(linesFrom(log, w)).toHaveLength(0);
  });
});

describe('socks5 listener lifecycle', () => {
  it('close() stops accepting and leaves a live stream working', async () => {
    const l = socks({ listen: '127.0.0.1:0' })({ switch: sw, logger: log });
    await l.listen();
    const p = portOf(l.addresses()[0]);
    const w = await Wire.open(p);
    expect(await connectVia(w, 'echo.test', 7)).toEqual(reply(0));
    await l.close();
    expect(l.addresses()).toEqual([]);
    const refused = await new Promise<string>((resolve) => {
      const s = connect({ port: p, host: '127.0.0.1' });
      s.on('connect', () => {
        s.destroy();
        resolve('connected');
      });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    await w.write('after close');
    expect((await w.read(11)).toString()).toBe('after close');
    w.end();
    expect((await w.readToEnd()).length).toBe(0);
    expect((await accessLine(w)).fields.result).toBe('ok');
  });

  it('rejects a bad listen address or user table at construction', () => {
    expect(() => socks({ listen: '127.0.0.1' })).toThrow(/listen address/);
    expect(() => socks({ listen: '[::1:0' })).toThrow(/listen address/);
    expect(() => socks({ listen: '127.0.0.1:0', users: { ['x'.repeat(256)]: 'p' } })).toThrow(/1-255 bytes/);
  });
});

describe('socks5 listener with users', () => {
  let authed: Listener;
  let ap: number;

  beforeAll(async () => {
    authed = socks({ listen: '127.0.0.1:0', users: { alice: 'wonderland' } })({ switch: sw, logger: log });
    await authed.listen();
    ap = portOf(authed.addresses()[0]);
  });

  afterAll(() => authed.close());

  it('lets curl in with the right password and names the peer', async () => {
    const r = await curl(['--proxy', `socks5h://alice:wonderland@127.0.0.1:${ap}`, 'http://web.test/hello?who=alice']);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe('hello world\n');
    await waitFor(() => log.lines.find((l) => l.fields.peer === 'alice' && l.fields.result === 'ok'));
  });

  it('answers a wrong password with status 0x01, closes and warns once', async () => {
    const w = await Wire.open(ap);
    await w.write(b(5, 1, 2));
    expect(await w.read(2)).toEqual(b(5, 2));
    await w.write(Buffer.concat([b(1, 5), Buffer.from('alice'), b(5), Buffer.from('wrong')]));
    expect(await w.readToEnd()).toEqual(b(1, 1));
    await sleep(20);
    const lines = linesFrom(log, w);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.AUTH, user: 'alice', proto: 'socks5' } });
  });

  it('answers a client that offers only no-auth with 0xff', async () => {
    const w = await Wire.open(ap);
    await w.write(GREETING);
    expect(await w.readToEnd()).toEqual(b(5, 0xff));
    await sleep(20);
    expect(linesFrom(log, w)).toHaveLength(1);
    expect(linesFrom(log, w)[0]!.fields.code).toBe(ErrorCodes.AUTH);
  });

  it('takes greeting, credentials, request and payload in one segment', async () => {
    const w = await Wire.open(ap);
    const creds = Buffer.concat([b(1, 5), Buffer.from('alice'), b(10), Buffer.from('wonderland')]);
    w.end(Buffer.concat([b(5, 2, 0, 2), creds, domainRequest('echo.test', 7), Buffer.from('hi')]));
    expect(await w.read(14)).toEqual(Buffer.concat([b(5, 2), b(1, 0), reply(0)]));
    expect((await w.readToEnd()).toString()).toBe('hi');
    expect((await accessLine(w)).fields).toMatchObject({ peer: 'alice', result: 'ok', bytesIn: 2 });
  });
});
