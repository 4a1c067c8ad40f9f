/** Test peers for listener tests: real TCP/HTTP servers on 127.0.0.1, a raw client, curl, a recording logger. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import {
  type Dialer,
  direct,
  type ErrorCode,
  ErrorCodes,
  type LogFn,
  type Logger,
  Policy,
  Router,
  type StreamRequest,
  Switch,
  UgateError,
} from '@ugate/core';

export interface LogLine {
  /** performance.now() when logged. */
  readonly at: number;
  readonly level: 'error' | 'warn' | 'info' | 'debug';
  readonly msg: string | undefined;
  readonly fields: Readonly<Record<string, unknown>>;
}

export type RecordingLogger = Logger & { readonly lines: LogLine[] };

export function recordingLogger(): RecordingLogger {
  const lines: LogLine[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at =
      (level: LogLine['level']): LogFn =>
      (a: object | string, msg?: string) => {
        const at = performance.now();
        if (typeof a === 'string') lines.push({ at, level, msg: a, fields: { ...bindings } });
        else lines.push({ at, level, msg, fields: { ...bindings, ...a } });
      };
    return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), child: (b) => make({ ...bindings, ...b }) };
  };
  return Object.assign(make({}), { lines });
}

/**
 * Lines above debug about this client: its address, logged after it connected
 * (a local port is reused by connections to other listeners).
 */
export function linesFrom(log: RecordingLogger, w: Wire): LogLine[] {
  return log.lines.filter((l) => l.fields.src === w.src && l.at >= w.openedAt && l.level !== 'debug');
}

export async function waitFor<T>(probe: () => T | undefined | false, timeoutMs = 3_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function sha256(b: Uint8Array | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function listenTcp(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

export interface Upstreams {
  /** Echoes bytes; ends after the client ends. */
  readonly echo: number;
  /** Replies with the sha256 hex of everything received, after the client half-closed. */
  readonly hash: number;
  /** Writes `bye\n` and half-closes at once, then keeps reading. */
  readonly firstEnds: number;
  readonly http: number;
  /** Nothing listens here. */
  readonly dead: number;
  /** sha256 hex of what the next `firstEnds` connection received after its FIN. */
  firstEndsReceived(): Promise<string>;
  close(): Promise<void>;
}

/** 1 MiB served by GET /big. */
export const BIG = Buffer.alloc(1 << 20, 'ugate-big-body;');

export async function startUpstreams(): Promise<Upstreams> {
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  };
  const echo = createServer({ allowHalfOpen: true }, (s) => {
    track(s);
    s.pipe(s);
  });
  const hash = createServer({ allowHalfOpen: true }, (s) => {
    track(s);
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => s.end(h.digest('hex')));
  });
  const ready: Promise<string>[] = [];
  const waiting: ((p: Promise<string>) => void)[] = [];
  const firstEnds = createServer({ allowHalfOpen: true }, (s) => {
    track(s);
    s.end('bye\n');
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    const p = new Promise<string>((resolve) => s.on('end', () => resolve(h.digest('hex'))));
    const w = waiting.shift();
    if (w) w(p);
    else ready.push(p);
  });
  const http = createHttpServer((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/hello')) {
      res.end('hello world\n');
    } else if (url === '/upload') {
      const h = createHash('sha256');
      req.on('data', (d: Buffer) => h.update(d));
      req.on('end', () => res.end(h.digest('hex')));
    } else if (url.startsWith('/echo')) {
      req.resume();
      req.on('end', () => {
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('Connection', 'x-origin-hop');
        res.setHeader('X-Origin-Hop', 'must not reach the client');
        res.setHeader('Keep-Alive', 'timeout=5');
        res.end(JSON.stringify({ method: req.method, url, rawHeaders: req.rawHeaders }));
      });
    } else if (url === '/big') {
      res.end(BIG);
    } else {
      res.statusCode = 404;
      res.end('not found\n');
    }
  });
  http.on('connection', track);
  const dead = createServer();
  const deadPort = await listenTcp(dead);
  await new Promise<void>((r) => dead.close(() => r()));
  const servers = [echo, hash, firstEnds, http as unknown as Server];
  const [echoPort, hashPort, firstPort, httpPort] = await Promise.all(servers.map(listenTcp));
  return {
    echo: echoPort!,
    hash: hashPort!,
    firstEnds: firstPort!,
    http: httpPort!,
    dead: deadPort,
    firstEndsReceived: () => ready.shift() ?? new Promise<string>((resolve) => waiting.push((p) => resolve(p))),
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

/** Carrier `fake`: `<label>.fake` fails with the code named by the label; `hang.fake` waits for the abort signal. */
export function fakeDialer(): Dialer & { readonly aborted: string[] } {
  const codes: Record<string, ErrorCode> = {
    timeout: ErrorCodes.TIMEOUT,
    unreachable: ErrorCodes.UNREACHABLE,
    refused: ErrorCodes.REFUSED,
    internal: ErrorCodes.INTERNAL,
    badreq: ErrorCodes.BAD_REQUEST,
    unsupported: ErrorCodes.UNSUPPORTED,
  };
  const aborted: string[] = [];
  return {
    carrier: 'fake',
    aborted,
    dial(req: StreamRequest) {
      const label = req.target.host.split('.')[0]!;
      if (label === 'hang') {
        return new Promise((_, reject) => {
          req.signal?.addEventListener('abort', () => {
            aborted.push(req.sid);
            reject(new UgateError(ErrorCodes.ABORTED, 'requester went away'));
          });
        });
      }
      return Promise.reject(new UgateError(codes[label] ?? ErrorCodes.INTERNAL, `fake ${label}`));
    },
  };
}

/**
 * A switch whose names all resolve to the local upstreams. No catch-all route:
 * an unknown name is NO_ROUTE without any DNS lookup.
 */
export function buildSwitch(up: Upstreams, logger: Logger, fake: Dialer): Switch {
  const local = (port: number) => `127.0.0.1:${port}`;
  return new Switch({
    router: new Router({
      routes: [
        { match: '127.0.0.1', carrier: 'direct' },
        { match: '*.fake', carrier: 'fake' },
      ],
      services: {
        'web.test:80': local(up.http),
        'denied.test:80': local(up.http),
        'echo.test:7': local(up.echo),
        'hash.test:9': local(up.hash),
        'first.test:9': local(up.firstEnds),
        'refused.test:9': local(up.dead),
        // IPv6 targets that are never dialed as such: they map to 127.0.0.1.
        '[2001:db8::1]:7': local(up.echo),
        '[::1]:443': local(up.echo),
      },
    }),
    policy: new Policy([{ action: 'deny', to: ['denied.test'] }]),
    dialers: [direct({ connectTimeoutMs: 1_000 }), fake],
    logger,
  });
}

/** A raw TCP client with exact reads. */
export class Wire {
  readonly socket: Socket;
  /** The client address as listeners and the switch log it. */
  readonly src: string;
  /** performance.now() before connecting. */
  readonly openedAt: number;
  #buf = Buffer.alloc(0);
  #ended = false;
  #closed = false;
  #error: Error | undefined;
  #wake: (() => void)[] = [];

  private constructor(socket: Socket, openedAt: number) {
    this.socket = socket;
    this.openedAt = openedAt;
    this.src = `127.0.0.1:${socket.localPort}`;
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#notify();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on('error', (e) => {
      this.#error = e;
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<Wire> {
    const openedAt = performance.now();
    return new Promise((resolve, reject) => {
      const s = connect({ port, host, allowHalfOpen: true, noDelay: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Wire(s, openedAt));
      });
    });
  }

  get ended(): boolean {
    return this.#ended;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get error(): Error | undefined {
    return this.#error;
  }

  write(b: Uint8Array | string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(b, (e) => (e ? reject(e) : resolve())));
  }

  end(b?: Uint8Array | string): void {
    if (b === undefined) this.socket.end();
    else this.socket.end(b);
  }

  #notify(): void {
    for (const w of this.#wake.splice(0)) w();
  }

  async #until(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.#ended || this.#closed) throw new Error(`${what}: connection ended; got ${this.#buf.toString('hex')}`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`${what}: timed out; got ${this.#buf.toString('hex')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Exactly `n` bytes. */
  async read(n: number, timeoutMs = 5_000): Promise<Buffer> {
    await this.#until(() => this.#buf.length >= n, timeoutMs, `read(${n})`);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Up to and including `marker`. */
  async readUntil(marker: string, timeoutMs = 5_000): Promise<Buffer> {
    await this.#until(() => this.#buf.includes(marker), timeoutMs, `readUntil(${JSON.stringify(marker)})`);
    return this.read(this.#buf.indexOf(marker) + marker.length);
  }

  /** Everything until the peer's FIN (or close). */
  async readToEnd(timeoutMs = 5_000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (!this.#ended && !this.#closed) {
      const left = until - Date.now();
      if (left <= 0) throw new Error(`readToEnd: timed out; got ${this.#buf.length} bytes`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const out = this.#buf;
    this.#buf = Buffer.alloc(0);
    return out;
  }

  /** Resolves once the socket is fully closed. */
  async waitClosed(timeoutMs = 5_000): Promise<void> {
    await waitFor(() => this.#closed, timeoutMs, 'socket close');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface CurlResult {
  readonly exitCode: number;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Run curl with a clean environment (no proxy variables, no .curlrc). */
export function curl(args: string[], timeoutMs = 10_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-q', '-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args],
      { encoding: 'buffer', timeout: timeoutMs + 2_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = (err as { code?: unknown } | null)?.code;
        resolve({ exitCode: err ? (typeof code === 'number' ? code : -1) : 0, stdout, stderr: stderr.toString() });
      },
    );
  });
}

/** Port of a listener address `host:port`. */
export function portOf(address: string | undefined): number {
  return Number(address?.slice(address.lastIndexOf(':') + 1));
}
