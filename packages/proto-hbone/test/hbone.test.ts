import { AsyncResource } from 'node:async_hooks';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createH2cServer, connect as h2connect, type ServerHttp2Stream } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { direct, type Listener, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../test/support/proc.js';
import { hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from '../../../test/support/servers.js';
import {
  createCa,
  hboneDialer,
  hboneServer,
  issueWorkloadCert,
  openStream,
  type Pem,
  WorkloadCredentials,
  writeCredentials,
} from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'ugate-hbone-'));
const TD = 'cluster.local';
let ca: Pem;
let sink: TestServer;
let server: Listener;
let serverSw: Switch;
let port: number;

async function creds(name: string, ns: string, sa: string, root: Pem = ca, td = TD): Promise<WorkloadCredentials> {
  const leaf = await issueWorkloadCert(root, { trustDomain: td, namespace: ns, serviceAccount: sa });
  writeCredentials(join(dir, name), leaf, root.certPem);
  return new WorkloadCredentials(join(dir, name));
}

function client(c: WorkloadCredentials, identity = `spiffe://${TD}/ns/default/sa/server`) {
  const sw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'hbone', address: `127.0.0.1:${port}`, identity }] }),
    policy: new Policy(),
    dialers: [],
    logger: silentLogger,
  });
  const d = hboneDialer({ credentials: c })({ logger: silentLogger });
  sw.addDialer(d);
  const open = (target: string, p: number) =>
    sw.open({
      sid: newSid(),
      target: makeTarget(target, p),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });
  return { sw, d, open };
}

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  sink = await hashServer();
  port = await freePort();
  serverSw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
    policy: new Policy([{ action: 'deny', from: [`${TD}/ns/default/sa/blocked`] }]),
    dialers: [direct({ connectTimeoutMs: 2000 })],
    logger: silentLogger,
  });
  server = hboneServer({ listen: `127.0.0.1:${port}`, credentials: await creds('server', 'default', 'server') })({
    switch: serverSw,
    logger: silentLogger,
  });
  await server.listen();
});

afterAll(async () => {
  await server?.close();
  await serverSw?.drain(0);
  await sink?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('hbone dialer ↔ hbone server (mTLS)', () => {
  it('opens a CONNECT stream: 200, byte-exact, half-close', async () => {
    const { open, d } = client(await creds('a', 'default', 'a'));
    const { stream } = await open('127.0.0.1', sink.port);
    const data = randomBytes(8 * 1024 * 1024 + 3);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    d.close();
  });

  it("submits requests with a lighter bind only for the call: node's AsyncResource#bind is back afterwards, also when request() throws", async () => {
    const bind = AsyncResource.prototype.bind;
    const { open, d } = client(await creds('a', 'default', 'a'));
    const opened = await Promise.all([open('127.0.0.1', sink.port), open('127.0.0.1', sink.port)]);
    expect(AsyncResource.prototype.bind).toBe(bind);
    for (const { stream } of opened) {
      const reply = readAll(stream);
      stream.end('x');
      expect((await reply).toString()).toBe(sha256(Buffer.from('x')));
    }
    // A destroyed session makes node's request() throw: a clean UNREACHABLE, and the bind restored.
    const session = h2connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    session.destroy();
    let closed = 0;
    await expect(openStream(session, { ':method': 'CONNECT', ':authority': 'x:1' }, 'x:1', 1000, () => closed++)).rejects.toMatchObject({
      code: 'UGATE_ERR_UNREACHABLE',
    });
    expect(closed).toBe(1);
    expect(AsyncResource.prototype.bind).toBe(bind);
    d.close();
  });

  it('a request nobody answers times out (TIMEOUT), its stream is closed; a request on the same session still works', async () => {
    // An h2c server that answers CONNECTs to x:1 and leaves the others waiting.
    const silent = createH2cServer();
    const held: ServerHttp2Stream[] = [];
    silent.on('stream', (st, h) => {
      st.on('error', () => {});
      if (h[':authority'] === 'x:1') st.respond({ ':status': 200 });
      else held.push(st);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const session = h2connect(`http://127.0.0.1:${(silent.address() as { port: number }).port}`);
    session.on('error', () => {});
    try {
      let closed = 0;
      const t0 = Date.now();
      const waiting = openStream(session, { ':method': 'CONNECT', ':authority': 'never:1' }, 'never:1', 300, () => closed++);
      const answered = await openStream(session, { ':method': 'CONNECT', ':authority': 'x:1' }, 'x:1', 300);
      await expect(waiting).rejects.toMatchObject({ code: 'UGATE_ERR_TIMEOUT', message: 'hbone CONNECT never:1 timed out' });
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(2_000);
      await waitFor(() => closed === 1, 2_000, 'the unanswered stream closed');
      expect(held).toHaveLength(1);
      // The answered one was not touched by the deadline.
      expect(answered.destroyed).toBe(false);
      answered.destroy();
    } finally {
      session.destroy();
      silent.close();
    }
  });

  it('asks the server for the upstream target when discovery names one (the CONNECT authority)', async () => {
    const { d } = client(await creds('t', 'default', 't'));
    const stream = await d.dial(
      {
        sid: newSid(),
        target: makeTarget('web.apps.svc.cluster.local', 80),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      },
      {
        carrier: 'hbone',
        address: makeTarget('127.0.0.1', port),
        identity: `spiffe://${TD}/ns/default/sa/server`,
        target: makeTarget('127.0.0.1', sink.port),
        reason: 'test',
      },
    );
    const data = randomBytes(1000);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    d.close();
  });

  it('answers 503 for a closed port, 401 for a denied principal', async () => {
    const { open, d } = client(await creds('b', 'default', 'blocked'));
    const closed = await freePort();
    await expect(open('127.0.0.1', closed)).rejects.toMatchObject({ code: 'UGATE_ERR_POLICY_DENIED' });
    const ok = client(await creds('c', 'default', 'c'));
    await expect(ok.open('127.0.0.1', closed)).rejects.toMatchObject({ code: 'UGATE_ERR_REFUSED' });
    d.close();
    ok.d.close();
  });

  it('refuses a server whose identity is not the expected one', async () => {
    const { open, d } = client(await creds('d', 'default', 'd'), `spiffe://${TD}/ns/default/sa/someone-else`);
    await expect(open('127.0.0.1', sink.port)).rejects.toMatchObject({ code: 'UGATE_ERR_AUTH' });
    d.close();
  });

  it('refuses a client from another CA or another trust domain', async () => {
    const other = await createCa({ trustDomain: TD });
    const a = client(await creds('e', 'default', 'e', other));
    await expect(a.open('127.0.0.1', sink.port)).rejects.toBeDefined();
    const b = client(await creds('f', 'default', 'f', ca, 'other.domain'));
    await expect(b.open('127.0.0.1', sink.port)).rejects.toBeDefined();
    a.d.close();
    b.d.close();
  });

  it('answers 400 to a request that is not CONNECT', async () => {
    const c = await creds('g', 'default', 'g');
    const session = h2connect(`https://127.0.0.1:${port}`, {
      ca: c.current.ca,
      cert: c.current.cert,
      key: c.current.key,
      checkServerIdentity: () => undefined,
    });
    const status = await new Promise<number>((resolve, reject) => {
      const r = session.request({ ':method': 'GET', ':path': '/' });
      r.on('response', (h) => resolve(Number(h[':status'])));
      r.on('error', reject);
      r.end();
    });
    expect(status).toBe(400);
    session.close();
  });

  it('opens a second HTTP/2 session beyond 100 concurrent streams', async () => {
    const { open, d } = client(await creds('h', 'default', 'h'));
    const streams = await Promise.all(Array.from({ length: 120 }, () => open('127.0.0.1', sink.port)));
    expect(d.sessions()).toBe(2);
    await Promise.all(
      streams.map(async ({ stream }, i) => {
        const data = randomBytes(1000 + i);
        const reply = readAll(stream);
        stream.end(data);
        expect((await reply).toString()).toBe(sha256(data));
      }),
    );
    d.close();
  });

  it('server: rotated certificate files are used for new handshakes; live streams continue', async () => {
    const sc = await creds('srot', 'default', 'server');
    sc.watch(50);
    const sw = new Switch({
      router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
      policy: new Policy(),
      dialers: [direct()],
      logger: silentLogger,
    });
    const srv = hboneServer({ listen: '127.0.0.1:0', credentials: sc })({ switch: sw, logger: silentLogger });
    await srv.listen();
    const port2 = Number(srv.addresses()[0]!.split(':').pop());
    const fingerprint = async () => {
      const c = await creds('probe', 'default', 'probe');
      const sock = tlsConnect({
        host: '127.0.0.1',
        port: port2,
        ca: c.current.ca,
        cert: c.current.cert,
        key: c.current.key,
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      const fp = await new Promise<string>((resolve, reject) => {
        sock.once('secureConnect', () => resolve(sock.getPeerCertificate().fingerprint256));
        sock.once('error', reject);
      });
      sock.destroy();
      return fp;
    };
    const before = await fingerprint();
    const cl = client(await creds('srot-client', 'default', 'srot-client'));
    const sw2 = new Switch({
      router: new Router({ routes: [{ match: '*', carrier: 'hbone', address: `127.0.0.1:${port2}` }] }),
      policy: new Policy(),
      dialers: [cl.d],
      logger: silentLogger,
    });
    const { stream } = await sw2.open({
      sid: newSid(),
      target: makeTarget('127.0.0.1', sink.port),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });
    const reply = readAll(stream);
    stream.write(randomBytes(1000));
    const leaf = await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'default', serviceAccount: 'server' });
    writeFileSync(join(dir, 'srot', 'tls.key'), leaf.keyPem);
    writeFileSync(join(dir, 'srot', 'tls.crt'), leaf.certPem);
    await waitFor(async () => (await fingerprint()) !== before, 5000, 'new server certificate in handshakes');
    stream.end(randomBytes(1000));
    expect((await reply).toString()).toHaveLength(64);
    cl.d.close();
    sc.stop();
    await srv.close();
  });

  it('picks up rotated credentials for new handshakes; live streams continue', async () => {
    const c = await creds('rot', 'default', 'rot');
    c.watch(50);
    const { open, d } = client(c);
    const { stream } = await open('127.0.0.1', sink.port);
    const reply = readAll(stream);
    stream.write(randomBytes(1000));
    const before = c.current.cert;
    const leaf = await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'default', serviceAccount: 'rot' });
    writeFileSync(join(dir, 'rot', 'tls.key'), leaf.keyPem);
    writeFileSync(join(dir, 'rot', 'tls.crt'), leaf.certPem);
    await waitFor(() => c.current.cert !== before, 5000, 'reload');
    d.close(); // new sessions must handshake with the new certificate
    const fresh = await open('127.0.0.1', sink.port);
    fresh.stream.end('x');
    expect((await readAll(fresh.stream)).toString()).toBe(sha256(Buffer.from('x')));
    stream.end();
    expect((await reply).toString()).toHaveLength(64);
    c.stop();
  });
});
