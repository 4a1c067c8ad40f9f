/**
 * ugate benchmark with reference runs in the same process:
 *   raw loopback · OpenSSH (`ssh -N -D` → sshd) · ugate (SOCKS5 at alice → SSH → gateway)
 * 1. throughput both ways, 2. stream opens/s over one carrier,
 * 3. resident memory per idle stream.
 *
 *   node bench/dist/run.js [--quick] [--json] [--only raw,openssh,ugate] [--profile]
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { download, type IdleResult, median, type Opener, type OpensResult, openIdle, opens, upload } from './measure.js';
import { makeKeys, type OpenSshKeys, opensshVersion, startOpenSsh } from './openssh.js';
import {
  type Child,
  cpuSeconds,
  firstLine,
  guardRun,
  leftovers,
  ownNofile,
  rssKiB,
  startChild,
  stopChild,
  systemBusySeconds,
} from './procs.js';
import { type HotSpot, hotSpots } from './prof.js';
import { type Endpoint, socksConnect, tcpConnect } from './socks5.js';
import { ssh2Cipher, startUgate, ugateMissing, ugatePaths } from './ugate.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const OUT = join(ROOT, 'bench/out');
const MiB = 1024 * 1024;
const LOCAL = '127.0.0.1';

const { values: args } = parseArgs({
  // `pnpm bench -- --quick` may pass the `--` through.
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    only: { type: 'string', default: 'raw,openssh,ugate' },
    /** Transfer size in MiB (default 1024, quick 256). */
    size: { type: 'string' },
    runs: { type: 'string' },
    /** Streams for the idle-memory test (default 10000, quick 2000). */
    idle: { type: 'string' },
    /** Short streams for the opens/s test (default 5000, quick 1000). */
    streams: { type: 'string' },
    /** OpenSSH client cipher: `match` (ugate's, default) or `default` (OpenSSH's own order) or a name. */
    'ssh-cipher': { type: 'string', default: 'match' },
    /** Run ugate's processes under `node --cpu-prof` during throughput and opens and print hot spots. */
    profile: { type: 'boolean', default: false },
    /** Extra node options for both ugate processes (space-separated), for experiments. */
    'ugate-node-args': { type: 'string', default: '' },
    help: { type: 'boolean', default: false },
  },
});

if (args.help) {
  process.stdout.write(
    'node bench/dist/run.js [--quick] [--json] [--only raw,openssh,ugate] [--size MiB] [--runs N]\n' +
      '                       [--streams N] [--idle N] [--ssh-cipher match|default|NAME] [--profile]\n' +
      '                       [--ugate-node-args="--import=./bench/dist/experiments/nodelay.js ..."]\n',
  );
  process.exit(0);
}

// 10k idle streams need 10k+ descriptors in this process (app sockets) and in each child.
const WANT_NOFILE = 32768;
if (ownNofile().soft < WANT_NOFILE && ownNofile().hard > ownNofile().soft && !process.env.BENCH_NOFILE_RAISED) {
  const r = spawnSync(
    'bash',
    [
      '-c',
      'ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$@"',
      'bash',
      process.execPath,
      ...process.execArgv,
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit', env: { ...process.env, BENCH_NOFILE_RAISED: '1' } },
  );
  process.exit(r.status ?? 1);
}

const quick = args.quick;
const sizeMiB = Number(args.size ?? (quick ? 256 : 1024));
const runs = Number(args.runs ?? 3);
const nOpens = Number(args.streams ?? (quick ? 1000 : 5000));
let nIdle = Number(args.idle ?? (quick ? 2000 : 10_000));
const only = new Set(args.only.split(',').map((s) => s.trim()));
/** A slow path's transfer is shrunk so one run takes about this long. */
const capSeconds = quick ? 8 : 20;
/** Hard stop for the whole run. */
const deadlineMs = (quick ? 3 : 10) * 60_000;
/** Total time the run may spend waiting for other processes on the host to go quiet. */
let quietBudgetMs = quick ? 20_000 : 90_000;
const ugateNodeArgs = args['ugate-node-args'].split(/\s+/).filter(Boolean);
const notes: string[] = [];

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

// Every process on the path holds one descriptor per idle stream (plus a few hundred of its own).
if (ownNofile().soft < nIdle + 500) {
  const was = nIdle;
  nIdle = Math.max(100, ownNofile().soft - 500);
  notes.push(`open-file limit ${ownNofile().soft}: idle streams reduced from ${was} to ${nIdle}`);
}

const TMP = mkdtempSync(join(tmpdir(), 'ugate-bench-'));
mkdirSync(OUT, { recursive: true });

// ---- cleanup on every way out -------------------------------------------------------------
const appSockets = new Set<Socket>();
const cleanup = guardRun({
  tmp: TMP,
  deadlineMs,
  log,
  extra: () => {
    for (const s of appSockets) s.destroy();
  },
});

// ---- result shapes -------------------------------------------------------------------------
interface Transfer {
  mbps: number;
  runsMBps: number[];
  bytes: number;
  /** Average CPU use of each process during the runs, % of one core. */
  cpuPct: Record<string, number>;
  /** CPU used by processes outside the benchmark during the runs, % of one core (noise). */
  otherPct: number;
}
interface PathResult {
  name: string;
  label: string;
  cipher?: string;
  upload?: Transfer;
  download?: Transfer;
  opens?: OpensResult & { cpuUsPerStream: Record<string, number> };
  idle?: {
    streams: number;
    failed: number;
    openSeconds: number;
    firstError?: string;
    processes: {
      name: string;
      beforeKiB: number;
      /** With the first half of the streams open. */
      midKiB: number;
      afterKiB: number;
      afterCloseKiB: number;
      /** (after − before) / streams. */
      kibPerStream: number;
      /** (after − mid) / second half: the slope, without one-off growth (heap spaces, pools). */
      marginalKiBPerStream: number;
      /** CPU use while all streams sit idle (3 s window), % of one core: timers, keepalives. */
      idleCpuPct: number;
    }[];
  };
  error?: string;
  hotSpots?: Record<string, HotSpot[]>;
}

const results: {
  date: string;
  machine: { cores: number; cpu: string; node: string; openssh: string; platform: string };
  settings: Record<string, unknown>;
  paths: PathResult[];
  notes: string[];
} = {
  date: new Date().toISOString(),
  machine: {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    openssh: opensshVersion(),
    platform: `${process.platform} ${process.arch}`,
  },
  settings: { quick, sizeMiB, runs, opens: nOpens, opensConcurrency: 32, idleStreams: nIdle, idleConcurrency: 64, ugateNodeArgs },
  paths: [],
  notes,
};

function save(): void {
  writeFileSync(join(OUT, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
}

// ---- measurement helpers -------------------------------------------------------------------
type Proc = { name: string; pids: () => number[] };

function cpuOf(procs: Proc[]): number[] {
  return procs.map((p) => (p.name === 'app' ? appCpu() : p.pids().reduce((a, pid) => a + cpuSeconds(pid), 0)));
}
function appCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * The host is shared: wait (bounded) until processes outside the benchmark use
 * less than a fifth of a core, so a run is not measured against someone's build.
 */
async function waitQuiet(maxMs: number): Promise<number> {
  const end = Date.now() + Math.min(maxMs, quietBudgetMs);
  let other = 0;
  do {
    const t0 = Date.now();
    const b0 = systemBusySeconds();
    await sleep(500);
    other = (systemBusySeconds() - b0) / 0.5;
    quietBudgetMs -= Date.now() - t0;
    if (other < 0.2) return other;
  } while (Date.now() < end);
  return other;
}

async function transfer(what: 'upload' | 'download', open: Opener, procs: Proc[]): Promise<{ result: Transfer; note?: string }> {
  const fn = what === 'upload' ? upload : download;
  let bytes = sizeMiB * MiB;
  const warm = Math.min(bytes, (quick ? 16 : 32) * MiB);
  const tw = await fn(open, warm, 120_000);
  const rate = warm / tw;
  let note: string | undefined;
  if (bytes / rate > capSeconds) {
    const capped = Math.max(16, Math.floor((rate * capSeconds) / MiB / 16) * 16) * MiB;
    if (capped < bytes) {
      note = `${what} ${bytes / MiB} MiB would take ~${Math.round(bytes / rate)} s per run: used ${capped / MiB} MiB`;
      bytes = capped;
    }
  }
  const speeds: number[] = [];
  const cpu = procs.map(() => 0);
  let wall = 0;
  let busy = 0;
  for (let i = 0; i < runs; i++) {
    const other = await waitQuiet(quick ? 5000 : 15_000);
    if (other >= 0.2) log(`  host busy (${Math.round(other * 100)}% of a core used by others): measuring anyway`);
    const c0 = cpuOf(procs);
    const b0 = systemBusySeconds();
    const secs = await fn(open, bytes, Math.max(120_000, (bytes / rate) * 4000));
    busy += systemBusySeconds() - b0;
    const c1 = cpuOf(procs);
    wall += secs;
    c1.forEach((v, j) => {
      cpu[j]! += v - c0[j]!;
    });
    speeds.push(bytes / secs / 1e6);
    log(`  ${what} ${bytes / MiB} MiB: ${(bytes / secs / 1e6).toFixed(1)} MB/s`);
  }
  const cpuPct = Object.fromEntries(procs.map((p, j) => [p.name, Math.round((100 * cpu[j]!) / wall)]));
  const ours = cpu.reduce((a, b) => a + b, 0);
  const otherPct = Math.max(0, Math.round((100 * (busy - ours)) / wall));
  if (otherPct > 25) note = `${note ? `${note}; ` : ''}${what}: other processes used ${otherPct}% of a core meanwhile (noisy)`;
  return { result: { mbps: median(speeds), runsMBps: speeds, bytes, cpuPct, otherPct }, note };
}

async function throughput(r: PathResult, open: (port: number) => Opener, ports: Ports, procs: Proc[]): Promise<void> {
  for (const what of ['upload', 'download'] as const) {
    const { result, note } = await transfer(what, open(what === 'upload' ? ports.discard : ports.source), procs);
    r[what] = result;
    if (note) notes.push(`${r.label}: ${note}`);
    save();
  }
}

/** The opens/s test, with each process's CPU time per stream. */
async function measureOpens(open: Opener, procs: Proc[]): Promise<OpensResult & { cpuUsPerStream: Record<string, number> }> {
  await waitQuiet(5000);
  const c0 = cpuOf(procs);
  const res = await opens(open, nOpens, 32, 10_000);
  const c1 = cpuOf(procs);
  const cpuUsPerStream = Object.fromEntries(procs.map((p, i) => [p.name, Math.round(((c1[i]! - c0[i]!) * 1e6) / res.streams)]));
  return { ...res, cpuUsPerStream };
}

/** Open one stream (echo round trip) until it works: the carrier is connected end to end. */
async function ready(open: Opener, timeoutMs: number, who: Child[]): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    for (const c of who) if (c.exitedWith) throw new Error(`${c.name} exited (${c.exitedWith}):\n${c.output()}`);
    try {
      const r = await opens(open, 1, 1, 5000);
      if (r.failed === 0) return;
      last = r.firstError;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`no stream got through within ${timeoutMs} ms: ${last instanceof Error ? last.message : String(last)}`);
}

async function idleMemory(r: PathResult, open: Opener, procs: Proc[], who: Child[]): Promise<void> {
  await ready(open, 20_000, who);
  await sleep(2000);
  const rss = () => procs.map((p) => p.pids().reduce((a, pid) => a + rssKiB(pid), 0));
  const before = rss();
  log(`  opening ${nIdle} idle streams`);
  const half = Math.floor(nIdle / 2);
  const first: IdleResult = await openIdle(open, half, 64, 20_000);
  for (const s of first.sockets) appSockets.add(s);
  await sleep(2000);
  const mid = rss();
  const second: IdleResult = await openIdle(open, nIdle - half, 64, 20_000);
  for (const s of second.sockets) appSockets.add(s);
  await sleep(2000);
  const after = rss();
  const cpu0 = cpuOf(procs);
  await sleep(3000);
  const idleCpu = cpuOf(procs).map((c, i) => ((c - cpu0[i]!) / 3) * 100);
  const res: IdleResult = {
    sockets: [...first.sockets, ...second.sockets],
    failed: first.failed + second.failed,
    seconds: first.seconds + second.seconds,
    firstError: first.firstError ?? second.firstError,
  };
  for (const s of res.sockets) {
    s.destroy();
    appSockets.delete(s);
  }
  await sleep(2000);
  const afterClose = procs.map((p) => p.pids().reduce((a, pid) => a + rssKiB(pid), 0));
  const n = res.sockets.length;
  r.idle = {
    streams: n,
    failed: res.failed,
    openSeconds: res.seconds,
    firstError: res.firstError,
    processes: procs.map((p, i) => ({
      name: p.name,
      beforeKiB: before[i]!,
      midKiB: mid[i]!,
      afterKiB: after[i]!,
      afterCloseKiB: afterClose[i]!,
      kibPerStream: n ? (after[i]! - before[i]!) / n : 0,
      marginalKiBPerStream: second.sockets.length ? (after[i]! - mid[i]!) / second.sockets.length : 0,
      idleCpuPct: Math.round(idleCpu[i]! * 10) / 10,
    })),
  };
  log(`  ${n} idle streams open (${res.failed} failed) in ${res.seconds.toFixed(1)} s`);
  save();
}

interface Ports {
  discard: number;
  source: number;
  echo: number;
}

const viaSocks =
  (proxy: Endpoint) =>
  (port: number): Opener =>
  () =>
    socksConnect(proxy, { host: LOCAL, port });
const direct =
  (port: number): Opener =>
  () =>
    tcpConnect({ host: LOCAL, port });

// ---- the three paths ---------------------------------------------------------------------------
async function runRaw(ports: Ports, sink: Child): Promise<void> {
  const r: PathResult = { name: 'raw', label: 'raw loopback (app → sink)' };
  results.paths.push(r);
  log('raw loopback');
  const procs: Proc[] = [
    { name: 'app', pids: () => [] },
    { name: 'sink', pids: () => [sink.pid] },
  ];
  await throughput(r, direct, ports, procs);
  r.opens = await measureOpens(direct(ports.echo), procs);
  log(`  opens: ${r.opens.perSecond.toFixed(0)}/s`);
  save();
}

async function runOpenSsh(ports: Ports, sink: Child, keys: OpenSshKeys, cipher: string | undefined): Promise<void> {
  const r: PathResult = { name: 'openssh', label: 'OpenSSH (ssh -D → sshd)' };
  results.paths.push(r);
  log(`OpenSSH: ssh -N -D → sshd, cipher ${cipher ?? '(OpenSSH default)'}`);
  const { pair, negotiated } = await startOpenSsh(keys, cipher);
  r.cipher = negotiated;
  try {
    const proxy = { host: LOCAL, port: pair.socksPort };
    await ready(viaSocks(proxy)(ports.echo), 20_000, [pair.client, pair.server]);
    const procs: Proc[] = [
      { name: 'app', pids: () => [] },
      { name: 'ssh', pids: () => [pair.client.pid] },
      { name: 'sshd', pids: pair.serverPids },
      { name: 'sink', pids: () => [sink.pid] },
    ];
    await throughput(r, viaSocks(proxy), ports, procs);
    r.opens = await measureOpens(viaSocks(proxy)(ports.echo), procs);
    log(`  opens: ${r.opens.perSecond.toFixed(0)}/s (${r.opens.failed} failed)`);
    save();
  } finally {
    await pair.stop();
  }
  // Fresh processes for the memory test, so the transfers' heap growth is not in the baseline.
  const fresh = await startOpenSsh(keys, cipher);
  try {
    const proxy = { host: LOCAL, port: fresh.pair.socksPort };
    await idleMemory(
      r,
      viaSocks(proxy)(ports.echo),
      [
        { name: 'ssh', pids: () => [fresh.pair.client.pid] },
        { name: 'sshd', pids: fresh.pair.serverPids },
      ],
      [fresh.pair.client, fresh.pair.server],
    );
  } finally {
    await fresh.pair.stop();
  }
}

function profiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return [];
  }
}

async function runUgate(ports: Ports, sink: Child): Promise<void> {
  const r: PathResult = { name: 'ugate', label: 'ugate (SOCKS5 alice → SSH → gateway)', cipher: ssh2Cipher(ROOT) };
  results.paths.push(r);
  const paths = ugatePaths(ROOT);
  const missing = ugateMissing(paths);
  if (missing) {
    r.error = missing;
    log(`ugate skipped: ${missing}`);
    save();
    return;
  }
  log('ugate: alice (SOCKS5) → SSH carrier → gateway');
  const profDir = join(OUT, 'prof');
  const nodeArgs = [...ugateNodeArgs, ...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])];
  if (args.profile) rmSync(profDir, { recursive: true, force: true });
  const pair = await startUgate(paths, join(TMP, 'ugate1'), nodeArgs);
  const pidName = new Map([
    [pair.alice.pid, 'alice'],
    [pair.gateway.pid, 'gateway'],
  ]);
  try {
    const proxy = { host: LOCAL, port: pair.socksPort };
    await ready(viaSocks(proxy)(ports.echo), 30_000, [pair.alice, pair.gateway]);
    const procs: Proc[] = [
      { name: 'app', pids: () => [] },
      { name: 'alice', pids: () => [pair.alice.pid] },
      { name: 'gateway', pids: () => [pair.gateway.pid] },
      { name: 'sink', pids: () => [sink.pid] },
    ];
    await throughput(r, viaSocks(proxy), ports, procs);
    r.opens = await measureOpens(viaSocks(proxy)(ports.echo), procs);
    log(`  opens: ${r.opens.perSecond.toFixed(0)}/s (${r.opens.failed} failed)`);
    save();
  } finally {
    await pair.stop();
  }
  if (args.profile) {
    r.hotSpots = {};
    for (const f of profiles(profDir)) {
      const pid = Number(/^CPU\.\d+\.\d+\.(\d+)\./.exec(f)?.[1]);
      const who = pidName.get(pid);
      if (who) r.hotSpots[who] = hotSpots(join(profDir, f), 15);
    }
  }
  const fresh = await startUgate(paths, join(TMP, 'ugate2'), ugateNodeArgs);
  try {
    const proxy = { host: LOCAL, port: fresh.socksPort };
    await idleMemory(
      r,
      viaSocks(proxy)(ports.echo),
      [
        { name: 'alice', pids: () => [fresh.alice.pid] },
        { name: 'gateway', pids: () => [fresh.gateway.pid] },
      ],
      [fresh.alice, fresh.gateway],
    );
  } finally {
    await fresh.stop();
  }
}

// ---- report ------------------------------------------------------------------------------------
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);
const fmt = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}×`;

function report(): string {
  const p = (name: string) => results.paths.find((x) => x.name === name);
  const raw = p('raw');
  const ossh = p('openssh');
  const lines: string[] = [];
  const m = results.machine;
  lines.push(`ugate benchmark — ${m.cores} cores (${m.cpu}), node ${m.node}, ${m.openssh}`);
  lines.push(
    `transfers: ${sizeMiB} MiB × ${runs} runs (median), MB = 10^6 bytes${ugateNodeArgs.length ? `; ugate node args: ${ugateNodeArgs.join(' ')}` : ''}`,
  );
  for (const x of results.paths) if (x.cipher) lines.push(`  cipher ${pad(x.name, 8)} ${x.cipher}`);
  lines.push('');
  lines.push('1. Throughput (MB/s)');
  lines.push(`   ${pad('path', 40)} ${lpad('upload', 8)} ${lpad('download', 9)}   ${lpad('vs OpenSSH', 13)}   ${lpad('vs raw', 13)}`);
  for (const x of results.paths) {
    if (x.error && !x.upload) {
      lines.push(`   ${pad(x.label, 40)} ${x.error}`);
      continue;
    }
    const u = x.upload?.mbps;
    const d = x.download?.mbps;
    lines.push(
      `   ${pad(x.label, 40)} ${lpad(fmt(u), 8)} ${lpad(fmt(d), 9)}   ${lpad(`${ratio(u, ossh?.upload?.mbps)} ${ratio(d, ossh?.download?.mbps)}`, 13)}   ${lpad(`${ratio(u, raw?.upload?.mbps)} ${ratio(d, raw?.download?.mbps)}`, 13)}`,
    );
  }
  lines.push('   CPU during transfers, % of one core (CPU seconds per GB), upload / download:');
  for (const x of results.paths) {
    if (!x.upload || !x.download) continue;
    const u = x.upload;
    const d = x.download;
    const perGB = (t: Transfer, k: string) => ((t.cpuPct[k] ?? 0) / 100 / (t.mbps / 1000)).toFixed(2);
    const parts = Object.keys(u.cpuPct).map((k) => `${k} ${u.cpuPct[k]}/${d.cpuPct[k] ?? '-'}% (${perGB(u, k)}/${perGB(d, k)} s)`);
    lines.push(`   ${pad(x.name, 8)} ${parts.join(', ')}; other processes ${u.otherPct}/${d.otherPct}%`);
  }
  lines.push('');
  lines.push(`2. Stream opens/s (open, 1-byte echo, close; ${nOpens} streams, 32 concurrent, one carrier)`);
  for (const x of results.paths) {
    if (!x.opens) continue;
    lines.push(
      `   ${pad(x.label, 40)} ${lpad(fmt(x.opens.perSecond, 0), 8)}/s   vs OpenSSH ${ratio(x.opens.perSecond, ossh?.opens?.perSecond)}   CPU µs/stream: ${Object.entries(
        x.opens.cpuUsPerStream,
      )
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}${x.opens.failed ? `   (${x.opens.failed} failed: ${x.opens.firstError})` : ''}`,
    );
  }
  lines.push('');
  lines.push(`3. Memory per idle stream (${nIdle} streams open through one carrier; VmRSS before → half open → all open, 2 s settle each)`);
  for (const x of results.paths) {
    if (!x.idle) continue;
    const i = x.idle;
    lines.push(`   ${x.label}: ${i.streams} open in ${fmt(i.openSeconds)} s${i.failed ? `, ${i.failed} failed (${i.firstError})` : ''}`);
    for (const q of i.processes) {
      lines.push(
        `     ${pad(q.name, 8)} ${lpad(fmt(q.beforeKiB / 1024), 7)} → ${lpad(fmt(q.midKiB / 1024), 7)} → ${lpad(fmt(q.afterKiB / 1024), 7)} MiB   ${lpad(fmt(q.kibPerStream, 2), 6)} KiB/stream (2nd half ${fmt(q.marginalKiBPerStream, 2)})   idle CPU ${fmt(q.idleCpuPct)}%   after close ${fmt(q.afterCloseKiB / 1024)} MiB`,
      );
    }
  }
  for (const x of results.paths) {
    if (x.error && x.upload) lines.push(`   ${x.label}: error: ${x.error}`);
  }
  if (notes.length) {
    lines.push('');
    lines.push('notes:');
    for (const n of notes) lines.push(`   - ${n}`);
  }
  for (const x of results.paths) {
    if (!x.hotSpots) continue;
    for (const [who, hs] of Object.entries(x.hotSpots)) {
      lines.push('');
      lines.push(`hot spots (self time) in ${who}:`);
      for (const h of hs) lines.push(`   ${lpad(h.selfPct.toFixed(1), 5)}%  ${h.fn}  ${h.where}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

// ---- main --------------------------------------------------------------------------------------
async function main(): Promise<number> {
  let status = 0;
  const sink = startChild('sink', ['node', join(HERE, 'sink.js'), `--tag=${TMP}`]);
  const ports = JSON.parse(await firstLine(sink, 10_000)) as Ports;
  log(`sink ${JSON.stringify(ports)}; temp ${TMP}`);
  const keys = makeKeys(join(TMP, 'openssh'));
  const wanted = args['ssh-cipher'];
  const cipher = wanted === 'default' ? undefined : wanted === 'match' ? ssh2Cipher(ROOT).split(' ')[0] : wanted;
  const steps: [string, () => Promise<void>][] = [
    ['raw', () => runRaw(ports, sink)],
    ['openssh', () => runOpenSsh(ports, sink, keys, cipher === 'unknown' ? undefined : cipher)],
    ['ugate', () => runUgate(ports, sink)],
  ];
  for (const [name, step] of steps) {
    if (!only.has(name)) continue;
    try {
      await step();
    } catch (e) {
      status = 1;
      const msg = (e as Error).message;
      log(`${name} failed: ${msg}`);
      const r = results.paths.find((x) => x.name === name);
      if (r) r.error = msg.split('\n')[0];
      else results.paths.push({ name, label: name, error: msg.split('\n')[0] });
    }
  }
  await stopChild(sink);
  save();
  return status;
}

let status = 1;
try {
  status = await main();
} catch (e) {
  log(`failed: ${(e as Error).stack ?? e}`);
} finally {
  await cleanup();
}
const left = leftovers(TMP);
if (left.length) {
  log(`leftover processes: ${left.join(' ')} — killing`);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  status = status || 1;
}
save();
if (args.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
else process.stdout.write(report());
log(`results written to ${join(OUT, 'results.json')}`);
process.exit(status);
