/**
 * Bad input against the HBONE server (mTLS, 15008) and the SNI gateway (15443),
 * both in-process on 127.0.0.1:0 with a real Switch (direct dialer) and a
 * recording logger. Every case checks that (1) a good stream opened before the
 * attack still relays byte-exact afterwards and a new one works, (2) how the
 * attacking connection ends on the wire, (3) what was logged, bounded per
 * attacking connection, and (4) that no upstream socket is left behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { type ClientHttp2Session, type ClientHttp2Stream, connect as h2connect } from 'node:http2';
import { createServer as netServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TLSSocket, type Server as TlsServer, connect as tlsConnect, createServer as tlsServer } from 'node:tls';
import { direct, ErrorCodes, type Listener, Policy, Router, Switch } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LogLine, recordingLogger, sleep, Wire } from '../../../test/support/listener.js';
import { type Collected, collect, randomBytes, sha256, startServer, type TestServer, waitFor } from '../../../test/support/servers.js';
import { createCa, hboneServer, issueWorkloadCert, type Pem, sniGateway, WorkloadCredentials, writeCredentials } from '../src/index.js';

const TD = 'cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'ugate-bad-input-'));
const log = recordingLogger();
let ca: Pem;
let clientCreds: WorkloadCredentials;
/** Echoes every byte (the good streams' upstream). */
let echo: TestServer;
/** Accepts and holds: never sends a byte, closes when the client does. */
let hold: TestServer;
let holdLive = 0;
let holdPeak = 0;

// ---------------------------------------------------------------------------
// Shared fixtures
// ---------------------------------------------------------------------------

async function creds(name: string): Promise<WorkloadCredentials> {
  const leaf = await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'default', serviceAccount: name });
  writeCredentials(join(dir, name), leaf, ca.certPem);
  return new WorkloadCredentials(join(dir, name));
}

function portOf(l: Listener): number {
  return Number(l.addresses()[0]!.split(':').pop());
}

/**
 * Lines logged for one client address since `mark` (an index into log.lines taken
 * before the connection was opened: local ports are reused by later connections).
 */
function linesOf(src: string, mark: number): LogLine[] {
  return log.lines.slice(mark).filter((l) => l.fields.src === src);
}

const summary = (lines: readonly LogLine[]) => lines.map((l) => `${l.level} ${String(l.fields.code)}`);

/** A real ClientHello as node's TLS client sends it (with SNI unless `servername` is undefined). */
function captureHello(servername?: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = netServer((s: Socket) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const c = tlsConnect({ host: '127.0.0.1', port: (srv.address() as { port: number }).port, servername, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
}

/** 3000 random bytes that cannot be mistaken for a TLS record (first byte is not 0x16). */
function junk(): Buffer {
  const b = randomBytes(3000);
  b[0] = 0x47;
  return b;
}

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  clientCreds = await creds('client');
  echo = await startServer((s) => s.pipe(s));
  hold = await startServer((s) => {
    holdPeak = Math.max(holdPeak, ++holdLive);
    s.once('close', () => holdLive--);
    s.resume();
    s.once('end', () => s.destroy());
  });
});

afterAll(async () => {
  await echo?.close();
  await hold?.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// A minimal raw HTTP/2 client (literal HPACK, no Huffman, no dynamic table)
// ---------------------------------------------------------------------------

const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const E = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 };
const ACK = 0x1;
const END_HEADERS = 0x4;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly id: number;
  readonly payload: Buffer;
}

function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** HPACK integer with an n-bit prefix. */
function hpackInt(prefixBits: number, first: number, n: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (n < max) return Buffer.from([first | n]);
  const out = [first | max];
  let rest = n - max;
  while (rest >= 128) {
    out.push((rest & 127) | 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

const hpackStr = (s: string) => Buffer.concat([hpackInt(7, 0, Buffer.byteLength(s)), Buffer.from(s)]);

/** Literal header fields without indexing; `:authority` and `:method` use their static-table names. */
function hpack(headers: readonly (readonly [string, string])[]): Buffer {
  const staticName: Record<string, number> = { ':authority': 1, ':method': 2 };
  return Buffer.concat(
    headers.flatMap(([k, v]) => {
      const idx = staticName[k];
      return idx ? [hpackInt(4, 0, idx), hpackStr(v)] : [Buffer.from([0]), hpackStr(k), hpackStr(v)];
    }),
  );
}

const connectHeaders = (authority: string) =>
  frame(
    T.HEADERS,
    END_HEADERS,
    0,
    hpack([
      [':method', 'CONNECT'],
      [':authority', authority],
    ]),
  );

/** A HEADERS frame for `id` (the header block is built once and reused, only the stream id changes). */
function withId(f: Buffer, id: number): Buffer {
  const c = Buffer.from(f);
  c.writeUInt32BE(id, 5);
  return c;
}

/** :status of a response HEADERS frame when it is a static-table index (as node sends 200 and 400). */
function statusOf(f: Frame): number | undefined {
  return ({ 136: 200, 140: 400 } as Record<number, number>)[f.payload[0]!];
}

/** HTTP/2 over a raw mTLS socket to the HBONE server: every received frame, and how the connection ended. */
class RawH2 {
  readonly frames: Frame[] = [];
  /** Our address, as the server logs it. */
  readonly src: string;
  ended = false;
  closed = false;
  #buf = Buffer.alloc(0);

  private constructor(readonly sock: TLSSocket) {
    this.src = `127.0.0.1:${sock.localPort}`;
    sock.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      let off = 0;
      while (off + 9 <= this.#buf.length) {
        const len = this.#buf.readUIntBE(off, 3);
        if (off + 9 + len > this.#buf.length) break;
        const f = {
          type: this.#buf[off + 3]!,
          flags: this.#buf[off + 4]!,
          id: this.#buf.readUInt32BE(off + 5) & 0x7fffffff,
          payload: Buffer.from(this.#buf.subarray(off + 9, off + 9 + len)),
        };
        this.frames.push(f);
        // Answer the server's keepalive PINGs like any client would.
        if (f.type === T.PING && !(f.flags & ACK) && !sock.destroyed) sock.write(frame(T.PING, ACK, 0, f.payload));
        off += 9 + len;
      }
      this.#buf = this.#buf.subarray(off);
    });
    sock.on('end', () => {
      this.ended = true;
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
    });
  }

  /** TLS handshake done with the client certificate; nothing sent yet. */
  static tls(port: number): Promise<RawH2> {
    const c = clientCreds.current;
    return new Promise((resolve, reject) => {
      const s = tlsConnect({
        host: '127.0.0.1',
        port,
        key: c.key,
        cert: c.cert,
        ca: c.ca,
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      s.once('secureConnect', () => {
        s.off('error', reject);
        resolve(new RawH2(s));
      });
      s.once('error', reject);
    });
  }

  /**
   * Preface + empty SETTINGS. `ackSettings`: also acknowledge the server's SETTINGS
   * up front (nghttp2 then applies its advertised limits, e.g. 200 streams, at once).
   */
  static async open(port: number, ackSettings = true): Promise<RawH2> {
    const h = await RawH2.tls(port);
    h.write(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0), ...(ackSettings ? [frame(T.SETTINGS, ACK, 0)] : [])]));
    return h;
  }

  write(b: Buffer | Buffer[]): Promise<void> {
    const data = Array.isArray(b) ? Buffer.concat(b) : b;
    return new Promise((resolve) => this.sock.write(data, () => resolve()));
  }

  of(type: number): Frame[] {
    return this.frames.filter((f) => f.type === type);
  }

  goaway(): { last: number; code: number } | undefined {
    const g = this.of(T.GOAWAY)[0];
    return g && { last: g.payload.readUInt32BE(0) & 0x7fffffff, code: g.payload.readUInt32BE(4) };
  }

  /** Count of RST_STREAM frames by error code. */
  resets(): Record<number, number> {
    const out: Record<number, number> = {};
    for (const f of this.of(T.RST_STREAM)) out[f.payload.readUInt32BE(0)] = (out[f.payload.readUInt32BE(0)] ?? 0) + 1;
    return out;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// Good traffic: a long-lived stream opened before the attack, a new one after
// ---------------------------------------------------------------------------

interface Good {
  readonly stream: { write(b: Buffer): unknown; end(): unknown };
  readonly got: Collected;
  readonly sent: Buffer[];
  close(): void;
}

async function roundTrip(g: Good, size = 64 * 1024): Promise<void> {
  const data = randomBytes(size);
  const from = g.got.length;
  g.sent.push(data);
  g.stream.write(data);
  await g.got.atLeast(from + size);
  expect(sha256(g.got.buffer().subarray(from))).toBe(sha256(data));
}

async function finish(g: Good): Promise<void> {
  g.stream.end();
  const all = await g.got.done;
  expect(all.length).toBe(g.sent.reduce((n, b) => n + b.length, 0));
  expect(sha256(all)).toBe(sha256(g.sent));
  g.close();
}

/** Upstream connections still open on the HBONE tests' local servers. */
const hboneUpstreams = async (): Promise<number> => echo.sockets.size + holdLive;

/**
 * Run `attack` between a stream opened before it (which must keep working
 * byte-exact) and a new one; then every upstream connection must be gone.
 */
async function survives(open: () => Promise<Good>, attack: () => Promise<void>, upstreams = hboneUpstreams): Promise<void> {
  const before = await open();
  await roundTrip(before);
  await attack();
  await roundTrip(before);
  await finish(before);
  const after = await open();
  await roundTrip(after);
  await roundTrip(after, 1);
  await finish(after);
  await waitFor(async () => (await upstreams()) === 0, 5_000, 'upstream connections released');
}

// ---------------------------------------------------------------------------
// HBONE server, 15008
// ---------------------------------------------------------------------------

describe('HBONE server (mTLS) under bad input', () => {
  const HANDSHAKE_TIMEOUT_MS = 300;
  let sw: Switch;
  let serverCreds: WorkloadCredentials;
  let hb: Listener;
  let port: number;

  beforeAll(async () => {
    serverCreds = await creds('server');
    sw = new Switch({
      router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
      policy: new Policy(),
      dialers: [direct({ connectTimeoutMs: 2000 })],
      logger: log,
    });
    hb = hboneServer({ listen: '127.0.0.1:0', credentials: serverCreds, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS })({
      switch: sw,
      logger: log,
    });
    await hb.listen();
    port = portOf(hb);
  });

  afterAll(async () => {
    await hb?.close();
  });

  function session(opts: { maxSendHeaderBlockLength?: number } = {}): Promise<ClientHttp2Session> {
    const c = clientCreds.current;
    const s = h2connect(`https://127.0.0.1:${port}`, { ca: c.ca, cert: c.cert, key: c.key, checkServerIdentity: () => undefined, ...opts });
    s.on('error', () => {});
    // Resolved once the server's SETTINGS arrived (remoteSettings are defaults before).
    return new Promise((resolve, reject) => {
      s.once('remoteSettings', () => resolve(s));
      s.once('error', reject);
    });
  }

  function connect(
    s: ClientHttp2Session,
    headers: Record<string, string>,
  ): Promise<{ stream: ClientHttp2Stream; status: number; error?: string }> {
    return new Promise((resolve) => {
      const stream = s.request({ ':method': 'CONNECT', ...headers }, { endStream: false });
      stream.on('error', () => {});
      stream.once('response', (h) => resolve({ stream, status: Number(h[':status']), error: h['x-ugate-error'] as string | undefined }));
      stream.once('close', () => resolve({ stream, status: 0 }));
    });
  }

  async function goodHbone(): Promise<Good> {
    const s = await session();
    const { stream, status } = await connect(s, { ':authority': `127.0.0.1:${echo.port}` });
    expect(status).toBe(200);
    return { stream, got: collect(stream), sent: [], close: () => s.close() };
  }

  it('random bytes instead of TLS: closed with a FIN, no alert; one warn AUTH line', async () => {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const w = await Wire.open(port);
      await w.write(junk());
      // OpenSSL fails the record layer ("wrong version number") and sends no alert.
      expect((await w.readToEnd()).length).toBe(0);
      expect(w.ended).toBe(true);
      w.destroy();
      await sleep(50);
      const lines = linesOf(w.src, mark);
      expect(summary(lines)).toEqual([`warn ${ErrorCodes.AUTH}`]);
      expect(lines[0]!.msg).toBe('hbone TLS handshake failed');
      expect(String(lines[0]!.fields.err)).toMatch(/wrong version number/);
    });
  });

  it('truncated ClientHello then silence: FIN without an alert after handshakeTimeoutMs; one warn TIMEOUT line', async () => {
    const hello = await captureHello();
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const t0 = performance.now();
      const w = await Wire.open(port);
      await w.write(hello.subarray(0, 100));
      expect((await w.readToEnd(HANDSHAKE_TIMEOUT_MS + 5_000)).length).toBe(0);
      const took = performance.now() - t0;
      expect([w.ended, w.error]).toEqual([true, undefined]);
      expect(took).toBeGreaterThanOrEqual(HANDSHAKE_TIMEOUT_MS - 20);
      expect(took).toBeLessThan(HANDSHAKE_TIMEOUT_MS + 2_000);
      w.end();
      await w.waitClosed();
      await sleep(50);
      // Only this connection times out in this window, so the line is found by its message.
      const lines = log.lines.slice(mark).filter((l) => l.msg === 'hbone TLS handshake failed');
      expect(lines.map((l) => [l.level, l.fields.code, l.fields.err, l.fields.src])).toEqual([
        ['warn', ErrorCodes.TIMEOUT, 'TLS handshake timeout', w.src],
      ]);
      expect(log.lines.slice(mark).filter((l) => l.msg !== 'stream' && l !== lines[0])).toEqual([]);
    });
  });

  it('TLS OK, garbage instead of the HTTP/2 preface: SETTINGS, GOAWAY INTERNAL_ERROR, close; one debug line', async () => {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const h = await RawH2.tls(port);
      await h.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(4)));
      await waitFor(() => h.closed, 5_000, 'server closes');
      expect(h.ended).toBe(true);
      expect(h.frames.map((f) => f.type).filter((t) => t !== T.WINDOW_UPDATE)).toEqual([T.SETTINGS, T.GOAWAY]);
      // node/nghttp2 answer a bad client magic with INTERNAL_ERROR (RFC 9113 would say PROTOCOL_ERROR).
      expect(h.goaway()).toEqual({ last: 0, code: E.INTERNAL_ERROR });
      const lines = log.lines.slice(mark).filter((l) => l.msg !== 'stream');
      // Logged at debug only, with the peer's address.
      expect(lines.map((l) => [l.level, l.fields.code, l.msg, l.fields.err, l.fields.src])).toEqual([
        ['debug', ErrorCodes.BAD_REQUEST, 'hbone session error', 'Received bad client magic byte string', h.src],
      ]);
    });
  });

  it('header lists over 16 KiB (node client, Huffman-coded): RST_STREAM ENHANCE_YOUR_CALM per stream; the session keeps working', async () => {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const s = await session({ maxSendHeaderBlockLength: 1 << 20 });
      const src = `127.0.0.1:${s.socket.localPort}`;
      expect(s.remoteSettings.maxHeaderListSize).toBe(16 * 1024);
      const target = { ':authority': `127.0.0.1:${echo.port}` };
      const fields = (n: number, size: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, 'a'.repeat(size)]));
      // One 100 KiB value (≈64 KiB Huffman-coded on the wire), and 20 KB spread over 4 fields.
      for (const extra of [{ 'x-big': 'a'.repeat(100 * 1024) }, fields(4, 5_000)]) {
        const r = await connect(s, { ...target, ...extra });
        expect([r.status, r.stream.rstCode]).toEqual([0, E.ENHANCE_YOUR_CALM]);
      }
      expect(s.closed || s.destroyed).toBe(false);
      // 10 KB of headers is under the limit; a plain CONNECT on the same session relays byte-exact.
      const under = await connect(s, { ...target, ...fields(2, 5_000) });
      expect(under.status).toBe(200);
      under.stream.close();
      const ok = await connect(s, target);
      expect(ok.status).toBe(200);
      const g: Good = { stream: ok.stream, got: collect(ok.stream), sent: [], close: () => s.close() };
      await roundTrip(g);
      await finish(g);
      // The refused streams never reached ugate: only the two answered streams are logged.
      await waitFor(() => linesOf(src, mark).length === 2, 5_000, 'access lines');
      await sleep(50);
      expect(
        linesOf(src, mark)
          .map((l) => `${l.level} ${l.msg} ${String(l.fields.result)}`)
          .sort(),
      ).toEqual([`info stream ${ErrorCodes.ABORTED}`, 'info stream ok']);
      expect(log.lines.slice(mark).filter((l) => l.msg !== 'stream')).toEqual([]);
    });
  });

  /**
   * A header block nghttp2 cannot decode is a connection error: it sends GOAWAY COMPRESSION_ERROR
   * and stops, and node keeps the socket without an event. The server must close it by itself,
   * well before its PING timeout (20 s here, the default), with one debug line naming the peer.
   */
  async function undecodable(block: Buffer): Promise<void> {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const h = await RawH2.open(port);
      await h.write(frame(T.HEADERS, END_HEADERS, 1, block));
      await waitFor(() => h.goaway() !== undefined, 5_000, 'GOAWAY');
      expect(h.goaway()).toEqual({ last: 1, code: E.COMPRESSION_ERROR });
      expect(h.of(T.HEADERS)).toEqual([]);
      // A generous bound for the wait, not a speed test: the PING timeout would take 20 s.
      await waitFor(() => h.closed, 5_000, 'server closes the socket');
      expect(h.ended).toBe(true);
      await sleep(50);
      // The stream never reached ugate; the only line is the session error's.
      expect(linesOf(h.src, mark).map((l) => [l.level, l.fields.code, l.msg, l.fields.err])).toEqual([
        ['debug', ErrorCodes.BAD_REQUEST, 'hbone session error', 'connection error (GOAWAY sent)'],
      ]);
      expect(log.lines.slice(mark).filter((l) => l.msg !== 'stream' && l.fields.src !== h.src)).toEqual([]);
    });
  }

  it('CONNECT with a 100 KiB literal header value: GOAWAY COMPRESSION_ERROR (nghttp2 caps one field at 64 KiB), then the socket is closed', async () => {
    await undecodable(
      hpack([
        [':method', 'CONNECT'],
        [':authority', `127.0.0.1:${echo.port}`],
        ['x-big', 'a'.repeat(100 * 1024)],
      ]),
    );
  });

  it('HEADERS with garbage HPACK (an index beyond both tables): GOAWAY COMPRESSION_ERROR, then the socket is closed', async () => {
    // Indexed field 0x7f + 2^28: no such entry.
    await undecodable(Buffer.concat([hpackInt(7, 0x80, 2 ** 28), randomBytes(8)]));
  });

  it('50 CONNECTs with a 7 MiB header list each (120 fields of 60 KB, 1 MiB frames): RST_STREAM ENHANCE_YOUR_CALM each, RSS bounded', async () => {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const h = await RawH2.open(port);
      const fields: [string, string][] = [
        [':method', 'CONNECT'],
        [':authority', `127.0.0.1:${echo.port}`],
      ];
      for (let i = 0; i < 120; i++) fields.push([`x-h${i}`, String.fromCharCode(97 + (i % 26)).repeat(60_000)]);
      const block = hpack(fields);
      const chunks: Buffer[] = [];
      for (let i = 0; i < block.length; i += 1 << 20) chunks.push(block.subarray(i, i + (1 << 20)));
      const frames = chunks.map((c, i) => frame(i === 0 ? T.HEADERS : T.CONTINUATION, i === chunks.length - 1 ? END_HEADERS : 0, 1, c));
      const N = 50;
      const rss0 = process.memoryUsage().rss;
      let grew = 0;
      for (let k = 0; k < N; k++) {
        await h.write(frames.map((f) => withId(f, 2 * k + 1)));
        grew = Math.max(grew, process.memoryUsage().rss - rss0);
      }
      await waitFor(() => h.of(T.RST_STREAM).length >= N || h.closed, 10_000, `${N} resets`);
      grew = Math.max(grew, process.memoryUsage().rss - rss0);
      expect(h.resets()).toEqual({ [E.ENHANCE_YOUR_CALM]: N });
      expect(h.of(T.HEADERS)).toEqual([]);
      expect([h.goaway(), h.closed]).toEqual([undefined, false]);
      // Before the limit every one of these was accepted with 200 (≈ 5.6 MiB of RSS each).
      expect(grew).toBeLessThan(128 * 1024 * 1024);
      // The session still serves a plain CONNECT.
      await h.write(withId(connectHeaders(`127.0.0.1:${echo.port}`), 2 * N + 1));
      await waitFor(() => h.of(T.HEADERS).length > 0, 5_000, 'response');
      expect(h.of(T.HEADERS).map((f) => [f.id, statusOf(f)])).toEqual([[2 * N + 1, 200]]);
      h.destroy();
      // Only that stream reached ugate.
      await waitFor(() => linesOf(h.src, mark).length === 1, 5_000, 'access line');
      await sleep(50);
      expect(summary(linesOf(h.src, mark))).toEqual([`info ${ErrorCodes.ABORTED}`]);
      expect(log.lines.slice(mark).filter((l) => l.fields.src !== h.src && l.msg !== 'stream')).toEqual([]);
    });
  });

  it('CONNECT flood, SETTINGS acknowledged: ≤ 200 streams dialed, then the session is torn down (FIN, no GOAWAY)', async () => {
    holdPeak = 0;
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const rss0 = process.memoryUsage().rss;
      const h = await RawH2.open(port, true);
      const hdr = connectHeaders(`127.0.0.1:${hold.port}`);
      await h.write(Array.from({ length: 1000 }, (_, i) => withId(hdr, 2 * i + 1)));
      await waitFor(() => h.closed, 5_000, 'server closes the session');
      // Stream 201 exceeds the acknowledged SETTINGS_MAX_CONCURRENT_STREAMS: nghttp2 makes
      // it a connection PROTOCOL_ERROR and node destroys the session without a GOAWAY.
      expect(h.ended).toBe(true);
      expect(h.goaway()).toBeUndefined();
      expect(h.of(T.HEADERS).length).toBeLessThanOrEqual(200);
      expect(holdPeak).toBeLessThanOrEqual(200);
      expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
      // One access line per stream that reached ugate (200): aborted while still dialing, so
      // at debug; the torn-down session's streams do not count as resets by the peer.
      const access = () => linesOf(h.src, mark).filter((l) => l.msg === 'stream');
      await waitFor(() => access().length === 200, 5_000, '200 access lines');
      await sleep(50);
      expect(access()).toHaveLength(200);
      expect(new Set(access().map((l) => `${l.level} ${l.msg} ${String(l.fields.code)}`))).toEqual(
        new Set([`debug stream ${ErrorCodes.ABORTED}`]),
      );
      // Besides them, the session error, with the peer's address.
      const session = linesOf(h.src, mark).filter((l) => l.msg !== 'stream');
      expect(session.map((l) => [l.level, l.msg, l.fields.err])).toEqual([['debug', 'hbone session error', 'Protocol error']]);
      expect(log.lines.slice(mark).filter((l) => l.fields.src !== h.src && l.msg !== 'stream')).toEqual([]);
    });
  });

  it('CONNECT flood before SETTINGS ACK: 200 answered 200, 800 RST_STREAM REFUSED_STREAM, session stays up', async () => {
    holdPeak = 0;
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const rss0 = process.memoryUsage().rss;
      const h = await RawH2.open(port, false);
      const hdr = connectHeaders(`127.0.0.1:${hold.port}`);
      await h.write(Array.from({ length: 1000 }, (_, i) => withId(hdr, 2 * i + 1)));
      await waitFor(() => h.of(T.HEADERS).length + h.of(T.RST_STREAM).length >= 1000, 10_000, '1000 answers');
      expect(h.of(T.HEADERS).map(statusOf)).toEqual(Array(200).fill(200));
      expect(h.resets()).toEqual({ [E.REFUSED_STREAM]: 800 });
      expect(h.goaway()).toBeUndefined();
      expect(h.closed).toBe(false);
      // (The hold server may see its accepts after the server's connects completed.)
      await waitFor(() => holdLive === 200, 5_000, '200 held upstream connections');
      await sleep(50);
      expect(holdPeak).toBe(200);
      expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
      // Refused streams never reach ugate, so they are no resets before opening either.
      expect(log.lines.slice(mark).filter((l) => l.fields.src === h.src)).toEqual([]);
      h.destroy();
      // Each held stream was answered, so it ends with one info access line when the attacker goes; nothing else.
      await waitFor(() => linesOf(h.src, mark).length === 200, 5_000, '200 access lines');
      await sleep(50);
      expect(linesOf(h.src, mark)).toHaveLength(200);
      expect(new Set(summary(linesOf(h.src, mark)))).toEqual(new Set([`info ${ErrorCodes.ABORTED}`]));
      expect(log.lines.slice(mark).filter((l) => l.fields.src !== h.src && l.msg !== 'stream')).toEqual([]);
    });
  });

  it('rapid reset (5000 × HEADERS + RST_STREAM): GOAWAY ENHANCE_YOUR_CALM after 101 early resets, then the server closes; one warn line, access lines at debug', async () => {
    const RESET_LIMIT = 100;
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const h = await RawH2.open(port);
      const hdr = connectHeaders(`127.0.0.1:${echo.port}`);
      const rst = frame(T.RST_STREAM, 0, 0, u32(E.CANCEL));
      await h.write(Array.from({ length: 5000 }, (_, i) => [withId(hdr, 2 * i + 1), withId(rst, 2 * i + 1)]).flat());
      // Closed by the server (with a FIN) without any help from the client, well before the
      // PING timeout (20 s); the 5 s are a bound for the wait, not a speed test.
      await waitFor(() => h.closed, 5_000, 'server closes the session');
      expect(h.ended).toBe(true);
      // The GOAWAY reached us before the close; it names the stream that used up the budget.
      expect(h.goaway()).toEqual({ last: 2 * RESET_LIMIT + 1, code: E.ENHANCE_YOUR_CALM });
      expect(new Set(h.frames.map((f) => f.type))).toEqual(
        new Set([T.SETTINGS, T.WINDOW_UPDATE, T.GOAWAY, ...(h.of(T.RST_STREAM).length ? [T.RST_STREAM] : [])]),
      );
      // Streams opened after it are refused, not dialed (node's RST_STREAM repeats the peer's
      // CANCEL when that arrived first).
      expect(h.of(T.RST_STREAM).every((f) => f.id > 2 * RESET_LIMIT + 1)).toBe(true);
      expect(
        Object.keys(h.resets())
          .map(Number)
          .filter((c) => c !== E.REFUSED_STREAM && c !== E.CANCEL),
      ).toEqual([]);
      await sleep(100);
      const lines = linesOf(h.src, mark);
      const warn = lines.filter((l) => l.level !== 'debug');
      expect(warn.map((l) => [l.level, l.fields.code, l.msg, l.fields.early])).toEqual([
        ['warn', ErrorCodes.BAD_REQUEST, 'hbone peer resets streams before they open; closing the session', RESET_LIMIT + 1],
      ]);
      // Every stream that reached ugate (all within the first TLS record) was aborted while dialing.
      const access = lines.filter((l) => l.msg === 'stream');
      expect(access).toHaveLength(RESET_LIMIT + 1);
      expect(new Set(summary(access))).toEqual(new Set([`debug ${ErrorCodes.ABORTED}`]));
      expect(lines).toHaveLength(RESET_LIMIT + 2);
      expect(log.lines.slice(mark).filter((l) => l.fields.src !== h.src && l.msg !== 'stream')).toEqual([]);
    });
  });

  it('200 streams that each end both ways at once: every response ends with END_STREAM, none with RST_STREAM', async () => {
    const N = 200;
    const END_STREAM = 0x1;
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const h = await RawH2.open(port);
      const hdr = connectHeaders(`127.0.0.1:${echo.port}`);
      const ids = Array.from({ length: N }, (_, i) => 2 * i + 1);
      await h.write(ids.map((id) => withId(hdr, id)));
      await waitFor(() => h.of(T.HEADERS).length >= N, 5_000, `${N} responses`);
      // One byte each, with END_STREAM: the echo answers and ends, so both directions end together.
      await h.write(ids.map((id) => frame(T.DATA, END_STREAM, id, Buffer.from('x'))));
      const ended = () =>
        new Set(
          h
            .of(T.DATA)
            .filter((f) => f.flags & END_STREAM)
            .map((f) => f.id),
        );
      await waitFor(() => ended().size + h.of(T.RST_STREAM).length >= N, 5_000, `${N} ends`);
      await sleep(100);
      // A relay that destroy()s the stream before nghttp2 has written our END_STREAM makes node
      // send RST_STREAM(NO_ERROR) instead, which a Go client reports as a stream error.
      expect(h.resets()).toEqual({});
      expect([...ended()].sort((a, b) => a - b)).toEqual(ids);
      expect(
        h
          .of(T.DATA)
          .filter((f) => f.payload.length > 0)
          .map((f) => f.payload.toString()),
      ).toEqual(Array(N).fill('x'));
      h.destroy();
      await waitFor(() => linesOf(h.src, mark).length === N, 5_000, 'access lines');
      expect(new Set(linesOf(h.src, mark).map((l) => `${l.level} ${l.msg} ${String(l.fields.result)}`))).toEqual(
        new Set(['info stream ok']),
      );
    });
  });

  it('CONNECT to an authority that is not host:port: 400 + x-ugate-error each, one warn BAD_REQUEST each', async () => {
    await survives(goodHbone, async () => {
      const mark = log.lines.length;
      const s = await session();
      const src = `127.0.0.1:${s.socket.localPort}`;
      for (const authority of ['nohost', '[::1', 'a:99999']) {
        const r = await connect(s, { ':authority': authority });
        expect([authority, r.status, r.error]).toEqual([authority, 400, ErrorCodes.BAD_REQUEST]);
      }
      expect(s.closed || s.destroyed).toBe(false);
      s.close();
      await sleep(50);
      const lines = linesOf(src, mark);
      expect(lines.map((l) => [l.level, l.fields.code, l.msg])).toEqual(
        Array(3).fill(['warn', ErrorCodes.BAD_REQUEST, 'hbone bad request']),
      );
      expect(lines.map((l) => l.fields.err)).toEqual(['missing port in "nohost"', 'invalid address "[::1"', 'invalid port 99999']);
    });
  });
});

// ---------------------------------------------------------------------------
// SNI gateway, 15443
// ---------------------------------------------------------------------------

const ALERT_DECODE_ERROR = 50;
const ALERT_UNRECOGNIZED_NAME = 112;
const alert = (desc: number) => Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, desc]);

/** Add an extension of `padTo - current` bytes (GREASE type 0x7a7a) and re-frame into records of ≤ 16 KiB. */
function oversizedHello(hello: Buffer, padTo: number): Buffer {
  const body = Buffer.from(hello.subarray(5 + 4, 5 + hello.readUInt16BE(3)));
  let p = 2 + 32;
  p += 1 + body[p]!;
  p += 2 + body.readUInt16BE(p);
  p += 1 + body[p]!;
  const pad = Math.max(0, padTo - body.length - 4);
  const ext = Buffer.concat([Buffer.from([0x7a, 0x7a, pad >> 8, pad & 255]), Buffer.alloc(pad)]);
  body.writeUInt16BE(body.readUInt16BE(p) + ext.length, p);
  const hs = Buffer.concat([Buffer.from([1, 0, 0, 0]), body, ext]);
  hs.writeUIntBE(hs.length - 4, 1, 3);
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; i += 16384) {
    const part = hs.subarray(i, i + 16384);
    out.push(Buffer.from([0x16, 3, 1, part.length >> 8, part.length & 255]), part);
  }
  return Buffer.concat(out);
}

describe('SNI gateway under bad input', () => {
  const HELLO_TIMEOUT_MS = 300;
  let gw: Listener;
  let gwPort: number;
  let tlsEcho: TlsServer;
  let hello: Buffer;

  beforeAll(async () => {
    const leaf = await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'default', serviceAccount: 'echo' });
    // A TLS echo server behind the gateway; the gateway only sees its ciphertext.
    tlsEcho = tlsServer({ key: leaf.keyPem, cert: leaf.certPem }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => tlsEcho.listen(0, '127.0.0.1', () => r()));
    const sw = new Switch({
      router: new Router({ services: { 'echo.mesh.internal:443': `127.0.0.1:${(tlsEcho.address() as { port: number }).port}` } }),
      policy: new Policy(),
      dialers: [direct({ connectTimeoutMs: 2000 })],
      logger: log,
    });
    gw = sniGateway({ listen: '127.0.0.1:0', helloTimeoutMs: HELLO_TIMEOUT_MS })({ switch: sw, logger: log });
    await gw.listen();
    gwPort = portOf(gw);
    hello = await captureHello('echo.mesh.internal');
  });

  afterAll(async () => {
    await gw?.close();
    tlsEcho?.close();
  });

  const sniUpstreams = () => new Promise<number>((resolve) => tlsEcho.getConnections((_, n) => resolve(n)));
  const survivesSni = (attack: () => Promise<void>) => survives(goodSni, attack, sniUpstreams);

  async function goodSni(): Promise<Good> {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: gwPort,
      servername: 'echo.mesh.internal',
      ca: ca.certPem,
      checkServerIdentity: () => undefined,
    });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    s.on('error', () => {});
    return { stream: s, got: collect(s), sent: [], close: () => s.destroy() };
  }

  /**
   * Lines for one rejected connection, taken after the client closed too: exactly one
   * warn line (no second "client closed after N bytes…" line once the client goes).
   */
  function expectRejectLine(src: string, mark: number, first: { code: string; msg: string | RegExp }): void {
    const lines = linesOf(src, mark);
    expect(lines.map((l) => [l.level, l.fields.code])).toEqual([['warn', first.code]]);
    expect(lines[0]!.msg).toMatch(first.msg);
  }

  it('random bytes: decode_error alert (15 03 03 00 02 02 32), then FIN', async () => {
    await survivesSni(async () => {
      const mark = log.lines.length;
      const w = await Wire.open(gwPort);
      await w.write(junk());
      expect(await w.readToEnd()).toEqual(alert(ALERT_DECODE_ERROR));
      expect([w.ended, w.error]).toEqual([true, undefined]);
      w.end();
      await w.waitClosed();
      await sleep(50);
      expectRejectLine(w.src, mark, { code: ErrorCodes.BAD_REQUEST, msg: 'not a TLS handshake record (type 0x47)' });
    });
  });

  it('truncated ClientHello then silence: FIN without an alert after helloTimeoutMs; warn TIMEOUT', async () => {
    await survivesSni(async () => {
      const mark = log.lines.length;
      const w = await Wire.open(gwPort);
      await w.write(hello.subarray(0, 100));
      expect((await w.readToEnd(HELLO_TIMEOUT_MS + 5_000)).length).toBe(0);
      expect([w.ended, w.error]).toEqual([true, undefined]);
      w.end();
      await w.waitClosed();
      await sleep(50);
      expectRejectLine(w.src, mark, { code: ErrorCodes.TIMEOUT, msg: 'no complete ClientHello in time' });
    });
  });

  it('ClientHello larger than 16 KiB (20 KiB, two records): decode_error alert, then FIN', async () => {
    const big = oversizedHello(hello, 20 * 1024);
    expect(big.length).toBeGreaterThan(20 * 1024);
    await survivesSni(async () => {
      const mark = log.lines.length;
      const w = await Wire.open(gwPort);
      await w.write(big);
      expect(await w.readToEnd()).toEqual(alert(ALERT_DECODE_ERROR));
      expect([w.ended, w.error]).toEqual([true, undefined]);
      w.end();
      await w.waitClosed();
      await sleep(50);
      expectRejectLine(w.src, mark, { code: ErrorCodes.BAD_REQUEST, msg: /^ClientHello of \d+ bytes is too large$/ });
    });
  });

  it('ClientHello without SNI: unrecognized_name alert (112), then FIN', async () => {
    const noSni = await captureHello();
    await survivesSni(async () => {
      const mark = log.lines.length;
      const w = await Wire.open(gwPort);
      await w.write(noSni);
      expect(await w.readToEnd()).toEqual(alert(ALERT_UNRECOGNIZED_NAME));
      expect([w.ended, w.error]).toEqual([true, undefined]);
      w.end();
      await w.waitClosed();
      await sleep(50);
      expectRejectLine(w.src, mark, { code: ErrorCodes.BAD_REQUEST, msg: 'ClientHello without server name' });
    });
  });

  it('200 concurrent half-sent hellos: all get a FIN after the timeout, one line each; the gateway keeps serving', async () => {
    await survivesSni(async () => {
      const mark = log.lines.length;
      const wires = await Promise.all(Array.from({ length: 200 }, () => Wire.open(gwPort)));
      await Promise.all(wires.map((w) => w.write(hello.subarray(0, 100))));
      // A good connection while they are all pending.
      const during = await goodSni();
      await roundTrip(during);
      await finish(during);
      const replies = await Promise.all(wires.map((w) => w.readToEnd(HELLO_TIMEOUT_MS + 10_000)));
      expect(replies.every((r) => r.length === 0)).toBe(true);
      expect(wires.every((w) => w.ended && !w.error)).toBe(true);
      for (const w of wires) w.end();
      await Promise.all(wires.map((w) => w.waitClosed()));
      await sleep(100);
      for (const w of wires) expectRejectLine(w.src, mark, { code: ErrorCodes.TIMEOUT, msg: 'no complete ClientHello in time' });
    });
  });
});
