/**
 * HBONE interop with an independent peer written with Go's standard library
 * (test/peers/hbone-go): Go client → ugate server, ugate dialer → Go server.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { createCa, hboneDialer, issueWorkloadCert, type Pem, WorkloadCredentials, writeCredentials } from '@ugate/proto-hbone';
import { createNode, type UgateNode } from 'ugate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoPeer, runGoClient, startGoServer } from './support/go-peer.js';
import { recordingLogger } from './support/listener.js';
import { freePort } from './support/proc.js';
import { hashServer, randomBytes, readAll, sha256, startServer, type TestServer, waitFor } from './support/servers.js';

const TD = 'cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'ugate-hbone-go-'));
const logger = recordingLogger();
let ca: Pem;
let node: UgateNode;
let hbonePort: number;
let sink: TestServer;

/** Issue a workload identity into its own folder (tls.crt, tls.key, ca.crt). */
async function identity(name: string, sa: string, opts: { root?: Pem; td?: string; ns?: string } = {}) {
  const root = opts.root ?? ca;
  const leaf = await issueWorkloadCert(root, { trustDomain: opts.td ?? TD, namespace: opts.ns ?? 'default', serviceAccount: sa });
  const d = join(dir, name);
  writeCredentials(d, leaf, root.certPem);
  return { dir: d, cert: join(d, 'tls.crt'), key: join(d, 'tls.key'), ca: join(d, 'ca.crt') };
}

const client = async (
  who: { cert: string; key: string; ca: string },
  authority: string,
  extra: Partial<Parameters<typeof runGoClient>[0]> = {},
) =>
  runGoClient({
    port: hbonePort,
    authority,
    cert: who.cert,
    key: who.key,
    ca: who.ca,
    expectIdentity: `spiffe://${TD}/ns/default/sa/node`,
    ...extra,
  });

beforeAll(async () => {
  await buildGoPeer();
  ca = await createCa({ trustDomain: TD });
  sink = await hashServer();
  const me = await identity('node', 'node');
  hbonePort = await freePort();
  node = createNode(
    {
      dataDir: join(dir, 'data'),
      workload: { certDir: me.dir },
      hbone: { listen: `127.0.0.1:${hbonePort}` },
      ssh: { listen: null },
      socks: null,
      http: null,
      admin: null,
      policy: [{ action: 'deny', from: [`${TD}/ns/default/sa/blocked`] }],
    },
    { logger },
  );
  await node.start();
}, 60_000);

afterAll(async () => {
  await node?.stop(0);
  await sink?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Go HBONE client → ugate HBONE server', () => {
  it('200, byte-exact, client half-close then the reply; headers land in the stream metadata', async () => {
    const me = await identity('c1', 'c1');
    const data = randomBytes(8 * 1024 * 1024 + 1);
    const r = await client(me, `127.0.0.1:${sink.port}`, {
      input: data,
      headers: { baggage: 'k8s.namespace.name=default', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(sha256(data));
    await waitFor(() => logger.lines.some((l) => l.fields.proto === 'hbone' && l.fields.result === 'ok'), 5000, 'access line');
  });

  it('server half-close first: the Go client receives everything and a clean end', async () => {
    // Go's HTTP/2 client stops sending its request body once the response has ended (END_STREAM), so
    // "server ends first, client keeps sending" cannot be shown with this peer; the compliance suite
    // shows it between ugate peers (test/compliance/hbone.test.ts).
    const me = await identity('c2', 'c2');
    const early = await startServer((s) => {
      s.resume();
      s.end('server first\n');
    });
    const r = await client(me, `127.0.0.1:${early.port}`, { input: Buffer.from('x') });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe('server first\n');
    await early.close();
  });

  it('503 for a closed port, 401 for a denied principal, 400 for a non-CONNECT request', async () => {
    const me = await identity('c3', 'c3');
    const closed = await freePort();
    expect((await client(me, `127.0.0.1:${closed}`, { statusOnly: true })).stdout.toString().trim()).toBe('STATUS 503');
    const blocked = await identity('blocked', 'blocked');
    expect((await client(blocked, `127.0.0.1:${sink.port}`, { statusOnly: true })).stdout.toString().trim()).toBe('STATUS 401');
    expect((await client(me, `127.0.0.1:${sink.port}`, { statusOnly: true, method: 'GET' })).stdout.toString().trim()).toBe('STATUS 400');
  });

  it('fails TLS for a client certificate from another CA or another trust domain', async () => {
    const otherCa = await createCa({ trustDomain: TD });
    const foreign = await identity('foreign', 'x', { root: otherCa });
    const r1 = await client({ ...foreign, ca: join(dir, 'node', 'ca.crt') }, `127.0.0.1:${sink.port}`, { input: Buffer.from('x') });
    // Node rejects the certificate during the handshake and closes at once; the reset can overtake the
    // TLS alert, so the Go peer reports either its TLS error (4) or a broken connection (1). No stream is opened
    // either way, and ugate logs the failed handshake.
    expect([1, 4], r1.stderr).toContain(r1.code);
    expect(r1.stdout.length).toBe(0);
    await waitFor(
      () => logger.lines.some((l) => l.fields.code === 'UGATE_ERR_AUTH' && l.msg === 'hbone TLS handshake failed'),
      5000,
      'tls failure logged',
    );
    const otherTd = await identity('otherTd', 'x', { td: 'other.domain' });
    const r2 = await client(otherTd, `127.0.0.1:${sink.port}`, { input: Buffer.from('x') });
    expect(r2.code).not.toBe(0);
    expect(r2.stdout.length).toBe(0);
    await waitFor(
      () => logger.lines.some((l) => l.fields.code === 'UGATE_ERR_AUTH' && /trust domain other\.domain/.test(String(l.fields.err))),
      5000,
      'auth log',
    );
  });
});

describe('ugate HBONE dialer → Go HBONE server', () => {
  it('opens a stream to the Go server, byte-exact; refuses a server with the wrong SAN', async () => {
    const srvId = await identity('gosrv', 'gosrv');
    const go = await startGoServer({ cert: srvId.cert, key: srvId.key, ca: srvId.ca, listen: '127.0.0.1:0' });
    const me = await identity('dialer', 'dialer');
    const creds = new WorkloadCredentials(me.dir);
    const mk = (identity: string) => {
      const sw = new Switch({
        router: new Router({ routes: [{ match: '*', carrier: 'hbone', address: `127.0.0.1:${go.port}`, identity }] }),
        policy: new Policy(),
        dialers: [],
        logger: silentLogger,
      });
      const d = hboneDialer({ credentials: creds })({ logger: silentLogger });
      sw.addDialer(d);
      const open = () =>
        sw.open({
          sid: newSid(),
          target: makeTarget('127.0.0.1', sink.port),
          protocol: 'test',
          source: { address: '127.0.0.1', port: 1 },
          peer: { kind: 'local', principals: [] },
        });
      return { d, open };
    };
    try {
      const good = mk(`spiffe://${TD}/ns/default/sa/gosrv`);
      const { stream } = await good.open();
      const data = randomBytes(4 * 1024 * 1024 + 9);
      const reply = readAll(stream);
      stream.end(data);
      expect((await reply).toString()).toBe(sha256(data));
      good.d.close();
      const bad = mk(`spiffe://${TD}/ns/default/sa/somebody-else`);
      await expect(bad.open()).rejects.toMatchObject({ code: 'UGATE_ERR_AUTH' });
      bad.d.close();
      // The Go server saw the ugate client without SNI and with its SPIFFE identity.
      await waitFor(() => go.streams().length > 0, 5000, 'go stream log');
      expect(JSON.stringify(go.streams()[0])).toContain(`spiffe://${TD}/ns/default/sa/dialer`);
    } finally {
      await go.stop();
    }
  });
});
