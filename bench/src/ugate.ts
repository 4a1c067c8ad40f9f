import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type Child, freePort, startChild, stopChild, waitPort } from './procs.js';

export interface UgatePaths {
  root: string;
  /** `apps/ugate/bin/ugate.js` */
  bin: string;
}

export function ugatePaths(root: string): UgatePaths {
  return { root, bin: join(root, 'apps/ugate/bin/ugate.js') };
}

/** Why ugate cannot run here, or undefined when it can (its dist and its packages' dists exist). */
export function ugateMissing(p: UgatePaths): string | undefined {
  for (const f of [
    'apps/ugate/dist/main.js',
    'packages/core/dist/index.js',
    'packages/proto-ssh/dist/index.js',
    'packages/proto-socks/dist/index.js',
    'packages/proto-http/dist/index.js',
  ]) {
    if (!existsSync(join(p.root, f))) return `${f} is missing (build first: pnpm build)`;
  }
  return undefined;
}

/**
 * The cipher two ssh2 peers settle on: the client's first preference, since
 * the server (ssh2 too) supports the same list. ugate sets no cipher option.
 */
export function ssh2Cipher(root: string): string {
  try {
    const req = createRequire(join(root, 'packages/proto-ssh/package.json'));
    const c = req('ssh2/lib/protocol/constants.js') as { DEFAULT_CIPHER?: string[] };
    const crypto = req('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean };
    const first = c.DEFAULT_CIPHER?.[0] ?? 'unknown';
    return `${first}${crypto.bindingAvailable ? '' : ' (no native binding!)'}`;
  } catch {
    return 'unknown';
  }
}

export interface UgatePair {
  alice: Child;
  gateway: Child;
  socksPort: number;
  stop(): Promise<void>;
}

function yaml(o: unknown): string {
  // JSON is YAML: no YAML writer needed.
  return `${JSON.stringify(o, null, 2)}\n`;
}

/** The environment without `UGATE_*` variables: ugate reads them as config overrides. */
export function cleanEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('UGATE_')));
}

function identity(p: UgatePaths, config: string): { id: string; publicKey: string } {
  const out = execFileSync('node', [p.bin, 'id', '-c', config, '--json'], { encoding: 'utf8', timeout: 30_000, env: cleanEnv() });
  return JSON.parse(out) as { id: string; publicKey: string };
}

/**
 * A ugate "gateway" (SSH listener, direct egress) and "alice" (SOCKS5
 * listener, every route over one SSH carrier to the gateway), each its own
 * process started from the CLI with a temporary YAML config.
 */
export async function startUgate(p: UgatePaths, dir: string, nodeArgs: string[] = []): Promise<UgatePair> {
  mkdirSync(dir, { recursive: true });
  const sshPort = await freePort();
  const socksPort = await freePort();
  const gwFile = join(dir, 'gateway.yaml');
  const aliceFile = join(dir, 'alice.yaml');
  const authorizedKeys = join(dir, 'authorized_keys');
  const common = { http: null, admin: null, log: { level: 'warn' }, limits: { drainMs: 200 } };
  writeFileSync(
    gwFile,
    yaml({ dataDir: join(dir, 'gateway'), ssh: { listen: `127.0.0.1:${sshPort}`, authorizedKeys }, socks: null, ...common }),
  );
  const gw = identity(p, gwFile);
  writeFileSync(
    aliceFile,
    yaml({
      dataDir: join(dir, 'alice'),
      ssh: { listen: null, gateways: [{ address: `127.0.0.1:${sshPort}`, id: gw.id }] },
      socks: { listen: `127.0.0.1:${socksPort}` },
      routes: [{ match: '*', carrier: 'ssh' }],
      ...common,
    }),
  );
  const alice = identity(p, aliceFile);
  writeFileSync(authorizedKeys, `${alice.publicKey} alice\n`);

  const gateway = startChild('ugate gateway', ['node', ...nodeArgs, p.bin, 'run', '-c', gwFile], { env: cleanEnv() });
  let aliceChild: Child | undefined;
  try {
    await waitPort(sshPort, 20_000, gateway);
    aliceChild = startChild('ugate alice', ['node', ...nodeArgs, p.bin, 'run', '-c', aliceFile], { env: cleanEnv() });
    await waitPort(socksPort, 20_000, aliceChild);
  } catch (e) {
    if (aliceChild) await stopChild(aliceChild);
    await stopChild(gateway);
    throw e;
  }
  const a = aliceChild;
  return {
    alice: a,
    gateway,
    socksPort,
    async stop() {
      await stopChild(a);
      await stopChild(gateway);
    },
  };
}
