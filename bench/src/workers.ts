/**
 * `workers: N`: the same SOCKS5 → direct node with 1 and with 2 worker processes, in one run.
 *
 *   bench (load) ─SOCKS5─► ugate run (workers 1 | 2) ─► sink (discard / echo)
 *
 * 1. aggregate throughput of `--streams` parallel uploads (the sink's byte count is checked);
 * 2. stream opens/s (SOCKS5 handshake, 1-byte echo, close), 64 at a time.
 * Median of `--runs`; prints the ratio 2 workers / 1 worker and writes bench/out/workers.json.
 *
 *   node bench/dist/workers.js [--quick] [--runs N] [--streams N] [--size MiB] [--opens N]
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, opens, upload } from './measure.js';
import { type Child, cpuSeconds, descendants, firstLine, freePort, guardRun, startChild, stopChild, waitPort } from './procs.js';
import { socksConnect } from './socks5.js';
import { cleanEnv } from './ugate.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const OUT = join(ROOT, 'bench/out');
const UGATE = join(ROOT, 'apps/ugate/bin/ugate.js');
const MiB = 1024 * 1024;
const LOCAL = '127.0.0.1';

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    streams: { type: 'string', default: '4' },
    size: { type: 'string' },
    opens: { type: 'string' },
  },
});
const runs = Number(a.runs ?? (a.quick ? 1 : 3));
const streams = Number(a.streams);
const sizeMiB = Number(a.size ?? (a.quick ? 128 : 512));
const nOpens = Number(a.opens ?? (a.quick ? 2000 : 6000));
const log = (m: string) => process.stderr.write(`[workers-bench] ${m}\n`);
const TMP = mkdtempSync(join(tmpdir(), 'ugate-workers-bench-'));
const cleanup = guardRun({ tmp: TMP, deadlineMs: (a.quick ? 3 : 8) * 60_000, log });

/** CPU seconds of a process and its children (the workers of a cluster primary). */
const treeCpu = (pid: number) => [pid, ...descendants(pid)].reduce((n, p) => n + cpuSeconds(p), 0);

async function startNode(workers: number, socks: number): Promise<Child> {
  const file = join(TMP, `w${workers}.yaml`);
  writeFileSync(
    file,
    [
      `dataDir: ${join(TMP, 'data')}`,
      `workers: ${workers}`,
      'ssh: { listen: null }',
      'hbone: null',
      'http: null',
      'admin: null',
      `socks: { listen: '${LOCAL}:${socks}' }`,
      'log: { level: warn, format: json }',
      '',
    ].join('\n'),
  );
  const child = startChild(`ugate workers=${workers}`, ['node', UGATE, 'run', '-c', file], { env: cleanEnv() });
  await waitPort(socks, 15_000, child);
  // Every worker must be listening before the clock starts: give the second one a moment to join.
  await new Promise((r) => setTimeout(r, 1000));
  return child;
}

interface Result {
  workers: number;
  mbps: number;
  runsMBps: number[];
  opensPerSecond: number;
  runsOpens: number[];
  ugateCpuPctThroughput: number;
}

async function measure(workers: number, sink: { discard: number; echo: number }): Promise<Result> {
  const socks = await freePort();
  const node = await startNode(workers, socks);
  const via = (port: number) => () => socksConnect({ host: LOCAL, port: socks }, { host: LOCAL, port });
  try {
    const bytes = sizeMiB * MiB;
    const runsMBps: number[] = [];
    let cpu = 0;
    let wall = 0;
    // warm-up
    await Promise.all(Array.from({ length: streams }, () => upload(via(sink.discard), 16 * MiB, 60_000)));
    for (let i = 0; i < runs; i++) {
      const c0 = treeCpu(node.pid);
      const t0 = performance.now();
      await Promise.all(Array.from({ length: streams }, () => upload(via(sink.discard), bytes, 300_000)));
      const secs = (performance.now() - t0) / 1000;
      cpu += treeCpu(node.pid) - c0;
      wall += secs;
      runsMBps.push((streams * bytes) / secs / 1e6);
      log(`workers=${workers}: ${streams} × ${sizeMiB} MiB: ${runsMBps.at(-1)!.toFixed(0)} MB/s`);
    }
    const runsOpens: number[] = [];
    await opens(via(sink.echo), 500, 64, 10_000);
    for (let i = 0; i < runs; i++) {
      const r = await opens(via(sink.echo), nOpens, 64, 10_000);
      if (r.failed) throw new Error(`${r.failed} opens failed: ${r.firstError}`);
      runsOpens.push(r.perSecond);
      log(`workers=${workers}: ${nOpens} opens: ${r.perSecond.toFixed(0)}/s`);
    }
    return {
      workers,
      mbps: median(runsMBps),
      runsMBps,
      opensPerSecond: median(runsOpens),
      runsOpens,
      ugateCpuPctThroughput: Math.round((100 * cpu) / wall),
    };
  } finally {
    await stopChild(node, 10_000);
  }
}

try {
  const sinkChild = startChild('sink', ['node', join(HERE, 'sink.js')]);
  const sink = JSON.parse(await firstLine(sinkChild, 10_000)) as { discard: number; echo: number };
  const one = await measure(1, sink);
  const two = await measure(2, sink);
  const r = {
    date: new Date().toISOString(),
    machine: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    settings: { runs, streams, sizeMiB, opens: nOpens },
    results: [one, two],
    ratios: { throughput: Number((two.mbps / one.mbps).toFixed(2)), opens: Number((two.opensPerSecond / one.opensPerSecond).toFixed(2)) },
  };
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'workers.json'), `${JSON.stringify(r, null, 2)}\n`);
  process.stdout.write(
    [
      `workers benchmark, ${r.date}: ${r.machine.cores} cores (${r.machine.cpu}), node ${r.machine.node}`,
      `  SOCKS5 → direct, ${streams} parallel uploads of ${sizeMiB} MiB; opens: ${nOpens} × (SOCKS5 + 1-byte echo + close), 64 at a time; median of ${runs}`,
      `  workers=1: ${one.mbps.toFixed(0)} MB/s (ugate ${one.ugateCpuPctThroughput}% of a core), ${one.opensPerSecond.toFixed(0)} opens/s`,
      `  workers=2: ${two.mbps.toFixed(0)} MB/s (ugate ${two.ugateCpuPctThroughput}% of a core), ${two.opensPerSecond.toFixed(0)} opens/s`,
      `  ratio 2/1: throughput ${r.ratios.throughput}×, opens ${r.ratios.opens}×`,
      '',
    ].join('\n'),
  );
  await cleanup();
  process.exit(0);
} catch (e) {
  log(`failed: ${(e as Error).stack ?? e}`);
  await cleanup();
  process.exit(1);
}
