import { describe, expect, it } from 'vitest';
import { SseParser } from '../src/events.js';
import { formatAge, formatBytes, linksOf, picture, RateMeter, type Snapshot, type Stream } from '../src/model.js';

const ALICE = 'aliceaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const BOB = 'bobbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';
const GW = 'gwgggggggggggggggggggggggggggggggggggggggggggggggggg';

const stream = (over: Partial<Stream>): Stream => ({
  sid: '1',
  proto: 'ssh-direct',
  src: '127.0.0.1:5000',
  target: 'bob.mesh.internal:8080',
  bytesIn: 0,
  bytesOut: 0,
  ageMs: 0,
  ...over,
});

/** The gateway of the quickstart: alice and bob connected to its SSH server. */
const gateway = (time: number, streams: Stream[]): Snapshot => ({
  time,
  node: { id: GW, names: ['gateway.mesh.internal', `${GW}.m`] },
  carriers: {
    ssh: {
      gateways: [],
      peers: [
        { key: 'c1', id: ALICE, names: [`${ALICE}.m:0`, 'alice.mesh.internal:0'] },
        { key: 'c2', id: BOB, names: [`${BOB}.m:0`, 'bob.mesh.internal:0'] },
      ],
    },
  },
  streams,
  counters: { opened: 1, failed: 0, bytesIn: 0, bytesOut: 0, active: streams.length },
});

describe('picture', () => {
  it('puts peers around the node with their names, without the id names and the :0 port', () => {
    const p = picture(gateway(1000, []), undefined);
    expect(p.self).toMatchObject({ testid: `node-${GW}`, label: 'gateway.mesh.internal', names: ['gateway.mesh.internal'] });
    expect(p.neighbors.map((n) => [n.testid, n.kind, n.label, n.names])).toEqual([
      [`node-${ALICE}`, 'peer', 'alice.mesh.internal', ['alice.mesh.internal']],
      [`node-${BOB}`, 'peer', 'bob.mesh.internal', ['bob.mesh.internal']],
    ]);
    expect(p.neighbors.every((n) => n.streams === 0 && n.rate === undefined)).toBe(true);
  });

  it('counts a relayed stream on both links and turns successive snapshots into bytes per second', () => {
    const meter = new RateMeter();
    const s = (bytesOut: number) => stream({ sid: '7', peer: ALICE, carrier: 'ssh-reverse', via: 'c2', bytesIn: 100, bytesOut });
    const first = gateway(10_000, [s(1000)]);
    expect(meter.update(first)).toBeUndefined();
    const rates = meter.update(gateway(12_000, [s(5000)]));
    expect(rates?.get('7')).toBe(2000);
    const p = picture(gateway(12_000, [s(5000)]), rates);
    expect(p.neighbors.map((n) => [n.label, n.streams, n.rate])).toEqual([
      ['alice.mesh.internal', 1, 2000],
      ['bob.mesh.internal', 1, 2000],
    ]);
    expect(p.total).toBe(2000);
    // A stream seen for the first time counts all its bytes since the last snapshot.
    const more = meter.update(gateway(13_000, [s(5000), stream({ sid: '8', bytesIn: 300, carrier: 'direct' })]));
    expect(Object.fromEntries(more!)).toEqual({ '7': 0, '8': 300 });
  });

  it('puts ssh streams on their gateway, other carriers on their own node', () => {
    const gw = { name: 'gateway', address: '127.0.0.1:15022', connected: true, registered: ['alice.mesh.internal', `${ALICE}.m`] };
    expect(linksOf(stream({ carrier: 'ssh', via: 'gateway', peer: 'local' }), [gw], [])).toEqual(['gateway-gateway']);
    expect(linksOf(stream({ carrier: 'ssh', peer: 'local' }), [gw], [])).toEqual(['gateway-gateway']);
    // in from the gateway, out to a local service
    expect(linksOf(stream({ carrier: 'direct', peer: 'gateway' }), [gw], [])).toEqual(['gateway-gateway', 'carrier-direct']);
    expect(linksOf(stream({ carrier: 'direct', peer: 'local' }), [gw], [])).toEqual(['carrier-direct']);
    const p = picture(
      {
        time: 1,
        node: { id: ALICE, names: ['alice.mesh.internal', `${ALICE}.m`] },
        carriers: { ssh: { gateways: [gw], peers: [] } },
        streams: [stream({ carrier: 'ssh', via: 'gateway', peer: 'local' }), stream({ sid: '2', carrier: 'direct', peer: 'local' })],
        counters: { opened: 2, failed: 0, bytesIn: 0, bytesOut: 0, active: 2 },
      },
      undefined,
    );
    expect(p.neighbors.map((n) => [n.testid, n.names, n.streams])).toEqual([
      ['gateway-gateway', ['alice.mesh.internal'], 1],
      ['carrier-direct', [], 1],
    ]);
  });
});

describe('SseParser', () => {
  it('splits events across chunk boundaries and joins multi-line data', () => {
    const got: [string, string][] = [];
    const p = new SseParser((name, data) => got.push([name, data]));
    p.push(': comment\n\nevent: snap');
    p.push('shot\ndata: {"a":');
    p.push('1}\n\ndata: one\ndata: two\r\n\r\n');
    expect(got).toEqual([
      ['snapshot', '{"a":1}'],
      ['message', 'one\ntwo'],
    ]);
  });
});

describe('formats', () => {
  it('bytes and ages', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(200 * 1024 * 1024)).toBe('200 MiB');
    expect(formatAge(4_900)).toBe('4 s');
    expect(formatAge(125_000)).toBe('2 min 5 s');
  });
});
