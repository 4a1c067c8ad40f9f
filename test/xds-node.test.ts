/**
 * A ugate node fed by Istio xDS (delta ADS over real gRPC with real encoded messages): services
 * and workloads change its routing live, authorizations change its policy live (and close live
 * streams they now deny), a malformed resource is NACKed without harm, and a dropped stream
 * resumes with the resource versions it had.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { createCa, hboneDialer, issueWorkloadCert, type Pem, WorkloadCredentials, writeCredentials } from '@ugate/proto-hbone';
import { createNode, type UgateNode } from 'ugate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './support/proc.js';
import { connectTcp, hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from './support/servers.js';
import { ADDRESS, AUTHORIZATION, ipBytes, type Res, XdsTestServer } from './support/xds-server.js';

const dir = mkdtempSync(join(tmpdir(), 'ugate-xds-node-'));
const TD = 'cluster.local';
const WEB = 'web.apps.svc.cluster.local';
const FRONTEND = `${TD}/ns/apps/sa/frontend`;
let ca: Pem;
let xds: XdsTestServer;
let node: UgateNode;
let sinks: TestServer[];
let socksPort: number;
let hbonePort: number;

async function creds(name: string, ns: string, sa: string): Promise<WorkloadCredentials> {
  writeCredentials(join(dir, name), await issueWorkloadCert(ca, { trustDomain: TD, namespace: ns, serviceAccount: sa }), ca.certPem);
  return new WorkloadCredentials(join(dir, name));
}

const service: Res = {
  name: `apps/${WEB}`,
  version: '1',
  body: { service: { name: 'web', namespace: 'apps', hostname: WEB, ports: [{ servicePort: 80, targetPort: 1 }] } },
};
/** A workload outside the mesh (plain TCP) listening on 127.0.0.1:port. */
const workload = (version: string, port: number): Res => ({
  name: 'Kubernetes//Pod/apps/web-1',
  version,
  body: {
    workload: {
      uid: 'Kubernetes//Pod/apps/web-1',
      name: 'web-1',
      namespace: 'apps',
      addresses: [ipBytes('127.0.0.1')],
      tunnelProtocol: 'NONE',
      services: { [`apps/${WEB}`]: { ports: [{ servicePort: 80, targetPort: port }] } },
    },
  },
});
const allowFrontend = (version: string): Res => ({
  name: 'apps/allow-frontend',
  version,
  body: {
    name: 'allow-frontend',
    namespace: 'apps',
    scope: 'NAMESPACE',
    action: 'ALLOW',
    groups: [{ rules: [{ matches: [{ principals: [{ exact: FRONTEND }] }] }] }],
  },
});

/** A stream to web:80 through the node's SOCKS port (this host's own egress). */
async function viaSocks(data: Buffer): Promise<string> {
  const s = await connectTcp(socksPort);
  const reply = readAll(s);
  const host = Buffer.from(WEB);
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([0, 80])]));
  s.end(data);
  const got = await reply;
  if (got[3] !== 0) throw new Error(`socks reply ${got[3]}`);
  return got.subarray(12).toString();
}

/** An HBONE client of the mesh with workload identity `sa` (a peer of the node, judged by its policy). */
async function peer(sa: string) {
  const sw = new Switch({
    router: new Router({
      routes: [{ match: '*', carrier: 'hbone', address: `127.0.0.1:${hbonePort}`, identity: `spiffe://${TD}/ns/apps/sa/gw` }],
    }),
    policy: new Policy(),
    dialers: [hboneDialer({ credentials: await creds(sa, 'apps', sa) })({ logger: silentLogger })],
    logger: silentLogger,
  });
  const req = () => ({
    sid: newSid(),
    target: makeTarget(WEB, 80),
    protocol: 'test',
    source: { address: '127.0.0.1', port: 1 },
    peer: { kind: 'local' as const, principals: [] },
  });
  return { open: () => sw.open(req()) };
}

const acked = (nonce: string) =>
  waitFor(() => xds.requests.some((r) => r.responseNonce === nonce && r.errorDetail === null), 5_000, `ACK of ${nonce}`);

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  await creds('gw', 'apps', 'gw');
  sinks = [await hashServer(), await hashServer()];
  xds = await XdsTestServer.start();
  socksPort = await freePort();
  hbonePort = await freePort();
  node = createNode(
    {
      dataDir: join(dir, 'data'),
      workload: { certDir: join(dir, 'gw') },
      hbone: { listen: `127.0.0.1:${hbonePort}` },
      ssh: { listen: null },
      socks: { listen: `127.0.0.1:${socksPort}` },
      http: null,
      admin: null,
      routes: [],
      discovery: { xds: { address: xds.address, namespace: 'apps', serviceAccount: 'gw' } },
    },
    { baseDir: dir },
  );
  await node.start();
  await waitFor(() => xds.requests.filter((r) => r.typeUrl === ADDRESS).length > 0, 10_000, 'the node subscribes');
});

afterAll(async () => {
  await node?.stop(0);
  await xds?.close();
  for (const s of sinks ?? []) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a node fed by xDS', () => {
  it('routes a service name only once xDS has told it where the workloads are, and follows changes live', async () => {
    await expect(viaSocks(Buffer.from('x'))).rejects.toThrow('socks reply 4'); // NO_ROUTE → host unreachable
    await acked(xds.push(ADDRESS, [service, workload('1', sinks[0]!.port)]));
    const data = randomBytes(1 << 20);
    expect(await viaSocks(data)).toBe(sha256(data));
    let second = 0;
    sinks[1]!.server.on('connection', () => second++);
    await acked(xds.push(ADDRESS, [workload('2', sinks[1]!.port)]));
    expect(await viaSocks(data)).toBe(sha256(data));
    expect(second).toBe(1);
    const x = await node.explain(makeTarget(WEB, 80));
    expect(x.answeredBy).toBe('xds');
  });

  it('authorizations become policy live: peers outside the ALLOW are refused and their live streams closed', async () => {
    const frontend = await peer('frontend');
    const other = await peer('other');
    const live = await other.open(); // opened while everything is allowed
    const closed = new Promise<void>((r) => live.stream.once('close', () => r()));
    live.stream.on('error', () => {});
    await acked(xds.push(AUTHORIZATION, [allowFrontend('1')]));
    await closed;
    await expect(other.open()).rejects.toMatchObject({ code: 'UGATE_ERR_POLICY_DENIED' });
    const ok = await frontend.open();
    const data = randomBytes(4096);
    const reply = readAll(ok.stream);
    ok.stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    // the mesh's rules judge peers, not this host's own egress
    expect(await viaSocks(data)).toBe(sha256(data));
    await acked(xds.push(AUTHORIZATION, [], ['apps/allow-frontend']));
    (await other.open()).stream.destroy();
  });

  it('a malformed resource is NACKed with a message; the node keeps its state and keeps serving', async () => {
    const nonce = xds.push(ADDRESS, [{ name: 'Kubernetes//Pod/apps/broken', version: '1', raw: Buffer.from([0xff, 0xff, 0xff]) }]);
    await waitFor(() => xds.requests.some((r) => r.responseNonce === nonce && r.errorDetail !== null), 5_000, 'NACK');
    const nack = xds.requests.find((r) => r.responseNonce === nonce)!;
    expect(nack.errorDetail).toMatchObject({ code: 3, message: expect.stringMatching(/broken|decode|invalid/i) });
    const data = randomBytes(1000);
    expect(await viaSocks(data)).toBe(sha256(data));
  });

  it('a dropped stream reconnects and resumes with the versions it holds', async () => {
    const streams = Math.max(...xds.requests.map((r) => r.stream));
    xds.drop();
    await waitFor(() => xds.requests.some((r) => r.stream > streams && r.typeUrl === ADDRESS), 15_000, 'reconnect');
    const first = xds.requests.find((r) => r.stream > streams && r.typeUrl === ADDRESS)!;
    expect(first.initialResourceVersions).toEqual({ [`apps/${WEB}`]: '1', 'Kubernetes//Pod/apps/web-1': '2' });
    const data = randomBytes(1000);
    expect(await viaSocks(data)).toBe(sha256(data));
  });
});
