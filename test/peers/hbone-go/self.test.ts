/**
 * The Go HBONE peer against itself, no ugate code involved: proves the reference peer before it is
 * used to judge ugate. Go server + Go client + local TCP upstreams on 127.0.0.1.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoPeer, type GoServer, makeCa, makeLeaf, type Pem, runGoClient, startGoServer } from '../../support/go-peer.js';

const TD = 'spiffe://cluster.local/ns/default/sa';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function listen(onConn: (s: Socket) => void): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      onConn(s);
    });
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}
const portOf = (s: Server) => (s.address() as { port: number }).port;
const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));

describe('hbone-go peer (Go server <-> Go client)', () => {
  let dir: string;
  let ca: Pem;
  let server: Pem;
  let client: Pem;
  let foreign: Pem;
  let go: GoServer;
  let hashUp: Server; // hashes everything, replies the hex digest after the client's half-close
  let echoUp: Server; // echoes while reading (full duplex)
  let bannerUp: Server; // writes a line and closes first, while the client may still be sending
  let closedPort: number;

  beforeAll(async () => {
    const bin = buildGoPeer();
    dir = mkdtempSync(join(tmpdir(), 'hbone-go-pki-'));
    ca = makeCa(dir, 'ca');
    server = makeLeaf(dir, 'server', ca, `${TD}/server`);
    client = makeLeaf(dir, 'client', ca, `${TD}/a`);
    const ca2 = makeCa(dir, 'ca2');
    foreign = makeLeaf(dir, 'foreign', ca2, `${TD}/a`); // right identity, wrong root
    await bin;
    hashUp = await listen((s) => {
      const h = createHash('sha256');
      s.on('data', (d: Buffer) => h.update(d));
      s.on('end', () => s.end(h.digest('hex')));
    });
    echoUp = await listen((s) => s.pipe(s));
    bannerUp = await listen((s) => {
      s.resume();
      s.end('hello\n');
    });
    const tmp = await listen(() => {});
    closedPort = portOf(tmp);
    await close(tmp);
    go = await startGoServer({ cert: server.cert, key: server.key, ca: ca.cert, identity: `${TD}/a` });
  });

  afterAll(async () => {
    await go?.stop();
    for (const s of [hashUp, echoUp, bannerUp]) if (s) await close(s);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const opts = () => ({ port: go.port, ca: ca.cert, cert: client.cert, key: client.key, expectIdentity: `${TD}/server` });

  it('relays 8 MiB byte-exact, half-close client->server, reply after it', async () => {
    const input = randomBytes(8 << 20);
    const headers = {
      baggage: 'k8s.namespace.name=default,k8s.deployment.name=a',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      forwarded: 'for="127.0.0.1:5000";host=svc',
    };
    const r = await runGoClient({ ...opts(), authority: `127.0.0.1:${portOf(hashUp)}`, headers, input });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(sha256(input));
    const log = go.streams().find((s) => s.authority === `127.0.0.1:${portOf(hashUp)}`);
    expect(log).toMatchObject({ method: 'CONNECT', status: 200, up: 8 << 20, down: 64, reqEnd: 'eof', respEnd: 'eof' });
    expect(log?.peer).toEqual([`${TD}/a`]);
    expect(log?.headers).toMatchObject({ Baggage: [headers.baggage], Traceparent: [headers.traceparent], Forwarded: [headers.forwarded] });
    expect(log?.headers['User-Agent']).toBeUndefined();
  });

  it('is full duplex (4 MiB echoed while still sending)', async () => {
    const input = randomBytes(4 << 20);
    const r = await runGoClient({ ...opts(), authority: `127.0.0.1:${portOf(echoUp)}`, input });
    expect(r.code).toBe(0);
    expect(sha256(r.stdout)).toBe(sha256(input));
  });

  it('upstream closing first ends the response; the client exits 0', async () => {
    const r = await runGoClient({ ...opts(), authority: `127.0.0.1:${portOf(bannerUp)}`, input: randomBytes(1 << 20) });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe('hello\n');
  });

  it('503 when the upstream port is closed', async () => {
    const authority = `127.0.0.1:${closedPort}`;
    const s = await runGoClient({ ...opts(), authority, statusOnly: true });
    expect(s.stdout.toString()).toBe('STATUS 503\n');
    expect(s.code).toBe(0);
    const r = await runGoClient({ ...opts(), authority });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('STATUS 503');
  });

  it('400 for a non-CONNECT method and for a bad authority', async () => {
    const g = await runGoClient({ ...opts(), authority: `127.0.0.1:${portOf(hashUp)}`, method: 'GET', statusOnly: true });
    expect(g.stdout.toString()).toBe('STATUS 400\n');
    const a = await runGoClient({ ...opts(), authority: 'no-port', statusOnly: true });
    expect(a.stdout.toString()).toBe('STATUS 400\n');
  });

  it('TLS failure (exit 4) when the server is not the expected identity', async () => {
    const r = await runGoClient({ ...opts(), authority: `127.0.0.1:${portOf(hashUp)}`, expectIdentity: `${TD}/other` });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^TLSERROR .*want spiffe:\/\/cluster.local\/ns\/default\/sa\/other/);
  });

  it('TLS failure (exit 4) when the client cert is from another CA', async () => {
    const r = await runGoClient({ ...opts(), cert: foreign.cert, key: foreign.key, authority: `127.0.0.1:${portOf(hashUp)}` });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^TLSERROR .*tls: bad certificate/);
  });

  it('TLS failure (exit 4) when the client cert lacks the required identity', async () => {
    const r = await runGoClient({ ...opts(), cert: server.cert, key: server.key, authority: `127.0.0.1:${portOf(hashUp)}` });
    expect(r.code).toBe(4);
    expect(go.output()).toContain(`want ${TD}/a`);
  });
});
