import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ErrorCode, ErrorCodes, type Listener, type Switch } from '@ugate/core';
import { httpProxy } from '@ugate/proto-http';
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

const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

const log = recordingLogger();
const fake = fakeDialer();
let up: Upstreams;
let sw: Switch;
let listener: Listener;
let port: number;
let proxy: string;
let tmp: string;

beforeAll(async () => {
  up = await startUpstreams();
  sw = buildSwitch(up, log, fake);
  listener = httpProxy({ listen: '127.0.0.1:0', handshakeTimeoutMs: 1_000 })({ switch: sw, logger: log });
  await listener.listen();
  port = portOf(listener.addresses()[0]);
  proxy = `http://127.0.0.1:${port}`;
  tmp = mkdtempSync(join(tmpdir(), 'ugate-http-'));
});

afterAll(async () => {
  await listener.close();
  await up.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface Response {
  readonly status: number;
  readonly statusLine: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** One HTTP/1.1 response with a Content-Length body. */
async function readResponse(w: Wire): Promise<Response> {
  const head = (await w.readUntil('\r\n\r\n')).toString('latin1');
  const [statusLine = '', ...lines] = head.slice(0, -4).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  const body = (await w.read(Number(headers['content-length'] ?? 0))).toString();
  return { status: Number(statusLine.split(' ')[1]), statusLine, headers, body };
}

async function tunnel(w: Wire, authority: string, extra = ''): Promise<void> {
  await w.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`);
  expect((await w.readUntil('\r\n\r\n')).toString()).toBe(ESTABLISHED);
}

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

/** Exactly one line above debug for this client, once it settled. */
async function onlyLine(w: Wire) {
  await waitFor(() => linesFrom(log, w).length > 0, 3_000, `log line for ${w.src}`);
  await sleep(20);
  const lines = linesFrom(log, w);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('http proxy: absolute-URI requests', () => {
  it('reports the address it bound', () => {
    expect(listener.addresses()).toEqual([`127.0.0.1:${port}`]);
  });

  it('serves curl -x for a mesh name, through the mesh stream', async () => {
    const r = await curl(['-x', proxy, 'http://web.test/hello?x=1']);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe('hello world\n');
    const line = await waitFor(() => log.lines.find((l) => l.fields.proto === 'http-forward' && l.fields.target === 'web.test:80'));
    expect(line).toMatchObject({ level: 'info', fields: { result: 'ok', carrier: 'direct', peer: 'local' } });
    expect(line.fields.bytesIn).toBeGreaterThan(0);
    expect(line.fields.bytesOut).toBeGreaterThan(0);
  });

  it('sends origin-form with Host from the URI and no hop-by-hop headers, both ways', async () => {
    const r = await curl([
      '-x',
      proxy,
      '-i',
      '-H',
      'Connection: X-Private',
      '-H',
      'X-Private: secret',
      '-H',
      'Keep-Alive: 300',
      '-H',
      'TE: trailers',
      '-H',
      'Proxy-Authorization: Basic eDp5',
      '-H',
      'X-Keep: yes',
      'http://web.test/echo/p?a=1&b',
    ]);
    const text = r.stdout.toString();
    const [head = '', body = ''] = text.split('\r\n\r\n');
    const seen = JSON.parse(body) as { method: string; url: string; rawHeaders: string[] };
    expect(seen.method).toBe('GET');
    expect(seen.url).toBe('/echo/p?a=1&b');
    const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names).toEqual(['host', 'user-agent', 'accept', 'x-keep', 'connection']);
    expect(seen.rawHeaders.slice(0, 2)).toEqual(['Host', 'web.test']);
    // node:http's own: one request per mesh stream.
    expect(seen.rawHeaders.slice(-2)).toEqual(['Connection', 'close']);
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head.toLowerCase()).not.toContain('x-origin-hop');
    expect(head.toLowerCase()).toContain('content-type: application/json');
  });

  it('streams a chunked body from a raw client and re-frames it for the origin', async () => {
    const w = await Wire.open(port);
    await w.write(
      'POST http://web.test/echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n',
    );
    await w.write('5\r\nhello\r\n0\r\n\r\n');
    const res = await readResponse(w);
    expect(res.status).toBe(200);
    const seen = JSON.parse(res.body) as { method: string; rawHeaders: string[] };
    expect(seen.method).toBe('POST');
    expect(seen.rawHeaders).toEqual(['Host', 'web.test', 'Transfer-Encoding', 'chunked', 'Connection', 'close']);
    // The mesh stream ends with the exchange (the origin's keep-alive would hold it 5 s).
    const started = Date.now();
    expect((await accessLine(w)).fields).toMatchObject({ result: 'ok', proto: 'http-forward' });
    expect(Date.now() - started).toBeLessThan(1_000);
    w.end();
  });

  it('uploads a few MiB (with 100-continue, and chunked) and downloads 1 MiB intact', async () => {
    const file = join(tmp, 'upload.bin');
    const data = randomBytes(3 << 20);
    writeFileSync(file, data);
    const plain = await curl(['-x', proxy, '--data-binary', `@${file}`, 'http://web.test/upload']);
    expect(plain.stderr).toBe('');
    expect(plain.stdout.toString()).toBe(sha256(data));
    const chunked = await curl(['-x', proxy, '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, 'http://web.test/upload']);
    expect(chunked.stdout.toString()).toBe(sha256(data));
    const down = await curl(['-x', proxy, 'http://web.test/big']);
    expect(sha256(down.stdout)).toBe(sha256(BIG));
    const head = await curl(['-x', proxy, '-I', 'http://web.test/big']);
    expect(head.exitCode).toBe(0);
    expect(head.stdout.toString()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  });

  it('keeps the client connection alive across requests, one stream each', async () => {
    const w = await Wire.open(port);
    for (const q of ['a', 'b']) {
      await w.write(`GET http://web.test/hello?${q} HTTP/1.1\r\nHost: web.test\r\n\r\n`);
      const res = await readResponse(w);
      expect(res.body).toBe('hello world\n');
      expect(res.headers.connection).toBe('keep-alive');
    }
    w.end();
    await waitFor(() => linesFrom(log, w).filter((l) => l.msg === 'stream').length === 2);
    expect(linesFrom(log, w).every((l) => l.fields.result === 'ok')).toBe(true);
  });

  const failures: [string, string, number, ErrorCode][] = [
    ['policy deny', 'http://denied.test/', 403, ErrorCodes.POLICY_DENIED],
    ['unknown name', 'http://nowhere.test/', 502, ErrorCodes.NO_ROUTE],
    ['refused', 'http://refused.test:9/', 502, ErrorCodes.REFUSED],
    ['timeout', 'http://timeout.fake:1/', 504, ErrorCodes.TIMEOUT],
    ['unreachable', 'http://unreachable.fake:1/', 502, ErrorCodes.UNREACHABLE],
    ['internal', 'http://internal.fake:1/', 502, ErrorCodes.INTERNAL],
  ];
  it.each(failures)('%s (%s) → %s, one access line', async (_name, url, status, code) => {
    const w = await Wire.open(port);
    await w.write(`GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const res = await readResponse(w);
    expect(res.status).toBe(status);
    expect(res.headers).toMatchObject({ connection: 'close', 'content-type': 'text/plain; charset=utf-8' });
    expect(res.body).toBe(`${res.statusLine.slice(9)}: ${code}\n`);
    expect((await w.readToEnd()).length).toBe(0);
    const line = await onlyLine(w);
    expect(line).toMatchObject({ level: 'warn', msg: 'stream', fields: { code, proto: 'http-forward' } });
  });

  it('aborts the dial when the client resets while the stream opens', async () => {
    const w = await Wire.open(port);
    await w.write('GET http://hang.fake:1/ HTTP/1.1\r\nHost: hang.fake:1\r\n\r\n');
    const before = fake.aborted.length;
    await sleep(50);
    w.socket.resetAndDestroy();
    await waitFor(() => fake.aborted.length > before, 2_000, 'dial abort');
    // Aborted while opening: the access line is kept at debug, so floods of these cannot flood the log.
    expect(await abortedLine(w)).toMatchObject({ level: 'debug', fields: { code: ErrorCodes.ABORTED, proto: 'http-forward' } });
    expect(linesFrom(log, w)).toHaveLength(0);
  });

  it.each([
    ['https absolute URI', 'https://web.test/', 'use CONNECT'],
    ['origin-form', '/hello', 'not a proxy request'],
    ['invalid host', 'http://bad_host!/', 'invalid host'],
  ])('%s → 400 and one warning', async (_name, target, reason) => {
    const w = await Wire.open(port);
    await w.write(`GET ${target} HTTP/1.1\r\nHost: web.test\r\n\r\n`);
    const res = await readResponse(w);
    expect(res.status).toBe(400);
    expect(res.body).toBe('400 Bad Request: UGATE_ERR_BAD_REQUEST\n');
    expect(res.headers.connection).toBe('close');
    const line = await onlyLine(w);
    expect(line).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.BAD_REQUEST, proto: 'http-forward' } });
    expect(line.msg).toContain(reason);
  });
});

describe('http proxy: CONNECT', () => {
  it('serves curl -p (CONNECT) for a mesh name', async () => {
    const r = await curl(['-p', '-x', proxy, 'http://web.test/hello']);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe('hello world\n');
    await waitFor(() =>
      log.lines.find((l) => l.fields.proto === 'http-connect' && l.fields.target === 'web.test:80' && l.fields.result === 'ok'),
    );
  });

  it('half-close, client first: the reply still arrives after the client ended', async () => {
    const w = await Wire.open(port);
    await tunnel(w, 'hash.test:9');
    const data = randomBytes(1 << 20);
    for (let i = 0; i < data.length; i += 64 << 10) await w.write(data.subarray(i, i + (64 << 10)));
    w.end();
    expect((await w.readToEnd()).toString()).toBe(sha256(data));
    expect((await accessLine(w)).fields).toMatchObject({ result: 'ok', bytesIn: data.length, bytesOut: 64, proto: 'http-connect' });
  });

  it('half-close, server first: the client keeps sending after the server ended', async () => {
    const w = await Wire.open(port);
    await tunnel(w, 'first.test:9');
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

  it('keeps bytes sent in the same segment as the CONNECT request', async () => {
    const w = await Wire.open(port);
    w.end('CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\nearly bytes');
    expect((await w.readUntil('\r\n\r\n')).toString()).toBe(ESTABLISHED);
    expect((await w.readToEnd()).toString()).toBe('early bytes');
    expect((await accessLine(w)).fields).toMatchObject({ result: 'ok', bytesIn: 11, bytesOut: 11 });
  });

  it('passes on a FIN that arrives while the stream is still opening', async () => {
    const w = await Wire.open(port);
    w.end('CONNECT hash.test:9 HTTP/1.1\r\nHost: hash.test:9\r\n\r\n');
    expect((await w.readUntil('\r\n\r\n')).toString()).toBe(ESTABLISHED);
    expect((await w.readToEnd()).toString()).toBe(sha256(''));
    expect((await accessLine(w)).fields.result).toBe('ok');
  });

  it('accepts an IPv6 authority', async () => {
    // [::1]:443 is a service name mapped to 127.0.0.1; nothing IPv6 is dialed.
    const w = await Wire.open(port);
    await tunnel(w, '[::1]:443');
    w.end('v6');
    expect((await w.readToEnd()).toString()).toBe('v6');
    expect((await accessLine(w)).fields.target).toBe('[::1]:443');
  });

  it('outlives the header timeout', async () => {
    const w = await Wire.open(port);
    await tunnel(w, 'echo.test:7');
    await sleep(1_500);
    await w.write('still here');
    expect((await w.read(10)).toString()).toBe('still here');
    w.end();
    await w.readToEnd();
  });

  const failures: [string, string, number, ErrorCode][] = [
    ['policy deny', 'denied.test:80', 403, ErrorCodes.POLICY_DENIED],
    ['unknown name', 'nowhere.test:80', 502, ErrorCodes.NO_ROUTE],
    ['refused', 'refused.test:9', 502, ErrorCodes.REFUSED],
    ['timeout', 'timeout.fake:1', 504, ErrorCodes.TIMEOUT],
    ['unreachable', 'unreachable.fake:1', 502, ErrorCodes.UNREACHABLE],
    ['bad request from the dialer', 'badreq.fake:1', 400, ErrorCodes.BAD_REQUEST],
  ];
  it.each(failures)('%s (%s) → %s, one access line', async (_name, authority, status, code) => {
    const w = await Wire.open(port);
    await w.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const res = await readResponse(w);
    expect(res.status).toBe(status);
    expect(res.headers).toMatchObject({ connection: 'close', 'content-type': 'text/plain; charset=utf-8' });
    expect(res.body).toBe(`${res.statusLine.slice(9)}: ${code}\n`);
    expect((await w.readToEnd()).length).toBe(0);
    const line = await onlyLine(w);
    expect(line).toMatchObject({ level: 'warn', msg: 'stream', fields: { code, proto: 'http-connect' } });
  });

  it.each([
    ['invalid host', 'bad_host!:80'],
    ['missing port', 'web.test'],
    ['IPv6 without brackets', '::1:443'],
  ])('%s → 400 and one warning', async (_name, authority) => {
    const w = await Wire.open(port);
    await w.write(`CONNECT ${authority} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const res = await readResponse(w);
    expect(res.statusLine).toBe('HTTP/1.1 400 Bad Request');
    expect(res.body).toBe('400 Bad Request: UGATE_ERR_BAD_REQUEST\n');
    expect((await w.readToEnd()).length).toBe(0);
    expect(await onlyLine(w)).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.BAD_REQUEST, proto: 'http-connect' } });
  });

  it('aborts the dial when the client resets while the stream opens', async () => {
    const w = await Wire.open(port);
    await w.write('CONNECT hang.fake:1 HTTP/1.1\r\nHost: hang.fake:1\r\n\r\n');
    const before = fake.aborted.length;
    await sleep(50);
    w.socket.resetAndDestroy();
    await waitFor(() => fake.aborted.length > before, 2_000, 'dial abort');
    expect(await abortedLine(w)).toMatchObject({ level: 'debug', fields: { code: ErrorCodes.ABORTED } });
    expect(linesFrom(log, w)).toHaveLength(0);
  });
});

describe('http proxy: malformed input', () => {
  it('answers garbage with 400 and one warning while a tunnel on the listener goes on', async () => {
    const good = await Wire.open(port);
    await tunnel(good, 'echo.test:7');
    for (const garbage of [randomBytes(2048), Buffer.from('GET http://web.test/ HTTP/1.1\r\nBad Header\r\n\r\n')]) {
      garbage[0] = 0x01;
      const w = await Wire.open(port);
      await w.write(garbage);
      const res = await readResponse(w);
      expect(res.statusLine).toBe('HTTP/1.1 400 Bad Request');
      expect(res.body).toBe('400 Bad Request: UGATE_ERR_BAD_REQUEST\n');
      expect((await w.readToEnd()).length).toBe(0);
      const line = await onlyLine(w);
      expect(line).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.BAD_REQUEST, proto: 'http' } });
      expect(line.msg).toMatch(/^malformed request: /);
    }
    await good.write('still alive');
    expect((await good.read(11)).toString()).toBe('still alive');
    good.end();
    expect((await good.readToEnd()).length).toBe(0);
  });

  it('answers oversized headers with 431', async () => {
    const w = await Wire.open(port);
    await w.write(`GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    const res = await readResponse(w);
    expect(res.status).toBe(431);
    expect(await onlyLine(w)).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.BAD_REQUEST } });
  });

  it('answers a request whose headers stall with 408 and one warning', async () => {
    const w = await Wire.open(port);
    await w.write('GET http://web.test/ HTTP/1.1\r\nHost: web');
    const started = Date.now();
    const res = await readResponse(w);
    expect(res.status).toBe(408);
    expect(res.body).toBe('408 Request Timeout: UGATE_ERR_TIMEOUT\n');
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    expect(await onlyLine(w)).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.TIMEOUT, proto: 'http' } });
  });
});

describe('http proxy lifecycle', () => {
  it('close() stops accepting and leaves a live tunnel working', async () => {
    const l = httpProxy({ listen: '127.0.0.1:0' })({ switch: sw, logger: log });
    await l.listen();
    const p = portOf(l.addresses()[0]);
    const w = await Wire.open(p);
    await tunnel(w, 'echo.test:7');
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
    expect(() => httpProxy({ listen: 'localhost' })).toThrow(/listen address/);
    expect(() => httpProxy({ listen: '127.0.0.1:0', users: { 'a:b': 'p' } })).toThrow(/without ':'/);
  });
});

describe('http proxy with users', () => {
  let authed: Listener;
  let ap: number;
  const basic = (s: string) => `Proxy-Authorization: Basic ${Buffer.from(s).toString('base64')}\r\n`;

  beforeAll(async () => {
    authed = httpProxy({ listen: '127.0.0.1:0', users: { alice: 'wonderland' } })({ switch: sw, logger: log });
    await authed.listen();
    ap = portOf(authed.addresses()[0]);
  });

  afterAll(() => authed.close());

  it('asks for credentials with 407 and does not warn about their absence', async () => {
    for (const request of [
      'CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n',
      'GET http://web.test/hello HTTP/1.1\r\nHost: web.test\r\n\r\n',
    ]) {
      const w = await Wire.open(ap);
      await w.write(request);
      const res = await readResponse(w);
      expect(res.status).toBe(407);
      expect(res.headers['proxy-authenticate']).toBe('Basic realm="ugate"');
      expect(res.headers.connection).toBe('close');
      expect(res.body).toBe('407 Proxy Authentication Required: UGATE_ERR_AUTH\n');
      await sleep(20);
      expect(linesFrom(log, w)).toHaveLength(0);
    }
  });

  it('refuses wrong or malformed credentials with 407 and one warning', async () => {
    for (const header of [basic('alice:wrong'), basic('mallory:wonderland'), 'Proxy-Authorization: Bearer abc\r\n']) {
      const w = await Wire.open(ap);
      await w.write(`CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n${header}\r\n`);
      expect((await readResponse(w)).status).toBe(407);
      expect(await onlyLine(w)).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.AUTH, proto: 'http-connect' } });
    }
    const w = await Wire.open(ap);
    await w.write(`GET http://web.test/hello HTTP/1.1\r\nHost: web.test\r\n${basic('alice:wrong')}\r\n`);
    expect((await readResponse(w)).status).toBe(407);
    expect(await onlyLine(w)).toMatchObject({ level: 'warn', fields: { code: ErrorCodes.AUTH, user: 'alice', proto: 'http-forward' } });
  });

  it('lets curl in with the right credentials, both ways, and names the peer', async () => {
    const forward = await curl(['-x', `http://127.0.0.1:${ap}`, '--proxy-user', 'alice:wonderland', 'http://web.test/hello']);
    expect(forward.stdout.toString()).toBe('hello world\n');
    const connectVia = await curl(['-p', '-x', `http://127.0.0.1:${ap}`, '--proxy-user', 'alice:wonderland', 'http://web.test/hello']);
    expect(connectVia.stdout.toString()).toBe('hello world\n');
    const denied = await curl([
      '-x',
      `http://127.0.0.1:${ap}`,
      '--proxy-user',
      'alice:nope',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      'http://web.test/hello',
    ]);
    expect(denied.stdout.toString()).toBe('407');
    for (const proto of ['http-forward', 'http-connect']) {
      await waitFor(() => log.lines.find((l) => l.fields.proto === proto && l.fields.peer === 'alice' && l.fields.result === 'ok'));
    }
  });
});
