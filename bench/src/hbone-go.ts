/**
 * The independent Go HBONE peer (test/peers/hbone-go/main.go, Go standard library only) for the
 * HBONE benchmark. Built the same way, into the same cache folder and with the same sha256 marker as
 * test/support/go-peer.ts, so tests and benchmark share one binary (that file is TypeScript outside
 * bench's rootDir, hence this small copy of its build step and argument lists).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const GO_PEER_DIR = join(tmpdir(), 'ugate-hbone-go');

function goEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GOCACHE: join(GO_PEER_DIR, 'gocache'),
    GOPATH: join(GO_PEER_DIR, 'gopath'),
    HOME: join(GO_PEER_DIR, 'home'),
    GO111MODULE: 'off',
    GOFLAGS: '',
    GOPROXY: 'off',
    GOWORK: 'off',
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0',
  };
}

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: goEnv(), cwd });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Build the Go peer unless the cached binary matches the source's sha256. Returns the binary and the Go version. */
export async function buildGoPeer(root: string): Promise<{ bin: string; go: string }> {
  const source = join(root, 'test/peers/hbone-go/main.go');
  const sha = createHash('sha256').update(readFileSync(source)).digest('hex');
  const bin = join(GO_PEER_DIR, 'hbone-go');
  const marker = `${bin}.sha256`;
  mkdirSync(join(GO_PEER_DIR, 'home'), { recursive: true });
  let go: string;
  try {
    go = (await run('go', ['version'], GO_PEER_DIR, 10_000)).out.trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('`go` is not on PATH (apt-get install -y golang-go)');
    throw e;
  }
  if (existsSync(bin) && existsSync(marker) && readFileSync(marker, 'utf8').trim() === sha) return { bin, go };
  const tmp = `${bin}.${process.pid}.${Date.now()}.tmp`;
  const r = await run('go', ['build', '-o', tmp, source], GO_PEER_DIR, 180_000);
  if (r.code !== 0) throw new Error(`go build of ${source} failed (exit ${r.code}):\n${r.out}`);
  renameSync(tmp, bin);
  writeFileSync(`${marker}.${process.pid}.tmp`, `${sha}\n`);
  renameSync(`${marker}.${process.pid}.tmp`, marker);
  return { bin, go };
}

export interface GoCerts {
  cert: string;
  key: string;
  ca: string;
}

export function goServerArgs(c: GoCerts, clientIdentity: string): string[] {
  return ['server', '-listen', '127.0.0.1:0', '-cert', c.cert, '-key', c.key, '-ca', c.ca, '-identity', clientIdentity];
}

/** One CONNECT stream: stdin is the request body, stdout the response body. */
export function goClientArgs(c: GoCerts, connect: string, authority: string, serverIdentity: string): string[] {
  return [
    'client',
    '-connect',
    connect,
    '-authority',
    authority,
    '-ca',
    c.ca,
    '-cert',
    c.cert,
    '-key',
    c.key,
    '-expect-identity',
    serverIdentity,
  ];
}
