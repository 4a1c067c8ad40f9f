/**
 * Reload under load, on a real process: a long transfer through SOCKS keeps going, byte-exact,
 * while the config changes under it — its own SOCKS listener moves to another port, an HTTP
 * proxy listener appears, a route is added, the policy starts denying another target (whose live
 * stream is closed, with the reason logged) — and while broken configs are refused. `ugate
 * reload`, POST /api/reload and SIGHUP all read the file again.
 */

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, sleep, type Wire } from './support/listener.js';
import { freePort, run } from './support/proc.js';
import { echoServer, type TestServer, waitFor } from './support/servers.js';
import { BIN, echoRoundTrip, type LogRecord, poll, socksConnect, startUgate, type UgateProcess } from './support/ugate-node.js';

const dir = mkdtempSync(join(tmpdir(), 'ugate-reload-'));
const file = join(dir, 'node.yaml');

/** At least this much goes through the long transfer, however fast the steps are. */
const MIN_BYTES = 64 * 1024 * 1024;
const CHUNK = 128 * 1024;

let node: UgateProcess;
let echo: TestServer;
let web: HttpServer;
let webPort: number;
let adminPort: number;
let socks1: number;
let socks2: number;
let httpPort: number;
let sshPort: number;

/** Receives the long transfer: hashes it, counts it, replies the SHA-256 hex after the client's FIN. */
let sink: Server;
let sinkPort: number;
let received = 0;

interface Parts {
  socks: number;
  http?: boolean;
  route?: boolean;
  deny?: boolean;
  extra?: string;
}
function config(p: Parts): string {
  return `dataDir: ./data
log: { level: info, format: json }
ssh: { listen: null }
hbone: null
socks: { listen: 127.0.0.1:${p.socks} }
http: ${p.http ? `{ listen: 127.0.0.1:${httpPort} }` : 'null'}
admin: { listen: 127.0.0.1:${adminPort} }
services:
  "sink.mesh.internal:9": 127.0.0.1:${sinkPort}
  "other.mesh.internal:7": 127.0.0.1:${echo.port}
  "web.mesh.internal:80": 127.0.0.1:${webPort}
routes:${p.route ? `\n  - { match: echo.route.test, carrier: direct, address: "127.0.0.1:${echo.port}" }` : ' []'}
policy:${p.deny ? '\n  - { action: deny, to: [other.mesh.internal] }' : ' []'}
${p.extra ?? ''}`;
}

const ugateReload = () => run('node', [BIN, 'reload', '-c', file], { timeoutMs: 30_000 });

/** Connection attempt outcome: 'open' or the error code. */
function reach(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('connect', () => {
      s.destroy();
      resolve('open');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** Writes random chunks at a steady pace (backpressure respected) until told to finish, then half-closes. */
function steadyWriter(wire: Wire) {
  const hash = createHash('sha256');
  let written = 0;
  let finishing = false;
  const done = (async () => {
    while (!finishing || written < MIN_BYTES) {
      const c = randomBytes(CHUNK);
      hash.update(c);
      written += c.length;
      if (!wire.socket.write(c)) await once(wire.socket, 'drain');
      await sleep(5);
    }
    wire.end();
  })();
  done.catch(() => {});
  return {
    get written() {
      return written;
    },
    async finish(): Promise<{ bytes: number; sha256: string }> {
      finishing = true;
      await done;
      return { bytes: written, sha256: hash.digest('hex') };
    },
  };
}

/** The transfer is still moving: the sink gets more bytes from now on. */
async function keepsGoing(what: string): Promise<void> {
  const at = received;
  await waitFor(() => received > at + CHUNK, 20_000, `the transfer to keep going (${what})`);
}

const since = (mark: number, match: (l: LogRecord) => boolean, what: string) => node.waitLog(match, what, 10_000, mark);

beforeAll(async () => {
  echo = await echoServer();
  sink = createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      received += d.length;
      h.update(d);
    });
    s.on('end', () => s.end(h.digest('hex')));
  });
  web = createHttpServer((_req, res) => res.end('hello from web\n'));
  [sinkPort, webPort] = (await Promise.all(
    [sink, web].map(
      (s) => new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port))),
    ),
  )) as [number, number];
  [adminPort, socks1, socks2, httpPort, sshPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  node = await startUgate(file, config({ socks: socks1 }), adminPort);
}, 60_000);

afterAll(async () => {
  await node?.stop('SIGKILL');
  await echo?.close();
  sink?.close();
  web?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('reload under load', () => {
  it('a transfer stays byte-exact while listeners, routes and policy change and broken configs are refused', async () => {
    // The long transfer, through the first SOCKS listener.
    const t = await socksConnect(socks1, 'sink.mesh.internal', 9);
    expect(t.rep).toBe(0);
    const writer = steadyWriter(t.wire);
    await keepsGoing('start');
    const transferSid = (await poll(
      async () =>
        ((await (await node.api('/api/streams')).json()) as { sid: string; src: string }[]).find((s) => s.src === t.wire.src)?.sid,
      'the transfer listed',
    )) as string;

    // 1. Listeners: the SOCKS listener carrying the transfer moves to another port; an HTTP proxy appears.
    expect(await reach(httpPort)).toBe('ECONNREFUSED');
    writeFileSync(file, config({ socks: socks2, http: true }));
    let r = await ugateReload();
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toMatchObject({ ok: true, closedStreams: [] });
    expect(JSON.parse(r.stdout.toString()).applied).toEqual(expect.arrayContaining(['socks', 'http']));
    expect(await reach(socks1)).toBe('ECONNREFUSED');
    const viaNew = await socksConnect(socks2, 'other.mesh.internal', 7);
    expect(viaNew.rep).toBe(0);
    await echoRoundTrip(viaNew.wire, 10_000);
    viaNew.wire.destroy();
    const page = await curl(['-x', `http://127.0.0.1:${httpPort}`, 'http://web.mesh.internal/']);
    expect(page.stderr).toBe('');
    expect(page.stdout.toString()).toBe('hello from web\n');
    await keepsGoing('after the listeners changed');

    // 2. Routes: a new route is used by the next stream, right after the reload.
    const before = await socksConnect(socks2, 'echo.route.test', 7);
    expect(before.rep).toBe(4); // host unreachable: no route yet
    before.wire.destroy();
    writeFileSync(file, config({ socks: socks2, http: true, route: true }));
    r = await ugateReload();
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toMatchObject({ ok: true, applied: ['routes'] });
    const routed = await socksConnect(socks2, 'echo.route.test', 7);
    expect(routed.rep).toBe(0);
    await echoRoundTrip(routed.wire, 10_000);
    routed.wire.destroy();
    await keepsGoing('after the routes changed');

    // 3. Policy: another live stream's target becomes denied; that stream is closed, the transfer is not.
    const victim = await socksConnect(socks2, 'other.mesh.internal', 7);
    expect(victim.rep).toBe(0);
    await echoRoundTrip(victim.wire, 1000);
    const victimSid = (await poll(
      async () =>
        ((await (await node.api('/api/streams')).json()) as { sid: string; src: string }[]).find((s) => s.src === victim.wire.src)?.sid,
      'the second stream listed',
    )) as string;
    let mark = node.logs().length;
    writeFileSync(file, config({ socks: socks2, http: true, route: true, deny: true }));
    r = await ugateReload();
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toMatchObject({ ok: true, applied: ['policy'], closedStreams: [victimSid] });
    await victim.wire.waitClosed();
    expect((victim.wire.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    const closedLine = await since(mark, (l) => l.msg === 'stream' && l.sid === victimSid, 'access line of the denied stream');
    expect(closedLine).toMatchObject({
      result: 'UGATE_ERR_POLICY_DENIED',
      code: 'UGATE_ERR_POLICY_DENIED',
      target: 'other.mesh.internal:7',
    });
    expect(closedLine.err).toMatch(/^closed: the policy now denies it \(.*deny rule #0\)$/);
    await since(mark, (l) => l.msg === 'policy changed: closed the streams it now denies', 'the policy close logged');
    const refused = await socksConnect(socks2, 'other.mesh.internal', 7);
    expect(refused.rep).toBe(2);
    refused.wire.destroy();
    expect(await (await node.api('/metrics')).text()).toMatch(/^ugate_policy_closed_streams_total 1$/m);
    await keepsGoing('after the policy changed');

    // 4. Broken configs are refused; the running config stays.
    const policyDenies = async () => {
      const s = await socksConnect(socks2, 'other.mesh.internal', 7);
      s.wire.destroy();
      return s.rep === 2;
    };
    // a YAML syntax error
    writeFileSync(file, 'socks: [unclosed\n');
    r = await ugateReload();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(file);
    let api = await node.api('/api/reload', { method: 'POST' });
    expect(api.status).toBe(400);
    let body = (await api.json()) as { ok: boolean; errors: string[] };
    expect(body.ok).toBe(false);
    expect(body.errors.join('\n')).toContain(file);
    mark = node.logs().length;
    node.signal('SIGHUP');
    await since(mark, (l) => l.msg === 'reload refused: the config is invalid; the running config stays', 'SIGHUP refused');
    // a schema error
    writeFileSync(file, config({ socks: socks2, http: true, route: true, deny: true }).replace(`127.0.0.1:${httpPort}`, 'nowhere'));
    r = await ugateReload();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('http.listen: expected host:port');
    api = await node.api('/api/reload', { method: 'POST' });
    expect(api.status).toBe(400);
    body = (await api.json()) as { ok: boolean; errors: string[] };
    expect(body).toMatchObject({ ok: false, errors: expect.arrayContaining([expect.stringContaining('http.listen: expected host:port')]) });
    // valid for the CLI, refused by the node: a file it names does not exist
    writeFileSync(
      file,
      config({
        socks: socks2,
        http: true,
        route: true,
        extra: `ssh: { listen: 127.0.0.1:${sshPort}, authorizedKeys: ./missing_keys }\n`,
      }).replace('ssh: { listen: null }\n', ''),
    );
    r = await ugateReload();
    expect(r.code, r.stderr).toBe(1);
    const refusedByNode = JSON.parse(r.stdout.toString()) as { ok: boolean; errors: string[] };
    expect(refusedByNode.ok).toBe(false);
    expect(refusedByNode.errors.join('\n')).toMatch(/missing_keys/);
    // Nothing of those changes took: no SSH listener, the policy still denies, routes and listeners still work.
    expect(await reach(sshPort)).toBe('ECONNREFUSED');
    expect(await policyDenies()).toBe(true);
    const still = await socksConnect(socks2, 'echo.route.test', 7);
    expect(still.rep).toBe(0);
    await echoRoundTrip(still.wire, 1000);
    still.wire.destroy();
    expect((await curl(['-x', `http://127.0.0.1:${httpPort}`, 'http://web.mesh.internal/'])).stdout.toString()).toBe('hello from web\n');
    await keepsGoing('after the refused reloads');

    // 5. SIGHUP with a good config applies it: the deny rule goes away.
    writeFileSync(file, config({ socks: socks2, http: true, route: true }));
    mark = node.logs().length;
    node.signal('SIGHUP');
    const applied = await since(mark, (l) => l.msg === 'reloaded', 'SIGHUP reload');
    expect(applied).toMatchObject({ ok: true, applied: ['policy'], closedStreams: [] });
    expect(await policyDenies()).toBe(false);
    await keepsGoing('after SIGHUP');

    // The end: every byte arrived, in order.
    const sent = await writer.finish();
    expect(sent.bytes).toBeGreaterThanOrEqual(MIN_BYTES);
    const reply = (await t.wire.readToEnd(60_000)).toString();
    expect(received).toBe(sent.bytes);
    expect(reply).toBe(sent.sha256);
    const line = await node.waitLog((l) => l.msg === 'stream' && l.sid === transferSid, 'access line of the transfer');
    expect(line).toMatchObject({ result: 'ok', bytesIn: sent.bytes, bytesOut: 64, target: 'sink.mesh.internal:9', proto: 'socks5' });
  }, 180_000);
});
