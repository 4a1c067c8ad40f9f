/**
 * A ugate node run as a real process (`ugate run -c FILE`), with its JSON log parsed, its admin
 * API at hand, and a SOCKS5 client to open streams through it.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Wire } from './listener.js';
import { start } from './proc.js';
import { waitFor } from './servers.js';

export const BIN = fileURLToPath(new URL('../../apps/ugate/bin/ugate.js', import.meta.url));

/** One line of the node's JSON log. */
export type LogRecord = Record<string, unknown> & { msg?: string; level?: number };

export interface UgateProcess {
  readonly file: string;
  /** `http://127.0.0.1:<port>` of the admin endpoint. */
  readonly admin: string;
  readonly pid: number;
  /** stdout and stderr so far. */
  output(): string;
  /** The JSON log lines so far. */
  logs(): LogRecord[];
  /** The first log line (from `from` on) that `match` accepts. */
  waitLog(match: (l: LogRecord) => boolean, what: string, timeoutMs?: number, from?: number): Promise<LogRecord>;
  /** `fetch` on the admin endpoint. */
  api(path: string, init?: RequestInit): Promise<Response>;
  signal(sig: NodeJS.Signals): void;
  /** Exit code once exited (a signal kills with SIGKILL after the test gave up waiting). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

/** Start `ugate run -c file` and wait for "ugate node started". */
export async function startUgate(file: string, yaml: string, adminPort: number, env: NodeJS.ProcessEnv = {}): Promise<UgateProcess> {
  writeFileSync(file, yaml);
  const p = start('node', [BIN, 'run', '-c', file], { env: { ...process.env, ...env } });
  // 'close', not 'exit': the process can exit before its last stdout lines have been read.
  const exited = new Promise<number | null>((resolve) => p.child.once('close', (code) => resolve(code)));
  const logs = () =>
    p
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as LogRecord];
        } catch {
          return [];
        }
      });
  const proc: UgateProcess = {
    file,
    admin: `http://127.0.0.1:${adminPort}`,
    pid: p.child.pid ?? 0,
    output: p.output,
    logs,
    async waitLog(match, what, timeoutMs = 10_000, from = 0) {
      let found: LogRecord | undefined;
      await waitFor(
        () => {
          found = logs().slice(from).find(match);
          return found !== undefined || p.child.exitCode !== null;
        },
        timeoutMs,
        `log: ${what}`,
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n--- node output ---\n${p.output()}`);
      });
      if (!found) throw new Error(`node exited (${p.child.exitCode}) before logging ${what}\n${p.output()}`);
      return found;
    },
    api: (path, init) => fetch(`${proc.admin}${path}`, init),
    signal: (sig) => {
      p.child.kill(sig);
    },
    stop: p.stop,
    exited,
  };
  await proc.waitLog((l) => l.msg === 'ugate node started', 'node started', 15_000);
  return proc;
}

export interface SocksOptions {
  user?: string;
  password?: string;
}

/**
 * SOCKS5 CONNECT to `host:port` by name through a ugate SOCKS listener. Resolves with the reply
 * code (0 = succeeded) and the connection (ready for data when the code is 0).
 */
export async function socksConnect(
  socksPort: number,
  host: string,
  port: number,
  o: SocksOptions = {},
): Promise<{ rep: number; wire: Wire }> {
  const wire = await Wire.open(socksPort);
  const auth = o.user !== undefined;
  await wire.write(Buffer.from([5, 1, auth ? 2 : 0]));
  const sel = await wire.read(2);
  if (sel[1] !== (auth ? 2 : 0)) throw new Error(`socks method refused: ${sel.toString('hex')}`);
  if (auth) {
    const u = Buffer.from(o.user ?? '');
    const pw = Buffer.from(o.password ?? '');
    await wire.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([pw.length]), pw]));
    const st = await wire.read(2);
    if (st[1] !== 0) return { rep: -1, wire };
  }
  const h = Buffer.from(host);
  await wire.write(Buffer.concat([Buffer.from([5, 1, 0, 3, h.length]), h, Buffer.from([port >> 8, port & 255])]));
  const head = await wire.read(4);
  const len = head[3] === 1 ? 4 : head[3] === 4 ? 16 : (await wire.read(1))[0]!;
  await wire.read(len + 2);
  return { rep: head[1]!, wire };
}

/** Sends `bytes` random bytes through an echo stream and reads them back; returns them. */
export async function echoRoundTrip(wire: Wire, bytes: number): Promise<void> {
  const data = randomBytes(bytes);
  await wire.write(data);
  const back = await wire.read(bytes, 10_000);
  if (!back.equals(data)) throw new Error('echo mismatch');
}

/** Wait until `probe` (async) returns something defined. */
export async function poll<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  let v: T | undefined;
  await waitFor(
    async () => {
      v = await probe();
      return v !== undefined;
    },
    timeoutMs,
    what,
  );
  return v as T;
}
