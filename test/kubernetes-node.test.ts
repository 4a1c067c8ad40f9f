/**
 * A node configured with the Kubernetes source (kubeconfig → the API fixture, which kubectl also
 * accepts): `ugate resolve` explains a Service name from its EndpointSlices, and an API server
 * that refuses the token gives a clear error step, not a crash.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type K8sFixture, startK8sFixture } from './support/k8s-fixture.js';
import { run } from './support/proc.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-k8s-node-'));
let fx: K8sFixture;

function kubeconfig(name: string, token: string): string {
  const file = join(dir, `${name}.kubeconfig`);
  writeFileSync(
    file,
    `apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{ name: k, cluster: { server: "${fx.url}", certificate-authority: "${fx.certs.caFile}" } }]\n` +
      `users: [{ name: u, user: { token: ${token} } }]\ncontexts: [{ name: c, context: { cluster: k, user: u } }]\n`,
  );
  const yaml = join(dir, `${name}.yaml`);
  writeFileSync(
    yaml,
    `dataDir: ./data\nssh: { listen: null }\nhbone: null\nadmin: null\nroutes: []\ndiscovery: { kubernetes: { kubeconfig: ./${name}.kubeconfig, inCluster: false } }\n`,
  );
  return yaml;
}

async function resolve(config: string, target: string) {
  const r = await run('node', [BIN, 'resolve', target, '-c', config, '--local', '--json'], { timeoutMs: 30_000 });
  return { code: r.code, x: JSON.parse(r.stdout.toString()) as Record<string, unknown> & { steps: Record<string, unknown>[] } };
}

beforeAll(async () => {
  fx = await startK8sFixture(dir);
  fx.tokens.set('reader-token', { name: 'system:serviceaccount:shop:reader' });
});

afterAll(async () => {
  await fx?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a node with the Kubernetes source', () => {
  it('explains a Service name: answered by kubernetes, with the EndpointSlice endpoints', async () => {
    const { code, x } = await resolve(kubeconfig('good', 'reader-token'), 'web.shop.svc.cluster.local:80');
    expect(code).toBe(0);
    expect(x.answeredBy).toBe('kubernetes');
    const answer = x.steps.find((s) => s.source === 'kubernetes')!;
    expect(answer.result).toBe('answer');
    const eps = answer.endpoints as { carrier: string; address: string }[];
    expect(eps.length).toBeGreaterThan(0);
    expect(eps.every((e) => e.carrier === 'direct' && /^10\.244\.\d+\.\d+:8080$/.test(e.address))).toBe(true);
    expect(fx.requests.some((r) => r.path === '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices')).toBe(true);
  });

  it('a refused token is an error step with the API server status, and resolution goes on (no route here)', async () => {
    const { code, x } = await resolve(kubeconfig('bad', 'wrong-token'), 'web.shop.svc.cluster.local:80');
    expect(code).toBe(3);
    const step = x.steps.find((s) => s.source === 'kubernetes')!;
    expect(step.result).toBe('error');
    expect(String(step.detail)).toMatch(/^UGATE_ERR_AUTH: .*401/);
    expect(x.error).toMatchObject({ code: 'UGATE_ERR_NO_ROUTE' });
  });
});
