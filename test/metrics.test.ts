/**
 * /metrics of a running node, read with an independent parser (prometheus_client, Python): the
 * whole exposition parses, every name is `ugate_*`, labels stay bounded, and the counters move
 * by exactly what a test does — a transfer of N bytes, a denied stream, bytes of a stream that
 * is still open, handshake failures on the SSH and HBONE ports, an SSH carrier connection that
 * is cut and comes back.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/listener.js';
import { freePort, run } from './support/proc.js';
import { hashServer, type TestServer } from './support/servers.js';
import { BIN, poll, socksConnect, startUgate, type UgateProcess } from './support/ugate-node.js';

const PROM_PY = fileURLToPath(new URL('./support/prom.py', import.meta.url));
/** Debian's python3-prometheus-client lives with the system interpreter (a pyenv shim may come first on PATH). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number | string;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

/** Parse with prometheus_client; throws with the parser's message when the text does not parse. */
function parseExposition(text: string): Promise<Family[]> {
  return new Promise((resolve, reject) => {
    const py = spawn(PYTHON, [PROM_PY], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    py.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    py.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    py.on('error', reject);
    py.on('close', (code) => {
      if (code !== 0) reject(new Error(`prometheus_client parser failed (${code}): ${err}`));
      else resolve(JSON.parse(out) as Family[]);
    });
    py.stdin.end(text);
  });
}

/** The one sample called `name` whose labels include `labels`; undefined when none. */
function value(fams: Family[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = fams.flatMap((f) => f.samples).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  const v = hits[0]?.value;
  return v === undefined ? undefined : Number(v);
}
/** Same, 0 when the series does not exist yet (a counter that never moved). */
const count = (fams: Family[], name: string, labels: Record<string, string> = {}) => value(fams, name, labels) ?? 0;

const dir = mkdtempSync(join(tmpdir(), 'ugate-metrics-'));
let node: UgateProcess;
let hash: TestServer;
let socksPort: number;
let sshPort: number;
let hbonePort: number;
/** A TCP proxy in front of the node's own SSH port: the node's SSH carrier uses it as its gateway. */
let proxy: Server;
const proxied = new Set<Socket>();
/** While set, the proxy drops new connections at once: the gateway is unreachable. */
let refusing = false;

async function scrape(): Promise<Family[]> {
  const res = await node.api('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4');
  return parseExposition(await res.text());
}

/** The access line of the stream from this client port (logged once the stream ended). */
const accessLine = (src: string) => node.waitLog((l) => l.msg === 'stream' && l.src === src, `access line of ${src}`);

beforeAll(async () => {
  hash = await hashServer();
  [socksPort, sshPort, hbonePort] = await Promise.all([freePort(), freePort(), freePort()]);
  const adminPort = await freePort();
  proxy = createServer((c) => {
    if (refusing) {
      c.destroy();
      return;
    }
    const up = connect({ host: '127.0.0.1', port: sshPort });
    for (const s of [c, up]) {
      proxied.add(s);
      s.on('error', () => {});
      s.on('close', () => proxied.delete(s));
    }
    c.pipe(up).pipe(c);
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
  });
  const proxyPort = await new Promise<number>((resolve) =>
    proxy.listen(0, '127.0.0.1', () => resolve((proxy.address() as { port: number }).port)),
  );

  // A mesh CA and a workload certificate, for the HBONE (mTLS) listener.
  const ca = join(dir, 'ca');
  const caEnv = { ...process.env, HOME: dir };
  const init = await run('node', [BIN, 'ca', 'init', '--dir', ca], { env: caEnv });
  expect(init.code, init.stderr).toBe(0);
  const issue = await run(
    'node',
    [BIN, 'ca', 'issue', '--namespace', 'default', '--account', 'ugate', '--out', join(dir, 'wl'), '--ca-dir', ca],
    {
      env: caEnv,
    },
  );
  expect(issue.code, issue.stderr).toBe(0);

  const file = join(dir, 'node.yaml');
  writeFileSync(file, 'dataDir: ./data\n');
  const id = JSON.parse(execFileSync('node', [BIN, 'id', '-c', file, '--json']).toString()).id as string;
  node = await startUgate(
    file,
    `dataDir: ./data
log: { level: info, format: json }
workload: { certDir: ./wl }
hbone: { listen: 127.0.0.1:${hbonePort} }
ssh:
  listen: 127.0.0.1:${sshPort}
  peers: [{ id: ${id} }]
  gateways: [{ name: self, address: 127.0.0.1:${proxyPort}, id: ${id}, register: false }]
  backoff: { initialMs: 100, maxMs: 300 }
socks: { listen: 127.0.0.1:${socksPort} }
http: null
admin: { listen: 127.0.0.1:${adminPort} }
routes: []
services:
  "hash.mesh.internal:9": 127.0.0.1:${hash.port}
  "denied.mesh.internal:9": 127.0.0.1:${hash.port}
policy:
  - { action: deny, to: [denied.mesh.internal] }
`,
    adminPort,
  );
}, 60_000);

afterAll(async () => {
  await node?.stop('SIGKILL');
  for (const s of proxied) s.destroy();
  proxy?.close();
  await hash?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('/metrics', () => {
  it('parses as a whole; every family has its declared type, every name starts with ugate_, labels are bounded', async () => {
    const fams = await scrape();
    expect(fams.length).toBeGreaterThan(20);
    for (const f of fams) {
      // A sample the parser could not attribute to its # TYPE line would form an "unknown" family.
      expect(f.type, f.name).not.toBe('unknown');
      expect(f.name).toMatch(/^ugate_[a-z0-9_]+$/);
      expect(f.help, f.name).not.toBe('');
      for (const s of f.samples) {
        expect(s.name).toMatch(/^ugate_/);
        for (const v of Object.values(s.labels)) {
          // No addresses, ports or stream ids in label values: their sets are unbounded.
          expect(v, `${s.name} ${JSON.stringify(s.labels)}`).not.toMatch(/^\d+\.\d+\.\d+\.\d+|:\d+$|^\[/);
        }
      }
    }
    // Process stats (prom-client's defaults, with the prefix).
    for (const name of [
      'ugate_process_cpu_seconds_total',
      'ugate_process_resident_memory_bytes',
      'ugate_process_start_time_seconds',
      'ugate_process_open_fds',
      'ugate_nodejs_heap_size_used_bytes',
    ]) {
      expect(value(fams, name), name).toBeGreaterThan(0);
    }
    expect(value(fams, 'ugate_nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
    // The families the operations issue asks for exist from the start.
    const types = Object.fromEntries(fams.map((f) => [f.name, f.type]));
    expect(types).toMatchObject({
      ugate_streams: 'counter',
      ugate_streams_opened: 'counter',
      ugate_streams_active: 'gauge',
      ugate_stream_bytes: 'counter',
      ugate_stream_open_seconds: 'histogram',
      ugate_policy_denied: 'counter',
      ugate_policy_closed_streams: 'counter',
      ugate_ssh_carrier_connections: 'gauge',
      ugate_ssh_carrier_reconnects: 'counter',
      ugate_ssh_server_connections: 'gauge',
      ugate_ssh_handshake_failures: 'counter',
      ugate_hbone_handshake_failures: 'counter',
      ugate_ssh_gateway_connected: 'gauge',
    });
  });

  it('a SOCKS transfer of N bytes moves streams, opens, bytes (exactly N in, M out) and the dial histogram', async () => {
    const before = await scrape();
    const N = 5 * 1024 * 1024 + 7;
    const data = randomBytes(N);
    const { rep, wire } = await socksConnect(socksPort, 'hash.mesh.internal', 9);
    expect(rep).toBe(0);
    await wire.write(data);
    wire.end();
    const reply = (await wire.readToEnd(20_000)).toString();
    expect(reply).toBe(sha256(data));
    const M = reply.length;
    const line = await accessLine(wire.src);
    expect(line).toMatchObject({ result: 'ok', bytesIn: N, bytesOut: M, carrier: 'direct' });
    const after = await scrape();

    const ok = { proto: 'socks5', carrier: 'direct', result: 'ok' };
    expect(count(after, 'ugate_streams_total', ok) - count(before, 'ugate_streams_total', ok)).toBe(1);
    const opened = { proto: 'socks5', carrier: 'direct' };
    expect(count(after, 'ugate_streams_opened_total', opened) - count(before, 'ugate_streams_opened_total', opened)).toBe(1);
    const bytes = (f: Family[], direction: string) => count(f, 'ugate_stream_bytes_total', { direction });
    expect(bytes(after, 'in') - bytes(before, 'in')).toBe(N);
    expect(bytes(after, 'out') - bytes(before, 'out')).toBe(M);
    expect(value(after, 'ugate_streams_active')).toBe(0);

    // The dial latency histogram: one more observation for carrier=direct, buckets cumulative, +Inf = count.
    const hc = (f: Family[]) => count(f, 'ugate_stream_open_seconds_count', { carrier: 'direct' });
    expect(hc(after) - hc(before)).toBe(1);
    const buckets = after
      .flatMap((f) => f.samples)
      .filter((s) => s.name === 'ugate_stream_open_seconds_bucket' && s.labels.carrier === 'direct');
    expect(buckets.map((b) => (b.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(b.labels.le)))).toEqual([
      0.001,
      0.005,
      0.02,
      0.1,
      0.5,
      2,
      10,
      Number.POSITIVE_INFINITY,
    ]);
    const counts = buckets.map((b) => Number(b.value));
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(counts.at(-1)).toBe(hc(after));
    expect(value(after, 'ugate_stream_open_seconds_sum', { carrier: 'direct' })).toBeGreaterThan(0);
  });

  it('a denied stream counts as result=UGATE_ERR_POLICY_DENIED and as a policy denial; no bytes move', async () => {
    const before = await scrape();
    const { rep, wire } = await socksConnect(socksPort, 'denied.mesh.internal', 9);
    expect(rep).toBe(2); // SOCKS5 "connection not allowed by ruleset"
    expect(await wire.readToEnd()).toHaveLength(0);
    wire.destroy();
    await accessLine(wire.src);
    const after = await scrape();
    const denied = { proto: 'socks5', carrier: 'none', result: 'UGATE_ERR_POLICY_DENIED' };
    expect(count(after, 'ugate_streams_total', denied) - count(before, 'ugate_streams_total', denied)).toBe(1);
    expect(
      count(after, 'ugate_policy_denied_total', { proto: 'socks5' }) - count(before, 'ugate_policy_denied_total', { proto: 'socks5' }),
    ).toBe(1);
    for (const direction of ['in', 'out']) {
      expect(count(after, 'ugate_stream_bytes_total', { direction })).toBe(count(before, 'ugate_stream_bytes_total', { direction }));
    }
    const opened = { proto: 'socks5', carrier: 'direct' };
    expect(count(after, 'ugate_streams_opened_total', opened)).toBe(count(before, 'ugate_streams_opened_total', opened));
  });

  it('bytes of a stream that is still open show up while it lives; active counts it', async () => {
    const before = await scrape();
    const inBefore = count(before, 'ugate_stream_bytes_total', { direction: 'in' });
    const { rep, wire } = await socksConnect(socksPort, 'hash.mesh.internal', 9);
    expect(rep).toBe(0);
    const part = randomBytes(1024 * 1024);
    await wire.write(part);
    // Still open: the counter catches up with what was relayed so far.
    const during = await poll(async () => {
      const f = await scrape();
      return count(f, 'ugate_stream_bytes_total', { direction: 'in' }) === inBefore + part.length ? f : undefined;
    }, 'live bytes in /metrics');
    expect(value(during, 'ugate_streams_active')).toBe(1);
    wire.end();
    expect((await wire.readToEnd(10_000)).toString()).toBe(sha256(part));
    await accessLine(wire.src);
    const after = await scrape();
    // Not counted twice at the end.
    expect(count(after, 'ugate_stream_bytes_total', { direction: 'in' })).toBe(inBefore + part.length);
    expect(value(after, 'ugate_streams_active')).toBe(0);
  });

  it('handshake failures: not SSH, an unknown SSH key, not TLS on the HBONE port', async () => {
    const before = await scrape();
    const ssh = (reason: string, f: Family[]) => count(f, 'ugate_ssh_handshake_failures_total', { reason });
    const hb = (reason: string, f: Family[]) => count(f, 'ugate_hbone_handshake_failures_total', { reason });

    // Not an SSH client: an HTTP request on the SSH port.
    await new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: sshPort }, () => s.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    await poll(
      async () => (ssh('protocol', await scrape()) === ssh('protocol', before) + 1 ? true : undefined),
      'ssh protocol failure counted',
    );

    // A well-formed SSH client whose key nobody authorized.
    const key = ssh2.utils.generateKeyPairSync('ed25519');
    const authError = await new Promise<Error>((resolve) => {
      const c = new ssh2.Client();
      c.on('error', (e) => resolve(e));
      c.on('ready', () => resolve(new Error('unexpectedly authenticated')));
      c.connect({ host: '127.0.0.1', port: sshPort, username: 'stranger', privateKey: key.private, hostVerifier: () => true });
    });
    expect(authError.message).toMatch(/authentication/i);
    await poll(async () => (ssh('auth', await scrape()) === ssh('auth', before) + 1 ? true : undefined), 'ssh auth failure counted');

    // Plain text on the mTLS port.
    await new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: hbonePort }, () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    const after = await poll(async () => {
      const f = await scrape();
      return hb('tls', f) === hb('tls', before) + 1 ? f : undefined;
    }, 'hbone tls failure counted');
    expect(ssh('timeout', after)).toBe(ssh('timeout', before));
    expect(node.logs().some((l) => l.msg === 'hbone TLS handshake failed')).toBe(true);
  });

  it('SSH carrier: the gateway connection counts; cut, it reconnects and the counters say so', async () => {
    const connected = (f: Family[]) =>
      value(f, 'ugate_ssh_carrier_connections', { kind: 'gateway' }) === 1 &&
      value(f, 'ugate_ssh_server_connections') === 1 &&
      value(f, 'ugate_ssh_gateway_connected', { gateway: 'self' }) === 1;
    const before = await poll(async () => {
      const f = await scrape();
      return connected(f) ? f : undefined;
    }, 'the SSH carrier connected to its gateway');
    const reconnects = (f: Family[]) => count(f, 'ugate_ssh_carrier_reconnects_total');

    refusing = true;
    for (const s of proxied) s.destroy();
    const down = await poll(async () => {
      const f = await scrape();
      return value(f, 'ugate_ssh_gateway_connected', { gateway: 'self' }) === 0 && value(f, 'ugate_ssh_server_connections') === 0
        ? f
        : undefined;
    }, 'the loss seen on both ends');
    expect(value(down, 'ugate_ssh_carrier_connections', { kind: 'gateway' })).toBe(0);
    // Attempts while the gateway is unreachable count as reconnects.
    await poll(async () => (reconnects(await scrape()) >= reconnects(before) + 2 ? true : undefined), 'reconnect attempts counted');
    refusing = false;

    const after = await poll(async () => {
      const f = await scrape();
      return connected(f) ? f : undefined;
    }, 'the SSH carrier connected again');
    expect(reconnects(after) - reconnects(before)).toBeGreaterThanOrEqual(1);
    expect(node.logs().some((l) => l.msg === 'gateway connection lost')).toBe(true);
  });
});
