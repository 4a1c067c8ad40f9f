/**
 * Two Linux network namespaces joined by a veth pair: a private two-host LAN for tests that need
 * real interfaces (multicast, binding to a LAN address). Needs root and iproute2 (`ip netns`).
 * Nothing is routed out of the namespaces; `destroy()` removes both (the veth pair goes with them).
 */
import { randomBytes } from 'node:crypto';
import { run, start } from './proc.js';

export interface NetnsLan {
  /** Namespace names, e.g. `ugt-a-1f2e3d`. */
  readonly a: string;
  readonly b: string;
  /** The veth end inside each namespace. */
  readonly ifA: string;
  readonly ifB: string;
  /** Their IPv4 addresses (no prefix length), in `10.77.<n>.0/24`. */
  readonly ipA: string;
  readonly ipB: string;
  /** Remove both namespaces; safe to call twice. */
  destroy(): Promise<void>;
}

async function ip(args: string[]): Promise<string> {
  const r = await run('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout.toString();
}

/** Throws a clear error when network namespaces cannot be used here (not root, no iproute2). */
export async function requireNetns(): Promise<void> {
  const probe = `ugt-probe-${randomBytes(3).toString('hex')}`;
  try {
    await ip(['netns', 'add', probe]);
  } catch (e) {
    throw new Error(`this test needs Linux network namespaces (root and iproute2 'ip netns'): ${(e as Error).message}`);
  }
  await ip(['netns', 'del', probe]);
}

/**
 * Create namespaces `ugt-a-<rand>` and `ugt-b-<rand>`, a veth pair between them with
 * 10.77.<n>.1/24 and .2/24, loopback and veth up, and a multicast route on the veth.
 * On failure everything created so far is removed.
 */
export async function createLan(): Promise<NetnsLan> {
  const tag = randomBytes(3).toString('hex');
  const net = `10.77.${1 + (Number.parseInt(tag, 16) % 254)}`;
  const a = `ugt-a-${tag}`;
  const b = `ugt-b-${tag}`;
  const ifA = `ugta${tag}`;
  const ifB = `ugtb${tag}`;
  const made: string[] = [];
  const destroy = async () => {
    for (const ns of made.splice(0)) await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
  };
  try {
    for (const ns of [a, b]) {
      await ip(['netns', 'add', ns]);
      made.push(ns);
    }
    await ip(['link', 'add', ifA, 'netns', a, 'type', 'veth', 'peer', 'name', ifB, 'netns', b]);
    for (const [ns, dev, addr] of [
      [a, ifA, `${net}.1`],
      [b, ifB, `${net}.2`],
    ] as const) {
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev]);
      await ip(['-n', ns, 'link', 'set', dev, 'up']);
      await ip(['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', dev]);
    }
  } catch (e) {
    await destroy();
    throw e;
  }
  return { a, b, ifA, ifB, ipA: `${net}.1`, ipB: `${net}.2`, destroy };
}

/** Run a command inside a namespace to completion. */
export function execIn(ns: string, cmd: string, args: string[], opts: { timeoutMs?: number } = {}) {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Start a long-running command inside a namespace (see `start` in proc.ts). */
export function startIn(ns: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}) {
  return start('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}
