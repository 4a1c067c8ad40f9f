import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, formatTarget, makeTarget, Router } from '@ugate/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { stringify } from 'yaml';
import { type K8sFixture, type KubeObject, startK8sFixture } from '../../../test/support/k8s-fixture.js';
import { freePort, run } from '../../../test/support/proc.js';
import { waitFor } from '../../../test/support/servers.js';
import { type Answer, Discovery, type KubernetesSourceInit, kubernetesSource, type PullSource } from '../src/index.js';
import { loadCredentials } from '../src/kubernetes-config.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.reader.signature';
const LIMITED = 'eyJhbGciOiJSUzI1NiJ9.limited.signature';
const SA_USER = 'system:serviceaccount:ugate:discovery';

let fx: K8sFixture;
let dir: string;
/** kubeconfig with a bearer token and a relative certificate-authority path. */
let mainConfig: string;
const open: PullSource[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  dir = mkdtempSync(join(tmpdir(), 'ugate-k8s-'));
  fx = await startK8sFixture(dir);
  fx.tokens.set(TOKEN, { name: SA_USER });
  fx.tokens.set(LIMITED, { name: 'system:serviceaccount:shop:limited', allow: ['endpointslices'] });
  mainConfig = join(dir, 'kubeconfig');
  writeFileSync(
    mainConfig,
    `apiVersion: v1
kind: Config
current-context: fixture
clusters:
  - name: fixture
    cluster:
      server: ${fx.url}
      certificate-authority: ca.crt
contexts:
  - name: fixture
    context:
      cluster: fixture
      user: reader
      namespace: shop
users:
  - name: reader
    user:
      token: ${TOKEN}
`,
  );
});

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await fx?.close();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  fx.intercept = undefined;
  vi.unstubAllEnvs();
  for (const s of open.splice(0)) await s.close?.();
  expect(unhandled).toEqual([]);
});

function source(init: KubernetesSourceInit = {}): PullSource {
  const s = kubernetesSource({ kubeconfig: mainConfig, inCluster: false, ...init });
  open.push(s);
  return s;
}

function lookup(s: PullSource, host: string, port: number, signal = new AbortController().signal): Promise<Answer | undefined> {
  return s.lookup(makeTarget(host, port), signal);
}

/** `carrier address` of each endpoint, sorted. */
function summary(a: Answer | undefined): string[] {
  return (a?.endpoints ?? []).map((e) => `${e.carrier} ${formatTarget(e.address)}`).sort();
}

/** A kubeconfig for the fixture cluster with the given cluster and user fields. */
function writeConfig(
  name: string,
  cluster: Record<string, unknown>,
  user: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: fx.url, ...cluster } }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
      ...extra,
    }),
  );
  return file;
}

const b64 = (file: string) => readFileSync(file).toString('base64');

describe('names', () => {
  it('handles service and pod names of its cluster domain only', () => {
    const s = source();
    const yes = (h: string) => s.handles(makeTarget(h, 80));
    expect(yes('web.shop.svc.cluster.local')).toBe(true);
    expect(yes('web.shop.svc')).toBe(true);
    expect(yes('10-244-3-30.shop.pod.cluster.local')).toBe(true);
    expect(yes('web.shop.svc.example.org')).toBe(false);
    expect(yes('x.web.shop.svc.cluster.local')).toBe(false);
    expect(yes('shop.svc.cluster.local')).toBe(false);
    expect(yes('web.shop')).toBe(false);
    expect(yes('not-an-ip.shop.pod.cluster.local')).toBe(false);
    expect(yes('example.com')).toBe(false);
    const corp = source({ clusterDomain: 'corp.internal' });
    expect(corp.handles(makeTarget('web.shop.svc.corp.internal', 80))).toBe(true);
    expect(corp.handles(makeTarget('web.shop.svc.cluster.local', 80))).toBe(false);
  });
});

describe('services', () => {
  it('resolves a Service to the ready endpoints of all its EndpointSlices, following continue', async () => {
    const s = source({ pageSize: 1 });
    const before = fx.requests.length;
    const a = await lookup(s, 'web.shop.svc.cluster.local', 80);
    // 10.244.1.11 is not ready; ports come from the slice port named like the service port (http → 8080).
    expect(summary(a)).toEqual(['direct 10.244.1.10:8080', 'direct 10.244.2.20:8080', 'direct 10.244.2.21:8080']);
    expect(a?.endpoints.find((e) => e.address.host === '10.244.1.10')?.labels).toEqual({
      zone: 'europe-west1-b',
      nodeName: 'node-a',
      pod: 'web-6d9c7b5f4-abcde',
    });
    expect(a?.detail).toMatch(
      /service shop\/web port 80 \(http\): 3 ready endpoint\(s\), 1 not ready from endpointslice\(s\) web-7xk2p, web-q9f3d/,
    );

    const lists = fx.requests.slice(before).filter((r) => r.path === '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices');
    expect(lists).toHaveLength(2);
    expect(lists.map((r) => r.query.get('labelSelector'))).toEqual(['kubernetes.io/service-name=web', 'kubernetes.io/service-name=web']);
    expect(lists.map((r) => r.query.get('limit'))).toEqual(['1', '1']);
    expect(lists[0]?.query.get('continue')).toBeNull();
    expect(lists[1]?.query.get('continue')).toBeTruthy();
    expect(fx.requests.slice(before).every((r) => r.user === SA_USER)).toBe(true);
  });

  it('matches the EndpointSlice port by name, not by position', async () => {
    const a = await lookup(source(), 'web.shop.svc', 443);
    expect(summary(a)).toEqual(['direct 10.244.1.10:8443', 'direct 10.244.2.20:8443', 'direct 10.244.2.21:8443']);
  });

  it('answers no endpoints, with a reason, for a port the Service lacks; nothing for an unknown Service', async () => {
    const s = source();
    const a = await lookup(s, 'web.shop.svc.cluster.local', 8080);
    expect(a?.endpoints).toEqual([]);
    expect(a?.detail).toBe('service shop/web has no TCP port 8080 (ports: 80/TCP (http), 443/TCP (https))');
    expect(await lookup(s, 'nope.shop.svc.cluster.local', 80)).toBeUndefined();
    expect(await lookup(s, 'web.elsewhere.svc.cluster.local', 80)).toBeUndefined();
  });

  it('answers an ExternalName Service with its external name and the requested port', async () => {
    const a = await lookup(source(), 'legacy.shop.svc.cluster.local', 5432);
    expect(a?.endpoints).toEqual([
      { carrier: 'direct', address: { host: 'legacy.example.com', port: 5432 }, labels: { externalName: 'legacy.example.com' } },
    ]);
    expect(a?.detail).toBe('service shop/legacy is ExternalName legacy.example.com');
  });

  it('restarts a list whose continue token expired (410)', async () => {
    const s = source({ pageSize: 1 });
    let expired = false;
    fx.intercept = (r) => {
      if (r.query.get('continue') && !expired) {
        expired = true;
        fx.expireContinueTokens();
      }
      return undefined;
    };
    const a = await lookup(s, 'web.shop.svc.cluster.local', 80);
    expect(expired).toBe(true);
    expect(summary(a)).toHaveLength(3);
  });
});

describe('ambient', () => {
  it('makes a pod with ambient redirection an HBONE endpoint that must prove its service account', async () => {
    const before = fx.requests.length;
    const a = await lookup(source(), 'api.shop.svc.cluster.local', 8080);
    expect(summary(a)).toEqual(['direct 10.244.3.31:8080', 'hbone 10.244.3.30:15008']);
    const hbone = a?.endpoints.find((e) => e.carrier === 'hbone');
    expect(hbone?.identity).toBe('spiffe://cluster.local/ns/shop/sa/api-sa');
    expect(hbone?.labels).toEqual({ zone: 'europe-west1-d', nodeName: 'node-c', pod: 'api-5f7d8c9b6-xyz12', targetPort: '8080' });
    // the CONNECT authority ztunnel expects: the pod's own address and target port
    expect(hbone?.target).toEqual({ host: hbone?.address.host, port: 8080 });
    expect(a?.endpoints.find((e) => e.carrier === 'direct')?.identity).toBeUndefined();
    expect(a?.detail).toMatch(/2 ready endpoint\(s\), 1 ambient \(hbone\)/);
    const pods = fx.requests
      .slice(before)
      .filter((r) => r.path.startsWith('/api/v1/namespaces/shop/pods/'))
      .map((r) => r.path)
      .sort();
    expect(pods).toEqual(['/api/v1/namespaces/shop/pods/api-5f7d8c9b6-pqr34', '/api/v1/namespaces/shop/pods/api-5f7d8c9b6-xyz12']);
  });

  it('uses the configured trust domain in the SPIFFE id', async () => {
    const a = await lookup(source({ trustDomain: 'example.org' }), 'api.shop.svc', 8080);
    expect(a?.endpoints.find((e) => e.carrier === 'hbone')?.identity).toBe('spiffe://example.org/ns/shop/sa/api-sa');
  });

  it('resolves <ip-dashed>.<ns>.pod names to that pod, not to a finished pod that had its IP', async () => {
    const s = source();
    fx.put({
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: { name: 'a-finished-job', namespace: 'shop' },
      spec: { serviceAccountName: 'batch', nodeName: 'node-c' },
      status: { phase: 'Succeeded', podIP: '10.244.3.30' },
    });
    onTestFinished(() => fx.remove('Pod', 'shop', 'a-finished-job'));
    const ambient = await lookup(s, '10-244-3-30.shop.pod.cluster.local', 9090);
    expect(ambient?.endpoints).toEqual([
      {
        carrier: 'hbone',
        address: { host: '10.244.3.30', port: 15008 },
        identity: 'spiffe://cluster.local/ns/shop/sa/api-sa',
        target: { host: '10.244.3.30', port: 9090 },
        labels: { pod: 'api-5f7d8c9b6-xyz12', nodeName: 'node-c', targetPort: '9090' },
      },
    ]);
    expect(summary(await lookup(s, '10-244-1-10.shop.pod.cluster.local', 8080))).toEqual(['direct 10.244.1.10:8080']);
    expect(await lookup(s, '10-9-9-9.shop.pod.cluster.local', 8080)).toBeUndefined();
    const q = fx.requests.filter((r) => r.path === '/api/v1/namespaces/shop/pods').map((r) => r.query.get('fieldSelector'));
    expect(q).toContain('status.podIP=10.244.3.30');
  });
});

describe('with the resolver', () => {
  it('turns the answer into upstreams and explains where they came from', async () => {
    const d = new Discovery({ router: new Router(), sources: [source()], maxAttempts: 5 });
    const x = await d.explain(makeTarget('api.shop.svc.cluster.local', 8080));
    expect(x.answeredBy).toBe('kubernetes');
    expect(x.upstreams.map((u) => `${u.carrier} ${u.address && formatTarget(u.address)} ${u.identity ?? '-'}`).sort()).toEqual([
      'direct 10.244.3.31:8080 -',
      'hbone 10.244.3.30:15008 spiffe://cluster.local/ns/shop/sa/api-sa',
    ]);
    const none = await d.explain(makeTarget('web.shop.svc.cluster.local', 9999));
    expect(none.error?.code).toBe(ErrorCodes.NO_ROUTE);
    expect(none.steps.find((st) => st.source === 'kubernetes')?.detail).toMatch(/has no TCP port 9999/);
  });
});

describe('cache', () => {
  it('answers from cache within the TTL without asking the API', async () => {
    const s = source({ ttlMs: 60_000 });
    const first = await lookup(s, 'api.shop.svc.cluster.local', 8080);
    const n = fx.requests.length;
    const second = await lookup(s, 'api.shop.svc.cluster.local', 8080);
    expect(fx.requests.length).toBe(n);
    expect(second?.endpoints).toEqual(first?.endpoints);
    expect(second?.ttlMs).toBeGreaterThan(0);
    expect(second?.ttlMs).toBeLessThanOrEqual(60_000);
    // Objects are cached, not answers: another port of a cached service asks nothing either.
    await lookup(s, 'web.shop.svc.cluster.local', 80);
    const m = fx.requests.length;
    await lookup(s, 'web.shop.svc.cluster.local', 443);
    expect(fx.requests.length).toBe(m);
  });

  it('asks again after the TTL and shows what changed', async () => {
    const s = source({ ttlMs: 200 });
    const original = fx.get('EndpointSlice', 'shop', 'web-q9f3d')!;
    try {
      expect(summary(await lookup(s, 'web.shop.svc.cluster.local', 80))).toHaveLength(3);
      const changed = structuredClone(original) as KubeObject & { endpoints: unknown[] };
      changed.endpoints.push({ addresses: ['10.244.2.22'], conditions: { ready: true }, nodeName: 'node-b' });
      fx.put(changed);
      const n = fx.requests.length;
      expect(summary(await lookup(s, 'web.shop.svc.cluster.local', 80))).not.toContain('direct 10.244.2.22:8080');
      expect(fx.requests.length).toBe(n);
      await new Promise((r) => setTimeout(r, 300));
      const after = await lookup(s, 'web.shop.svc.cluster.local', 80);
      expect(fx.requests.length).toBeGreaterThan(n);
      expect(summary(after)).toContain('direct 10.244.2.22:8080');
    } finally {
      fx.put(original);
    }
  });

  it('shares one request between concurrent lookups', async () => {
    const s = source();
    const before = fx.count('/api/v1/namespaces/shop/services/web');
    await Promise.all([lookup(s, 'web.shop.svc', 80), lookup(s, 'web.shop.svc', 443), lookup(s, 'web.shop.svc.cluster.local', 80)]);
    expect(fx.count('/api/v1/namespaces/shop/services/web') - before).toBe(1);
  });
});

describe('errors', () => {
  const rejects = async (p: Promise<unknown>, code: string, message: RegExp) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ name: 'UgateError', code });
    expect((err as Error).message).toMatch(message);
  };

  it('401: the token is refused', async () => {
    const s = source({ kubeconfig: writeConfig('bad-token', { 'certificate-authority': fx.certs.caFile }, { token: 'wrong' }) });
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.AUTH, /HTTP 401 Unauthorized: Unauthorized/);
  });

  it('403: RBAC forbids reading services, with the server message', async () => {
    const s = source({ kubeconfig: writeConfig('limited', { 'certificate-authority': fx.certs.caFile }, { token: LIMITED }) });
    await rejects(
      lookup(s, 'web.shop.svc', 80),
      ErrorCodes.AUTH,
      /HTTP 403 Forbidden: services "web" is forbidden: User "system:serviceaccount:shop:limited" cannot get resource "services"/,
    );
  });

  it('500, malformed JSON and a non-JSON answer fail clearly; the next lookup works', async () => {
    const s = source();
    fx.intercept = (r) =>
      r.path.endsWith('/services/web')
        ? {
            status: 500,
            body: {
              kind: 'Status',
              apiVersion: 'v1',
              metadata: {},
              status: 'Failure',
              message: 'Internal error occurred: etcdserver: request timed out',
              reason: 'InternalError',
              code: 500,
            },
          }
        : undefined;
    await rejects(
      lookup(s, 'web.shop.svc', 80),
      ErrorCodes.UNREACHABLE,
      /HTTP 500 InternalError: Internal error occurred: etcdserver: request timed out/,
    );
    fx.intercept = (r) => (r.path.endsWith('/services/web') ? { status: 200, body: '{"kind":"Service","apiVersion":' } : undefined);
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.UNREACHABLE, /HTTP 200 with a malformed JSON body/);
    await waitFor(() => fx.openConnections === 0, 5_000, 'the connection to close');
    fx.intercept = (r) =>
      r.path.endsWith('/services/web') ? { status: 200, body: '<html>proxy login</html>', contentType: 'text/html' } : undefined;
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.UNREACHABLE, /content-type "text\/html", not JSON/);
    fx.intercept = undefined;
    expect(summary(await lookup(s, 'web.shop.svc', 80))).toHaveLength(3);
  });

  it('a server that never answers times out, and the connection is closed', async () => {
    const s = source({ timeoutMs: 300 });
    fx.intercept = () => 'hang';
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.TIMEOUT, /services\/web: no complete answer within 300 ms/);
    await waitFor(() => fx.hangingConnections === 0, 5_000, 'the hung connection to close');
    fx.intercept = undefined;
    expect(summary(await lookup(s, 'web.shop.svc', 80))).toHaveLength(3);
  });

  it('a server certificate from another CA is refused', async () => {
    const s = source({ kubeconfig: writeConfig('wrong-ca', { 'certificate-authority': fx.certs.otherCaFile }, { token: TOKEN }) });
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.AUTH, /TLS: the API server's certificate was not accepted/);
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.AUTH, /certificate/);
    expect(summary(await lookup(source(), 'web.shop.svc', 80))).toHaveLength(3);
  });

  it('a refused connection is UNREACHABLE', async () => {
    const port = await freePort();
    const s = source({
      kubeconfig: writeConfig(
        'refused',
        { server: `https://127.0.0.1:${port}`, 'certificate-authority': fx.certs.caFile },
        { token: TOKEN },
      ),
    });
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.UNREACHABLE, /connection refused/);
  });

  it('an abandoned lookup rejects ABORTED at once; the request itself still ends by its timeout', async () => {
    const s = source({ timeoutMs: 300 });
    fx.intercept = () => 'hang';
    const ac = new AbortController();
    const p = lookup(s, 'web.shop.svc', 80, ac.signal);
    await waitFor(() => fx.hangingConnections > 0, 5_000, 'the request to arrive');
    ac.abort();
    await rejects(p, ErrorCodes.ABORTED, /abandoned by the requester/);
    await waitFor(() => fx.hangingConnections === 0, 5_000, 'the hung connection to close');
    fx.intercept = undefined;
    expect(summary(await lookup(s, 'web.shop.svc', 80))).toHaveLength(3);
  });

  it('a closed source refuses lookups', async () => {
    const s = source();
    await s.close?.();
    await rejects(lookup(s, 'web.shop.svc', 80), ErrorCodes.CLOSED, /closed/);
  });
});

describe('kubeconfig', () => {
  it('reads server, token and a CA path relative to the file, and the context namespace', async () => {
    const c = loadCredentials({ kubeconfig: mainConfig, inCluster: false });
    expect(c.server.href).toBe(`${fx.url}/`);
    expect(c.ca?.equals(readFileSync(fx.certs.caFile))).toBe(true);
    expect(await c.token()).toBe(TOKEN);
    expect(c.namespace).toBe('shop');
    expect(c.origin).toBe(`kubeconfig ${mainConfig} context fixture`);
  });

  it('authenticates with client certificate and CA given as data', async () => {
    const file = writeConfig(
      'cert-data',
      { 'certificate-authority-data': b64(fx.certs.caFile) },
      { 'client-certificate-data': b64(fx.certs.clientCertFile), 'client-key-data': b64(fx.certs.clientKeyFile) },
    );
    const before = fx.requests.length;
    expect(summary(await lookup(source({ kubeconfig: file }), 'web.shop.svc', 80))).toHaveLength(3);
    expect(fx.requests.slice(before).map((r) => r.user)).toContain('alice');
    expect(fx.requests.slice(before).every((r) => r.user === 'alice')).toBe(true);
  });

  it('authenticates with client certificate files relative to the kubeconfig', async () => {
    const sub = join(dir, 'nested');
    mkdirSync(join(sub, 'pki'), { recursive: true });
    copyFileSync(fx.certs.caFile, join(sub, 'pki', 'ca.crt'));
    copyFileSync(fx.certs.clientCertFile, join(sub, 'pki', 'alice.crt'));
    copyFileSync(fx.certs.clientKeyFile, join(sub, 'pki', 'alice.key'));
    const file = writeConfig(
      'nested/config',
      { 'certificate-authority': 'pki/ca.crt' },
      { 'client-certificate': 'pki/alice.crt', 'client-key': 'pki/alice.key' },
    );
    const before = fx.requests.length;
    expect(summary(await lookup(source({ kubeconfig: file }), 'web.shop.svc', 443))).toHaveLength(3);
    expect(fx.requests.slice(before).every((r) => r.user === 'alice')).toBe(true);
  });

  it('re-reads tokenFile on every request', async () => {
    const tokenFile = join(dir, 'token-a');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    fx.tokens.set('second-token', { name: 'second' });
    const s = source({ kubeconfig: writeConfig('token-file', { 'certificate-authority': fx.certs.caFile }, { tokenFile: 'token-a' }) });
    await lookup(s, 'web.shop.svc', 80);
    expect(fx.requests.at(-1)?.user).toBe(SA_USER);
    writeFileSync(tokenFile, 'second-token');
    await lookup(s, 'api.shop.svc', 8080);
    expect(fx.requests.at(-1)?.user).toBe('second');
  });

  it('uses the configured context instead of current-context, and insecure-skip-tls-verify', async () => {
    const file = writeConfig(
      'contexts',
      { 'certificate-authority': fx.certs.otherCaFile },
      { token: TOKEN },
      {
        clusters: [
          { name: 'k', cluster: { server: fx.url, 'certificate-authority': fx.certs.otherCaFile } },
          { name: 'insecure', cluster: { server: fx.url, 'insecure-skip-tls-verify': true } },
        ],
        contexts: [
          { name: 'c', context: { cluster: 'k', user: 'u' } },
          { name: 'lab', context: { cluster: 'insecure', user: 'u' } },
        ],
      },
    );
    await expect(lookup(source({ kubeconfig: file }), 'web.shop.svc', 80)).rejects.toMatchObject({ code: ErrorCodes.AUTH });
    expect(summary(await lookup(source({ kubeconfig: file, context: 'lab' }), 'web.shop.svc', 80))).toHaveLength(3);
  });

  it('verifies the server certificate against tls-server-name when given', async () => {
    const good = writeConfig('sni-good', { 'certificate-authority': fx.certs.caFile, 'tls-server-name': 'localhost' }, { token: TOKEN });
    expect(summary(await lookup(source({ kubeconfig: good }), 'web.shop.svc', 80))).toHaveLength(3);
    const bad = writeConfig(
      'sni-bad',
      { 'certificate-authority': fx.certs.caFile, 'tls-server-name': 'api.example.org' },
      { token: TOKEN },
    );
    await expect(lookup(source({ kubeconfig: bad }), 'web.shop.svc', 80)).rejects.toMatchObject({
      code: ErrorCodes.AUTH,
      message: expect.stringMatching(/ERR_TLS_CERT_ALTNAME_INVALID/),
    });
  });

  it('merges a list of kubeconfig files, the first definition winning', async () => {
    const users = join(dir, 'users-only');
    writeFileSync(
      users,
      stringify({
        users: [
          { name: 'reader', user: { token: 'ignored' } },
          { name: 'other', user: { token: 'x' } },
        ],
      }),
    );
    const c = loadCredentials({ kubeconfig: `${mainConfig}:${users}`, inCluster: false });
    expect(await c.token()).toBe(TOKEN);
    expect(() => loadCredentials({ kubeconfig: `${mainConfig}:${users}`, context: 'missing', inCluster: false })).toThrow(
      /no context named "missing"/,
    );
  });

  it('rejects unsupported authentication with a CONFIG error that names it', () => {
    const exec = writeConfig(
      'exec',
      {},
      { exec: { apiVersion: 'client.authentication.k8s.io/v1beta1', command: 'gke-gcloud-auth-plugin' } },
    );
    expect(() => source({ kubeconfig: exec })).toThrow(/exec credential plugins are not supported \(command "gke-gcloud-auth-plugin"\)/);
    const provider = writeConfig('provider', {}, { 'auth-provider': { name: 'oidc', config: {} } });
    expect(() => source({ kubeconfig: provider })).toThrow(/auth-provider "oidc" is not supported/);
    const basic = writeConfig('basic', {}, { username: 'admin', password: 'secret' });
    expect(() => source({ kubeconfig: basic })).toThrow(/basic authentication/);
    const proxy = writeConfig('proxy', { 'proxy-url': 'http://127.0.0.1:3128' }, { token: TOKEN });
    expect(() => source({ kubeconfig: proxy })).toThrow(/proxy-url is not supported/);
    let thrown: unknown;
    try {
      source({ kubeconfig: exec });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toMatchObject({ name: 'UgateError', code: ErrorCodes.CONFIG });
  });

  it('reports missing files, contexts and servers as CONFIG errors', () => {
    expect(() => source({ kubeconfig: join(dir, 'does-not-exist') })).toThrow(/no kubeconfig found/);
    expect(() => source({ kubeconfig: mainConfig, context: 'nope' })).toThrow(/no context named "nope"/);
    const http = writeConfig('http', { server: 'http://127.0.0.1:8001' }, { token: TOKEN });
    expect(() => source({ kubeconfig: http })).toThrow(/must be https/);
    const garbage = join(dir, 'garbage');
    writeFileSync(garbage, '- just\n- a list\n');
    expect(() => source({ kubeconfig: garbage })).toThrow(/not a kubeconfig/);
  });
});

describe('in cluster', () => {
  function serviceAccountDir(token: string): string {
    const sa = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(sa, 'token'), token);
    copyFileSync(fx.certs.caFile, join(sa, 'ca.crt'));
    writeFileSync(join(sa, 'namespace'), 'ugate\n');
    return sa;
  }

  it('detects the pod service account from the environment and re-reads the rotating token', async () => {
    fx.tokens.set('projected-1', { name: 'system:serviceaccount:ugate:gateway' });
    const sa = serviceAccountDir('projected-1');
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '127.0.0.1');
    vi.stubEnv('KUBERNETES_SERVICE_PORT', String(fx.port));
    // No kubeconfig at all: in-cluster credentials are found from the environment and the folder.
    const s = source({ kubeconfig: undefined, inCluster: undefined, serviceAccountDir: sa });
    const c = loadCredentials({ serviceAccountDir: sa });
    expect(c.origin).toBe(`in-cluster service account (${sa})`);
    expect(c.namespace).toBe('ugate');
    expect(c.server.href).toBe(`${fx.url}/`);

    expect(summary(await lookup(s, 'web.shop.svc.cluster.local', 80))).toHaveLength(3);
    expect(fx.requests.at(-1)?.user).toBe('system:serviceaccount:ugate:gateway');

    // The kubelet rotates the projected token; the old one stops working.
    fx.tokens.delete('projected-1');
    fx.tokens.set('projected-2', { name: 'system:serviceaccount:ugate:gateway-rotated' });
    writeFileSync(join(sa, 'token'), 'projected-2');
    expect(summary(await lookup(s, 'api.shop.svc.cluster.local', 8080))).toHaveLength(2);
    expect(fx.requests.at(-1)?.user).toBe('system:serviceaccount:ugate:gateway-rotated');
  });

  it('uses the kubeconfig when KUBERNETES_SERVICE_HOST is not set', () => {
    const sa = serviceAccountDir('unused');
    const c = loadCredentials({ kubeconfig: mainConfig, serviceAccountDir: sa }, {});
    expect(c.origin).toMatch(/^kubeconfig /);
  });

  it('inCluster: true without the environment is a CONFIG error', () => {
    expect(() => loadCredentials({ inCluster: true, serviceAccountDir: join(dir, 'none') }, {})).toThrow(/KUBERNETES_SERVICE_HOST/);
    expect(() =>
      loadCredentials({ inCluster: true, serviceAccountDir: join(dir, 'none') }, { KUBERNETES_SERVICE_HOST: '127.0.0.1' }),
    ).toThrow(/no service account token/);
  });
});

function findKubectl(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v kubectl'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const kubectlPath = findKubectl();

describe.skipIf(!kubectlPath)('kubectl against the fixture', () => {
  const kubectl = async (args: string[], token = TOKEN) => {
    const home = join(dir, 'kubectl-home');
    mkdirSync(home, { recursive: true });
    const r = await run(
      kubectlPath!,
      [
        '--server',
        fx.url,
        '--certificate-authority',
        fx.certs.caFile,
        '--token',
        token,
        '--cache-dir',
        join(home, 'cache'),
        '--request-timeout',
        '10s',
        ...args,
      ],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, KUBECONFIG: join(home, 'no-config') }, timeoutMs: 20_000 },
    );
    return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr };
  };

  it('lists the services the source reads, after discovering the API from the fixture', async () => {
    const before = fx.requests.length;
    const r = await kubectl(['get', 'services', '-n', 'shop', '-o', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as { kind: string; items: KubeObject[] };
    expect(list.kind).toBe('List');
    expect(list.items.map((i) => i.metadata?.name)).toEqual(['api', 'legacy', 'web']);
    const web = list.items.find((i) => i.metadata?.name === 'web')!;
    expect(web).toEqual(fx.get('Service', 'shop', 'web'));
    const paths = fx.requests.slice(before).map((q) => q.path);
    expect(paths).toContain('/api');
    expect(paths).toContain('/api/v1');
    expect(paths.at(-1)).toBe('/api/v1/namespaces/shop/services');
    expect(fx.requests.at(-1)?.userAgent).toMatch(/^kubectl/);
  });

  it('lists endpoint slices by service label, page by page with --chunk-size', async () => {
    const before = fx.requests.length;
    const r = await kubectl([
      'get',
      'endpointslices',
      '-n',
      'shop',
      '-l',
      'kubernetes.io/service-name=web',
      '--chunk-size',
      '1',
      '-o',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as { items: KubeObject[] };
    expect(list.items.map((i) => i.metadata?.name)).toEqual(['web-7xk2p', 'web-q9f3d']);
    expect(list.items[1]).toEqual(fx.get('EndpointSlice', 'shop', 'web-q9f3d'));
    const pages = fx.requests.slice(before).filter((q) => q.path === '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices');
    expect(pages.map((q) => q.query.get('continue') !== null)).toEqual([false, true]);
  });

  it('reads the raw object and understands the Status of a 401', async () => {
    const raw = await kubectl(['get', '--raw', '/api/v1/namespaces/shop/pods/api-5f7d8c9b6-xyz12']);
    expect(raw.code, raw.stderr).toBe(0);
    expect(JSON.parse(raw.stdout)).toEqual(fx.get('Pod', 'shop', 'api-5f7d8c9b6-xyz12'));
    const denied = await kubectl(['get', 'services', '-n', 'shop', '-o', 'json'], 'wrong');
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Unauthorized/);
  });
});
