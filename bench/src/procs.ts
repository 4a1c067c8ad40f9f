import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** File-descriptor limit for every child: 10k idle streams need ~2 fds each per process. */
export const NOFILE = 65536;

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Last 64 KiB of stdout+stderr, for error messages. */
  output(): string;
  /** Resolves with the exit code (or signal) once the process is gone. */
  readonly exited: Promise<string>;
  exitedWith: string | undefined;
}

const children = new Set<Child>();
/** Every pid we started or found below one we started, to check for leftovers at the end. */
const seenPids = new Set<number>();

/**
 * Start `cmd` under `bash -c 'ulimit -n 65536; exec …'` so the process (not a
 * shell) gets the pid, in its own process group.
 */
export function startChild(name: string, cmd: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Child {
  const proc = spawn('bash', ['-c', `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$@"`, 'bash', ...cmd], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  if (proc.pid === undefined) throw new Error(`${name}: spawn failed`);
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString('utf8');
    if (out.length > 65536) out = out.slice(-65536);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    output: () => out,
    exitedWith: undefined,
    exited: new Promise<string>((resolve) => {
      proc.on('exit', (code, signal) => {
        child.exitedWith = signal ?? `exit ${code}`;
        resolve(child.exitedWith);
      });
    }),
  };
  children.add(child);
  seenPids.add(proc.pid);
  return child;
}

/** Wait for the first line a child prints on stdout. */
export function firstLine(child: Child, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${child.name}: no output after ${timeoutMs} ms\n${child.output()}`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(timer);
        child.proc.stdout?.off('data', onData);
        resolve(buf.slice(0, i));
      }
    };
    child.proc.stdout?.on('data', onData);
    void child.exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`${child.name} exited (${how}) before printing:\n${child.output()}`));
    });
  });
}

/** Parent pid of every process, read from /proc. */
function parents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: fields start after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      m.set(Number(d), Number(rest[1]));
    } catch {
      // gone meanwhile
    }
  }
  return m;
}

/** All processes below `pid` (children, grandchildren, …), not `pid` itself. */
export function descendants(pid: number): number[] {
  const pp = parents();
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, parent] of pp) {
      if (parent === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  for (const p of out) seenPids.add(p);
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie still answers kill(0); it holds no memory or sockets.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** SIGTERM the child and everything below it; SIGKILL whatever is left after `graceMs`. */
export async function stopChild(child: Child, graceMs = 2000): Promise<void> {
  const pids = [child.pid, ...descendants(child.pid)];
  for (const p of pids) signal(p, 'SIGTERM');
  signal(-child.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && pids.some(alive)) await sleep(50);
  for (const p of pids) if (alive(p)) signal(p, 'SIGKILL');
  signal(-child.pid, 'SIGKILL');
  await Promise.race([child.exited, sleep(1000)]);
  children.delete(child);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
}

/** Last resort on exit: synchronous SIGKILL to everything we know of. */
export function killAllSync(): void {
  for (const c of children) {
    for (const p of [c.pid, ...descendants(c.pid)]) signal(p, 'SIGKILL');
    signal(-c.pid, 'SIGKILL');
  }
  for (const p of seenPids) if (alive(p)) signal(p, 'SIGKILL');
}

/** Pids we started (or saw below them) that are still running, plus `pgrep -f tag` hits. */
export function leftovers(tag: string): number[] {
  const left = new Set([...seenPids].filter(alive));
  try {
    const out = execFileSync('pgrep', ['-f', tag], { encoding: 'utf8' });
    for (const l of out.split('\n')) if (l.trim()) left.add(Number(l));
  } catch {
    // pgrep exits 1 when nothing matches
  }
  left.delete(process.pid);
  return [...left];
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough on an idle host). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Resolve once something accepts TCP connections on 127.0.0.1:port. */
export async function waitPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child?.exitedWith) throw new Error(`${child.name} exited (${child.exitedWith}):\n${child.output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms${child ? `\n${child.output()}` : ''}`);
    await sleep(100);
  }
}

/** VmRSS in KiB (0 when the process is gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const TICKS = 100; // USER_HZ on Linux

/** User+system CPU seconds used so far by a process. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) are at 11 and 12 once pid and comm are cut.
    return (Number(f[11]) + Number(f[12])) / TICKS;
  } catch {
    return 0;
  }
}

/** Open-file limits of this process. */
export function ownNofile(): { soft: number; hard: number } {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const n = (x: string | undefined) => (x === undefined || x === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(x));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

/** CPU seconds all cores spent busy since boot (user+nice+system+irq+softirq+steal). */
export function systemBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return (user + nice + system + irq + softirq + steal) / TICKS;
}

/**
 * Stop every child and remove `tmp` on any way out: normal exit, SIGINT/SIGTERM, or the run
 * exceeding `deadlineMs`. `extra` releases what the caller holds itself (sockets, own spawns).
 * Returns the cleanup, for the caller's normal end.
 */
export function guardRun(opts: { tmp: string; deadlineMs: number; log: (msg: string) => void; extra?: () => void }): () => Promise<void> {
  let cleaning: Promise<void> | undefined;
  const cleanup = () => {
    cleaning ??= (async () => {
      opts.extra?.();
      await stopAll();
      rmSync(opts.tmp, { recursive: true, force: true });
    })();
    return cleaning;
  };
  process.on('exit', () => {
    opts.extra?.();
    killAllSync();
    rmSync(opts.tmp, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      opts.log(`${sig}: stopping children`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const deadline = setTimeout(() => {
    opts.log(`whole run exceeded ${opts.deadlineMs / 60_000} min: stopping`);
    void cleanup().finally(() => process.exit(3));
  }, opts.deadlineMs);
  deadline.unref();
  return cleanup;
}
