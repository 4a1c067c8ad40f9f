/**
 * HBONE benchmark: ugate's HBONE client and server against an independent Go pair
 * (test/peers/hbone-go, Go standard library) and raw loopback TCP, in one run.
 * Every party is its own process (no two share an event loop):
 *
 *   sink      bench/dist/sink.js: discard (byte count on half-close), echo
 *   Go        hbone-go server  ← hbone-go client (one CONNECT stream; -gen-bytes, stdin, -opens)
 *   ugate     ugate run (hbone listener, direct egress) ← bench/dist/hbone-client.js
 *             (@ugate/proto-hbone's hboneDialer; --gen-bytes, stdin, --opens)
 *   SOCKS     a second ugate node (SOCKS5 listener, route `*` over hbone) in front of the ugate server
 *   relay     a third ugate node (SOCKS5 listener, route `*` direct): ugate's relay without HBONE
 *
 * 1. single-stream throughput (upload, the sink's byte count checked), median of `--runs`:
 *    a. generating (the headline): the client process makes the payload itself (`--gen-bytes`);
 *    b. piped: the payload is piped from this process into the client's stdin;
 * 2. stream opens/s over one HTTP/2 session (open CONNECT, 1-byte echo, close; 32 at a time), run
 *    inside the client process (`--opens`, after as many unmeasured ones: `--warmup`), for the ugate
 *    and the Go client alike.
 *
 *   node bench/dist/hbone.js [--quick] [--json] [--size MiB] [--runs N] [--streams N] [--warmup N] [--profile]
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createCa, issueWorkloadCert, writeCredentials } from '@ugate/proto-hbone';
import { buildGoPeer, type GoCerts, goClientArgs, goServerArgs } from './hbone-go.js';
import { median, type Opener, opens, upload } from './measure.js';
import { type Child, cpuSeconds, firstLine, freePort, guardRun, startChild, stopChild, systemBusySeconds, waitPort } from './procs.js';
import { type HotSpot, hotSpots } from './prof.js';
import { socksConnect, tcpConnect } from './socks5.js';
import { benchClientTls } from './tls.js';
import { cleanEnv } from './ugate.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const OUT = join(ROOT, 'bench/out');
const UGATE = join(ROOT, 'apps/ugate/bin/ugate.js');
const CLIENT = join(HERE, 'hbone-client.js');
const SINK = join(HERE, 'sink.js');
const FLOOR_SERVER = join(HERE, 'h2-floor-server.js');
/** V8 flags for the node client: the ugate daemon sets the same one in apps/ugate/bin/ugate.js. */
const CLIENT_NODE_FLAGS = ['--no-concurrent-marking'];
const MiB = 1024 * 1024;
const LOCAL = '127.0.0.1';
const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/bench/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/bench/sa/client`;

const { values: args } = parseArgs({
  args: process.argv.slice(2).filter((x) => x !== '--'),
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    /** Upload size in MiB (default 1024, quick 256). */
    size: { type: 'string' },
    runs: { type: 'string', default: '3' },
    /** Short streams per opens run (default 5000, quick 1000). */
    streams: { type: 'string' },
    /** Unmeasured streams each opens client process runs first (default 5000, quick too: a node process needs that many to be warm). */
    warmup: { type: 'string', default: '5000' },
    /** Also profile the ugate server and client (`node --cpu-prof`) in extra runs after the measurements. */
    profile: { type: 'boolean', default: false },
    /** Measure one part only: `throughput` or `opens`. */
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(
    'node bench/dist/hbone.js [--quick] [--json] [--size MiB] [--runs N] [--streams N] [--warmup N] [--profile] [--only throughput|opens]\n',
  );
  process.exit(0);
}

const quick = args.quick;
const sizeMiB = Number(args.size ?? (quick ? 256 : 1024));
const runs = Number(args.runs);
const nOpens = Number(args.streams ?? (quick ? 1000 : 5000));
const nWarm = Number(args.warmup);
const CONCURRENCY = 32;
/** A slow path's payload is shrunk so one run takes about this long. */
const capSeconds = quick ? 6 : 15;
const deadlineMs = (quick ? 6 : 15) * 60_000 + (args.profile ? 60_000 : 0);
let quietBudgetMs = quick ? 5_000 : 20_000;
/** The clock starts once this much has gone into the client's stdin: process start and handshake are excluded. */
const MARK = 2 * MiB;
const notes: string[] = [];
const log = (msg: string) => process.stderr.write(`[hbone-bench] ${msg}\n`);

const TMP = mkdtempSync(join(tmpdir(), 'ugate-hbone-bench-'));
mkdirSync(OUT, { recursive: true });

// ---- cleanup on every way out ------------------------------------------------------------
/** Short-lived client processes (own spawn: they need a stdin pipe, which startChild does not give). */
const clients = new Set<import('node:child_process').ChildProcess>();
const cleanup = guardRun({
  tmp: TMP,
  deadlineMs,
  log,
  extra: () => {
    for (const c of clients) c.kill('SIGKILL');
  },
});

// ---- CPU accounting --------------------------------------------------------------------------
/** CPU seconds of this process's children that have been waited for (cutime + cstime). */
function reapedCpu(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
/** A process whose CPU time is read before and after each run. */
interface Proc {
  name: string;
  cpu: () => number;
}
const procOf = (name: string, child: Child): Proc => ({ name, cpu: () => cpuSeconds(child.pid) });
const benchProc: Proc = { name: 'bench', cpu: ownCpu };

/**
 * The host may be shared: wait (bounded) until processes outside the benchmark use less than a
 * fifth of a core. Returns the share seen.
 */
async function waitQuiet(maxMs: number): Promise<number> {
  const end = Date.now() + Math.min(maxMs, quietBudgetMs);
  let other = 0;
  do {
    const t0 = Date.now();
    const b0 = systemBusySeconds();
    await sleep(300);
    other = (systemBusySeconds() - b0) / 0.3;
    quietBudgetMs -= Date.now() - t0;
    if (other < 0.2) return other;
  } while (Date.now() < end);
  return other;
}

// ---- one transfer through a piped client process -------------------------------------------
const CHUNK = Buffer.alloc(64 * 1024, 'hbone-bench ');

function now(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

interface PipedRun {
  /** Seconds from the MARK-th byte taken by the client to its exit (after the sink's count came back). */
  secs: number;
  /** Bytes moved in `secs`. */
  bytes: number;
  /** Seconds from spawn to exit. */
  wall: number;
  /** CPU seconds of the client process (whole life: start, handshake, transfer). */
  clientCpu: number;
}

/**
 * Spawn `cmd`, pipe `bytes` into its stdin, expect the sink's byte count on its stdout and exit 0.
 */
function pipedRun(name: string, cmd: string[], bytes: number, timeoutMs: number): Promise<PipedRun> {
  return new Promise((resolveRun, reject) => {
    const cpu0 = reapedCpu();
    const tSpawn = now();
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
    clients.add(child);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err = (err + d).slice(-8192);
    });
    child.stdin.on('error', () => {}); // EPIPE when the client fails early: reported by its exit
    let tMark: number | undefined;
    let markBytes = 0;
    let left = bytes;
    let written = 0;
    const pump = () => {
      while (left > 0) {
        const len = Math.min(left, CHUNK.length);
        left -= len;
        written += len;
        const chunk = len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len);
        let ok: boolean;
        if (tMark === undefined && markBytes === 0 && written >= Math.min(MARK, bytes / 4)) {
          markBytes = written;
          ok = child.stdin.write(chunk, () => {
            tMark = now();
          });
        } else ok = child.stdin.write(chunk);
        if (!ok) {
          child.stdin.once('drain', pump);
          return;
        }
      }
      child.stdin.end();
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name}: ${bytes} bytes not through after ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      clients.delete(child);
      reject(e);
    });
    child.once('close', (code, signal) => {
      const tEnd = now();
      clearTimeout(timer);
      clients.delete(child);
      if (code !== 0) return reject(new Error(`${name} exited with ${code ?? signal}: ${err.trim() || out.trim()}`));
      if (out.trim() !== String(bytes)) return reject(new Error(`${name}: sink counted ${out.trim() || 'nothing'} of ${bytes} bytes`));
      if (tMark === undefined) return reject(new Error(`${name}: the mark byte was never taken`));
      resolveRun({ secs: tEnd - tMark, bytes: bytes - markBytes, wall: tEnd - tSpawn, clientCpu: reapedCpu() - cpu0 });
    });
    pump();
  });
}

/** CPU seconds a client process needs for an empty upload (start, handshake, exit): the lower of two runs. */
async function startupCpu(name: string, cmd: string[]): Promise<number> {
  const once = () =>
    new Promise<number>((resolveRun, reject) => {
      const cpu0 = reapedCpu();
      const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
      clients.add(child);
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      child.stderr.resume();
      child.stdin.on('error', () => {});
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        clients.delete(child);
        if (code !== 0 || out.trim() !== '0') return reject(new Error(`${name}: empty upload failed (exit ${code}, ${out.trim()})`));
        resolveRun(reapedCpu() - cpu0);
      });
    });
  return Math.min(await once(), await once());
}

// ---- one transfer by a client process that generates the payload itself ------------------------
/** The JSON line of `--gen-bytes` (node client) and `-gen-bytes` (Go client). */
interface GenLine {
  count: string;
  bytes: number;
  /** From the client's first write to the sink's count. */
  seconds: number;
}

/** Spawn `cmd` (which has no byte count yet), let it generate `bytes`, check the sink's count. */
function genRun(
  name: string,
  cmd: string[],
  bytes: number,
  timeoutMs: number,
): Promise<{ secs: number; bytes: number; clientCpu: number }> {
  return new Promise((resolveRun, reject) => {
    const cpu0 = reapedCpu();
    const child = spawn(cmd[0]!, [...cmd.slice(1), ...genArgs(cmd, bytes)], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
    clients.add(child);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err = (err + d).slice(-8192);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name}: ${bytes} bytes not through after ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      clients.delete(child);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clients.delete(child);
      if (code !== 0) return reject(new Error(`${name} exited with ${code ?? signal}: ${err.trim() || out.trim()}`));
      let line: GenLine;
      try {
        line = JSON.parse(out.trim().split('\n').pop() ?? '') as GenLine;
      } catch {
        return reject(new Error(`${name}: no result line: ${out.trim() || err.trim()}`));
      }
      if (line.count !== String(bytes)) return reject(new Error(`${name}: sink counted ${line.count || 'nothing'} of ${bytes} bytes`));
      resolveRun({ secs: line.seconds, bytes, clientCpu: reapedCpu() - cpu0 });
    });
  });
}

/** The generating flag in the client's own spelling: `-gen-bytes` for the Go client, `--gen-bytes` for node. */
const genArgs = (cmd: string[], bytes: number) => [cmd[0] === 'node' ? '--gen-bytes' : '-gen-bytes', String(bytes)];

// ---- results ---------------------------------------------------------------------------------
interface Transfer {
  key: string;
  /** gen: the client process generates the payload (or this process, in-process); piped: through the client's stdin. */
  table: 'gen' | 'piped';
  label: string;
  /** Processes on the data path, after the payload generator. */
  path: string;
  mbps: number;
  runsMBps: number[];
  /** Payload per run. */
  bytes: number;
  /** CPU seconds per GB (1e9 bytes) moved, per process (client: without its start-up, see `clientStartupCpu`). */
  cpuSecPerGB: Record<string, number>;
  /** CPU seconds the client process needs for an empty upload (process start, imports, TLS handshake, exit). */
  clientStartupCpu?: number;
  /** CPU use while the bytes moved (client start-up excluded), % of one core. */
  cpuPct: Record<string, number>;
  /** CPU used meanwhile by processes outside the benchmark, % of one core. */
  otherPct: number;
  error?: string;
}
interface OpensRun {
  key: string;
  label: string;
  path: string;
  perSecond: number;
  runsPerSecond: number[];
  streams: number;
  failed: number;
  /** HTTP/2 sessions the client had at the end (1 = all streams on one). */
  sessions?: number;
  cpuUsPerStream: Record<string, number>;
  firstError?: string;
  error?: string;
}

const results: {
  date: string;
  machine: { cores: number; cpu: string; node: string; go: string; platform: string };
  /** TLS 1.3 cipher suite a node client (as ugate's dialer offers) gets from each server. */
  tls: Record<string, string>;
  settings: Record<string, unknown>;
  throughput: Transfer[];
  opens: OpensRun[];
  ratios: Record<string, number | undefined>;
  targets: Record<string, boolean | undefined>;
  hotSpots?: Record<string, HotSpot[]>;
  notes: string[];
} = {
  date: new Date().toISOString(),
  machine: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, go: '', platform: process.platform },
  tls: {},
  settings: { quick, sizeMiB, runs, opens: nOpens, opensWarmup: nWarm, opensConcurrency: CONCURRENCY, markBytes: MARK },
  throughput: [],
  opens: [],
  ratios: {},
  targets: {},
  notes,
};
const save = () => writeFileSync(join(OUT, 'hbone.json'), `${JSON.stringify(results, null, 2)}\n`);

// ---- throughput ------------------------------------------------------------------------------
/** One way to move `bytes`: returns seconds, bytes timed, and the client's CPU if it is a child we reap. */
type Mover = ((bytes: number, timeoutMs: number) => Promise<{ secs: number; bytes: number; clientCpu?: number }>) & {
  /** For a client process: CPU seconds of an empty upload, subtracted from each run's client CPU. */
  startup?: () => Promise<number>;
};

const piped = (name: string, cmd: () => string[]): Mover =>
  Object.assign((bytes: number, timeoutMs: number) => pipedRun(name, cmd(), bytes, timeoutMs), {
    startup: () => startupCpu(name, cmd()),
  });

const generating = (name: string, cmd: () => string[]): Mover =>
  Object.assign((bytes: number, timeoutMs: number) => genRun(name, cmd(), bytes, timeoutMs), {
    startup: async () => {
      const once = async () => (await genRun(name, cmd(), 0, 20_000)).clientCpu;
      return Math.min(await once(), await once());
    },
  });

const inProcess =
  (open: Opener): Mover =>
  async (bytes, timeoutMs) => ({ secs: await upload(open, bytes, timeoutMs), bytes });

async function throughput(table: Transfer['table'], key: string, label: string, path: string, move: Mover, procs: Proc[]): Promise<void> {
  log(`throughput (${table}): ${label}`);
  const r: Transfer = { key, table, label, path, mbps: 0, runsMBps: [], bytes: 0, cpuSecPerGB: {}, cpuPct: {}, otherPct: 0 };
  results.throughput.push(r);
  try {
    // Warm-up (JIT of the long-lived servers) and a rate estimate for the cap.
    const warm = Math.min(sizeMiB, quick ? 32 : 64) * MiB;
    const w = await move(warm, 60_000);
    const rate = w.bytes / w.secs;
    let bytes = sizeMiB * MiB;
    if (bytes / rate > capSeconds) {
      const capped = Math.max(64, Math.floor((rate * capSeconds) / MiB / 64) * 64) * MiB;
      if (capped < bytes) {
        notes.push(`${label}: ${sizeMiB} MiB would take ~${Math.round(bytes / rate)} s per run: used ${capped / MiB} MiB`);
        bytes = capped;
      }
    }
    r.bytes = bytes;
    const startup = move.startup ? await move.startup() : 0;
    if (move.startup) r.clientStartupCpu = Number(startup.toFixed(3));
    const cpu: Record<string, number> = {};
    let moved = 0;
    let wall = 0;
    /** Seconds the transfers themselves took (without client start-up): the base of the % of a core. */
    let streaming = 0;
    let busy = 0;
    let ours = 0;
    for (let i = 0; i < runs; i++) {
      const other = await waitQuiet(quick ? 2000 : 5000);
      if (other >= 0.2) log(`  host busy (${Math.round(other * 100)}% of a core used by others): measuring anyway`);
      const c0 = procs.map((p) => p.cpu());
      const b0 = systemBusySeconds();
      const t0 = now();
      const m = await move(bytes, Math.max(60_000, (bytes / rate) * 5000));
      const t = now() - t0;
      busy += systemBusySeconds() - b0;
      const c1 = procs.map((p) => p.cpu());
      procs.forEach((p, j) => {
        cpu[p.name] = (cpu[p.name] ?? 0) + c1[j]! - c0[j]!;
      });
      if (m.clientCpu !== undefined) cpu.client = (cpu.client ?? 0) + m.clientCpu - startup;
      moved += bytes;
      wall += t;
      streaming += m.secs * (bytes / m.bytes);
      r.runsMBps.push(m.bytes / m.secs / 1e6);
      log(`  ${bytes / MiB} MiB: ${(m.bytes / m.secs / 1e6).toFixed(1)} MB/s`);
    }
    for (const v of Object.values(cpu)) ours += v;
    ours += startup * runs;
    r.mbps = median(r.runsMBps);
    for (const [k, v] of Object.entries(cpu)) {
      r.cpuSecPerGB[k] = Number(((v * 1e9) / moved).toFixed(2));
      r.cpuPct[k] = Math.round((100 * v) / streaming);
    }
    r.otherPct = Math.max(0, Math.round((100 * (busy - ours)) / wall));
    if (r.otherPct > 25) notes.push(`${label}: other processes used ${r.otherPct}% of a core meanwhile (noisy)`);
  } catch (e) {
    r.error = (e as Error).message;
    log(`  failed: ${r.error}`);
  }
  save();
}

// ---- opens/s ---------------------------------------------------------------------------------
interface ClientOpens {
  streams: number;
  failed: number;
  seconds: number;
  perSecond: number;
  firstError?: string;
  sessions: number;
  cpuSeconds: number;
}

/** Run the opens loop in a client process (hbone-client.js --opens); the result is its JSON line. */
function clientOpens(cmd: string[]): Promise<ClientOpens> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
    clients.add(child);
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err = (err + d).slice(-8192);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clients.delete(child);
      try {
        const r = JSON.parse(out.trim().split('\n').pop() ?? '') as ClientOpens;
        if (code !== 0 && r.failed === 0) throw new Error('bad exit');
        resolveRun(r);
      } catch {
        reject(new Error(`opens client exited with ${code ?? signal}: ${err.trim() || out.trim()}`));
      }
    });
  });
}

type OpensMover = () => Promise<{
  perSecond: number;
  failed: number;
  firstError?: string;
  sessions?: number;
  clientCpu?: number;
  /** Streams the other processes served during the run (default: the measured ones). */
  procStreams?: number;
}>;

/**
 * `procs` are read around each run. With a client that warms up in its own process (`--warmup`)
 * they also served its warm-up streams: the mover says how many streams they saw (`procStreams`).
 */
async function measureOpens(key: string, label: string, path: string, run: OpensMover, procs: Proc[]): Promise<void> {
  log(`opens/s: ${label}`);
  const r: OpensRun = { key, label, path, perSecond: 0, runsPerSecond: [], streams: nOpens, failed: 0, cpuUsPerStream: {} };
  results.opens.push(r);
  try {
    const cpu: Record<string, number> = {};
    let procStreams = 0;
    // One unmeasured run first, as the throughput rows have their warm-up: the servers'
    // stream-open paths run JIT-compiled from then on, as in a long-running node.
    const w = await run();
    log(`  warm-up: ${Math.round(w.perSecond)}/s`);
    for (let i = 0; i < runs; i++) {
      await waitQuiet(quick ? 1000 : 3000);
      const c0 = procs.map((p) => p.cpu());
      const o = await run();
      const c1 = procs.map((p) => p.cpu());
      procs.forEach((p, j) => {
        cpu[p.name] = (cpu[p.name] ?? 0) + c1[j]! - c0[j]!;
      });
      if (o.clientCpu !== undefined) cpu.client = (cpu.client ?? 0) + o.clientCpu;
      procStreams += o.procStreams ?? nOpens;
      r.runsPerSecond.push(o.perSecond);
      r.failed += o.failed;
      r.firstError ??= o.firstError;
      if (o.sessions !== undefined) r.sessions = o.sessions;
      log(`  ${nOpens} streams: ${Math.round(o.perSecond)}/s${o.failed ? ` (${o.failed} failed: ${o.firstError})` : ''}`);
    }
    r.perSecond = median(r.runsPerSecond);
    for (const [k, v] of Object.entries(cpu)) r.cpuUsPerStream[k] = Math.round((v * 1e6) / (k === 'client' ? nOpens * runs : procStreams));
  } catch (e) {
    r.error = (e as Error).message;
    log(`  failed: ${r.error}`);
  }
  save();
}

// ---- setup -----------------------------------------------------------------------------------
/** The cipher suite a TLS 1.3 handshake with the client's credentials settles on (node's default offer, as the dialer's). */
function negotiatedCipher(port: number, certDir: string): Promise<string> {
  return new Promise((resolveCipher) => {
    const s = tlsConnect({ host: LOCAL, port, ...benchClientTls(certDir) });
    s.once('secureConnect', () => {
      resolveCipher(s.getCipher().standardName);
      s.destroy();
    });
    s.once('error', (e) => resolveCipher(`error: ${e.message}`));
  });
}

const json = (o: unknown) => `${JSON.stringify(o, null, 2)}\n`;

async function startUgateServer(name: string, certDir: string, nodeArgs: string[] = []): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const dir = join(TMP, name.replace(/\W+/g, '-'));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    json({
      dataDir: join(dir, 'data'),
      workload: { certDir },
      hbone: { listen: `${LOCAL}:${port}` },
      ssh: { listen: null },
      socks: null,
      http: null,
      admin: null,
      routes: [{ match: '*', carrier: 'direct' }],
      log: { level: 'warn' },
      limits: { drainMs: 200 },
    }),
  );
  const child = startChild(name, ['node', ...nodeArgs, UGATE, 'run', '-c', file], { env: cleanEnv() });
  await waitPort(port, 20_000, child);
  return { child, port };
}

/** A ugate node with a SOCKS5 listener whose route `*` goes over HBONE to `hbonePort`, or (undefined) `direct`. */
async function startUgateSocksNode(certDir: string, hbonePort: number | undefined): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const dir = join(TMP, hbonePort === undefined ? 'ugate-socks-direct' : 'ugate-socks');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    json({
      dataDir: join(dir, 'data'),
      workload: { certDir },
      hbone: null,
      ssh: { listen: null },
      http: null,
      admin: null,
      socks: { listen: `${LOCAL}:${port}` },
      routes: [
        hbonePort === undefined
          ? { match: '*', carrier: 'direct' }
          : { match: '*', carrier: 'hbone', address: `${LOCAL}:${hbonePort}`, identity: SERVER_ID },
      ],
      log: { level: 'warn' },
      limits: { drainMs: 200 },
    }),
  );
  const child = startChild(hbonePort === undefined ? 'ugate relay node' : 'ugate SOCKS node', ['node', UGATE, 'run', '-c', file], {
    env: cleanEnv(),
  });
  await waitPort(port, 20_000, child);
  return { child, port };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  log(`building the Go peer, making certificates (${TMP})`);
  const go = await buildGoPeer(ROOT);
  results.machine.go = go.go;
  const ca = await createCa({ trustDomain: TD });
  const serverDir = join(TMP, 'certs-server');
  const clientDir = join(TMP, 'certs-client');
  const idOf = (sa: string) => ({ trustDomain: TD, namespace: 'bench', serviceAccount: sa });
  writeCredentials(serverDir, await issueWorkloadCert(ca, idOf('server')), ca.certPem);
  writeCredentials(clientDir, await issueWorkloadCert(ca, idOf('client')), ca.certPem);
  const certs = (dir: string): GoCerts => ({ cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key'), ca: join(dir, 'ca.crt') });
  const goServerCerts = certs(serverDir);
  const goClientCerts = certs(clientDir);

  const sink = startChild('sink', ['node', SINK]);
  const ports = JSON.parse(await firstLine(sink, 10_000)) as { discard: number; echo: number };
  const goServer = startChild('Go server', [go.bin, ...goServerArgs(goServerCerts, CLIENT_ID)]);
  const goPort = Number(/:(\d+)\s*$/.exec(await firstLine(goServer, 10_000))?.[1]);
  const ugate = await startUgateServer('ugate server', serverDir);
  const socksNode = await startUgateSocksNode(clientDir, ugate.port);
  const relayNode = await startUgateSocksNode(clientDir, undefined);
  const floorServer = startChild('node:http2 floor server', ['node', ...CLIENT_NODE_FLAGS, FLOOR_SERVER, '--certs', serverDir]);
  const floorPort = (JSON.parse(await firstLine(floorServer, 10_000)) as { port: number }).port;
  log(
    `sink ${ports.discard}/${ports.echo}, Go server ${goPort}, ugate server ${ugate.port}, ugate SOCKS node ${socksNode.port}, ugate relay node ${relayNode.port}`,
  );

  results.tls = {
    'node client → ugate server': await negotiatedCipher(ugate.port, clientDir),
    'node client → Go server': await negotiatedCipher(goPort, clientDir),
  };
  log(`TLS: ${JSON.stringify(results.tls)}`);
  const discard = `${LOCAL}:${ports.discard}`;
  const echo = `${LOCAL}:${ports.echo}`;
  const sinkP = procOf('sink', sink);
  const goP = procOf('server', goServer);
  const ugP = procOf('server', ugate.child);
  const socksP = procOf('client', socksNode.child);
  const relayP = procOf('relay', relayNode.child);
  const floorP = procOf('server', floorServer);
  const nodeClient = (server: number | undefined, authority: string, extra: string[] = []) => [
    'node',
    ...CLIENT_NODE_FLAGS,
    CLIENT,
    ...(server === undefined ? ['--raw'] : ['--connect', `${LOCAL}:${server}`, '--certs', clientDir, '--expect-identity', SERVER_ID]),
    '--authority',
    authority,
    ...extra,
  ];
  const goClient = (server: number, authority = discard, extra: string[] = []) => [
    go.bin,
    ...goClientArgs(goClientCerts, `${LOCAL}:${server}`, authority, SERVER_ID),
    ...extra,
  ];

  // 1a. throughput, the payload generated inside the sending process (the headline)
  if (args.only !== 'opens') await throughputs();
  if (args.only !== 'throughput') await opensAll();
  async function throughputs() {
    await throughput(
      'gen',
      'raw',
      'raw TCP',
      'bench → sink',
      inProcess(() => tcpConnect({ host: LOCAL, port: ports.discard })),
      [benchProc, sinkP],
    );
    await throughput(
      'gen',
      'rawGen',
      'raw TCP, node client generating',
      'node client → sink',
      generating('raw client', () => nodeClient(undefined, discard)),
      [sinkP],
    );
    await throughput(
      'gen',
      'go',
      'Go pair',
      'Go client → Go server → sink',
      generating('Go client', () => goClient(goPort)),
      [goP, sinkP],
    );
    await throughput(
      'gen',
      'ugate',
      'ugate pair',
      'ugate client → ugate server → sink',
      generating('ugate client', () => nodeClient(ugate.port, discard)),
      [ugP, sinkP],
    );
    await throughput(
      'gen',
      'goToUgate',
      'Go client → ugate server',
      'Go client → ugate server → sink',
      generating('Go client', () => goClient(ugate.port)),
      [ugP, sinkP],
    );
    await throughput(
      'gen',
      'ugateToGo',
      'ugate client → Go server',
      'ugate client → Go server → sink',
      generating('ugate client', () => nodeClient(goPort, discard)),
      [goP, sinkP],
    );
    await throughput(
      'gen',
      'ugateSocks',
      'ugate pair via SOCKS5',
      'bench → SOCKS5 → ugate node → ugate server → sink',
      inProcess(() => socksConnect({ host: LOCAL, port: socksNode.port }, { host: LOCAL, port: ports.discard })),
      [benchProc, socksP, ugP, sinkP],
    );
    // The same hop without TLS and HTTP/2: ugate's relay alone (SOCKS5 in, direct out), the floor of any one-relay path.
    await throughput(
      'gen',
      'ugateRelay',
      'ugate relay, plain TCP (no HBONE)',
      'bench → SOCKS5 → ugate node → sink',
      inProcess(() => socksConnect({ host: LOCAL, port: relayNode.port }, { host: LOCAL, port: ports.discard })),
      [benchProc, relayP, sinkP],
    );
    // 1b. throughput through the client's stdin
    await throughput(
      'piped',
      'rawPiped',
      'raw TCP, piped client',
      'pipe → node client → sink',
      piped('raw client', () => nodeClient(undefined, discard)),
      [benchProc, sinkP],
    );
    await throughput(
      'piped',
      'goPiped',
      'Go pair',
      'pipe → Go client → Go server → sink',
      piped('Go client', () => goClient(goPort)),
      [benchProc, goP, sinkP],
    );
    await throughput(
      'piped',
      'ugatePiped',
      'ugate pair',
      'pipe → ugate client → ugate server → sink',
      piped('ugate client', () => nodeClient(ugate.port, discard)),
      [benchProc, ugP, sinkP],
    );
    await throughput(
      'piped',
      'goToUgatePiped',
      'Go client → ugate server',
      'pipe → Go client → ugate server → sink',
      piped('Go client', () => goClient(ugate.port)),
      [benchProc, ugP, sinkP],
    );
    await throughput(
      'piped',
      'ugateToGoPiped',
      'ugate client → Go server',
      'pipe → ugate client → Go server → sink',
      piped('ugate client', () => nodeClient(goPort, discard)),
      [benchProc, goP, sinkP],
    );
  }
  // 2. opens/s
  async function opensAll() {
    const viaClient =
      (cmd: string[]): OpensMover =>
      async () => {
        const o = await clientOpens(cmd);
        const w = cmd.findIndex((x) => x === '--warmup' || x === '-warmup');
        const warm = w < 0 ? 0 : Number(cmd[w + 1]);
        return { ...o, clientCpu: o.cpuSeconds, sessions: cmd.includes('--raw') ? undefined : o.sessions, procStreams: nOpens + warm };
      };
    // Each client process first opens `nWarm` unmeasured streams, so the measured ones run on a warm
    // stream-open path (JIT-compiled, heap grown), as in a long-running node; the Go client does the same.
    const opensArgs = ['--opens', String(nOpens), '--concurrency', String(CONCURRENCY), '--warmup', String(nWarm)];
    const goOpensArgs = ['-opens', String(nOpens), '-concurrency', String(CONCURRENCY), '-warmup', String(nWarm)];
    await measureOpens('raw', 'raw TCP connects', 'node client → echo', viaClient(nodeClient(undefined, echo, opensArgs)), [sinkP]);
    await measureOpens('go', 'Go pair', 'Go client → Go server → echo', viaClient(goClient(goPort, echo, goOpensArgs)), [goP, sinkP]);
    await measureOpens('ugate', 'ugate pair', 'ugate client → ugate server → echo', viaClient(nodeClient(ugate.port, echo, opensArgs)), [
      ugP,
      sinkP,
    ]);
    await measureOpens(
      'ugateToGo',
      'ugate client → Go server',
      'ugate client → Go server → echo',
      viaClient(nodeClient(goPort, echo, opensArgs)),
      [goP, sinkP],
    );
    await measureOpens(
      'goToUgate',
      'Go client → ugate server',
      'Go client → ugate server → echo',
      viaClient(goClient(ugate.port, echo, goOpensArgs)),
      [ugP, sinkP],
    );
    // The node:http2 floor: HBONE with nothing of ugate in it (h2-floor-server.js, hbone-client.js --bare).
    const bareClient = (server: number) => [
      'node',
      ...CLIENT_NODE_FLAGS,
      CLIENT,
      '--bare',
      '--connect',
      `${LOCAL}:${server}`,
      '--certs',
      clientDir,
      '--authority',
      echo,
      ...opensArgs,
    ];
    await measureOpens('floor', 'node:http2 floor', 'bare node client → bare node server → echo', viaClient(bareClient(floorPort)), [
      floorP,
      sinkP,
    ]);
    await measureOpens(
      'goToFloor',
      'Go client → bare node server',
      'Go client → bare node server → echo',
      viaClient(goClient(floorPort, echo, goOpensArgs)),
      [floorP, sinkP],
    );
    await measureOpens('floorToGo', 'bare node client → Go server', 'bare node client → Go server → echo', viaClient(bareClient(goPort)), [
      goP,
      sinkP,
    ]);
    await measureOpens(
      'ugateSocks',
      'ugate pair via SOCKS5',
      'bench → SOCKS5 → ugate node → ugate server → echo',
      () =>
        opens(() => socksConnect({ host: LOCAL, port: socksNode.port }, { host: LOCAL, port: ports.echo }), nOpens, CONCURRENCY, 10_000),
      [benchProc, socksP, ugP, sinkP],
    );
  }

  // 3. ratios and targets
  const tp = (k: string) => results.throughput.find((x) => x.key === k && !x.error)?.mbps;
  const op = (k: string) => results.opens.find((x) => x.key === k && !x.error)?.perSecond;
  const div = (x?: number, y?: number) => (x !== undefined && y ? Number((x / y).toFixed(3)) : undefined);
  results.ratios = {
    // generating clients (the headline)
    ugateVsGo: div(tp('ugate'), tp('go')),
    ugateVsRaw: div(tp('ugate'), tp('raw')),
    ugateVsRawGen: div(tp('ugate'), tp('rawGen')),
    goVsRaw: div(tp('go'), tp('raw')),
    goVsRawGen: div(tp('go'), tp('rawGen')),
    ugateSocksVsRaw: div(tp('ugateSocks'), tp('raw')),
    ugateRelayVsRaw: div(tp('ugateRelay'), tp('raw')),
    // piped clients
    ugatePipedVsGoPiped: div(tp('ugatePiped'), tp('goPiped')),
    ugatePipedVsRaw: div(tp('ugatePiped'), tp('raw')),
    ugatePipedVsRawPiped: div(tp('ugatePiped'), tp('rawPiped')),
    goPipedVsRaw: div(tp('goPiped'), tp('raw')),
    // opens/s
    opensUgateVsGo: div(op('ugate'), op('go')),
    opensUgateVsRawConnects: div(op('ugate'), op('raw')),
    opensGoVsRawConnects: div(op('go'), op('raw')),
    opensUgateVsUgateToGo: div(op('ugate'), op('ugateToGo')),
    opensFloorVsGo: div(op('floor'), op('go')),
    opensUgateVsFloor: div(op('ugate'), op('floor')),
  };
  const r = results.ratios;
  const atLeast = (x: number | undefined, y: number) => (x === undefined ? undefined : x >= y);
  results.targets = {
    throughputAtLeastGo: atLeast(r.ugateVsGo, 1),
    throughputAtLeastHalfRaw: atLeast(r.ugateVsRaw, 0.5),
    pipedThroughputAtLeastGo: atLeast(r.ugatePipedVsGoPiped, 1),
    opensAtLeastGo: atLeast(r.opensUgateVsGo, 1),
  };
  save();

  // 4. optional profiles (after the measurements, which they would disturb)
  if (args.profile) await profile(serverDir, ports, nodeClient);
  results.settings.seconds = Math.round((Date.now() - t0) / 1000);
  save();
}

async function profile(
  serverDir: string,
  ports: { discard: number; echo: number },
  nodeClient: (server: number | undefined, authority: string, extra?: string[]) => string[],
): Promise<void> {
  results.hotSpots = {};
  const profDir = join(OUT, 'hbone-prof');
  rmSync(profDir, { recursive: true, force: true });
  mkdirSync(profDir, { recursive: true });
  for (const phase of ['throughput', 'opens'] as const) {
    log(`profile: ${phase}`);
    const sDir = join(TMP, `prof-server-${phase}`);
    const cDir = join(TMP, `prof-client-${phase}`);
    const srv = await startUgateServer(`ugate server (profiled ${phase})`, serverDir, ['--cpu-prof', `--cpu-prof-dir=${sDir}`]);
    const cprof = ['node', '--cpu-prof', `--cpu-prof-dir=${cDir}`];
    const strip = (cmd: string[]) => cmd.slice(1 + CLIENT_NODE_FLAGS.length);
    try {
      if (phase === 'throughput') {
        const cmd = nodeClient(srv.port, `${LOCAL}:${ports.discard}`);
        await genRun('ugate client (profiled)', [...cprof, ...CLIENT_NODE_FLAGS, ...strip(cmd)], sizeMiB * MiB, 120_000);
      } else {
        const cmd = nodeClient(srv.port, `${LOCAL}:${ports.echo}`, [
          '--opens',
          String(nOpens),
          '--concurrency',
          String(CONCURRENCY),
          '--warmup',
          String(nWarm),
        ]);
        await clientOpens([...cprof, ...CLIENT_NODE_FLAGS, ...strip(cmd)]);
      }
    } finally {
      await stopChild(srv.child, 10_000);
    }
    for (const [who, dir] of [
      ['server', sDir],
      ['client', cDir],
    ] as const) {
      const f = readdirSync(dir).find((x) => x.endsWith('.cpuprofile'));
      if (!f) {
        notes.push(`profile ${who} ${phase}: no .cpuprofile written`);
        continue;
      }
      copyFileSync(join(dir, f), join(profDir, `${who}-${phase}.cpuprofile`));
      results.hotSpots[`${who} ${phase}`] = hotSpots(join(dir, f), 15);
    }
  }
}

// ---- report ----------------------------------------------------------------------------------
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);

function report(): string {
  const L: string[] = [];
  const tp = (k: string) => results.throughput.find((x) => x.key === k && !x.error)?.mbps;
  const ratio = (x?: number, y?: number) => (x !== undefined && y ? `${(x / y).toFixed(2)}×` : '–');
  const m = results.machine;
  L.push(`HBONE benchmark, ${results.date}: ${m.cores} cores (${m.cpu}), node ${m.node}, ${m.go}`);
  L.push(
    `TLS 1.3 suite negotiated: ${Object.entries(results.tls)
      .map(([k, v]) => `${k}: ${v}`)
      .join('; ')}`,
  );
  L.push('');
  const tables = [
    ['gen', 'generating: the client process makes the payload itself (raw TCP and SOCKS5: this process)', 'go', 'rawGen', '× gen'],
    ['piped', "piped: this process pipes the payload into the client's stdin", 'goPiped', 'rawPiped', '× pipe'],
  ] as const;
  for (const [table, what, goKey, refKey, refHead] of tables) {
    L.push(`Single-stream throughput, upload, ${sizeMiB} MiB per run, median of ${runs} (MB/s = 1e6 B/s), ${what}`);
    L.push(`  ${pad('path', 66)} ${lpad('MB/s', 7)} ${lpad('× Go', 6)} ${lpad('× raw', 6)} ${lpad(refHead, 6)}   CPU s/GB (% of a core)`);
    for (const x of results.throughput.filter((t) => t.table === table)) {
      const head = `  ${pad(`${x.label}: ${x.path}`, 66)}`;
      if (x.error) {
        L.push(`${head} failed: ${x.error.split('\n')[0]}`);
        continue;
      }
      const cpu = Object.keys(x.cpuSecPerGB)
        .map((k) => `${k} ${x.cpuSecPerGB[k]!.toFixed(2)} (${x.cpuPct[k]}%)`)
        .join(', ');
      const start = x.clientStartupCpu !== undefined ? `; client start-up ${x.clientStartupCpu.toFixed(2)} s` : '';
      L.push(
        `${head} ${lpad(x.mbps.toFixed(0), 7)} ${lpad(ratio(x.mbps, tp(goKey)), 6)} ${lpad(ratio(x.mbps, tp('raw')), 6)} ${lpad(ratio(x.mbps, tp(refKey)), 6)}   ${cpu}${start}`,
      );
    }
    L.push('');
  }
  const op = (k: string) => results.opens.find((x) => x.key === k && !x.error)?.perSecond;
  L.push(
    `Stream opens/s: ${nOpens} × (open, 1-byte echo, close), ${CONCURRENCY} at a time, median of ${runs}; each client process opens ${nWarm} unmeasured streams first`,
  );
  L.push(`  ${pad('path', 66)} ${lpad('/s', 7)} ${lpad('× Go', 6)} ${lpad('× raw', 6)}   CPU µs/stream`);
  for (const x of results.opens) {
    const head = `  ${pad(`${x.label}: ${x.path}`, 66)}`;
    if (x.error) {
      L.push(`${head} failed: ${x.error.split('\n')[0]}`);
      continue;
    }
    const cpu = Object.entries(x.cpuUsPerStream)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    const extra = `${x.sessions !== undefined ? `, ${x.sessions} session(s)` : ''}${x.failed ? `, ${x.failed} failed` : ''}`;
    L.push(
      `${head} ${lpad(x.perSecond.toFixed(0), 7)} ${lpad(ratio(x.perSecond, op('go')), 6)} ${lpad(ratio(x.perSecond, op('raw')), 6)}   ${cpu}${extra}`,
    );
  }
  L.push('');
  const t = results.targets;
  const yn = (b?: boolean) => (b === undefined ? 'n/a' : b ? 'met' : 'NOT met');
  const rr = results.ratios;
  L.push(
    `Targets (generating clients): ugate pair ≥ Go pair: ${yn(t.throughputAtLeastGo)} (${rr.ugateVsGo ?? '–'}×); ` +
      `ugate pair ≥ 0.5× raw TCP: ${yn(t.throughputAtLeastHalfRaw)} (${rr.ugateVsRaw ?? '–'}×; the Go pair: ${rr.goVsRaw ?? '–'}×)`,
  );
  L.push(
    `Piped clients: ugate pair ${rr.ugatePipedVsGoPiped ?? '–'}× the Go pair. ` +
      `Opens/s: ugate pair ≥ Go pair: ${yn(t.opensAtLeastGo)} (${rr.opensUgateVsGo ?? '–'}×; the node:http2 floor: ${rr.opensFloorVsGo ?? '–'}× the Go pair, ugate ${rr.opensUgateVsFloor ?? '–'}× the floor)`,
  );
  L.push(
    '× raw: vs raw TCP (bench → sink); × gen: vs a node client generating over plain TCP; × pipe: vs the same stdin pipe into a node client over plain TCP.',
  );
  L.push('CPU: client = the client process without its start-up; bench = this process (the payload generator where it is on the path).');
  if (results.hotSpots) {
    for (const [k, list] of Object.entries(results.hotSpots)) {
      L.push('');
      L.push(`Hot spots, ${k} (self time):`);
      for (const h of list.slice(0, 12)) L.push(`  ${lpad(h.selfPct.toFixed(1), 5)}%  ${h.fn}  ${h.where}`);
    }
  }
  if (notes.length) {
    L.push('');
    L.push('Notes:');
    for (const n of notes) L.push(`  - ${n}`);
  }
  return `${L.join('\n')}\n`;
}

try {
  await main();
} catch (e) {
  log(`failed: ${(e as Error).stack ?? e}`);
  notes.push(`run aborted: ${(e as Error).message}`);
  save();
  await cleanup();
  process.exit(1);
}
await cleanup();
if (args.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
else process.stdout.write(report());
log(`results written to ${join(OUT, 'hbone.json')}`);
process.exit(0);
