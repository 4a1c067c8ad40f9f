/**
 * The `local` (multicast) source on one host: multicast over the loopback interface with
 * `loopback: true`, a random UDP port per test. Forged datagrams are sent to the source's port
 * from a plain UDP socket.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { type ErrorCode, ErrorCodes, identityFromPem, type Logger, type NodeIdentity, UgateError } from '@ugate/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Announcement,
  decodeAnnouncement,
  type Endpoint,
  encodeAnnouncement,
  MAX_ANNOUNCEMENT,
  type MulticastInit,
  type MulticastSource,
  multicastSource,
  type Update,
} from '../src/index.js';

function newIdentity(): NodeIdentity {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return identityFromPem(privateKey.export({ type: 'sec1', format: 'pem' }).toString());
}

async function udpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Debug {
  code?: ErrorCode;
  reason?: string;
}

/** A running source with what it pushed and logged. */
interface Running {
  source: MulticastSource;
  updates: (Update & { at: number })[];
  records: Map<string, readonly Endpoint[] | null>;
  debug: Debug[];
}

const running: MulticastSource[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.close()));
});

async function run(init: Partial<MulticastInit> & { port: number }): Promise<Running> {
  const r: Running = {
    source: multicastSource({
      identity: newIdentity(),
      names: [],
      carriers: [{ carrier: 'ssh', port: 15022 }],
      interfaces: ['127.0.0.1'],
      loopback: true,
      ...init,
    }),
    updates: [],
    records: new Map(),
    debug: [],
  };
  const noop = () => {};
  const logger: Logger = {
    error: noop,
    warn: noop,
    info: noop,
    debug: (o: object | string) => {
      if (typeof o === 'object') r.debug.push(o as Debug);
    },
    child: () => logger,
  };
  running.push(r.source);
  await r.source.start(
    {
      update: (u) => {
        r.updates.push({ ...u, at: Date.now() });
        r.records.set(u.host, u.endpoints);
      },
      reset: () => r.records.clear(),
    },
    logger,
  );
  return r;
}

const pinned = (id: string, carrier: Endpoint['carrier'], port: number, host = '127.0.0.1'): Endpoint => ({
  carrier,
  address: { host, port },
  identity: id,
  labels: { source: 'multicast' },
});

describe('multicast source on one host', () => {
  it('two nodes publish each other with the exact endpoints, and never themselves', async () => {
    const port = await udpPort();
    const idA = newIdentity();
    const idB = newIdentity();
    const a = await run({
      port,
      identity: idA,
      names: ['alpha.lan.test'],
      carriers: [
        { carrier: 'ssh', port: 2201 },
        { carrier: 'hbone', port: 2202 },
      ],
    });
    const b = await run({ port, identity: idB, names: ['beta.lan.test', 'shared.lan.test'], carriers: [{ carrier: 'hbone', port: 2302 }] });

    await waitFor(() => a.records.has('shared.lan.test') && b.records.has('alpha.lan.test'), 'both sides');
    const eB = [pinned(idB.id, 'hbone', 2302)];
    const eA = [pinned(idA.id, 'ssh', 2201), pinned(idA.id, 'hbone', 2202)];
    expect(Object.fromEntries(a.records)).toEqual({ [`${idB.id}.m`]: eB, 'beta.lan.test': eB, 'shared.lan.test': eB });
    expect(Object.fromEntries(b.records)).toEqual({ [`${idA.id}.m`]: eA, 'alpha.lan.test': eA });

    // Our own packets come back over loopback and are ignored.
    await waitFor(() => a.source.status().own > 0 && b.source.status().own > 0, 'own announcements looped back');
    expect(a.records.has(`${idA.id}.m`)).toBe(false);
    const st = a.source.status();
    expect(st.peers).toEqual([expect.objectContaining({ id: idB.id, address: '127.0.0.1', names: ['beta.lan.test', 'shared.lan.test'] })]);
    expect(st.dropped).toEqual({});
    expect(st.interfaces).toEqual(['127.0.0.1']);
  });

  it('a name announced by two nodes gets both nodes’ endpoints', async () => {
    const port = await udpPort();
    const [x, y] = [newIdentity(), newIdentity()];
    const watcher = await run({ port });
    await run({ port, identity: x, names: ['web.lan.test'], carriers: [{ carrier: 'ssh', port: 3001 }] });
    await run({ port, identity: y, names: ['web.lan.test'], carriers: [{ carrier: 'ssh', port: 3002 }] });
    await waitFor(() => (watcher.records.get('web.lan.test')?.length ?? 0) === 2, 'two endpoints for web.lan.test');
    const want = [pinned(x.id, 'ssh', 3001), pinned(y.id, 'ssh', 3002)].sort((p, q) => (p.identity! < q.identity! ? -1 : 1));
    expect(watcher.records.get('web.lan.test')).toEqual(want);
  });
});

describe('announcements the receiver must drop', () => {
  const C = newIdentity();
  const D = newIdentity();
  const E = newIdentity();
  const ann = (who: NodeIdentity, extra: Partial<Announcement> = {}): Announcement => ({
    id: who.id,
    spki: who.spki,
    names: [`${who.id.slice(0, 8)}.lan.test`],
    carriers: [{ carrier: 'ssh', port: 4000 }],
    intervalMs: 10_000,
    ts: Date.now(),
    seq: 100,
    ...extra,
  });
  const packet = (who: NodeIdentity, extra: Partial<Announcement> = {}, key: KeyObject = who.privateKey) =>
    encodeAnnouncement(ann(who, extra), key);

  it('drops forged, stale, replayed and garbage datagrams, counts them, and keeps working', async () => {
    const port = await udpPort();
    const rx = await run({ port });
    const tx = createSocket('udp4');
    const send = (b: Buffer) => new Promise<void>((r) => tx.send(b, port, '127.0.0.1', () => r()));
    const total = () => rx.source.status().received;
    try {
      // A genuine announcement is the control: it is accepted.
      const good = packet(C, { seq: 100 });
      await send(good);
      await waitFor(() => rx.records.has(`${C.id}.m`), 'C accepted');
      expect(rx.records.get(`${C.id}.m`)).toEqual([pinned(C.id, 'ssh', 4000)]);

      const flipped = Buffer.from(packet(C, { seq: 300 }));
      flipped[flipped.length - 10]! ^= 0x01;
      const forged: [string, Buffer][] = [
        ['duplicate', good], // the same bytes again
        ['replay', packet(C, { seq: 99 })], // an older sequence, freshly signed
        ['signature', packet(D, {}, E.privateKey)], // D's ID and key, signed by E
        ['signature', flipped],
        ['id-mismatch', packet(E, { id: D.id })], // E's key, claiming D's ID
        ['stale', packet(D, { ts: Date.now() - 120_000 })],
        ['stale', packet(D, { ts: Date.now() + 120_000 })],
        ['malformed', packet(D, { names: [`${E.id}.m`] })], // claims a key-derived name
        ['malformed', packet(D, { names: ['Not A Name!'] })],
        ['malformed', Buffer.from(Array.from({ length: 200 }, (_, i) => (i * 37) & 0xff))],
        ['malformed', Buffer.concat([Buffer.from('UGM\x01{"id":'), Buffer.alloc(64)])],
        ['version', Buffer.concat([Buffer.from('UGM\x09{}'), Buffer.alloc(64)])],
        ['size', Buffer.alloc(MAX_ANNOUNCEMENT + 1, 0x55)],
        ['size', Buffer.from('UGM')],
      ];
      for (const [, b] of forged) {
        const before = total();
        await send(b);
        await waitFor(() => total() > before, 'datagram received');
      }

      const want: Record<string, number> = {};
      for (const [reason] of forged) want[reason] = (want[reason] ?? 0) + 1;
      expect(rx.source.status().dropped).toEqual(want);
      expect(rx.source.status().accepted).toBe(1);
      // One debug line per drop, with its error code.
      const drops = rx.debug.filter((d) => d.reason !== undefined);
      expect(drops.map((d) => d.reason)).toEqual(forged.map(([r]) => r));
      const auth = ['duplicate', 'replay', 'signature', 'id-mismatch', 'stale'];
      for (const d of drops) expect(d.code).toBe(auth.includes(d.reason!) ? ErrorCodes.AUTH : ErrorCodes.BAD_REQUEST);
      // Nothing but C was ever published.
      expect(new Set(rx.updates.map((u) => u.host))).toEqual(new Set([`${C.id}.m`, `${C.id.slice(0, 8)}.lan.test`]));

      // The source still accepts genuine announcements afterwards, including a newer one from C.
      await send(packet(D));
      await send(packet(C, { seq: 101, carriers: [{ carrier: 'hbone', port: 4008 }] }));
      await waitFor(() => rx.records.has(`${D.id}.m`), 'D accepted');
      await waitFor(() => rx.records.get(`${C.id}.m`)?.[0]?.carrier === 'hbone', 'C updated');
      expect(rx.records.get(`${C.id}.m`)).toEqual([pinned(C.id, 'hbone', 4008)]);
    } finally {
      tx.close();
    }
  });

  it('removes a record 3 intervals after the last announcement, not before', async () => {
    const port = await udpPort();
    const rx = await run({ port });
    const tx = createSocket('udp4');
    const send = (b: Buffer) => new Promise<void>((r) => tx.send(b, port, '127.0.0.1', () => r()));
    const host = `${C.id}.m`;
    try {
      const first = packet(C, { intervalMs: 300, seq: 1 });
      await send(first);
      await waitFor(() => rx.records.has(host), 'C accepted');
      await new Promise((r) => setTimeout(r, 400));
      const refreshed = Date.now();
      await send(packet(C, { intervalMs: 300, seq: 2 }));
      await waitFor(() => rx.source.status().accepted === 2, 'refresh accepted');
      await waitFor(() => rx.records.get(host) === null, 'expiry');
      const removed = rx.updates.find((u) => u.host === host && u.endpoints === null)!;
      // Without the refresh it would expire ~500 ms after `refreshed`; with it, 3 × 300 ms after (less timer rounding).
      expect(removed.at - refreshed).toBeGreaterThanOrEqual(3 * 300 - 50);
      expect(rx.records.get(`${C.id.slice(0, 8)}.lan.test`)).toBeNull();
      expect(rx.updates.filter((u) => u.host === host).map((u) => u.endpoints === null)).toEqual([false, true]);
      expect(rx.source.status().peers).toEqual([]);

      // Old packets (still within maxAgeMs) cannot bring the expired peer back.
      await send(first);
      await send(packet(C, { intervalMs: 300, seq: 2 }));
      await waitFor(() => Object.keys(rx.source.status().dropped).length === 2, 'both replays dropped');
      expect(rx.source.status().dropped).toEqual({ replay: 1, duplicate: 1 });
      expect(rx.records.get(host)).toBeNull();
    } finally {
      tx.close();
    }
  });
});

describe('announcement format', () => {
  it('round-trips and stays under the size limit', () => {
    const C = newIdentity();
    const a: Announcement = {
      id: C.id,
      spki: C.spki,
      names: ['a.lan.test'],
      carriers: [{ carrier: 'ssh', port: 15022 }],
      intervalMs: 10_000,
      ts: 1,
      seq: 2,
    };
    const p = encodeAnnouncement(a, C.privateKey);
    expect(p.subarray(0, 4)).toEqual(Buffer.from('UGM\x01'));
    expect(p.length).toBeLessThan(MAX_ANNOUNCEMENT);
    expect(decodeAnnouncement(p)).toEqual({ ok: true, announcement: a });
  });

  it('refuses configurations it cannot announce', () => {
    const identity = newIdentity();
    const make = (init: Partial<MulticastInit>) => () =>
      multicastSource({ identity, names: [], carriers: [{ carrier: 'ssh', port: 15022 }], ...init });
    const config = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e instanceof UgateError ? e.code : e;
      }
      return 'no error';
    };
    const many = Array.from({ length: 40 }, (_, i) => `service-${i}.example.lan`);
    expect(config(make({ names: many }))).toBe(ErrorCodes.CONFIG);
    expect(config(make({ names: many.slice(0, 20) }))).toBe('no error');
    expect(config(make({ names: [`${identity.id}.m`] }))).toBe(ErrorCodes.CONFIG);
    expect(config(make({ names: ['10.0.0.1'] }))).toBe(ErrorCodes.CONFIG);
    expect(config(make({ group: '10.1.2.3' }))).toBe(ErrorCodes.CONFIG);
    expect(config(make({ carriers: [] }))).toBe(ErrorCodes.CONFIG);
    expect(config(make({ intervalMs: 10 }))).toBe(ErrorCodes.CONFIG);
  });
});
