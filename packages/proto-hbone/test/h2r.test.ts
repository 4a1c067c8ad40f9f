/** H2R: a node with no listening port registers names over a reversed HTTP/2 session and is reached by name. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, type Listener, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordingLogger } from '../../../test/support/listener.js';
import { hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from '../../../test/support/servers.js';
import {
  createCa,
  h2rNode,
  hboneDialer,
  hboneServer,
  issueWorkloadCert,
  type Pem,
  WorkloadCredentials,
  writeCredentials,
} from '../src/index.js';

const TD = 'cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'ugate-h2r-'));
const gwLog = recordingLogger();
let ca: Pem;
let sink: TestServer;
let gw: Listener;
let gwSw: Switch;

async function creds(sa: string): Promise<WorkloadCredentials> {
  writeCredentials(join(dir, sa), await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'mesh', serviceAccount: sa }), ca.certPem);
  return new WorkloadCredentials(join(dir, sa));
}

function node(c: WorkloadCredentials, names: string[], mode: 'post' | 'alpn' = 'post') {
  const sw = new Switch({
    router: new Router({ services: { 'bob.mesh.internal:8080': `127.0.0.1:${sink.port}` } }),
    policy: new Policy(),
    dialers: [direct()],
    logger: silentLogger,
  });
  const gwAddr = gw.addresses()[0]!;
  const [host, port] = [gwAddr.slice(0, gwAddr.lastIndexOf(':')), Number(gwAddr.slice(gwAddr.lastIndexOf(':') + 1))];
  return h2rNode({
    gateway: { address: { host, port }, identity: `spiffe://${TD}/ns/mesh/sa/gateway` },
    names,
    credentials: c,
    mode,
    backoff: { initialMs: 50, maxMs: 200 },
  })({
    switch: sw,
    logger: silentLogger,
  });
}

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  sink = await hashServer();
  gwSw = new Switch({ router: new Router(), policy: new Policy(), dialers: [direct()], logger: gwLog });
  gw = hboneServer({
    listen: '127.0.0.1:0',
    credentials: await creds('gateway'),
    h2r: { allowed: { [`${TD}/ns/mesh/sa/bob`]: ['bob.mesh.internal'] } },
  })({
    switch: gwSw,
    logger: gwLog,
  });
  await gw.listen();
});

afterAll(async () => {
  await gw.close();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('H2R (POST form)', () => {
  it('reaches a node with no listening port by name through the gateway; re-registers after a drop', async () => {
    const bob = node(await creds('bob'), ['bob.mesh.internal']);
    bob.start();
    await bob.ready();
    await waitFor(
      () => gwSw.router.registrations().some((r) => r.host === 'bob.mesh.internal' && r.carrier === 'h2r'),
      5000,
      'registration',
    );

    const sw = new Switch({
      router: new Router({
        routes: [{ match: '*', carrier: 'hbone', address: gw.addresses()[0]!, identity: `spiffe://${TD}/ns/mesh/sa/gateway` }],
      }),
      policy: new Policy(),
      dialers: [],
      logger: silentLogger,
    });
    const d = hboneDialer({ credentials: await creds('alice') })({ logger: silentLogger });
    sw.addDialer(d);
    const open = () =>
      sw.open({
        sid: newSid(),
        target: makeTarget('bob.mesh.internal', 8080),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      });
    const { stream } = await open();
    const data = randomBytes(2 * 1024 * 1024 + 3);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    expect(gwLog.lines.some((l) => l.fields.carrier === 'h2r' && l.fields.result === 'ok')).toBe(true);

    await bob.stop();
    await waitFor(() => !gwSw.router.registrations().some((r) => r.host === 'bob.mesh.internal'), 5000, 'unregistered');
    await expect(open()).rejects.toMatchObject({ code: 'UGATE_ERR_NO_ROUTE' });
    d.close();
  });

  it('ALPN form: a TLS connection negotiated as h2r registers the names the identity may have', async () => {
    const bob = node(await creds('bob-alpn'), [], 'alpn');
    // bob-alpn is not allowed anything yet: refused
    bob.start();
    await waitFor(
      () => gwLog.lines.some((l) => l.msg === 'h2r registration refused' && /bob-alpn may not register/.test(String(l.fields.err))),
      5000,
      'refusal',
    );
    await bob.stop();
  });

  it('ALPN form: reaches the node by name', async () => {
    const ok = node(await creds('bob'), [], 'alpn');
    ok.start();
    await ok.ready();
    await waitFor(
      () => gwSw.router.registrations().some((r) => r.host === 'bob.mesh.internal' && r.carrier === 'h2r'),
      5000,
      'registration',
    );
    const sw = new Switch({
      router: new Router({
        routes: [{ match: '*', carrier: 'hbone', address: gw.addresses()[0]!, identity: `spiffe://${TD}/ns/mesh/sa/gateway` }],
      }),
      policy: new Policy(),
      dialers: [],
      logger: silentLogger,
    });
    const d = hboneDialer({ credentials: await creds('alice2') })({ logger: silentLogger });
    sw.addDialer(d);
    const { stream } = await sw.open({
      sid: newSid(),
      target: makeTarget('bob.mesh.internal', 8080),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });
    const data = randomBytes(1024 * 1024);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    d.close();
    await ok.stop();
    await waitFor(() => !gwSw.router.registrations().some((r) => r.host === 'bob.mesh.internal'), 5000, 'unregistered');
  });

  it('binds registration to the identity: another workload may not register bob.mesh.internal', async () => {
    const mallory = node(await creds('mallory'), ['bob.mesh.internal']);
    mallory.start();
    await waitFor(
      () =>
        gwLog.lines.some(
          (l) => l.msg === 'h2r registration refused' && /mallory may not register bob\.mesh\.internal/.test(String(l.fields.err)),
        ),
      5000,
      'refusal',
    );
    expect(gwSw.router.registrations().some((r) => r.host === 'bob.mesh.internal')).toBe(false);
    await mallory.stop();
  });
});
