import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '@ugate/core';

/** Environment variable that tells a worker its index (0 serves the admin endpoint). */
// Not UGATE_*: those are config overrides.
export const WORKER_INDEX = 'UG_WORKER_INDEX';

/** This process's worker index, or undefined when it is not a worker. */
export function workerIndex(): number | undefined {
  return cluster.isWorker ? Number(process.env[WORKER_INDEX] ?? 0) : undefined;
}

/**
 * The primary of `workers: N`: forks N copies of this command that share the listening ports
 * (node's cluster hands each accepted connection to a worker in turn), restarts a worker that
 * dies (back-off up to 10 s), forwards SIGHUP (reload) and SIGTERM/SIGINT (drain), and exits
 * 0 when every worker has drained.
 */
export function runPrimary(n: number, log: Logger & { flush(cb?: () => void): void }): void {
  const byIndex = new Map<number, Worker>();
  const failures = new Map<number, number>();
  let stopping = false;

  const fork = (i: number) => {
    const w = cluster.fork({ [WORKER_INDEX]: String(i) });
    byIndex.set(i, w);
    const t0 = Date.now();
    w.once('exit', (code, signal) => {
      byIndex.delete(i);
      if (stopping) {
        if (byIndex.size === 0) log.flush(() => process.exit(0));
        return;
      }
      // A worker that ran for a while gets a fresh back-off; one that dies at once backs off more.
      const f = Date.now() - t0 > 30_000 ? 1 : (failures.get(i) ?? 0) + 1;
      failures.set(i, f);
      const delay = Math.min(10_000, 250 * 2 ** (f - 1));
      log.warn({ code: 'UGATE_ERR_INTERNAL', worker: i, exit: code ?? signal, restartInMs: delay }, 'worker exited; restarting');
      setTimeout(() => !stopping && fork(i), delay);
    });
  };

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, workers: byIndex.size }, 'stopping workers');
    if (byIndex.size === 0) log.flush(() => process.exit(0));
    for (const w of byIndex.values()) w.process.kill(signal);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    for (const w of byIndex.values()) w.process.kill('SIGHUP');
  });
  // Workers accept on the shared socket themselves: no per-connection hand-off through this process.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  log.info({ workers: n }, 'starting workers');
  for (let i = 0; i < n; i++) fork(i);
}
