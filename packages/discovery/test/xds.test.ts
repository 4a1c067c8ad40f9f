import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Logger, type PeerIdentity, Policy, type PolicyRuleInit, parseTarget } from '@ugate/core';
import { type Endpoint, type PushSink, type Update, xdsSource } from '@ugate/discovery';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/servers.js';
import { ADDRESS, AUTHORIZATION, ipBytes, type Received, type Res, XdsTestServer } from '../../../test/support/xds-server.js';

/** A sink that keeps what a resolver would hold, plus every call in order. */
class Recorder implements PushSink {
  readonly updates: Update[] = [];
  readonly policies: PolicyRuleInit[][] = [];
  readonly table = new Map<string, readonly Endpoint[]>();
  resets = 0;
  update(u: Update): void {
    this.updates.push(u);
    const key = `${u.host}:${u.port}`;
    if (u.endpoints === null) this.table.delete(key);
    else this.table.set(key, u.endpoints);
  }
  reset(): void {
    this.resets++;
    this.table.clear();
  }
  policy(rules: readonly PolicyRuleInit[]): void {
    this.policies.push([...rules]);
  }
}

type Line = Record<string, unknown> & { level: string; msg?: string };
function recordingLogger(lines: Line[], bindings: Record<string, unknown> = {}): Logger {
  const at =
    (level: string) =>
    (o: object | string, msg?: string): void => {
      lines.push(typeof o === 'string' ? { level, ...bindings, msg: o } : { level, ...bindings, ...o, msg });
    };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    child: (b) => recordingLogger(lines, { ...bindings, ...b }),
  };
}

const WEB = 'web.apps.svc.cluster.local';
const WEB_KEY = `apps/${WEB}`;
const UID1 = 'Kubernetes//Pod/apps/web-1';
const UID2 = 'Kubernetes//Pod/apps/web-2';
const UID3 = 'Kubernetes//Pod/apps/web-3';
const UID4 = 'Kubernetes//Pod/apps/web-4';

const webService = (
  ports = [
    { servicePort: 80, targetPort: 8080 },
    { servicePort: 443, targetPort: 8443 },
  ],
): Res => ({
  name: WEB_KEY,
  version: '1',
  body: { service: { name: 'web', namespace: 'apps', hostname: WEB, addresses: [{ network: '', address: ipBytes('10.96.0.10') }], ports } },
});

const workload = (uid: string, version: string, w: Record<string, unknown>): Res => ({
  name: uid,
  version,
  body: { workload: { uid, namespace: 'apps', ...w } },
});

/** HBONE with its own port map for 80; 443 falls back to the service's target port. */
const web1 = workload(UID1, '1', {
  name: 'web-1',
  addresses: [ipBytes('10.0.1.1')],
  tunnelProtocol: 'HBONE',
  serviceAccount: 'web',
  node: 'node-a',
  services: { [WEB_KEY]: { ports: [{ servicePort: 80, targetPort: 9090 }] } },
});
/** Not in the mesh: plain TCP to the target port. */
const web2 = workload(UID2, '1', {
  name: 'web-2',
  addresses: [ipBytes('10.0.1.2')],
  tunnelProtocol: 'NONE',
  services: { [WEB_KEY]: { ports: [] } },
});
/** Unhealthy: never an endpoint. */
const web3 = workload(UID3, '1', {
  addresses: [ipBytes('10.0.1.3')],
  tunnelProtocol: 'HBONE',
  status: 'UNHEALTHY',
  services: { [WEB_KEY]: { ports: [] } },
});
/** Its own trust domain; elided service account = default. */
const web4 = workload(UID4, '1', {
  addresses: [ipBytes('10.0.1.4')],
  tunnelProtocol: 'HBONE',
  trustDomain: 'corp.example',
  services: { [WEB_KEY]: { ports: [] } },
});

const ep1 = (targetPort: number): Endpoint => ({
  carrier: 'hbone',
  address: { host: '10.0.1.1', port: 15008 },
  identity: 'spiffe://cluster.local/ns/apps/sa/web',
  target: { host: '10.0.1.1', port: targetPort },
  labels: { uid: UID1, targetPort: String(targetPort), network: 'default', node: 'node-a' },
});
const ep2 = (targetPort: number): Endpoint => ({
  carrier: 'direct',
  address: { host: '10.0.1.2', port: targetPort },
  labels: { uid: UID2, targetPort: String(targetPort), network: 'default' },
});
const ep4 = (targetPort: number): Endpoint => ({
  carrier: 'hbone',
  address: { host: '10.0.1.4', port: 15008 },
  identity: 'spiffe://corp.example/ns/apps/sa/default',
  target: { host: '10.0.1.4', port: targetPort },
  labels: { uid: UID4, targetPort: String(targetPort), network: 'default' },
});

describe('xds source', () => {
  let server: XdsTestServer;
  let sink: Recorder;
  let lines: Line[];
  let source: ReturnType<typeof xdsSource>;

  beforeEach(async () => {
    server = await XdsTestServer.start();
    sink = new Recorder();
    lines = [];
    source = xdsSource({
      address: server.address,
      nodeId: 'ztunnel~10.0.0.9~gw-0.apps~apps.svc.cluster.local',
      metadata: { CLUSTER_ID: 'Kubernetes' },
      token: 'secret-token',
      myServiceAccount: 'gw',
      backoff: { initialMs: 5, maxMs: 20 },
    });
    source.start(sink, recordingLogger(lines));
    await waitFor(() => server.of(1, ADDRESS).length > 0 && server.of(1, AUTHORIZATION).length > 0, 5_000, 'initial requests');
  });

  afterEach(async () => {
    await source.close();
    await server.close();
  });

  /** The request that answers `nonce`; fails unless it is a plain ACK of the same type. */
  async function ackOf(nonce: string, typeUrl: string): Promise<Received> {
    const r = await answerOf(nonce);
    expect(r.typeUrl).toBe(typeUrl);
    expect(r.errorDetail).toBeNull();
    return r;
  }
  async function answerOf(nonce: string): Promise<Received> {
    await waitFor(() => server.requests.some((r) => r.responseNonce === nonce), 5_000, `answer to ${nonce}`);
    return server.requests.find((r) => r.responseNonce === nonce)!;
  }

  it('subscribes to addresses and authorizations (wildcard) with the node, its metadata and the token', () => {
    for (const type of [ADDRESS, AUTHORIZATION]) {
      const [first] = server.of(1, type);
      expect(first?.node?.id).toBe('ztunnel~10.0.0.9~gw-0.apps~apps.svc.cluster.local');
      expect(first?.node?.metadata?.fields.CLUSTER_ID?.stringValue).toBe('Kubernetes');
      expect(first?.resourceNamesSubscribe).toEqual([]);
      expect(first?.initialResourceVersions).toEqual({});
      expect(first?.responseNonce).toBe('');
    }
    expect(server.headers[0]?.authorization).toBe('Bearer secret-token');
    expect(source.status()).toMatchObject({ connected: false, streams: 1, nacks: 0 });
  });

  it('turns workloads and services into per-port records with exact endpoints and identities', async () => {
    const nonce = server.push(ADDRESS, [webService(), web1, web2, web3, web4]);
    const ack = await ackOf(nonce, ADDRESS);
    expect(ack.stream).toBe(1);

    expect(sink.table.get(`${WEB}:80`)).toEqual([ep1(9090), ep2(8080), ep4(8080)]);
    expect(sink.table.get(`${WEB}:443`)).toEqual([ep1(8443), ep2(8443), ep4(8443)]);
    // The service VIP answers like the name.
    expect(sink.table.get('10.96.0.10:80')).toEqual(sink.table.get(`${WEB}:80`));
    expect(sink.table.size).toBe(4);
    for (const u of sink.updates) expect(u.port).toBeTypeOf('number');
    expect(sink.resets).toBe(0);

    const st = source.status();
    expect(st).toMatchObject({ connected: true, workloads: 4, services: 1, nacks: 0 });
    expect(st.types[ADDRESS]).toEqual({ version: 'v1', nonce, ackedNonce: nonce, resources: 5 });
  });

  it('follows service changes and workload removals live', async () => {
    await ackOf(server.push(ADDRESS, [webService(), web1, web2]), ADDRESS);
    const before = sink.updates.length;

    // Port 443 goes away and 80 gets a new target port.
    await ackOf(server.push(ADDRESS, [{ ...webService([{ servicePort: 80, targetPort: 8081 }]), version: '2' }]), ADDRESS);
    const changed = sink.updates.slice(before);
    expect(changed.filter((u) => u.port === 443 && u.endpoints === null).map((u) => u.host)).toEqual([WEB, '10.96.0.10']);
    expect(sink.table.get(`${WEB}:80`)).toEqual([ep1(9090), ep2(8081)]);
    expect(sink.table.has(`${WEB}:443`)).toBe(false);

    // web-1 is removed: only web-2 is left.
    const mark = sink.updates.length;
    await ackOf(server.push(ADDRESS, [], [UID1]), ADDRESS);
    expect(sink.table.get(`${WEB}:80`)).toEqual([ep2(8081)]);
    expect(sink.updates.slice(mark).map((u) => `${u.host}:${u.port}`)).toEqual([`${WEB}:80`, '10.96.0.10:80']);

    // The service is removed: its records go.
    await ackOf(server.push(ADDRESS, [], [WEB_KEY]), ADDRESS);
    expect(sink.table.size).toBe(0);
    expect(source.status()).toMatchObject({ workloads: 1, services: 0 });
  });

  it('sends traffic for a service with a waypoint to the waypoint, by IP or by service name', async () => {
    const waypoint = workload('Kubernetes//Pod/apps/waypoint-1', '1', {
      addresses: [ipBytes('10.0.2.1')],
      tunnelProtocol: 'HBONE',
      serviceAccount: 'waypoint',
      services: { 'apps/waypoint.apps.svc.cluster.local': { ports: [] } },
    });
    const waypointSvc: Res = {
      name: 'apps/waypoint.apps.svc.cluster.local',
      version: '1',
      body: {
        service: { namespace: 'apps', hostname: 'waypoint.apps.svc.cluster.local', ports: [{ servicePort: 15008, targetPort: 15008 }] },
      },
    };
    const byIp: Res = {
      name: 'apps/db.apps.svc.cluster.local',
      version: '1',
      body: {
        service: {
          namespace: 'apps',
          hostname: 'db.apps.svc.cluster.local',
          ports: [{ servicePort: 5432, targetPort: 5432 }],
          waypoint: { address: { network: '', address: ipBytes('10.0.2.1') }, hboneMtlsPort: 15008 },
        },
      },
    };
    const byName: Res = {
      name: 'apps/cache.apps.svc.cluster.local',
      version: '1',
      body: {
        service: {
          namespace: 'apps',
          hostname: 'cache.apps.svc.cluster.local',
          ports: [{ servicePort: 6379, targetPort: 6379 }],
          waypoint: { hostname: { namespace: 'apps', hostname: 'waypoint.apps.svc.cluster.local' }, hboneMtlsPort: 15008 },
        },
      },
    };
    const dbPod = workload('Kubernetes//Pod/apps/db-1', '1', {
      addresses: [ipBytes('10.0.3.1')],
      tunnelProtocol: 'HBONE',
      services: { 'apps/db.apps.svc.cluster.local': { ports: [] } },
    });
    await ackOf(server.push(ADDRESS, [waypoint, waypointSvc, byIp, byName, dbPod]), ADDRESS);

    const viaWaypoint: Endpoint = {
      carrier: 'hbone',
      address: { host: '10.0.2.1', port: 15008 },
      identity: 'spiffe://cluster.local/ns/apps/sa/waypoint',
      labels: { waypoint: 'true', uid: 'Kubernetes//Pod/apps/waypoint-1' },
    };
    expect(sink.table.get('db.apps.svc.cluster.local:5432')).toEqual([viaWaypoint]);
    expect(sink.table.get('cache.apps.svc.cluster.local:6379')).toEqual([viaWaypoint]);
  });

  it('reaches a workload on another network through its network gateway (double HBONE)', async () => {
    const api: Res = {
      name: 'apps/api.apps.svc.cluster.local',
      version: '1',
      body: { service: { namespace: 'apps', hostname: 'api.apps.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 8080 }] } },
    };
    const key = 'apps/api.apps.svc.cluster.local';
    const eastWest = { address: { network: 'west', address: ipBytes('192.0.2.10') }, hboneMtlsPort: 15008 };
    const local = workload('c1/api-1', '1', {
      addresses: [ipBytes('10.0.4.1')],
      tunnelProtocol: 'HBONE',
      serviceAccount: 'api',
      services: { [key]: { ports: [] } },
    });
    const remote = workload('c2/api-2', '1', {
      addresses: [ipBytes('10.1.0.5')],
      network: 'west',
      tunnelProtocol: 'HBONE',
      serviceAccount: 'api',
      networkGateway: eastWest,
      services: { [key]: { ports: [] } },
    });
    const unreachable = workload('c3/api-3', '1', {
      addresses: [ipBytes('10.2.0.5')],
      network: 'east',
      tunnelProtocol: 'HBONE',
      services: { [key]: { ports: [] } },
    });
    await ackOf(server.push(ADDRESS, [api, local, remote, unreachable]), ADDRESS);

    expect(sink.table.get('api.apps.svc.cluster.local:80')).toEqual([
      {
        carrier: 'hbone',
        address: { host: '10.0.4.1', port: 15008 },
        identity: 'spiffe://cluster.local/ns/apps/sa/api',
        target: { host: '10.0.4.1', port: 8080 },
        labels: { uid: 'c1/api-1', targetPort: '8080', network: 'default' },
      },
      {
        carrier: 'hbone',
        address: { host: '10.1.0.5', port: 15008 },
        identity: 'spiffe://cluster.local/ns/apps/sa/api',
        gateway: { address: { host: '192.0.2.10', port: 15008 } },
        target: { host: '10.1.0.5', port: 8080 },
        labels: { uid: 'c2/api-2', targetPort: '8080', network: 'west' },
      },
    ]);
  });

  it('maps authorizations that apply to this node onto policy rules, live', async () => {
    const frontend = 'cluster.local/ns/apps/sa/frontend';
    const allowFrontend: Res = {
      name: 'istio-system/allow-frontend',
      version: '1',
      body: {
        name: 'allow-frontend',
        namespace: 'istio-system',
        scope: 'GLOBAL',
        action: 'ALLOW',
        groups: [{ rules: [{ matches: [{ principals: [{ exact: frontend }] }] }, { matches: [{ destinationPorts: [8080, 9090] }] }] }],
      },
    };
    const denyUntrusted: Res = {
      name: 'apps/deny-untrusted',
      version: '1',
      body: {
        name: 'deny-untrusted',
        namespace: 'apps',
        scope: 'NAMESPACE',
        action: 'DENY',
        groups: [{ rules: [{ matches: [{ namespaces: [{ exact: 'untrusted' }] }] }] }],
      },
    };
    const otherNamespace: Res = {
      name: 'other/deny-all',
      version: '1',
      body: { name: 'deny-all', namespace: 'other', scope: 'NAMESPACE', action: 'DENY', groups: [{ rules: [] }] },
    };
    const nonce = server.push(AUTHORIZATION, [allowFrontend, denyUntrusted, otherNamespace]);
    await ackOf(nonce, AUTHORIZATION);

    const rules = sink.policies.at(-1)!;
    expect(rules).toEqual([
      { action: 'deny', namespaces: ['untrusted'] },
      { action: 'allow', from: [frontend], to: ['*:8080', '*:9090'] },
    ]);
    // The rules mean what Istio means.
    const peer = (principal: string): PeerIdentity => ({ kind: 'spiffe', principals: [principal] });
    const decide = (principal: string, target: string) => {
      try {
        new Policy(rules).authorize({
          sid: 't',
          target: parseTarget(target),
          protocol: 'hbone',
          source: { address: '10.0.0.1', port: 1 },
          peer: peer(principal),
        });
        return 'allow';
      } catch {
        return 'deny';
      }
    };
    expect(decide(frontend, '10.0.1.1:8080')).toBe('allow');
    expect(decide(frontend, '10.0.1.1:22')).toBe('deny');
    expect(decide('cluster.local/ns/apps/sa/backend', '10.0.1.1:8080')).toBe('deny');
    expect(source.status()).toMatchObject({ authorizations: 3, policyRules: 2 });

    // Removing the DENY replaces the rule set.
    await ackOf(server.push(AUTHORIZATION, [], ['apps/deny-untrusted']), AUTHORIZATION);
    expect(sink.policies.at(-1)).toEqual([{ action: 'allow', from: [frontend], to: ['*:8080', '*:9090'] }]);
  });

  it('logs an approximated authorization once, with a code', async () => {
    const strict = (version: string): Res => ({
      name: 'istio-system/strict',
      version,
      body: {
        name: 'strict',
        namespace: 'istio-system',
        scope: 'GLOBAL',
        action: 'DENY',
        groups: [{ rules: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }],
      },
    });
    // Istio's STRICT mTLS policy maps exactly: deny peers that proved no identity.
    await ackOf(server.push(AUTHORIZATION, [strict('1')]), AUTHORIZATION);
    expect(sink.policies).toEqual([[{ action: 'deny', authenticated: false }]]);
    expect(lines.filter((l) => l.msg === 'xds authorization approximated')).toHaveLength(0);
    // A prefix match cannot be expressed: the DENY is widened, never dropped, and that is logged once.
    const prefixed = (version: string): Res => ({
      name: 'istio-system/no-ops',
      version,
      body: {
        name: 'no-ops',
        namespace: 'istio-system',
        scope: 'GLOBAL',
        action: 'DENY',
        groups: [{ rules: [{ matches: [{ principals: [{ prefix: 'cluster.local/ns/ops/' }] }] }] }],
      },
    });
    await ackOf(server.push(AUTHORIZATION, [prefixed('1')]), AUTHORIZATION);
    await ackOf(server.push(AUTHORIZATION, [prefixed('2')]), AUTHORIZATION);
    expect(sink.policies.at(-1)).toEqual(expect.arrayContaining([{ action: 'deny', authenticated: false }, { action: 'deny' }]));
    expect(sink.policies.at(-1)).toHaveLength(2);
    const notes = lines.filter((l) => l.msg === 'xds authorization approximated');
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatchObject({ code: 'UGATE_ERR_UNSUPPORTED', authorization: 'istio-system/no-ops' });
  });

  it('NACKs a response with a malformed resource, keeps the previous state, and applies later good responses', async () => {
    await ackOf(server.push(ADDRESS, [webService(), web1]), ADDRESS);
    const table = new Map(sink.table);
    const updates = sink.updates.length;

    // One good and one undecodable resource: the whole response is rejected.
    const bad = server.push(ADDRESS, [web2, { name: 'broken', version: '1', raw: Uint8Array.from([0x0a, 0xff, 0x01]) }]);
    const nack = await answerOf(bad);
    expect(nack.typeUrl).toBe(ADDRESS);
    expect(nack.errorDetail?.code).toBe(3);
    expect(nack.errorDetail?.message).toContain('broken');

    // A decodable workload without a uid is rejected too.
    const noUid = server.push(ADDRESS, [{ name: 'anon', version: '1', body: { workload: { addresses: [ipBytes('10.0.9.9')] } } }]);
    expect((await answerOf(noUid)).errorDetail?.message).toMatch(/without uid/);

    expect(sink.updates.length).toBe(updates);
    expect(sink.table).toEqual(table);
    expect(source.status()).toMatchObject({ nacks: 2, workloads: 1, services: 1, connected: true });
    expect(source.status().types[ADDRESS]?.ackedNonce).not.toBe(noUid);
    const rejected = lines.filter((l) => l.msg === 'xds response rejected');
    expect(rejected).toHaveLength(2);
    expect(rejected[0]).toMatchObject({ code: 'UGATE_ERR_CONFIG', nonce: bad });

    // The stream is still good: the next response applies.
    await ackOf(server.push(ADDRESS, [web2]), ADDRESS);
    expect(sink.table.get(`${WEB}:80`)).toEqual([ep1(9090), ep2(8080)]);
    expect([...server.acked(ADDRESS).keys()].sort()).toEqual([UID1, UID2, WEB_KEY].sort());
  });

  it('reconnects after the stream drops and resumes with initial_resource_versions', async () => {
    await ackOf(server.push(ADDRESS, [webService(), web1, web2]), ADDRESS);
    await ackOf(server.push(ADDRESS, [{ ...web1, version: '2' }], [UID2]), ADDRESS);
    await answerOf(server.push(ADDRESS, [{ name: 'broken', version: '9', raw: Uint8Array.from([0xff]) }]));
    const authz: Res = {
      name: 'apps/a',
      version: '7',
      body: { name: 'a', namespace: 'apps', scope: 'NAMESPACE', action: 'DENY', groups: [] },
    };
    await ackOf(server.push(AUTHORIZATION, [authz]), AUTHORIZATION);
    const table = new Map(sink.table);

    server.drop();
    await waitFor(() => server.of(2, ADDRESS).length > 0 && server.of(2, AUTHORIZATION).length > 0, 5_000, 'second stream');

    const [addr] = server.of(2, ADDRESS);
    expect(addr?.initialResourceVersions).toEqual(Object.fromEntries(server.acked(ADDRESS)));
    expect(addr?.initialResourceVersions).toEqual({ [WEB_KEY]: '1', [UID1]: '2' });
    expect(server.of(2, AUTHORIZATION)[0]?.initialResourceVersions).toEqual({ 'apps/a': '7' });
    expect(addr?.node?.id).toBe('ztunnel~10.0.0.9~gw-0.apps~apps.svc.cluster.local');
    expect(server.headers[1]?.authorization).toBe('Bearer secret-token');

    // Nothing was dropped from the sink while disconnected.
    expect(sink.resets).toBe(0);
    expect(sink.table).toEqual(table);
    expect(source.status().lastError).toMatch(/UNAVAILABLE/);
    expect(lines.some((l) => l.msg === 'xds stream lost' && l.code === 'UGATE_ERR_UNREACHABLE')).toBe(true);

    // The new stream carries updates.
    const ack = await ackOf(server.push(ADDRESS, [web2]), ADDRESS);
    expect(ack.stream).toBe(2);
    expect(sink.table.get(`${WEB}:80`)).toEqual([ep1(9090), ep2(8080)]);
    expect(source.status()).toMatchObject({ connected: true, streams: 2 });
  });

  it('restarts the stream when a response cannot be decoded at all', async () => {
    server.pushGarbage(Uint8Array.from([0x0a, 0xff]));
    await waitFor(() => server.of(2, ADDRESS).length > 0, 5_000, 'second stream');
    expect(lines.some((l) => l.msg === 'xds response undecodable' && l.code === 'UGATE_ERR_CONFIG')).toBe(true);
    await ackOf(server.push(ADDRESS, [webService(), web2]), ADDRESS);
    expect(sink.table.get(`${WEB}:80`)).toEqual([ep2(8080)]);
  });
});

/** A throw-away CA, an istiod-like server certificate and a workload client certificate (openssl CLI). */
function pki() {
  const dir = mkdtempSync(join(tmpdir(), 'xds-tls-'));
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  try {
    run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=test mesh CA', '-days', '1');
    const issue = (name: string, san: string) => {
      run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      run(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
        '-out',
        `${name}.crt`,
      );
      return { cert: readFileSync(join(dir, `${name}.crt`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8') };
    };
    return {
      ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
      server: issue('server', 'DNS:istiod.istio-system.svc'),
      client: issue('client', 'URI:spiffe://cluster.local/ns/apps/sa/gw'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('xds source over TLS', () => {
  it('verifies istiod by the configured name, presents its client certificate and receives resources', async () => {
    const { ca, server: serverPair, client } = pki();
    const server = await XdsTestServer.start({ ca, ...serverPair });
    const sink = new Recorder();
    const source = xdsSource({ address: server.address, tls: { ca, ...client, serverName: 'istiod.istio-system.svc' }, token: 't' });
    try {
      source.start(sink, recordingLogger([]));
      await waitFor(() => server.of(1, ADDRESS).length > 0, 5_000, 'request over TLS');
      const nonce = server.push(ADDRESS, [webService(), web2]);
      await waitFor(() => server.requests.some((r) => r.responseNonce === nonce), 5_000, 'ack over TLS');
      expect(sink.table.get(`${WEB}:80`)).toEqual([ep2(8080)]);
      expect(server.headers[0]?.authorization).toBe('Bearer t');
    } finally {
      await source.close();
      await server.close();
    }
  });

  it('does not talk to a server whose certificate does not carry the expected name', async () => {
    const { ca, server: serverPair, client } = pki();
    const server = await XdsTestServer.start({ ca, ...serverPair });
    const lines: Line[] = [];
    const source = xdsSource({
      address: server.address,
      tls: { ca, ...client, serverName: 'someone-else.test' },
      backoff: { initialMs: 5, maxMs: 20 },
    });
    try {
      source.start(new Recorder(), recordingLogger(lines));
      await waitFor(() => lines.filter((l) => l.msg === 'xds stream lost').length >= 2, 10_000, 'failed attempts');
      expect(server.streams).toBe(0);
      expect(source.status()).toMatchObject({ connected: false });
      expect(source.status().lastError).toMatch(/UNAVAILABLE/);
    } finally {
      await source.close();
      await server.close();
    }
  });
});
