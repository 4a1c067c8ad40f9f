/**
 * The independent HBONE peer in test/peers/hbone-go/main.go (Go standard library only: crypto/tls +
 * net/http's bundled HTTP/2), built on demand and driven from tests.
 *
 *   const bin = await buildGoPeer();
 *   const srv = await startGoServer({ cert, key, ca, identity: 'spiffe://cluster.local/ns/default/sa/a' });
 *   const r = await runGoClient({ port: srv.port, authority: '127.0.0.1:8080', cert, key, ca, input });
 *
 * Certificates for it: `makeCa` / `makeLeaf` (openssl CLI, EC P-256, URI SAN identities).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the Go source. */
export const GO_PEER_SOURCE = fileURLToPath(new URL('../peers/hbone-go/main.go', import.meta.url));

/** Where the binary, its sha256 marker and Go's caches live (shared by all test processes). */
export const GO_PEER_DIR = join(tmpdir(), 'ugate-hbone-go');

function goEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GOCACHE: join(GO_PEER_DIR, 'gocache'),
    GOPATH: join(GO_PEER_DIR, 'gopath'),
    HOME: join(GO_PEER_DIR, 'home'),
    GO111MODULE: 'off', // a single file, standard library only: no module, no network
    GOFLAGS: '',
    GOPROXY: 'off',
    GOWORK: 'off',
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0', // no C toolchain needed; pure-Go resolver
  };
}

function exec(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}) {
  return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** True if a `go` binary is on PATH (for `describe.skipIf`). */
export async function hasGo(): Promise<boolean> {
  try {
    return (await exec('go', ['version'], { env: goEnv(), timeoutMs: 10_000 })).code === 0;
  } catch {
    return false;
  }
}

let built: Promise<string> | undefined;

/**
 * Build the Go peer once per process (and across processes: skipped when the marker file holds the
 * source's sha256). Returns the binary's absolute path.
 */
export function buildGoPeer(): Promise<string> {
  built ??= build().catch((err) => {
    built = undefined;
    throw err;
  });
  return built;
}

async function build(): Promise<string> {
  const sha = createHash('sha256').update(readFileSync(GO_PEER_SOURCE)).digest('hex');
  const bin = join(GO_PEER_DIR, 'hbone-go');
  const marker = `${bin}.sha256`;
  mkdirSync(join(GO_PEER_DIR, 'home'), { recursive: true });
  if (existsSync(bin) && existsSync(marker) && readFileSync(marker, 'utf8').trim() === sha) return bin;

  const env = goEnv();
  try {
    await exec('go', ['version'], { env, timeoutMs: 10_000 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('golang-go is not installed: `go` is not on PATH (apt-get install -y golang-go)');
    }
    throw err;
  }
  const tmp = `${bin}.${process.pid}.${Date.now()}.tmp`;
  const r = await exec('go', ['build', '-o', tmp, GO_PEER_SOURCE], { env, cwd: GO_PEER_DIR });
  if (r.code !== 0) throw new Error(`go build of ${GO_PEER_SOURCE} failed (exit ${r.code}):\n${r.out}`);
  renameSync(tmp, bin); // atomic: concurrent builders and running copies are unaffected
  writeFileSync(`${marker}.${process.pid}.tmp`, `${sha}\n`);
  renameSync(`${marker}.${process.pid}.tmp`, marker);
  return bin;
}

// ---------------------------------------------------------------------------------------------

export interface GoServerOptions {
  cert: string;
  key: string;
  /** Trust roots for client certificates. */
  ca: string;
  /** Required URI SAN of the client certificate. */
  identity?: string;
  /** Dial this address for every CONNECT instead of the authority. */
  upstream?: string;
  /** On upstream EOF hold END_STREAM until the client's END_STREAM (default: end at once, Go adds RST_STREAM NO_ERROR). */
  holdEnd?: boolean;
  /** Default 127.0.0.1:0. */
  listen?: string;
  startTimeoutMs?: number;
}

/** One `STREAM {json}` line of the server's stderr, written when a stream is finished. */
export interface GoStreamLog {
  id: number;
  peer: string[];
  remote: string;
  proto: string;
  method: string;
  authority: string;
  path?: string;
  headers: Record<string, string[]>;
  status: number;
  dialed?: string;
  up: number;
  down: number;
  reqEnd?: string;
  respEnd?: string;
  err?: string;
  ms: number;
}

export interface GoServer {
  port: number;
  stop(): Promise<void>;
  /** stdout + stderr so far. */
  output(): string;
  /** Parsed STREAM lines so far. */
  streams(): GoStreamLog[];
}

export function goServerArgs(opts: GoServerOptions): string[] {
  const args = ['server', '-listen', opts.listen ?? '127.0.0.1:0', '-cert', opts.cert, '-key', opts.key, '-ca', opts.ca];
  if (opts.identity) args.push('-identity', opts.identity);
  if (opts.upstream) args.push('-upstream', opts.upstream);
  if (opts.holdEnd) args.push('-hold-end');
  return args;
}

export async function startGoServer(opts: GoServerOptions): Promise<GoServer> {
  const bin = await buildGoPeer();
  const child: ChildProcess = spawn(bin, goServerArgs(opts), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 2_000);
      await exited;
      clearTimeout(t);
    }
  };
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hbone-go server did not start:\n${output}`));
    }, opts.startTimeoutMs ?? 10_000);
    child.stdout?.on('data', (c: Buffer) => {
      stdout += c.toString();
      output += c.toString();
      const m = /^LISTENING \S+:(\d+)$/m.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.stderr?.on('data', (c: Buffer) => {
      output += c.toString();
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hbone-go server exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  return {
    port,
    stop,
    output: () => output,
    streams: () =>
      output
        .split('\n')
        .filter((l) => l.startsWith('STREAM '))
        .map((l) => JSON.parse(l.slice('STREAM '.length)) as GoStreamLog),
  };
}

// ---------------------------------------------------------------------------------------------

export interface GoClientOptions {
  /** HBONE server port on `host` (default 127.0.0.1). */
  port: number;
  host?: string;
  /** CONNECT :authority, host:port. */
  authority: string;
  /** Trust roots for the server certificate. */
  ca: string;
  /** Client certificate; without it none is sent. */
  cert?: string;
  key?: string;
  /** Required URI SAN of the server certificate. */
  expectIdentity?: string;
  /** Extra request headers: `['baggage: a=b']` or `{ baggage: 'a=b' }`. */
  headers?: string[] | Record<string, string>;
  /** Default CONNECT. */
  method?: string;
  /** Print `STATUS <code>` on stdout and exit 0, no body exchange. */
  statusOnly?: boolean;
  timeoutMs?: number;
}

export interface GoClientResult {
  /** 0 = 200 + clean end, 3 = non-200 (stderr `STATUS <code>`), 4 = TLS/verification (stderr `TLSERROR …`), 1 = other; null = killed on timeout. */
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

export function goClientArgs(opts: GoClientOptions): string[] {
  const args = ['client', '-connect', `${opts.host ?? '127.0.0.1'}:${opts.port}`, '-authority', opts.authority, '-ca', opts.ca];
  if (opts.cert) args.push('-cert', opts.cert);
  if (opts.key) args.push('-key', opts.key);
  if (opts.expectIdentity) args.push('-expect-identity', opts.expectIdentity);
  const headers = Array.isArray(opts.headers) ? opts.headers : Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`);
  for (const h of headers) args.push('-headers', h);
  if (opts.method) args.push('-method', opts.method);
  if (opts.statusOnly) args.push('-status-only');
  return args;
}

/** Run one client stream: `input` is the request body (then END_STREAM); stdout is the response body. */
export async function runGoClient(opts: GoClientOptions & { input?: Buffer }): Promise<GoClientResult> {
  const bin = await buildGoPeer();
  return new Promise((resolve, reject) => {
    const child = spawn(bin, goClientArgs(opts), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    child.stdin.on('error', () => {}); // EPIPE when the client exits before reading all input
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

// ---------------------------------------------------------------------------------------------
// Test PKI with the openssl CLI: EC P-256, SPIFFE URI SANs, as Istio issues them.

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface Pem {
  cert: string;
  key: string;
}

/** Self-signed root `<dir>/<name>.crt` + `.key` (basicConstraints CA:TRUE, keyUsage keyCertSign). */
export function makeCa(dir: string, name: string): Pem {
  const f = (ext: string) => join(dir, `${name}.${ext}`);
  writeFileSync(f('ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n');
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('key')], dir);
  openssl(['req', '-new', '-key', f('key'), '-subj', `/O=ugate-test/CN=${name}`, '-out', f('csr')], dir);
  openssl(['x509', '-req', '-in', f('csr'), '-signkey', f('key'), '-days', '2', '-sha256', '-extfile', f('ext'), '-out', f('crt')], dir);
  return { cert: f('crt'), key: f('key') };
}

/** Leaf `<dir>/<name>.crt` + `.key` signed by `ca`, with `subjectAltName=URI:<uri>` and EKU serverAuth,clientAuth. */
export function makeLeaf(dir: string, name: string, ca: Pem, uri: string): Pem {
  const f = (ext: string) => join(dir, `${name}.${ext}`);
  writeFileSync(
    f('ext'),
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n' +
      `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:${uri}\nauthorityKeyIdentifier=keyid\n`,
  );
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('key')], dir);
  openssl(['req', '-new', '-key', f('key'), '-subj', '/O=ugate-test', '-out', f('csr')], dir);
  openssl(
    ['x509', '-req', '-in', f('csr'), '-CA', ca.cert, '-CAkey', ca.key, '-days', '2', '-sha256', '-extfile', f('ext'), '-out', f('crt')],
    dir,
  );
  return { cert: f('crt'), key: f('key') };
}
