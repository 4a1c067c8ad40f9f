import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect } from 'node:net';
import { ErrorCodes, identityFromPem, type Listener, type NodeIdentity, vip6, vip6FromId } from '@ugate/core';
import { type DnsServerRecords, dnsQuery, dnsServer } from '@ugate/discovery';
import { decode, encode, type Packet } from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Bind9, startBind9 } from '../../../test/support/bind9.js';
import { recordingLogger, waitFor } from '../../../test/support/listener.js';
import { run } from '../../../test/support/proc.js';

const newIdentity = (prefix?: string): NodeIdentity =>
  identityFromPem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString(), prefix);

const node = newIdentity();
const MANY = Array.from({ length: 100 }, (_, i) => `fd00::${(i + 1).toString(16)}`);
const NAMES: Record<string, DnsServerRecords> = {
  'web.mesh.internal': { a: ['10.1.2.3'], aaaa: ['fd00::1:2'] },
  'onlyv4.mesh.internal': { a: ['10.1.2.4', 'not-an-ip'] },
  'many.mesh.internal': { aaaa: MANY },
  bare: { a: ['10.9.9.9'] },
};

const log = recordingLogger();
let bind: Bind9;
let server: Listener;
let port: number;
let blackhole: UdpSocket;

beforeAll(async () => {
  bind = await startBind9({ zones: [{ origin: 'upstream.test', records: 'www A 192.0.2.10' }] });
  server = dnsServer({
    listen: '127.0.0.1:0',
    domain: 'mesh.internal',
    lookup: (name) => {
      if (name === 'boom.mesh.internal') throw new Error('registry is broken');
      return NAMES[name];
    },
    forwarders: [bind.server],
    logger: log,
    ttl: 30,
  });
  await server.listen();
  port = Number(server.addresses()[0]?.split(':')[1]);
  blackhole = createSocket('udp4');
  await new Promise<void>((resolve) => blackhole.bind(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  await server?.close();
  blackhole?.close();
  await bind?.stop();
});

async function dig(p: number, ...args: string[]): Promise<string> {
  const r = await run('dig', [`@127.0.0.1`, '-p', String(p), '+time=3', '+tries=1', ...args]);
  return r.stdout.toString();
}
const status = (out: string) => /status: (\w+)/.exec(out)?.[1];
const flags = (out: string) => /;; flags: ([a-z ]*);/.exec(out)?.[1]?.split(' ') ?? [];
const section = (out: string, name: string) => out.split(`;; ${name} SECTION:\n`)[1]?.split('\n\n')[0] ?? '';

describe('dnsServer', () => {
  it('answers <id>.m and <id>.m.<domain> with the VIP6 of the key, over UDP and TCP', async () => {
    expect((await dig(port, `${node.id}.m`, 'AAAA', '+short')).trim()).toBe(node.vip6);
    expect((await dig(port, `${node.id}.m.mesh.internal`, 'AAAA', '+short')).trim()).toBe(node.vip6);
    expect((await dig(port, `${node.id}.m`, 'AAAA', '+short', '+tcp')).trim()).toBe(node.vip6);
    const out = await dig(port, `${node.id}.m`, 'A');
    expect(status(out)).toBe('NOERROR');
    expect(section(out, 'ANSWER')).toBe('');
  });

  it('computes the VIP6 from the ID the same way core does from the key, for any prefix', () => {
    const other = newIdentity('fd12:3456:789a:1::');
    expect(vip6FromId(other.id, 'fd12:3456:789a:1::/64')).toBe(other.vip6);
    expect(vip6FromId(other.id)).toBe(vip6(other.spki));
    expect(vip6FromId('not-an-id')).toBeUndefined();
  });

  it('answers NXDOMAIN with the SOA for a .m label that is not a node ID', async () => {
    const notCanonical = `${node.id.slice(0, 51)}${node.id.endsWith('a') ? 'b' : 'r'}`;
    for (const name of [`${notCanonical}.m`, 'short.m']) {
      const out = await dig(port, name, 'AAAA');
      expect(status(out)).toBe('NXDOMAIN');
      expect(section(out, 'AUTHORITY')).toMatch(/^m\.\s+30\s+IN\s+SOA\s/);
    }
  });

  it('answers mesh names from the lookup callback, authoritatively', async () => {
    expect((await dig(port, 'web.mesh.internal', 'A', '+short')).trim()).toBe('10.1.2.3');
    expect((await dig(port, 'web.mesh.internal', 'AAAA', '+short')).trim()).toBe('fd00::1:2');
    expect((await dig(port, 'WEB.Mesh.Internal.', 'A', '+short')).trim()).toBe('10.1.2.3');
    expect((await dig(port, 'bare', 'A', '+short')).trim()).toBe('10.9.9.9');
    const out = await dig(port, 'web.mesh.internal', 'A');
    expect(flags(out)).toContain('aa');
    expect(section(out, 'ANSWER')).toMatch(/^web\.mesh\.internal\.\s+30\s+IN\s+A\s+10\.1\.2\.3$/);
  });

  it('answers NODATA for a known name without records of the asked type, skipping invalid addresses', async () => {
    const out = await dig(port, 'onlyv4.mesh.internal', 'AAAA');
    expect(status(out)).toBe('NOERROR');
    expect(section(out, 'ANSWER')).toBe('');
    expect(section(out, 'AUTHORITY')).toMatch(/^mesh\.internal\.\s+30\s+IN\s+SOA\s/);
    expect((await dig(port, 'onlyv4.mesh.internal', 'A', '+short')).trim()).toBe('10.1.2.4');
  });

  it('answers NXDOMAIN with the SOA for an unknown mesh name, and the SOA at the apex', async () => {
    const out = await dig(port, 'unknown.mesh.internal', 'A');
    expect(status(out)).toBe('NXDOMAIN');
    expect(flags(out)).toContain('aa');
    expect(section(out, 'AUTHORITY')).toMatch(/^mesh\.internal\.\s+30\s+IN\s+SOA\s+mesh\.internal\. hostmaster\.mesh\.internal\. 1 /);
    expect((await dig(port, 'mesh.internal', 'SOA', '+short')).trim()).toMatch(/^mesh\.internal\. hostmaster\.mesh\.internal\. 1 /);
  });

  it('sets TC when an answer does not fit the client UDP size; the TCP retry gets it all', async () => {
    const udp = await dig(port, 'many.mesh.internal', 'AAAA', '+noedns', '+ignore');
    expect(flags(udp)).toContain('tc');
    const full = await dig(port, 'many.mesh.internal', 'AAAA', '+noedns', '+short');
    expect(full.trim().split('\n').sort()).toEqual([...MANY].sort());
  });

  it('relays other names to the forwarders and returns their reply under the client id', async () => {
    expect((await dig(port, 'www.upstream.test', 'A', '+short')).trim()).toBe('192.0.2.10');
    expect((await dig(port, 'www.upstream.test', 'A', '+short', '+tcp')).trim()).toBe('192.0.2.10');
    expect(status(await dig(port, 'nope.upstream.test', 'A'))).toBe('NXDOMAIN');
    // dnsQuery accepts a reply only with its own id and question.
    const r = await dnsQuery([`127.0.0.1:${port}`], 'www.upstream.test', 'A');
    expect(r.answers.map((a) => a.type === 'A' && a.data)).toEqual(['192.0.2.10']);
  });

  it('answers REFUSED for other names without forwarders, SERVFAIL when no forwarder answers', async () => {
    const lone = dnsServer({ listen: '127.0.0.1:0', lookup: () => undefined });
    const stuck = dnsServer({
      listen: '127.0.0.1:0',
      lookup: () => undefined,
      forwarders: [`127.0.0.1:${blackhole.address().port}`],
      forwardTimeoutMs: 200,
    });
    await lone.listen();
    await stuck.listen();
    try {
      const portOf = (l: Listener) => Number(l.addresses()[0]?.split(':')[1]);
      expect(status(await dig(portOf(lone), 'www.upstream.test', 'A'))).toBe('REFUSED');
      expect((await dig(portOf(lone), `${node.id}.m`, 'AAAA', '+short')).trim()).toBe(node.vip6);
      expect(status(await dig(portOf(stuck), 'www.upstream.test', 'A'))).toBe('SERVFAIL');
    } finally {
      await lone.close();
      await stuck.close();
    }
  });

  it('answers SERVFAIL when the lookup callback throws, and keeps serving', async () => {
    expect(status(await dig(port, 'boom.mesh.internal', 'A'))).toBe('SERVFAIL');
    expect(
      log.lines.some((l) => l.level === 'warn' && l.fields.code === ErrorCodes.INTERNAL && l.fields.name === 'boom.mesh.internal'),
    ).toBe(true);
    expect((await dig(port, 'web.mesh.internal', 'A', '+short')).trim()).toBe('10.1.2.3');
  });

  it('drops malformed UDP packets with one debug line each, and still answers', async () => {
    const dropped = () => log.lines.filter((l) => l.level === 'debug' && l.fields.code === ErrorCodes.BAD_REQUEST).length;
    const before = dropped();
    const sock = createSocket('udp4');
    const replies: Buffer[] = [];
    sock.on('message', (m) => replies.push(m));
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const send = (b: Buffer) => new Promise<void>((resolve) => sock.send(b, port, '127.0.0.1', () => resolve()));
    try {
      const valid: Packet = { type: 'query', id: 4242, flags: 0x100, questions: [{ name: 'web.mesh.internal', type: 'A' }] };
      const garbage = [
        randomBytes(100),
        Buffer.from([1, 2, 3]),
        // A header promising a question that is not there.
        Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        // A response, not a query.
        encode({ ...valid, type: 'response' }),
        // A compression pointer to itself.
        Buffer.from([0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]),
      ];
      for (const g of garbage) await send(g);
      await send(encode(valid));
      await waitFor(() => replies.length > 0, 5_000, 'a reply');
      // The first (and only) reply is the valid query's: none of the garbage got one.
      const reply = decode(replies[0]!);
      expect(reply.id).toBe(4242);
      expect(reply.answers?.map((a) => a.type === 'A' && a.data)).toEqual(['10.1.2.3']);
      await waitFor(() => dropped() - before >= garbage.length, 5_000, 'one debug line per dropped packet');
      expect(dropped() - before).toBe(garbage.length);
    } finally {
      sock.close();
    }
  });

  it('answers FORMERR to a query with two questions', async () => {
    const out = await dnsOverTcp({
      type: 'query',
      id: 7,
      questions: [
        { name: 'web.mesh.internal', type: 'A' },
        { name: 'bare', type: 'A' },
      ],
    });
    expect(out.id).toBe(7);
    expect(out.flags & 0xf).toBe(1);
  });

  it('closes a TCP connection that sends garbage, and still answers over TCP', async () => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.on('error', () => {});
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    const data: Buffer[] = [];
    sock.on('data', (c: Buffer) => data.push(c));
    sock.write(Buffer.concat([Buffer.from([0, 40]), randomBytes(40)]));
    await closed;
    expect(Buffer.concat(data)).toHaveLength(0);
    expect((await dig(port, 'web.mesh.internal', 'A', '+short', '+tcp')).trim()).toBe('10.1.2.3');
  });

  it('answers several queries on one TCP connection', async () => {
    const a = await dnsOverTcp(
      { type: 'query', id: 1, questions: [{ name: 'web.mesh.internal', type: 'A' }] },
      { type: 'query', id: 2, questions: [{ name: 'bare', type: 'A' }] },
    );
    expect(a.id).toBe(1);
  });
});

/** Send queries over one TCP connection (length-prefixed) and decode the first reply. */
async function dnsOverTcp(...queries: Packet[]): Promise<ReturnType<typeof decode> & { flags: number }> {
  const sock = connect({ host: '127.0.0.1', port });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    const frames = queries.map((q) => {
      const b = encode(q);
      return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
    });
    sock.write(Buffer.concat(frames));
    let buf = Buffer.alloc(0);
    const replies: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          replies.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
        if (replies.length === queries.length) resolve();
      });
      sock.once('close', () => reject(new Error(`closed after ${replies.length} replies`)));
    });
    const decoded = replies.map((r) => decode(r));
    expect(decoded.map((d) => d.id).sort()).toEqual(queries.map((q) => q.id).sort());
    return decoded.find((d) => d.id === queries[0]?.id) as ReturnType<typeof decode> & { flags: number };
  } finally {
    sock.destroy();
  }
}
