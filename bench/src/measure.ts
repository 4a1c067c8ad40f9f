import { randomFillSync } from 'node:crypto';
import type { Socket } from 'node:net';

/** Opens a stream to the target the caller chose (directly or through a proxy). */
export type Opener = () => Promise<Socket>;

const CHUNK = randomFillSync(Buffer.allocUnsafe(64 * 1024));

function now(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what} timed out after ${Math.round(ms / 1000)} s`));
    }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function writeN(s: Socket, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let left = n;
    const onClose = () => reject(new Error(`stream closed with ${left} bytes left to send`));
    s.once('close', onClose);
    const pump = () => {
      while (left > 0) {
        const len = Math.min(left, CHUNK.length);
        left -= len;
        if (!s.write(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len))) {
          s.once('drain', pump);
          return;
        }
      }
      s.off('close', onClose);
      resolve();
    };
    pump();
  });
}

/** Everything the peer sends until it ends, as text. */
function readAll(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
    });
    s.once('end', () => resolve(text));
    s.once('error', reject);
    s.once('close', () => reject(new Error('stream closed before its end')));
    s.resume();
  });
}

/**
 * Send `bytes` to the discard server and wait for its byte count, which it
 * sends once it sees our half-close. Returns seconds from first byte to count.
 */
export async function upload(open: Opener, bytes: number, timeoutMs: number): Promise<number> {
  const s = await open();
  try {
    const reply = readAll(s);
    reply.catch(() => {});
    const t0 = now();
    const work = (async () => {
      await writeN(s, bytes);
      s.end();
      return reply;
    })();
    const text = await withTimeout(work, timeoutMs, `upload of ${bytes} bytes`, () => s.destroy());
    const secs = now() - t0;
    if (Number(text.trim()) !== bytes) throw new Error(`sink counted ${text.trim() || 'nothing'} of ${bytes} bytes`);
    return secs;
  } finally {
    s.destroy();
  }
}

/** Ask the source server for `bytes` and read them to its end. Returns seconds. */
export async function download(open: Opener, bytes: number, timeoutMs: number): Promise<number> {
  const s = await open();
  try {
    let got = 0;
    const done = new Promise<void>((resolve, reject) => {
      s.on('data', (d: Buffer) => {
        got += d.length;
      });
      s.once('end', () => resolve());
      s.once('error', reject);
      s.once('close', () => reject(new Error(`stream closed after ${got} of ${bytes} bytes`)));
    });
    done.catch(() => {});
    const head = Buffer.alloc(8);
    head.writeBigUInt64BE(BigInt(bytes));
    const t0 = now();
    s.resume();
    s.write(head);
    await withTimeout(done, timeoutMs, `download of ${bytes} bytes`, () => s.destroy());
    const secs = now() - t0;
    if (got !== bytes) throw new Error(`received ${got} of ${bytes} bytes`);
    return secs;
  } finally {
    s.destroy();
  }
}

/** Send one byte on an open stream and wait for it to come back. */
function pingOne(s: Socket, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error('echo timed out')), timeoutMs);
    const done = (e?: Error) => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('error', done);
      s.off('close', onClose);
      if (e) reject(e);
      else resolve();
    };
    const onData = () => done();
    const onClose = () => done(new Error('closed before the echo'));
    s.on('data', onData);
    s.on('error', done);
    s.on('close', onClose);
    s.resume();
    s.write('x');
  });
}

/**
 * One short stream's exchange, under one deadline (as the Go client's one context per stream):
 * one byte out, its echo back, then our end, and the peer's clean end with nothing more.
 */
function echoAndClose(s: Socket, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    let ended = false;
    let error: Error | undefined;
    const timer = setTimeout(() => {
      error ??= new Error(got ? 'close timed out' : 'echo timed out');
      s.destroy();
    }, timeoutMs);
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got === 1) s.end();
      else error ??= new Error(`${got} bytes came back for 1`);
    });
    s.once('end', () => {
      ended = true;
    });
    s.on('error', (e: Error) => {
      error ??= e;
    });
    s.once('close', () => {
      clearTimeout(timer);
      if (!error && got === 0) error = new Error('closed before the echo');
      if (!error && !ended) error = new Error('closed without a clean end');
      if (error) reject(error);
      else resolve();
    });
    s.resume(); // a SOCKS5 client pauses the socket after the reply; a 'data' listener alone does not resume it
    s.write('x');
  });
}

export interface OpensResult {
  streams: number;
  failed: number;
  seconds: number;
  perSecond: number;
  firstError?: string;
}

/**
 * `n` short streams, `concurrency` at a time: open, send one byte, read it
 * back, close both ways (end, wait for the peer's clean end).
 */
export async function opens(open: Opener, n: number, concurrency: number, timeoutMs: number): Promise<OpensResult> {
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const worker = async () => {
    while (next < n) {
      next++;
      let s: Socket | undefined;
      try {
        s = await open();
        await echoAndClose(s, timeoutMs);
      } catch (e) {
        failed++;
        firstError ??= (e as Error).message;
        s?.destroy();
        if (failed > 50) throw new Error(`more than 50 streams failed; first: ${firstError}`);
      }
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = now() - t0;
  return { streams: n, failed, seconds, perSecond: (n - failed) / seconds, firstError };
}

export interface IdleResult {
  sockets: Socket[];
  failed: number;
  seconds: number;
  firstError?: string;
}

/** Open `n` streams (each proven by a one-byte echo) and keep them open and idle. */
export async function openIdle(open: Opener, n: number, concurrency: number, timeoutMs: number): Promise<IdleResult> {
  const sockets: Socket[] = [];
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  const worker = async () => {
    while (next < n && failed <= 50) {
      next++;
      let s: Socket | undefined;
      try {
        s = await open();
        await pingOne(s, timeoutMs);
        s.on('error', () => {});
        sockets.push(s);
      } catch (e) {
        failed++;
        firstError ??= (e as Error).message;
        s?.destroy();
      }
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { sockets, failed, seconds: now() - t0, firstError };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
