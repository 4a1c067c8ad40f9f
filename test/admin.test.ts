/**
 * The admin API of a running node (`ugate run -c FILE`): every endpoint's status, content type
 * and JSON shape; a live SOCKS stream listed with growing byte counts and closed by DELETE; the
 * redacted config; the runtime log level as seen in the process's stdout; the bearer token (and
 * the CLI using it); and the default bind on loopback, checked in a network namespace of its own.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wire } from './support/listener.js';
import { createLan, execIn, requireNetns, startIn } from './support/netns.js';
import { freePort, run } from './support/proc.js';
import { echoServer, type TestServer, waitFor } from './support/servers.js';
import { BIN, echoRoundTrip, poll, socksConnect, startUgate, type UgateProcess } from './support/ugate-node.js';

const dir = mkdtempSync(join(tmpdir(), 'ugate-admin-'));
const SOCKS_PASSWORD = 'socks-password-that-must-not-leak';
const HTTP_PASSWORD = 'http-password-that-must-not-leak';
const TOKEN = 'admin-token-that-must-not-leak-0123';
const alice = { user: 'alice', password: SOCKS_PASSWORD };

let node: UgateProcess;
let secured: UgateProcess;
let echo: TestServer;
let socksPort: number;
let httpPort: number;
let id: string;

const JSON_TYPE = 'application/json';

async function getJson(p: UgateProcess, path: string, init?: RequestInit): Promise<{ status: number; type: string | null; body: unknown }> {
  const res = await p.api(path, init);
  const type = res.headers.get('content-type');
  const text = await res.text();
  return { status: res.status, type, body: type === JSON_TYPE ? JSON.parse(text) : text };
}

interface StreamView {
  sid: string;
  proto: string;
  src: string;
  target: string;
  peer: string;
  carrier: string;
  via?: string;
  upstream?: string;
  bytesIn: number;
  bytesOut: number;
  ageMs: number;
}
const streams = async (p: UgateProcess) => (await getJson(p, '/api/streams')).body as StreamView[];

beforeAll(async () => {
  echo = await echoServer();
  [socksPort, httpPort] = await Promise.all([freePort(), freePort()]);
  const adminPort = await freePort();
  const file = join(dir, 'node.yaml');
  writeFileSync(file, 'dataDir: ./data\n');
  id = JSON.parse(execFileSync('node', [BIN, 'id', '-c', file, '--json']).toString()).id;
  node = await startUgate(
    file,
    `dataDir: ./data
log: { level: info, format: json }
ssh: { listen: null }
hbone: null
socks: { listen: 127.0.0.1:${socksPort}, users: { alice: ${SOCKS_PASSWORD} } }
http: { listen: 127.0.0.1:${httpPort}, users: { bob: ${HTTP_PASSWORD} } }
admin: { listen: 127.0.0.1:${adminPort} }
routes: []
services: { "echo.mesh.internal:7": 127.0.0.1:${echo.port} }
`,
    adminPort,
  );
  const securedPort = await freePort();
  secured = await startUgate(
    join(dir, 'secured.yaml'),
    `dataDir: ./data2
log: { format: json }
ssh: { listen: null }
hbone: null
socks: null
http: null
admin: { listen: 127.0.0.1:${securedPort}, token: ${TOKEN} }
routes: []
services: { "echo.mesh.internal:7": 127.0.0.1:${echo.port} }
`,
    securedPort,
  );
}, 60_000);

afterAll(async () => {
  await Promise.all([node?.stop('SIGKILL'), secured?.stop('SIGKILL')]);
  await echo?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('admin API', () => {
  it('health: /healthz/live and /healthz/ready answer 200 in text', async () => {
    for (const [path, body] of [
      ['/healthz/live', 'live\n'],
      ['/healthz/ready', 'ready\n'],
    ] as const) {
      const r = await getJson(node, path);
      expect(r).toEqual({ status: 200, type: 'text/plain', body });
    }
  });

  it('/metrics is Prometheus text (version 0.0.4)', async () => {
    const r = await getJson(node, '/metrics');
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; version=0.0.4');
    expect(r.body).toMatch(/^# HELP ugate_streams_total /m);
  });

  it('/api/node: identity, names, pid, ready', async () => {
    const r = await getJson(node, '/api/node');
    expect(r.status).toBe(200);
    expect(r.type).toBe(JSON_TYPE);
    expect(r.body).toMatchObject({ id, names: ['echo.mesh.internal', `${id}.m`], ready: true, pid: node.pid, node: process.version });
    expect((r.body as { vip6: string }).vip6).toMatch(/^fd00::/);
    expect((r.body as { uptimeS: number }).uptimeS).toBeGreaterThanOrEqual(0);
  });

  it('/api/listeners: each listener with its bound address', async () => {
    const r = await getJson(node, '/api/listeners');
    expect(r.status).toBe(200);
    expect(r.body).toEqual([
      { name: 'socks', addresses: [`127.0.0.1:${socksPort}`] },
      { name: 'http', addresses: [`127.0.0.1:${httpPort}`] },
    ]);
  });

  it('/api/carriers, /api/routes, /state: their shapes', async () => {
    const carriers = await getJson(node, '/api/carriers');
    expect(carriers.status).toBe(200);
    expect(carriers.body).toEqual({ ssh: { gateways: [], peers: [] }, hbone: {} });

    const routes = await getJson(node, '/api/routes');
    expect(routes.status).toBe(200);
    expect(routes.body).toMatchObject({
      services: [{ name: 'echo.mesh.internal:7', address: `127.0.0.1:${echo.port}`, origin: 'config (services)' }],
      registrations: [],
      routes: [],
      discovery: { sources: [] },
    });

    const state = await getJson(node, '/state');
    expect(state.status).toBe(200);
    expect(state.body).toMatchObject({
      id,
      ready: true,
      listeners: { socks: [`127.0.0.1:${socksPort}`], http: [`127.0.0.1:${httpPort}`] },
      streams: { opened: expect.any(Number), failed: expect.any(Number), active: expect.any(Number) },
    });
  });

  it('/api/resolve: where a name goes; 400 without a target or with a malformed one', async () => {
    const r = await getJson(node, '/api/resolve?target=echo.mesh.internal:7');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      target: 'echo.mesh.internal:7',
      answeredBy: 'service',
      upstreams: [{ carrier: 'direct', address: { host: '127.0.0.1', port: echo.port } }],
    });
    const unknown = await getJson(node, '/api/resolve?target=nowhere.invalid:1');
    expect(unknown.status).toBe(200);
    expect(unknown.body).toMatchObject({ upstreams: [], error: { code: 'UGATE_ERR_NO_ROUTE' } });
    for (const q of ['', '?target=', '?target=no-port']) {
      const bad = await getJson(node, `/api/resolve${q}`);
      expect(bad.status, q).toBe(400);
      expect(bad.body, q).toMatchObject({ code: 'UGATE_ERR_BAD_REQUEST', error: expect.any(String) });
    }
  });

  it('/api/streams lists a live SOCKS stream with growing bytes; DELETE closes it; 404 for an unknown sid', async () => {
    const { rep, wire } = await socksConnect(socksPort, 'echo.mesh.internal', 7, alice);
    expect(rep).toBe(0);
    await echoRoundTrip(wire, 100_000);
    const first = await poll(
      async () => (await streams(node)).find((s) => s.src === wire.src && s.bytesOut === 100_000),
      'the stream listed',
    );
    expect(first).toMatchObject({
      proto: 'socks5',
      target: 'echo.mesh.internal:7',
      peer: 'alice',
      carrier: 'direct',
      upstream: `127.0.0.1:${echo.port}`,
      bytesIn: 100_000,
      bytesOut: 100_000,
    });
    expect(first.sid).toMatch(/^[a-z0-9]+$/);
    await echoRoundTrip(wire, 50_000);
    const second = (await streams(node)).find((s) => s.sid === first.sid);
    expect(second).toMatchObject({ bytesIn: 150_000, bytesOut: 150_000 });
    expect(second!.ageMs).toBeGreaterThanOrEqual(first.ageMs);
    // The SSE snapshot sees it too.
    const snap = await firstEvent(node);
    expect(snap.streams.map((s) => s.sid)).toContain(first.sid);

    const del = await getJson(node, `/api/streams/${first.sid}`, { method: 'DELETE' });
    expect(del).toEqual({ status: 200, type: JSON_TYPE, body: { closed: first.sid } });
    // The client sees the connection end (reset: it was cut, not finished).
    await wire.waitClosed();
    expect((wire.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    const line = await node.waitLog((l) => l.msg === 'stream' && l.sid === first.sid, 'access line of the closed stream');
    expect(line).toMatchObject({ result: 'UGATE_ERR_ABORTED', code: 'UGATE_ERR_ABORTED', err: 'closed by the admin API', peer: 'alice' });
    expect((await streams(node)).some((s) => s.sid === first.sid)).toBe(false);
    await waitFor(() => echo.sockets.size === 0, 5_000, 'the upstream side closed too');

    const again = await getJson(node, `/api/streams/${first.sid}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(again.body).toMatchObject({ error: `no live stream ${first.sid}` });
    expect((await getJson(node, '/api/streams/nosuchsid', { method: 'DELETE' })).status).toBe(404);
  });

  it('/api/events: server-sent snapshots, one after another', async () => {
    const ac = new AbortController();
    const res = await node.api('/api/events', { signal: ac.signal });
    try {
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      const events = await readEvents(res, 2);
      for (const e of events) {
        expect(e.event).toBe('snapshot');
        expect(e.data).toMatchObject({ node: { id }, streams: expect.any(Array), counters: { active: expect.any(Number) } });
      }
      expect(events[1]!.data.time).toBeGreaterThan(events[0]!.data.time);
    } finally {
      ac.abort();
    }
  });

  it('/api/config is the effective config with SOCKS and HTTP passwords redacted', async () => {
    const r = await getJson(node, '/api/config');
    expect(r.status).toBe(200);
    expect(r.type).toBe(JSON_TYPE);
    expect(r.body).toMatchObject({
      socks: { listen: `127.0.0.1:${socksPort}`, users: { alice: '(redacted)' } },
      http: { listen: `127.0.0.1:${httpPort}`, users: { bob: '(redacted)' } },
      services: { 'echo.mesh.internal:7': `127.0.0.1:${echo.port}` },
      limits: { drainMs: 10_000 },
    });
    const raw = JSON.stringify(r.body);
    expect(raw).not.toContain(SOCKS_PASSWORD);
    expect(raw).not.toContain(HTTP_PASSWORD);
    // The password still works: redaction is only in the view.
    const { rep, wire } = await socksConnect(socksPort, 'echo.mesh.internal', 7, alice);
    expect(rep).toBe(0);
    wire.destroy();
  });

  it('/api/log: GET and PUT the level; debug lines appear in stdout, then stop; bad levels and bodies are 400', async () => {
    const level = async () => (await getJson(node, '/api/log')).body;
    expect(await level()).toEqual({ level: 'info' });
    /** A connect-and-close on the SOCKS port: logged only at debug. */
    const probe = async () => {
      const w = await Wire.open(socksPort);
      w.end();
      await w.waitClosed();
      return w.src;
    };
    const debugLine = (src: string) => (l: Record<string, unknown>) => l.msg === 'client closed before sending anything' && l.src === src;
    const put = (body: string) => getJson(node, '/api/log', { method: 'PUT', body, headers: { 'content-type': JSON_TYPE } });

    // At info: the probe leaves no line. The next info line (the level change) proves the log got that far.
    const quiet1 = await probe();
    let mark = node.logs().length;
    expect(await put('{"level":"debug"}')).toEqual({ status: 200, type: JSON_TYPE, body: { level: 'debug' } });
    await node.waitLog((l) => l.msg === 'log level changed', 'level changed to debug', 10_000, mark);
    expect(node.logs().some(debugLine(quiet1))).toBe(false);
    expect(await level()).toEqual({ level: 'debug' });

    const loud = await probe();
    const line = await node.waitLog(debugLine(loud), 'the debug line');
    expect(line.level).toBe(20);

    mark = node.logs().length;
    expect((await put('{"level":"info"}')).body).toEqual({ level: 'info' });
    await node.waitLog((l) => l.msg === 'log level changed', 'level changed back', 10_000, mark);
    const quiet2 = await probe();
    mark = node.logs().length;
    expect((await put('{"level":"info"}')).status).toBe(200);
    await node.waitLog((l) => l.msg === 'log level changed', 'a later info line', 10_000, mark);
    expect(node.logs().some(debugLine(quiet2))).toBe(false);

    for (const body of ['{"level":"loud"}', '{}', 'null', '[]', '{bad json']) {
      const r = await put(body);
      expect(r.status, body).toBe(400);
      expect(r.body, body).toMatchObject({ code: 'UGATE_ERR_BAD_REQUEST', error: expect.any(String) });
    }
    expect((await put('{"level":"loud"}')).body).toMatchObject({ error: expect.stringContaining('debug') });
    expect(await level()).toEqual({ level: 'info' });
  });

  it('POST /api/reload with the same file applies nothing and keeps streams', async () => {
    const { rep, wire } = await socksConnect(socksPort, 'echo.mesh.internal', 7, alice);
    expect(rep).toBe(0);
    const r = await getJson(node, '/api/reload', { method: 'POST' });
    expect(r).toEqual({ status: 200, type: JSON_TYPE, body: { ok: true, applied: [], restartNeeded: [], closedStreams: [] } });
    await echoRoundTrip(wire, 1000);
    wire.destroy();
  });

  it('wrong methods are 405 (JSON); unknown paths 404 (text)', async () => {
    for (const [method, path] of [
      ['POST', '/api/node'],
      ['GET', '/api/reload'],
      ['DELETE', '/api/streams'],
      ['POST', '/metrics'],
      ['PATCH', '/api/log'],
    ] as const) {
      const r = await getJson(node, path, { method });
      expect(r.status, `${method} ${path}`).toBe(405);
      expect(r.body).toMatchObject({ code: 'UGATE_ERR_BAD_REQUEST', error: `${method} ${path} is not supported` });
    }
    expect(await getJson(node, '/no/such/thing')).toEqual({ status: 404, type: 'text/plain', body: 'not found\n' });
  });
});

describe('admin token', () => {
  const auth = (t: string) => ({ headers: { authorization: t } });

  it('401 without the token or with a wrong one, on every endpoint but /healthz/*', async () => {
    for (const path of ['/metrics', '/state', '/api/node', '/api/streams', '/api/config', '/api/log', '/api/events', '/nonexistent']) {
      for (const init of [
        undefined,
        auth(`Bearer ${TOKEN}x`),
        auth(`Bearer ${TOKEN.slice(0, -1)}x`),
        auth(TOKEN),
        auth(`Basic ${TOKEN}`),
      ]) {
        const r = await secured.api(path, init);
        expect(r.status, `${path} ${JSON.stringify(init)}`).toBe(401);
        expect(r.headers.get('www-authenticate')).toBe('Bearer realm="ugate admin"');
        expect(await r.json()).toMatchObject({ code: 'UGATE_ERR_AUTH' });
      }
    }
    for (const init of [{ method: 'POST' }, { method: 'POST', ...auth('Bearer nope') }]) {
      expect((await secured.api('/api/reload', init)).status).toBe(401);
    }
    expect((await secured.api('/api/streams/1', { method: 'DELETE' })).status).toBe(401);
    expect((await secured.api('/api/log', { method: 'PUT', body: '{"level":"debug"}' })).status).toBe(401);
    expect((await getJson(secured, '/api/log', auth(`Bearer ${TOKEN}`))).body).toEqual({ level: 'info' });
  });

  it('/healthz/* needs no token', async () => {
    expect((await secured.api('/healthz/live')).status).toBe(200);
    expect((await secured.api('/healthz/ready')).status).toBe(200);
  });

  it('200 with the token; the config view redacts it', async () => {
    for (const path of ['/metrics', '/state', '/api/node', '/api/listeners', '/api/carriers', '/api/routes', '/api/streams', '/api/log']) {
      expect((await secured.api(path, auth(`Bearer ${TOKEN}`))).status, path).toBe(200);
    }
    const r = await getJson(secured, '/api/config', auth(`Bearer ${TOKEN}`));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ admin: { token: '(redacted)' } });
    expect(JSON.stringify(r.body)).not.toContain(TOKEN);
  });

  it('the CLI (ugate reload, ugate resolve) reads the token from the config and gets through', async () => {
    const reload = await run('node', [BIN, 'reload', '-c', secured.file]);
    expect(reload.code, reload.stderr).toBe(0);
    expect(JSON.parse(reload.stdout.toString())).toMatchObject({ ok: true, applied: [] });
    const resolve = await run('node', [BIN, 'resolve', '-c', secured.file, 'echo.mesh.internal:7', '--json']);
    expect(resolve.code, resolve.stderr).toBe(0);
    expect(resolve.stderr).toBe(''); // answered by the node, not by the local fallback
    expect(JSON.parse(resolve.stdout.toString())).toMatchObject({ answeredBy: 'service' });
  });
});

describe('admin default bind', () => {
  it('a config without `admin` serves the admin API on 127.0.0.1:15000 only', async () => {
    // Port 15000 belongs to other tests on the host: the node runs in a network namespace of its own.
    await requireNetns();
    const lan = await createLan();
    const file = join(dir, 'default-admin.yaml');
    // Nothing about admin; the SSH listener keeps its default (0.0.0.0:15022) as a control.
    writeFileSync(file, 'dataDir: ./data3\nlog: { format: json }\n');
    const p = startIn(lan.a, 'node', [BIN, 'run', '-c', file], { env: { ...process.env, HOME: dir } });
    try {
      await waitFor(() => p.output().includes('ugate node started'), 15_000, 'node started');
      const started = p
        .output()
        .split('\n')
        .find((l) => l.includes('ugate node started'))!;
      expect(JSON.parse(started)).toMatchObject({ admin: '127.0.0.1:15000', listen: { ssh: ['0.0.0.0:15022'] } });
      /** Inside the namespace: can a TCP connection be made to host:port? */
      const reach = async (host: string, port: number) => {
        const script = `const s=require('net').connect(${port},'${host}');s.on('connect',()=>{console.log('open');s.destroy()});s.on('error',e=>console.log(e.code))`;
        return (await execIn(lan.a, 'node', ['-e', script])).stdout.toString().trim();
      };
      const live = await execIn(lan.a, 'curl', ['-sS', '--max-time', '5', 'http://127.0.0.1:15000/healthz/live']);
      expect(live.stdout.toString()).toBe('live\n');
      expect(await reach('127.0.0.1', 15000)).toBe('open');
      // The namespace's LAN address: the SSH listener answers there, the admin port does not.
      expect(await reach(lan.ipA, 15022)).toBe('open');
      expect(await reach(lan.ipA, 15000)).toBe('ECONNREFUSED');
    } finally {
      await p.stop('SIGKILL');
      await lan.destroy();
    }
  });
});

interface Snapshot {
  time: number;
  node: { id: string };
  streams: StreamView[];
  counters: Record<string, unknown>;
}

/** Read `n` server-sent events from a response. */
async function readEvents(res: Response, n: number): Promise<{ event: string; data: Snapshot }[]> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const out: { event: string; data: Snapshot }[] = [];
  while (out.length < n) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`event stream ended after ${out.length} events`);
    buf += decoder.decode(value, { stream: true });
    for (let i = buf.indexOf('\n\n'); i >= 0 && out.length < n; i = buf.indexOf('\n\n')) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const field = (name: string) =>
        block
          .split('\n')
          .find((l) => l.startsWith(`${name}: `))
          ?.slice(name.length + 2);
      out.push({ event: field('event') ?? '', data: JSON.parse(field('data') ?? 'null') });
    }
  }
  return out;
}

async function firstEvent(p: UgateProcess): Promise<Snapshot> {
  const ac = new AbortController();
  const res = await p.api('/api/events', { signal: ac.signal });
  try {
    return (await readEvents(res, 1))[0]!.data;
  } finally {
    ac.abort();
  }
}
