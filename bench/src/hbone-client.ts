/**
 * ugate's HBONE client for the HBONE benchmark, in its own process: @ugate/proto-hbone's
 * `hboneDialer` used directly (no switch, no listener), shaped like the Go peer's client mode.
 *
 *   stream: stdin → one CONNECT stream → stdout (exit 0 on the response's clean end), like
 *           `hbone-go client`
 *     node hbone-client.js --connect 127.0.0.1:15008 --authority 127.0.0.1:9000 --certs DIR --expect-identity spiffe://…
 *   opens:  N short streams (open, 1-byte echo, close) `--concurrency` at a time over one HTTP/2
 *           session; prints one JSON line
 *     node hbone-client.js … --opens 5000 --concurrency 32 [--warmup 5000]
 *           (--warmup N: N unmeasured streams first, in the same process)
 *   gen:    `--gen-bytes N`: instead of stdin, write N bytes of a fixed 64 KiB buffer as fast as the
 *           stream takes them, half-close, read the sink's count; prints one JSON line
 *           {"count","bytes","seconds"} (seconds from the first write to the count), like
 *           `hbone-go client -gen-bytes N`
 *     node hbone-client.js … --gen-bytes 1073741824
 *   --raw:  the same over plain TCP to the authority (reference: what the pipe and the loop cost alone)
 *   --bare: the node:http2 floor: one `http2.connect()` session and `openStream` (the request helper
 *           the dialer uses) per stream, without the dialer's pool and identity check
 */
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { parseTarget, type StreamRequest, silentLogger, type Upstream } from '@ugate/core';
import { H2, h2Settings, hboneDialer, openStream, WorkloadCredentials } from '@ugate/proto-hbone';
import { opens } from './measure.js';
import { tcpConnect } from './socks5.js';
import { benchClientTls } from './tls.js';

const { values: a } = parseArgs({
  options: {
    connect: { type: 'string' },
    authority: { type: 'string' },
    certs: { type: 'string' },
    'expect-identity': { type: 'string' },
    raw: { type: 'boolean', default: false },
    bare: { type: 'boolean', default: false },
    opens: { type: 'string' },
    concurrency: { type: 'string', default: '32' },
    warmup: { type: 'string', default: '0' },
    'gen-bytes': { type: 'string' },
  },
});

/** The generating mode's payload: one fixed buffer, written over and over (as the Go client does). */
const GEN = Buffer.alloc(64 * 1024, 'hbone-bench ');

function die(msg: string): never {
  process.stderr.write(`hbone-client: ${msg}\n`);
  process.exit(1);
}

if (!a.authority) die('--authority is required');
if (!a.raw && (!a.connect || !a.certs)) die('--connect and --certs are required (or --raw)');

const target = parseTarget(a.authority);
const dialer =
  a.raw || a.bare
    ? undefined
    : hboneDialer({ credentials: new WorkloadCredentials(a.certs!), maxStreamsPerSession: 1000 })({ logger: silentLogger });
const req: StreamRequest = {
  sid: 'bench',
  target,
  protocol: 'bench',
  source: { address: '127.0.0.1', port: 0 },
  peer: { kind: 'local', principals: [] },
};
const up: Upstream | undefined = a.connect
  ? { carrier: 'hbone', address: parseTarget(a.connect), identity: a['expect-identity'], reason: 'bench' }
  : undefined;

/** --bare: one plain node:http2 session, set up on first use. */
let bare: Promise<ClientHttp2Session> | undefined;
function bareSession(): Promise<ClientHttp2Session> {
  bare ??= new Promise((resolve, reject) => {
    const s = h2connect(`https://${a.connect}`, { ...benchClientTls(a.certs!), settings: h2Settings(false) });
    s.once('error', reject);
    s.once('connect', () => {
      s.setLocalWindowSize(H2.connectionWindow);
      resolve(s);
    });
  });
  return bare;
}

/** One stream to the authority: an HBONE CONNECT stream, or (--raw) a TCP connection. */
async function open(): Promise<Socket> {
  if (a.bare) {
    const s = await bareSession();
    return openStream(s, { ':method': 'CONNECT', ':authority': a.authority! }, a.authority!, 10_000) as Promise<unknown> as Promise<Socket>;
  }
  if (!dialer) return tcpConnect(target);
  // Only the Duplex half of Socket is used (write, end, data, close): an HTTP/2 stream is one.
  return dialer.dial(req, up!) as Promise<unknown> as Promise<Socket>;
}

if (a.opens) {
  const n = Number(a.opens);
  // The session (TLS handshake) is set up before the clock starts, as a long-lived client would have
  // it, and with --warmup the stream-open path has run (JIT-compiled, heap grown) as in a running node.
  const first = await open();
  const warm = Number(a.warmup);
  if (warm > 0) {
    const w = await opens(open, warm, Number(a.concurrency), 10_000);
    if (w.failed) die(`warm-up: ${w.failed} of ${warm} streams failed: ${w.firstError}`);
  }
  const c0 = process.cpuUsage();
  const r = await opens(open, n, Number(a.concurrency), 10_000);
  const c = process.cpuUsage(c0);
  const sessions = dialer?.sessions() ?? (bare ? 1 : 0);
  first.destroy();
  process.stdout.write(`${JSON.stringify({ ...r, sessions, cpuSeconds: (c.user + c.system) / 1e6 })}\n`);
  dialer?.close();
  if (bare) (await bare).close();
  process.exit(r.failed ? 2 : 0);
} else if (a['gen-bytes'] !== undefined) {
  const total = Number(a['gen-bytes']);
  if (!Number.isSafeInteger(total) || total < 0) die(`bad --gen-bytes ${a['gen-bytes']}`);
  let s: Socket;
  try {
    s = await open();
  } catch (e) {
    die(`open: ${(e as Error).message}`);
  }
  s.on('error', (e: Error) => die(`stream: ${e.message}`));
  let reply = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    reply += d;
  });
  const t0 = process.hrtime.bigint();
  s.once('end', () => {
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stdout.write(`${JSON.stringify({ count: reply.trim(), bytes: total, seconds })}\n`);
    dialer?.close();
    process.exit(0);
  });
  let left = total;
  const pump = () => {
    while (left > 0) {
      const len = Math.min(left, GEN.length);
      left -= len;
      if (!s.write(len === GEN.length ? GEN : GEN.subarray(0, len))) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  pump();
} else {
  let s: Socket;
  try {
    s = await open();
  } catch (e) {
    die(`open: ${(e as Error).message}`);
  }
  s.on('error', (e: Error) => die(`stream: ${e.message}`));
  process.stdin.pipe(s);
  s.pipe(process.stdout);
  s.once('end', () => {
    // stdout is a pipe: writes are synchronous on Linux, everything is out.
    dialer?.close();
    process.exit(0);
  });
}
