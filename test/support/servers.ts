/**
 * Reusable test helpers: throw-away TCP servers on 127.0.0.1:0, byte collectors,
 * hashing and polling. Every socket made here is `allowHalfOpen: true`, so a
 * half-close is observable instead of being turned into a full close.
 */
import { createHash, randomBytes as cryptoRandomBytes, type Hash } from 'node:crypto';
import { connect, createServer, Server, Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';

export const LOCALHOST = '127.0.0.1';

const noop = () => {};

/** Hex SHA-256 of a buffer or of the concatenation of several. */
export function sha256(data: Uint8Array | readonly Uint8Array[]): string {
  const h = createHash('sha256');
  if (data instanceof Uint8Array) h.update(data);
  else for (const c of data) h.update(c);
  return h.digest('hex');
}

/** Cryptographically random bytes (any size; large sizes are filled in slices). */
export function randomBytes(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  const step = 1 << 30;
  for (let off = 0; off < n; off += step) cryptoRandomBytes(Math.min(step, n - off)).copy(out, off);
  return out;
}

/** Poll `cond` until it is true. Rejects after `timeoutMs` (a safety net, not a measurement). */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Read a stream to its end. Rejects on error, or on close without a clean end. */
export function readAll(stream: Readable): Promise<Buffer> {
  return collect(stream).done;
}

export interface Collected {
  /** Bytes received so far. */
  readonly length: number;
  /** Everything received so far (empty when `keep` is false). */
  buffer(): Buffer;
  /** Hex SHA-256 of everything received so far. */
  digest(): string;
  /** Resolves once at least `n` bytes arrived; rejects if the stream finishes first. */
  atLeast(n: number): Promise<void>;
  /** All bytes, on 'end'. Rejects on error or on close without end. */
  readonly done: Promise<Buffer>;
}

/** Start consuming a stream now (flowing mode), hashing everything and optionally keeping it. */
export function collect(stream: Readable, opts: { keep?: boolean } = {}): Collected {
  const keep = opts.keep ?? true;
  const chunks: Buffer[] = [];
  const hash: Hash = createHash('sha256');
  let length = 0;
  let finished: Error | 'end' | undefined;
  const waiters: { n: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const settleWaiters = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      if (length >= w.n) w.resolve();
      else if (finished) w.reject(new Error(`stream finished after ${length} of ${w.n} bytes (${String(finished)})`));
      else continue;
      waiters.splice(i, 1);
    }
  };
  const done = new Promise<Buffer>((resolve, reject) => {
    const finish = (how: Error | 'end') => {
      if (finished) return;
      finished = how;
      settleWaiters();
      if (how === 'end') resolve(Buffer.concat(chunks));
      else reject(how);
    };
    stream.on('data', (c: Buffer) => {
      length += c.length;
      hash.update(c);
      if (keep) chunks.push(c);
      settleWaiters();
    });
    stream.once('end', () => finish('end'));
    stream.once('error', (e) => finish(e));
    stream.once('close', () => finish(new Error(`stream closed before end after ${length} bytes`)));
    // A 'data' listener alone does not restart a stream that was paused explicitly.
    stream.resume();
  });
  done.catch(noop); // observed through `done` by whoever cares
  return {
    get length() {
      return length;
    },
    buffer: () => Buffer.concat(chunks),
    digest: () => hash.copy().digest('hex'),
    atLeast: (n) =>
      new Promise<void>((resolve, reject) => {
        waiters.push({ n, resolve, reject });
        settleWaiters();
      }),
    done,
  };
}

/** Hash a stream to its end without keeping it in memory. */
export async function hashAll(stream: Readable): Promise<{ bytes: number; sha256: string }> {
  const c = collect(stream, { keep: false });
  await c.done;
  return { bytes: c.length, sha256: c.digest() };
}

export interface CloseInfo {
  /** The stream's error, if it ended with one. */
  readonly error: Error | undefined;
  /** Whether the readable side saw a clean end before closing. */
  readonly ended: boolean;
}

const closeSeen = new WeakMap<Duplex, Promise<void>>();

/**
 * Start watching for 'close' now, so whenClosed() also works after the event
 * (some streams, e.g. ssh2 channels, never set `closed`/`destroyed`).
 */
export function watchClose(stream: Duplex): void {
  if (!closeSeen.has(stream)) closeSeen.set(stream, new Promise((resolve) => stream.once('close', () => resolve())));
}

/** Resolves when the stream has emitted 'close' (at once if it already has). Rejects after `timeoutMs`. */
export function whenClosed(stream: Duplex, timeoutMs = 10_000): Promise<CloseInfo> {
  stream.on('error', noop);
  watchClose(stream);
  const info = (): CloseInfo => ({ error: stream.errored ?? undefined, ended: stream.readableEnded });
  if (stream.closed) return Promise.resolve(info());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`stream did not close within ${timeoutMs} ms`)), timeoutMs);
    void closeSeen.get(stream)!.then(() => {
      clearTimeout(t);
      resolve(info());
    });
  });
}

/**
 * Keep writing `chunk` (one write per event-loop turn, waiting for 'drain' when
 * write() says so) until stopped or the stream can no longer be written.
 */
export function flood(stream: Writable, chunk: Buffer = randomBytes(64 * 1024)): { readonly written: number; stop(): void } {
  let stopped = false;
  let written = 0;
  const go = () => {
    if (stopped || stream.destroyed || stream.writableEnded) return;
    written += chunk.length;
    if (stream.write(chunk)) setImmediate(go);
  };
  stream.on('error', noop);
  stream.on('drain', go);
  setImmediate(go);
  return {
    get written() {
      return written;
    },
    stop() {
      stopped = true;
      stream.off('drain', go);
    },
  };
}

export interface TestServer {
  readonly server: Server;
  readonly host: string;
  readonly port: number;
  /** `{ host, port }` of this server, for a connect()/StreamRequest. */
  readonly target: { host: string; port: number };
  /** Accepted sockets that are not closed yet. */
  readonly sockets: Set<Socket>;
  /** The next accepted socket, in accept order (only for servers made without a handler). */
  accept(): Promise<Socket>;
  /** Destroy remaining sockets and stop listening. */
  close(): Promise<void>;
}

/**
 * A TCP server on 127.0.0.1:0 (allowHalfOpen). With a handler, each accepted
 * socket goes to it; without one they queue for `accept()`. Accepted sockets
 * get a no-op error listener so a reset never crashes the test process.
 */
export async function startServer(onConnection?: (s: Socket) => void): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const queue: Socket[] = [];
  const takers: ((s: Socket) => void)[] = [];
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on('error', noop);
    watchClose(s);
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    if (onConnection) onConnection(s);
    else {
      const take = takers.shift();
      if (take) take(s);
      else queue.push(s);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOCALHOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('unexpected server address');
  const port = addr.port;
  return {
    server,
    host: LOCALHOST,
    port,
    target: { host: LOCALHOST, port },
    sockets,
    accept() {
      if (onConnection) throw new Error('accept() is only for servers started without a handler');
      const s = queue.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => takers.push(resolve));
    },
    close() {
      for (const s of [...sockets, ...queue]) s.destroy();
      queue.length = 0;
      return new Promise<void>((resolve) => {
        if (!server.listening) resolve();
        else server.close(() => resolve());
      });
    },
  };
}

/** Echoes every byte; ends its side when the client ends. */
export function echoServer(): Promise<TestServer> {
  return startServer((s) => s.pipe(s));
}

/** Hashes everything the client sends; after the client half-closes, replies the SHA-256 hex and ends. */
export function hashServer(): Promise<TestServer> {
  return startServer((s) => {
    const h = createHash('sha256');
    s.on('data', (c: Buffer) => h.update(c));
    s.once('end', () => s.end(h.digest('hex')));
  });
}

/** Sends `data` and ends its side at once; discards whatever the client sends. */
export function sourceServer(data: Buffer): Promise<TestServer> {
  return startServer((s) => {
    s.resume();
    s.end(data);
  });
}

/** Connect to 127.0.0.1:port (allowHalfOpen, noDelay). Resolves once connected. */
export function connectTcp(port: number, host = LOCALHOST): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, allowHalfOpen: true, noDelay: true });
    s.once('error', reject);
    watchClose(s);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

/**
 * Two connected TCP sockets on 127.0.0.1 (both allowHalfOpen, both with a no-op
 * error listener: check `errored` or use whenClosed()); the listener is closed again.
 */
export async function tcpPair(): Promise<{ client: Socket; server: Socket }> {
  const srv = await startServer();
  try {
    const [client, server] = await Promise.all([connectTcp(srv.port), srv.accept()]);
    client.on('error', noop);
    srv.sockets.delete(server);
    return { client, server };
  } finally {
    srv.server.close();
  }
}

/** Counts of live sockets and servers in this process (undocumented but stable Node API). */
export function activeHandles(): { sockets: number; servers: number } {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return {
    sockets: handles.filter((h) => h instanceof Socket).length,
    servers: handles.filter((h) => h instanceof Server).length,
  };
}
