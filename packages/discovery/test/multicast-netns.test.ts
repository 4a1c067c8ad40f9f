/**
 * Multicast discovery between two hosts: two network namespaces joined by a veth pair, one
 * process in each running the built `local` source with default group, port and interfaces.
 * Each must publish the other's `<id>.m` and names with endpoints at the other's veth address,
 * and drop them once the other stops announcing. Needs root and `ip netns` (fails, never skips).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLan, type NetnsLan, requireNetns, startIn } from '../../../test/support/netns.js';

const PEER = fileURLToPath(new URL('../../../test/support/mcast-peer.mjs', import.meta.url));
const DIST = ['core', 'discovery'].map((p) => fileURLToPath(new URL(`../../${p}/dist/index.js`, import.meta.url)));

type Peer = ReturnType<typeof startIn>;
type Event = { event: string; id?: string; host?: string; endpoints?: unknown; status?: { peers: { id: string; address: string }[] } };

function events(p: Peer): Event[] {
  const out: Event[] = [];
  for (const line of p.output().split('\n')) {
    try {
      out.push(JSON.parse(line) as Event);
    } catch {
      // stderr noise or a line still being written
    }
  }
  return out;
}

/** Wait up to `timeoutMs` for an event; fail with the peer's output. */
async function until(p: Peer, match: (e: Event) => boolean, what: string, timeoutMs = 10_000): Promise<Event> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = events(p).find(match);
    if (e) return e;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; output:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let lan: NetnsLan | undefined;
const peers: Peer[] = [];

beforeAll(async () => {
  for (const f of DIST) if (!existsSync(f)) throw new Error(`${f} is missing: run npx tsc -b before this test`);
  await requireNetns();
  lan = await createLan();
});

afterAll(async () => {
  await Promise.all(peers.map((p) => p.stop('SIGKILL')));
  await lan?.destroy();
});

describe('multicast discovery across two namespaces', () => {
  it('each node publishes the other at its veth address, and drops it when it stops', async () => {
    const net = lan!;
    const a = startIn(net.a, 'node', [
      PEER,
      JSON.stringify({
        names: ['alpha.lan.test'],
        carriers: [
          { carrier: 'ssh', port: 15022 },
          { carrier: 'hbone', port: 15008 },
        ],
        intervalMs: 500,
      }),
    ]);
    const b = startIn(net.b, 'node', [
      PEER,
      JSON.stringify({ names: ['beta.lan.test'], carriers: [{ carrier: 'ssh', port: 2222 }], intervalMs: 500 }),
    ]);
    peers.push(a, b);
    const idA = (await until(a, (e) => e.event === 'ready', 'node A ready')).id!;
    const idB = (await until(b, (e) => e.event === 'ready', 'node B ready')).id!;
    expect(idA).not.toBe(idB);

    const pinnedB = [{ carrier: 'ssh', address: { host: net.ipB, port: 2222 }, identity: idB, labels: { source: 'multicast' } }];
    const pinnedA = [
      { carrier: 'ssh', address: { host: net.ipA, port: 15022 }, identity: idA, labels: { source: 'multicast' } },
      { carrier: 'hbone', address: { host: net.ipA, port: 15008 }, identity: idA, labels: { source: 'multicast' } },
    ];
    const seen = (p: Peer, host: string) => until(p, (e) => e.event === 'update' && e.host === host && e.endpoints !== null, host);
    expect((await seen(a, `${idB}.m`)).endpoints).toEqual(pinnedB);
    expect((await seen(a, 'beta.lan.test')).endpoints).toEqual(pinnedB);
    expect((await seen(b, `${idA}.m`)).endpoints).toEqual(pinnedA);
    expect((await seen(b, 'alpha.lan.test')).endpoints).toEqual(pinnedA);
    // Neither publishes itself.
    expect(events(a).some((e) => e.host === `${idA}.m`)).toBe(false);
    expect(events(b).some((e) => e.host === `${idB}.m`)).toBe(false);

    await b.stop('SIGTERM');
    const closed = events(b).find((e) => e.event === 'closed');
    expect(closed?.status?.peers).toEqual([expect.objectContaining({ id: idA, address: net.ipA })]);
    // B is silent now: after 3 × its 500 ms interval A removes both of its records.
    await until(a, (e) => e.event === 'update' && e.host === `${idB}.m` && e.endpoints === null, `${idB}.m expiry`);
    await until(a, (e) => e.event === 'update' && e.host === 'beta.lan.test' && e.endpoints === null, 'beta.lan.test expiry');
  });
});
