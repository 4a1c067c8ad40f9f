/**
 * Packaging, checked with the real tools where they exist here:
 * - npm: every package packed by `pnpm pack`, the tarballs listed by `tar`, installed side by side in
 *   a fresh folder (third-party dependencies linked from the workspace) where the CLI runs and a
 *   TypeScript consumer type-checks against the packed declarations.
 * - Helm chart (deploy/helm/ugate): rendered by test/peers/helm-render (Go text/template + Sprig, as
 *   helm renders; helm itself is not installable here), the generated ugate.yaml parsed by ugate's own
 *   config schema, and every workload, Service and binding decoded by kubectl into Kubernetes' API
 *   types offline (`kubectl set … --local`): a field kubectl drops is a field Kubernetes doesn't know.
 * - systemd unit: `systemd-analyze verify` and `systemd-analyze security --offline`.
 * - Dockerfile: its rules (stages, user, ports, health check) against the config it ships, and the
 *   build stage's `pnpm deploy --prod` run here, the result started from its own folder.
 *
 * Tools (Debian): golang-go, golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev, systemd,
 * kubectl (kubernetes-client, or any kubectl ≥ 1.26 for the API-type check), tar; pnpm from npm.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Config, loadConfig } from 'ugate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHART = join(ROOT, 'deploy/helm/ugate');
const UNIT = join(ROOT, 'deploy/systemd/ugate.service');
const SERVER_CONFIG = join(ROOT, 'deploy/ugate.yaml');
const work = mkdtempSync(join(tmpdir(), 'ugate-packaging-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The path of an executable on PATH, or undefined. */
function which(cmd: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

/** A tool the checks need: its path, or an error that says which Debian package brings it. */
function need(cmd: string, install: string): string {
  const p = which(cmd);
  if (!p) throw new Error(`${cmd} is not installed: ${install}`);
  return p;
}

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

async function ok(cmd: string, args: string[], opts: Parameters<typeof sh>[2] = {}): Promise<string> {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);

// ---------------------------------------------------------------------------------------------
// npm packages

interface Pkg {
  dir: string;
  /** The module entry, without extension (default dist/index). */
  entry?: string;
  /** Other files the tarball must hold. */
  also?: string[];
}
const PACKAGES: Pkg[] = [
  { dir: 'packages/core' },
  { dir: 'packages/proto-ssh' },
  { dir: 'packages/proto-socks' },
  { dir: 'packages/proto-http' },
  { dir: 'packages/proto-hbone' },
  { dir: 'packages/discovery' },
  { dir: 'packages/dashboard', entry: 'server/index', also: ['dist/index.html'] },
  { dir: 'apps/ugate', also: ['bin/ugate.js'] },
];

interface Packed {
  pkg: Pkg;
  name: string;
  version: string;
  tarball: string;
  /** Paths inside the tarball, without the leading `package/`. */
  files: string[];
  /** The packed package.json. */
  manifest: Obj;
  /** The extracted `package/` folder. */
  extracted: string;
}

describe('npm packages (pnpm pack)', () => {
  const packed = new Map<string, Packed>();

  beforeAll(async () => {
    const pnpm = need('pnpm', 'npm i -g pnpm@12');
    need('tar', 'apt-get install -y tar');
    const dest = join(work, 'tarballs');
    mkdirSync(dest);
    await Promise.all(
      PACKAGES.map(async (pkg) => {
        const entry = join(ROOT, pkg.dir, `${pkg.entry ?? 'dist/index'}.js`);
        if (!existsSync(entry)) throw new Error(`${entry} is missing: build first (pnpm build)`);
        const json = JSON.parse(await ok(pnpm, ['pack', '--json', '--pack-destination', dest], { cwd: join(ROOT, pkg.dir) })) as {
          name: string;
          version: string;
          filename: string;
        };
        const tarball = json.filename.startsWith('/') ? json.filename : join(dest, json.filename);
        const files = (await ok('tar', ['-tzf', tarball]))
          .split('\n')
          .filter(Boolean)
          .map((f) => f.replace(/^package\//, ''));
        const out = join(work, 'extract', json.name);
        mkdirSync(out, { recursive: true });
        await ok('tar', ['-xzf', tarball, '-C', out]);
        const extracted = join(out, 'package');
        const manifest = JSON.parse(readFileSync(join(extracted, 'package.json'), 'utf8')) as Obj;
        packed.set(pkg.dir, { pkg, name: json.name, version: json.version, tarball, files, manifest, extracted });
      }),
    );
  }, 60_000);

  it.each(PACKAGES.map((p) => [p.dir, p] as const))('%s: dist, types, README; no sources, tests or build state', (_dir, pkg) => {
    const p = packed.get(pkg.dir)!;
    const entry = pkg.entry ?? 'dist/index';
    expect(p.files).toContain('package.json');
    expect(p.files).toContain('README.md');
    expect(p.files).toContain(`${entry}.js`);
    expect(p.files).toContain(`${entry}.d.ts`);
    for (const f of pkg.also ?? []) expect(p.files).toContain(f);
    expect(p.files.filter((f) => /^(src|test)\//.test(f) || /\.test\.|\.tsbuildinfo$|^tsconfig|(^|\/)node_modules\//.test(f))).toEqual([]);
    // Every declaration file beside its module.
    for (const f of p.files.filter((f) => f.endsWith('.js') && f.startsWith('dist/') && !f.startsWith('dist/assets/'))) {
      expect(p.files).toContain(f.replace(/\.js$/, '.d.ts'));
    }

    const m = p.manifest;
    expect(JSON.stringify(m)).not.toContain('workspace:');
    expect(m.type).toBe('module');
    expect(typeof m.description).toBe('string');
    expect(obj(m.engines).node).toBe('>=20');
    expect(m.types).toBe(`./${entry}.d.ts`);
    expect(obj(m.exports)['.']).toEqual({ types: `./${entry}.d.ts`, default: `./${entry}.js` });
    if (p.name.startsWith('@')) expect(obj(m.publishConfig).access).toBe('public');
    for (const bin of Object.values(obj(m.bin))) expect(p.files).toContain(String(bin).replace(/^\.\//, ''));
  });

  it('workspace ranges are rewritten to the versions packed here', () => {
    const versions = new Map([...packed.values()].map((p) => [p.name, p.version]));
    for (const p of packed.values()) {
      for (const [dep, range] of Object.entries(obj(p.manifest.dependencies))) {
        if (!dep.startsWith('@ugate/') && dep !== 'ugate') continue;
        expect(versions.has(dep), `${p.name} depends on ${dep}, which is not packed`).toBe(true);
        expect(range).toBe(versions.get(dep));
      }
    }
  });

  it('installed from the tarballs alone: the CLI runs, every entry imports, the types resolve', async () => {
    // A consumer folder: each tarball's package/ as node_modules/<name>, third-party dependencies
    // linked from where the workspace installed them (no registry needed).
    const consumer = join(work, 'consumer');
    const nm = join(consumer, 'node_modules');
    const link = (name: string, target: string) => {
      const at = join(nm, name);
      if (existsSync(at)) return;
      mkdirSync(dirname(at), { recursive: true });
      symlinkSync(target, at);
    };
    for (const p of packed.values()) {
      mkdirSync(dirname(join(nm, p.name)), { recursive: true });
      renameSync(p.extracted, join(nm, p.name));
    }
    for (const p of packed.values()) {
      for (const dep of Object.keys(obj(p.manifest.dependencies))) {
        if (dep.startsWith('@ugate/') || dep === 'ugate') continue;
        link(dep, realpathSync(join(ROOT, p.pkg.dir, 'node_modules', dep)));
      }
    }
    link('@types/node', realpathSync(join(ROOT, 'node_modules/@types/node')));

    const bin = join(nm, 'ugate/bin/ugate.js');
    expect(await ok(process.execPath, [bin, 'check', '-c', SERVER_CONFIG], { cwd: consumer })).toContain(': ok');
    const cfg = join(consumer, 'node.yaml');
    writeFileSync(cfg, 'dataDir: ./data\n');
    const id = JSON.parse(await ok(process.execPath, [bin, 'id', '--json', '-c', cfg], { cwd: consumer })) as { id: string };
    expect(id.id).toMatch(/^[a-z2-7]{52}$/);

    const names = [...packed.values()].map((p) => p.name);
    const imported = await ok(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const out = {}; for (const n of ${JSON.stringify(names)}) out[n] = Object.keys(await import(n)).length; console.log(JSON.stringify(out));`,
      ],
      { cwd: consumer },
    );
    for (const [name, count] of Object.entries(JSON.parse(imported) as Record<string, number>)) {
      expect(count, `${name} exports nothing`).toBeGreaterThan(0);
    }

    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          types: ['node'],
          skipLibCheck: true,
        },
        files: ['use.ts'],
      }),
    );
    writeFileSync(
      join(consumer, 'use.ts'),
      [
        ...names.map((n, i) => `import * as m${i} from '${n}';`),
        `import { type Config, createNode, parseConfig } from 'ugate';`,
        `import { parseTarget } from '@ugate/core';`,
        `const config: Config = parseConfig({ names: ['a.mesh.internal'] });`,
        `const node = createNode(config);`,
        `const started: Promise<void> = node.start();`,
        `const port: number = parseTarget('a.mesh.internal:80').port;`,
        `export const used = [${names.map((_, i) => `m${i}`).join(', ')}, started, port];`,
        '',
      ].join('\n'),
    );
    const tsc = await sh(join(ROOT, 'node_modules/.bin/tsc'), ['-p', consumer], { cwd: consumer });
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
// Helm chart

const RENDER_SOURCE = join(ROOT, 'test/peers/helm-render/main.go');
const RENDER_DIR = join(tmpdir(), 'ugate-helm-render');

/** Build test/peers/helm-render once (cached by the source's hash, across test runs). */
async function buildRenderer(): Promise<string> {
  const go = need('go', 'apt-get install -y golang-go');
  const gocode = '/usr/share/gocode';
  for (const [lib, pkg] of [
    ['github.com/Masterminds/sprig', 'golang-github-masterminds-sprig-dev'],
    ['sigs.k8s.io/yaml', 'golang-k8s-sigs-yaml-dev'],
  ]) {
    if (!existsSync(join(gocode, 'src', lib!))) throw new Error(`Go library ${lib} is not installed: apt-get install -y ${pkg}`);
  }
  const sha = createHash('sha256').update(readFileSync(RENDER_SOURCE)).digest('hex');
  const bin = join(RENDER_DIR, 'helm-render');
  const marker = `${bin}.sha256`;
  if (existsSync(bin) && existsSync(marker) && readFileSync(marker, 'utf8').trim() === sha) return bin;
  mkdirSync(join(RENDER_DIR, 'home'), { recursive: true });
  const env = {
    ...process.env,
    HOME: join(RENDER_DIR, 'home'),
    GOPATH: `${join(RENDER_DIR, 'gopath')}:${gocode}`,
    GOCACHE: join(RENDER_DIR, 'gocache'),
    GO111MODULE: 'off', // Debian's Go libraries, no module download
    GOFLAGS: '',
    GOPROXY: 'off',
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0',
  };
  const tmp = `${bin}.${process.pid}.tmp`;
  await ok(go, ['build', '-o', tmp, RENDER_SOURCE], { env, cwd: RENDER_DIR, timeoutMs: 120_000 });
  renameSync(tmp, bin);
  writeFileSync(`${marker}.${process.pid}`, `${sha}\n`);
  renameSync(`${marker}.${process.pid}`, marker);
  return bin;
}

interface Rendered {
  docs: Obj[];
  notes?: string;
}

/** A config file read as the daemon reads it (ugate's loader and schema; no UGATE_* variables). */
function readConfig(file: string): Config {
  return loadConfig(file, {}).config;
}

function kubeEnv(): NodeJS.ProcessEnv {
  const home = join(work, 'kube-home');
  mkdirSync(home, { recursive: true });
  return { ...process.env, HOME: home, KUBECONFIG: join(home, 'none') };
}

/** kubectl's minor version, or undefined without kubectl. */
function kubectlMinor(): number | undefined {
  const kubectl = which('kubectl');
  if (!kubectl) return undefined;
  const out = execFileSync(kubectl, ['version', '--client', '-o', 'json'], { env: kubeEnv(), encoding: 'utf8' });
  return Number.parseInt((JSON.parse(out) as { clientVersion: { minor: string } }).clientVersion.minor, 10);
}
// The API types kubectl decodes into are those of its own version; the chart needs Kubernetes 1.26.
const KUBECTL_MINOR = kubectlMinor();

/** The value sets the tests render (besides the defaults). */
const NODE_VALUES: Obj = {
  mode: 'node',
  identity: { hostPath: '/var/lib/ugate' },
  workload: { istio: true },
  rbac: { create: true },
  hostNetwork: true,
  tolerations: [{ operator: 'Exists' }],
  extraEnv: [{ name: 'UGATE_LOG__LEVEL', value: 'debug' }],
  config: {
    names: ['node-a.mesh.internal'],
    hbone: null,
    dns: { listen: '0.0.0.0:15053' },
    ssh: { gateways: [{ address: 'gw.mesh:15022', id: 'a'.repeat(52) }] },
    discovery: { kubernetes: { inCluster: true } },
    limits: { drainMs: 3_600_000 },
  },
};
const SECRETS_VALUES: Obj = {
  identity: { secretName: 'ugate-identity' },
  workload: { secretName: 'ugate-workload' },
  admin: { existingSecret: 'my-admin' },
  service: { type: 'LoadBalancer', externalTrafficPolicy: 'Local', loadBalancerSourceRanges: ['192.0.2.0/24'] },
  config: { sni: { listen: '0.0.0.0:15443' } },
  replicas: 2,
};

describe('helm chart (deploy/helm/ugate)', () => {
  let renderer: string;

  beforeAll(async () => {
    renderer = await buildRenderer();
  }, 120_000);

  async function render(args: string[] = [], values?: Obj): Promise<Rendered> {
    const extra = [...args];
    if (values) {
      const f = join(work, `values-${createHash('sha256').update(JSON.stringify(values)).digest('hex').slice(0, 12)}.yaml`);
      writeFileSync(f, JSON.stringify(values));
      extra.push('-f', f);
    }
    // JSON converted as Kubernetes reads YAML (YAML 1.1: 0440 is octal there).
    const list = JSON.parse(await ok(renderer, ['-chart', CHART, '-name', 'ugate', '-namespace', 'mesh', '-json', '-notes', ...extra])) as {
      source: string;
      object?: Obj;
      text?: string;
    }[];
    return {
      docs: list.flatMap((e) => (e.object ? [e.object] : [])),
      notes: list.find((e) => e.source.endsWith('/NOTES.txt'))?.text,
    };
  }

  const find = (r: Rendered, kind: string) => r.docs.filter((d) => d.kind === kind);
  const one = (r: Rendered, kind: string) => {
    const all = find(r, kind);
    expect(all, `${kind} count`).toHaveLength(1);
    return all[0]!;
  };
  /** The ConfigMap's ugate.yaml, loaded by ugate's own loader. */
  const ugateYaml = (r: Rendered): Config => {
    const f = join(work, `ugate-${createHash('sha256').update(JSON.stringify(r.docs)).digest('hex').slice(0, 12)}.yaml`);
    writeFileSync(f, String(obj(one(r, 'ConfigMap').data)['ugate.yaml']));
    return readConfig(f);
  };
  const podSpec = (workload: Obj) => obj(obj(obj(workload.spec).template).spec);
  const container = (workload: Obj) => arr(podSpec(workload).containers).find((c) => c.name === 'ugate')!;

  /** The checks every rendering must pass, whatever the values. */
  function invariants(r: Rendered): void {
    const kinds = new Set(r.docs.map((d) => d.kind));
    for (const d of r.docs) {
      expect(typeof d.apiVersion).toBe('string');
      expect(String(obj(d.metadata).name)).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const workloads = [...find(r, 'Deployment'), ...find(r, 'DaemonSet')];
    expect(workloads).toHaveLength(1);
    const w = workloads[0]!;
    const spec = podSpec(w);
    const tpl = obj(obj(w.spec).template);
    // The selector picks the pod template's labels, and the Service's selector the same pods.
    const selector = obj(obj(obj(w.spec).selector).matchLabels);
    expect(obj(obj(tpl.metadata).labels)).toMatchObject(selector);
    for (const svc of find(r, 'Service')) expect(obj(obj(svc.spec)).selector).toEqual(selector);

    // Non-root, read-only, no capabilities, seccomp.
    expect(obj(spec.securityContext)).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(Number(obj(spec.securityContext).runAsUser)).toBeGreaterThan(0);
    const c = container(w);
    expect(obj(c.securityContext)).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(c.args).toEqual(['run', '-c', '/etc/ugate/ugate.yaml']);

    // Every mount has its volume; Secrets and ConfigMaps named are rendered here or given by the user.
    const volumes = new Map(arr(spec.volumes).map((v) => [String(v.name), v]));
    for (const m of arr(c.volumeMounts)) {
      if (m.name === 'workload-certs') continue; // Istio's injector adds it
      expect(volumes.has(String(m.name)), `volume ${m.name}`).toBe(true);
    }
    const cm = obj(obj(volumes.get('config')).configMap);
    if (kinds.has('ConfigMap')) expect(cm.name).toBe(obj(one(r, 'ConfigMap').metadata).name);

    // The config is valid for ugate, and the container's ports are its listeners.
    if (kinds.has('ConfigMap')) {
      const config = ugateYaml(r);
      const listeners = Object.entries({
        ssh: config.ssh.listen,
        hbone: config.hbone?.listen,
        hbonec: config.hbonec?.listen,
        sni: config.sni?.listen,
        socks: config.socks?.listen,
        proxy: config.http?.listen,
        admin: config.admin?.listen,
      })
        .filter(([, l]) => l)
        .map(([name, l]) => [name, Number(String(l).split(':').pop())]);
      const tcpPorts = arr(c.ports).filter((p) => p.protocol === 'TCP' && p.name !== 'dns-tcp');
      expect(tcpPorts.map((p) => [p.name, p.containerPort]).sort()).toEqual(listeners.sort());
      // The drain fits in the grace period.
      expect(Number(spec.terminationGracePeriodSeconds) * 1000).toBeGreaterThan(config.limits.drainMs);
      // Probes reach the admin endpoint, which therefore listens beyond loopback.
      if (config.admin) {
        expect(config.admin.listen).toMatch(/^0\.0\.0\.0:/);
        expect(obj(obj(c.readinessProbe).httpGet)).toEqual({ path: '/healthz/ready', port: 'admin' });
        expect(config.admin.tokenFile).toBe('/var/run/ugate/admin/token');
      }
    }
    // Service ports point at named container ports.
    const named = new Set(arr(c.ports).map((p) => p.name));
    for (const svc of find(r, 'Service')) {
      for (const p of arr(obj(svc.spec).ports)) expect(named.has(String(p.targetPort))).toBe(true);
    }
  }

  /**
   * Decode each workload, Service and binding into Kubernetes' types with kubectl, offline: a
   * `kubectl set … --local` makes a change (taken back out of its output here) and prints the typed
   * object. Every rendered value must come back; a field Kubernetes doesn't know is dropped.
   */
  async function kubectlDecodes(r: Rendered): Promise<string[]> {
    const checked: string[] = [];
    for (const [i, d] of r.docs.entries()) {
      const typed = await kubectlTyped(d, `doc-${i}`);
      if (!typed) continue;
      expectSubset(d, typed, String(d.kind));
      checked.push(String(d.kind));
    }
    return checked;
  }

  const MARK = 'packaging-check';
  async function kubectlTyped(d: Obj, file: string): Promise<Obj | undefined> {
    const f = join(work, `${file}.json`);
    writeFileSync(f, JSON.stringify(d));
    let args: string[];
    let undo: (typed: Obj) => void;
    if (d.kind === 'Deployment' || d.kind === 'DaemonSet') {
      args = ['set', 'env', '--local', '-f', f, 'UGATE_PACKAGING_CHECK=1', '-o', 'json'];
      undo = (typed) => {
        const spec = podSpec(typed);
        for (const c of [...arr(spec.containers), ...arr(spec.initContainers)]) {
          c.env = arr(c.env).filter((e) => e.name !== 'UGATE_PACKAGING_CHECK');
          if (!arr(c.env).length) delete c.env;
        }
      };
    } else if (d.kind === 'Service') {
      const sel = Object.entries(obj(obj(d.spec).selector)).map(([k, v]) => `${k}=${v}`);
      args = ['set', 'selector', '--local', '-f', f, sel.join(','), '-o', 'json'];
      undo = () => {};
    } else if (d.kind === 'ClusterRoleBinding') {
      args = ['set', 'subject', '--local', '-f', f, `--serviceaccount=kube-system:${MARK}`, '-o', 'json'];
      undo = (typed) => {
        typed.subjects = arr(typed.subjects).filter((x) => x.name !== MARK);
      };
    } else {
      return undefined;
    }
    const kubectl = need('kubectl', 'apt-get install -y kubernetes-client');
    const typed = JSON.parse(await ok(kubectl, args, { env: kubeEnv() })) as Obj;
    undo(typed);
    return typed;
  }

  it('gateway mode (default): Deployment + Service of the carriers, config from a ConfigMap, admin token from a Secret', async () => {
    const r = await render();
    invariants(r);
    expect(r.docs.map((d) => d.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'Secret', 'Service', 'ServiceAccount']);
    const config = ugateYaml(r);
    expect(config.socks).toBeNull();
    expect(config.http).toBeNull();
    expect(config.dataDir).toBe('/var/lib/ugate');
    const svc = one(r, 'Service');
    expect(obj(svc.spec).type).toBe('ClusterIP');
    expect(arr(obj(svc.spec).ports).map((p) => [p.name, p.port])).toEqual([
      ['ssh', 15022],
      ['hbone', 15008],
    ]);
    const secret = one(r, 'Secret');
    expect(Buffer.from(String(obj(secret.data).token), 'base64').toString()).toMatch(/^[A-Za-z0-9]{32}$/);
    const d = one(r, 'Deployment');
    expect(obj(d.spec).replicas).toBe(1);
    expect(podSpec(d).automountServiceAccountToken).toBe(false);
    const admin = arr(podSpec(d).volumes).find((v) => v.name === 'admin-token')!;
    expect(obj(admin.secret)).toMatchObject({ secretName: obj(secret.metadata).name, defaultMode: 0o440 });
  });

  it('node mode: a DaemonSet with the egress proxies on a node-local Service; hostPath identity, Istio mounts, RBAC', async () => {
    const r = await render(['--set', 'admin.token=0123456789abcdef-token'], NODE_VALUES);
    invariants(r);
    expect(r.docs.map((d) => d.kind).sort()).toEqual([
      'ClusterRole',
      'ClusterRoleBinding',
      'ConfigMap',
      'DaemonSet',
      'Secret',
      'Service',
      'ServiceAccount',
    ]);
    const config = ugateYaml(r);
    expect(config.socks?.listen).toBe('0.0.0.0:15080');
    expect(config.http?.listen).toBe('0.0.0.0:15081');
    expect(config.hbone).toBeNull(); // null turns a default listener off
    expect(config.ssh.listen).toBe('0.0.0.0:15022'); // maps merge
    expect(config.ssh.gateways).toHaveLength(1);
    expect(Buffer.from(String(obj(one(r, 'Secret').data).token), 'base64').toString()).toBe('0123456789abcdef-token');

    const ds = one(r, 'DaemonSet');
    const spec = podSpec(ds);
    expect(spec.hostNetwork).toBe(true);
    expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(spec.automountServiceAccountToken).toBe(true);
    expect(spec.terminationGracePeriodSeconds).toBe(3605);
    expect(arr(spec.initContainers)[0]).toMatchObject({ command: ['chown', '10001:10001', '/var/lib/ugate'] });
    expect(arr(spec.volumes).find((v) => v.name === 'data')).toEqual({
      name: 'data',
      hostPath: { path: '/var/lib/ugate', type: 'DirectoryOrCreate' },
    });
    expect(arr(container(ds).volumeMounts).find((m) => m.name === 'workload-certs')).toEqual({
      name: 'workload-certs',
      mountPath: '/var/run/secrets/workload-spiffe-credentials',
      readOnly: true,
    });
    const ports = arr(container(ds).ports).map((p) => `${p.name}/${p.containerPort}/${p.protocol}`);
    expect(ports).toEqual(['ssh/15022/TCP', 'socks/15080/TCP', 'proxy/15081/TCP', 'dns/15053/UDP', 'dns-tcp/15053/TCP', 'admin/15000/TCP']);

    const svc = one(r, 'Service');
    expect(obj(svc.spec)).toMatchObject({ type: 'ClusterIP', internalTrafficPolicy: 'Local' });
    expect(arr(obj(svc.spec).ports).map((p) => p.name)).toEqual(['ssh', 'socks', 'proxy', 'dns', 'dns-tcp']);
    const binding = one(r, 'ClusterRoleBinding');
    expect(arr(binding.subjects)[0]).toEqual({ kind: 'ServiceAccount', name: 'ugate', namespace: 'mesh' });
    const rules = arr(one(r, 'ClusterRole').rules);
    expect(rules.flatMap((x) => x.resources as string[]).sort()).toEqual(['endpointslices', 'pods', 'services']);
  });

  it('identity and workload certificates from Secrets; a LoadBalancer gateway with an existing admin Secret', async () => {
    const r = await render([], SECRETS_VALUES);
    invariants(r);
    expect(find(r, 'Secret')).toEqual([]); // all three are the user's
    const config = ugateYaml(r);
    expect(config.dataDir).toBe('/var/run/ugate/identity');
    expect(config.workload.certDir).toBe('/var/run/ugate/workload');
    const d = one(r, 'Deployment');
    const volumes = arr(podSpec(d).volumes);
    expect(obj(volumes.find((v) => v.name === 'identity')?.secret)).toMatchObject({
      secretName: 'ugate-identity',
      items: [{ key: 'node.key', path: 'node.key' }],
    });
    expect(arr(obj(volumes.find((v) => v.name === 'workload')?.secret).items).map((i) => i.key)).toEqual(['tls.crt', 'tls.key', 'ca.crt']);
    expect(obj(volumes.find((v) => v.name === 'admin-token')?.secret).secretName).toBe('my-admin');
    const mounts = Object.fromEntries(arr(container(d).volumeMounts).map((m) => [m.name, m.mountPath]));
    expect(mounts).toMatchObject({ identity: config.dataDir, workload: config.workload.certDir, config: '/etc/ugate' });
    const svc = obj(one(r, 'Service').spec);
    expect(svc).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', loadBalancerSourceRanges: ['192.0.2.0/24'] });
    expect(arr(svc.ports).map((p) => p.name)).toEqual(['ssh', 'hbone', 'sni']);
    expect(obj(one(r, 'Deployment').spec).replicas).toBe(2);
  });

  it('admin off: no probes, no token Secret; an existing ConfigMap replaces the rendered one', async () => {
    const r = await render(['--set', 'existingConfigMap=my-config', '--set', 'config.admin=null', '--set', 'serviceAccount.create=false']);
    invariants(r);
    expect(r.docs.map((d) => d.kind).sort()).toEqual(['Deployment', 'Service']);
    const d = one(r, 'Deployment');
    expect(container(d).readinessProbe).toBeUndefined();
    expect(arr(container(d).ports).map((p) => p.name)).toEqual(['ssh', 'hbone']);
    expect(obj(arr(podSpec(d).volumes).find((v) => v.name === 'config')?.configMap).name).toBe('my-config');
    expect(podSpec(d).serviceAccountName).toBe('default');
  });

  it.skipIf((KUBECTL_MINOR ?? 99) < 26)(
    'kubectl decodes every workload, Service and binding into the API types, nothing dropped',
    async () => {
      expect((await kubectlDecodes(await render())).sort()).toEqual(['Deployment', 'Service']);
      expect((await kubectlDecodes(await render(['--set', 'admin.token=0123456789abcdef-token'], NODE_VALUES))).sort()).toEqual([
        'ClusterRoleBinding',
        'DaemonSet',
        'Service',
      ]);
      expect((await kubectlDecodes(await render([], SECRETS_VALUES))).sort()).toEqual(['Deployment', 'Service']);
      // The check sees a misspelt field.
      const bad = structuredClone(one(await render(), 'Deployment'));
      (container(bad) as Obj).readinesProbe = container(bad).readinessProbe;
      const typed = await kubectlTyped(bad, 'bad');
      expect(() => expectSubset(bad, typed, 'Deployment')).toThrow(/readinesProbe: not a field Kubernetes knows/);
    },
  );

  it('refuses bad values with a message', async () => {
    for (const [set, message] of [
      ['mode=sidecar', 'mode must be node or gateway'],
      ['admin.token=short', 'admin.token: use at least 16 characters'],
      ['config.ssh.listen=nowhere', 'config.ssh.listen "nowhere": expected host:port'],
    ] as const) {
      const r = await sh(renderer, ['-chart', CHART, '--set', set]);
      expect(r.code, set).toBe(1);
      expect(r.stderr).toContain(message);
    }
  });

  it('NOTES.txt renders for both modes', async () => {
    for (const mode of ['gateway', 'node']) {
      const { notes } = await render(['--set', `mode=${mode}`]);
      expect(notes).toContain(`in ${mode} mode`);
      expect(notes).toContain('ugate id -c /etc/ugate/ugate.yaml');
      if (mode === 'node') expect(notes).toContain('--socks5-hostname ugate.mesh:15080');
    }
  });
});

/** Every value in `want` is in `got` at the same path (kubectl adds defaults; it must not drop anything). */
function expectSubset(want: unknown, got: unknown, path: string): void {
  if (Array.isArray(want)) {
    expect(Array.isArray(got), `${path} is a list`).toBe(true);
    expect((got as unknown[]).length, `${path} length`).toBe(want.length);
    for (const [i, w] of want.entries()) expectSubset(w, (got as unknown[])[i], `${path}[${i}]`);
  } else if (want && typeof want === 'object') {
    expect(got && typeof got === 'object', `${path} is a map (kubectl dropped or changed it)`).toBe(true);
    for (const [k, v] of Object.entries(want)) {
      expect(Object.hasOwn(got as Obj, k), `${path}.${k}: not a field Kubernetes knows (kubectl dropped it)`).toBe(true);
      expectSubset(v, (got as Obj)[k], `${path}.${k}`);
    }
  } else {
    expect(got, path).toEqual(want);
  }
}

// ---------------------------------------------------------------------------------------------
// systemd unit

describe('systemd unit (deploy/systemd/ugate.service)', () => {
  const unit = readFileSync(UNIT, 'utf8');
  const directives = (key: string) =>
    unit
      .split('\n')
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));

  it('systemd-analyze verify accepts it', async () => {
    const analyze = need('systemd-analyze', 'apt-get install -y systemd');
    // The unit runs `ugate` from systemd's search path; verify needs the program to exist, so
    // this copy names the workspace's build of it. Nothing else changes.
    const dir = join(work, 'unit');
    mkdirSync(dir, { recursive: true });
    const copy = join(dir, 'ugate.service');
    writeFileSync(copy, unit.replace(/^(Exec\w+=)ugate /gm, `$1${join(ROOT, 'apps/ugate/bin/ugate.js')} `));
    expect(unit.match(/^Exec\w+=ugate /gm)).toHaveLength(3);
    const r = await sh(analyze, ['verify', '--man=no', copy], { cwd: dir });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);

    // The sandbox, as systemd scores it (0 = fully locked down, 10 = wide open).
    const s = await sh(analyze, ['security', '--offline=yes', '--no-pager', copy], { cwd: dir });
    expect(s.code, s.stderr).toBe(0);
    const score = Number(/Overall exposure level for ugate\.service: ([\d.]+)/.exec(s.stdout)?.[1]);
    expect(score, s.stdout).toBeLessThanOrEqual(2);
    for (const good of [
      'NoNewPrivileges=',
      'ProtectSystem=',
      'ProtectHome=',
      'PrivateTmp=',
      'RestrictNamespaces=~user',
      'SystemCallFilter=~@privileged',
    ]) {
      expect(s.stdout).toMatch(new RegExp(`✓ ${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    }
  });

  it('hardening, state, reload and stop fit the daemon', () => {
    expect(directives('DynamicUser')).toEqual(['yes']);
    expect(directives('StateDirectory')).toEqual(['ugate']);
    expect(directives('Environment')).toContain('UGATE_DATADIR=/var/lib/ugate');
    expect(directives('ProtectSystem')).toEqual(['strict']);
    expect(directives('CapabilityBoundingSet')).toEqual(['']);
    expect(directives('AmbientCapabilities')).toEqual(['']);
    expect(directives('RestrictAddressFamilies')).toEqual(['AF_INET AF_INET6 AF_UNIX AF_NETLINK']);
    expect(directives('SystemCallFilter')[0]).toBe('@system-service');
    expect(directives('MemoryDenyWriteExecute')).toEqual([]); // V8's JIT
    expect(directives('ExecStart')).toEqual(['ugate run -c /etc/ugate/ugate.yaml']);
    expect(directives('ExecReload').at(-1)).toBe('kill -HUP $MAINPID');
    expect(directives('KillSignal')).toEqual(['SIGTERM']);
    // The stop timeout outlasts the drain of the config the unit reads.
    const drainMs = readConfig(SERVER_CONFIG).limits.drainMs;
    const stopSec = Number(/^(\d+)s?$/.exec(directives('TimeoutStopSec')[0] ?? '')?.[1]);
    expect(stopSec * 1000).toBeGreaterThan(drainMs);
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions: comments and parser directives dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (!cur && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (cur && line.trimStart().startsWith('#')) continue;
    if (line.endsWith('\\')) {
      cur += `${line.slice(0, -1)} `;
      continue;
    }
    cur += line;
    const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(cur);
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
    cur = '';
  }
  return out;
}

describe('Dockerfile', () => {
  const all = instructions(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const stages: Instruction[][] = [];
  for (const i of all) {
    if (i.op === 'FROM') stages.push([]);
    stages.at(-1)?.push(i);
  }
  const runtime = stages.at(-1)!;
  const arg = (name: string) => /=(.*)$/.exec(all.find((i) => i.op === 'ARG' && i.args.startsWith(`${name}=`))?.args ?? '')?.[1];
  const get = (stage: Instruction[], op: string) => stage.filter((i) => i.op === op);
  const server = readConfig(SERVER_CONFIG);

  it('multi-stage: a build stage with node-gyp headers, a slim runtime from pinned bases', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages[0]![0]!.args).toMatch(/^node:\$\{NODE_VERSION\}-bookworm AS build$/);
    expect(runtime[0]!.args).toMatch(/^node:\$\{NODE_VERSION\}-bookworm-slim AS runtime$/);
    expect(arg('NODE_VERSION')).toBe('20');
    expect(arg('PNPM_VERSION')).toMatch(/^12\.\d+\.\d+$/); // the README's pnpm@12, pinned
    expect(
      get(stages[0]!, 'ENV')
        .map((i) => i.args)
        .join(' '),
    ).toContain('npm_config_nodedir=/usr/local');
    expect(all.some((i) => i.op === 'ADD')).toBe(false);
    expect(all.some((i) => i.op === 'FROM' && /:latest\b|^[^:]+$/.test(i.args.split(' ')[0]!))).toBe(false);
    // The runtime stage takes only the deployed app from the build stage.
    const fromBuild = get(runtime, 'COPY').filter((i) => i.args.startsWith('--from='));
    expect(fromBuild.map((i) => i.args)).toEqual(['--from=build /out /opt/ugate']);
    expect(get(stages[0]!, 'RUN').some((i) => i.args.includes('pnpm --filter ugate deploy --prod /out'))).toBe(true);
  });

  it('runs ugate as the non-root user the chart expects, with the shipped config, ports and health check', () => {
    const user = get(runtime, 'USER').at(-1)!.args;
    expect(user).toMatch(/^\d+:\d+$/);
    const [uid] = user.split(':').map(Number);
    expect(uid).toBeGreaterThan(0);
    const values = readFileSync(join(CHART, 'values.yaml'), 'utf8');
    expect(uid).toBe(Number(/^podSecurityContext:\n(?: {2}.*\n)*? {2}runAsUser: (\d+)$/m.exec(values)?.[1]));
    expect(get(runtime, 'RUN').some((i) => i.args.includes(`useradd --system --uid ${uid}`))).toBe(true);

    expect(get(runtime, 'COPY').map((i) => i.args)).toContain('deploy/ugate.yaml /etc/ugate/ugate.yaml');
    expect(JSON.parse(get(runtime, 'ENTRYPOINT')[0]!.args)).toEqual(['ugate']);
    expect(JSON.parse(get(runtime, 'CMD')[0]!.args)).toEqual(['run', '-c', '/etc/ugate/ugate.yaml']);
    expect(server.dataDir).toBe('/var/lib/ugate');
    expect(get(runtime, 'VOLUME')[0]!.args).toBe('["/var/lib/ugate"]');

    // EXPOSE: the listeners of the shipped config.
    const listen = [server.ssh.listen, server.hbone?.listen, server.socks?.listen, server.http?.listen, server.admin?.listen];
    const ports = listen.map((l) => Number(String(l).split(':').pop()));
    expect(get(runtime, 'EXPOSE')[0]!.args.split(/\s+/).map(Number).sort()).toEqual(ports.sort());
    expect(ports.sort()).toEqual([15000, 15008, 15022, 15080, 15081]);

    // The health check asks the admin endpoint of that config for readiness.
    const health = get(runtime, 'HEALTHCHECK')[0]!.args;
    expect(health).toContain(`http://${server.admin!.listen}/healthz/ready`);
    expect(get(runtime, 'STOPSIGNAL')[0]!.args).toBe('SIGTERM');
  });

  it('.dockerignore keeps installs, builds and local state out of the context, and nothing the build copies', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['**/node_modules', '**/dist', '**/*.tsbuildinfo', '.git', 'ugate.yaml']) expect(ignore).toContain(p);
    for (const p of ['deploy', 'deploy/ugate.yaml', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', 'packages', 'apps'])
      expect(ignore).not.toContain(p);
  });

  it('deploy/docker/smoke-test.sh is an executable bash script that parses', async () => {
    const script = join(ROOT, 'deploy/docker/smoke-test.sh');
    accessSync(script, constants.X_OK);
    expect(await ok('bash', ['-n', script])).toBe('');
  });

  it("the build stage's `pnpm deploy --prod` output runs on its own", async () => {
    const pnpm = need('pnpm', 'npm i -g pnpm@12');
    const out = join(work, 'deploy-out');
    const lock = readFileSync(join(ROOT, 'pnpm-lock.yaml'));
    // --prefer-offline: the store already holds every tarball; package metadata may still need the npm registry.
    await ok(pnpm, ['--filter', 'ugate', 'deploy', '--prod', '--prefer-offline', out], {
      env: { ...process.env, CI: 'true' },
      timeoutMs: 120_000,
    });
    expect(readFileSync(join(ROOT, 'pnpm-lock.yaml')).equals(lock)).toBe(true);
    // Moved away from the workspace, as COPY --from=build puts it into the runtime image.
    const opt = join(work, 'opt-ugate');
    renameSync(out, opt);
    const bin = join(opt, 'bin/ugate.js');
    const cfg = join(work, 'image-ugate.yaml');
    writeFileSync(cfg, readFileSync(SERVER_CONFIG, 'utf8').replace('dataDir: /var/lib/ugate', `dataDir: ${join(work, 'image-data')}`));
    expect(await ok(process.execPath, [bin, 'check', '-c', cfg], { cwd: work })).toContain(': ok');
    const id = JSON.parse(await ok(process.execPath, [bin, 'id', '--json', '-c', cfg], { cwd: work })) as { id: string };
    expect(id.id).toMatch(/^[a-z2-7]{52}$/);
    // ssh2's native binding was built and is used; no devDependency came along.
    const native = await ok(
      process.execPath,
      ['--input-type=module', '-e', `import('@ugate/proto-ssh').then((m) => console.log(m.nativeCryptoLoaded))`],
      {
        cwd: opt,
      },
    );
    expect(native.trim()).toBe('true');
    expect(existsSync(join(opt, 'node_modules/typescript'))).toBe(false);
    expect(existsSync(join(opt, 'node_modules/vitest'))).toBe(false);
  }, 120_000);
});
