import { generateKeyPairSync } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { ErrorCodes, identityFromPem, isUgateError, makeTarget, type NodeIdentity, Router, spkiDigest } from '@ugate/core';
import { type Answer, Discovery, dnsQuery, dnsSource, type Endpoint, parseUgateTxt, reverseName } from '@ugate/discovery';
import { decode, encode } from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Bind9, startBind9 } from '../../../test/support/bind9.js';

const newIdentity = (): NodeIdentity =>
  identityFromPem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString());
const tlsa = (n: NodeIdentity) => `TLSA 3 1 1 ${spkiDigest(n.spki).toString('hex')}`;

const k1 = newIdentity();
const k2 = newIdentity();
// Over the 1232-byte EDNS UDP size, under BIND's 100-records-per-RRset limit.
const BIG = 90;

const MESH = `
node1 A 127.0.0.11
node1 AAAA fd00::11
node2 120 A 127.0.0.12
_ugate-ssh._tcp.web SRV 10 60 15022 node1
_ugate-ssh._tcp.web SRV 20 0 2222 node2
_ugate-hbone._tcp.web SRV 10 40 15008 node1
web A 127.0.0.99
_15022._tcp.node1 ${tlsa(k1)}
_15008._tcp.node1 ${tlsa(k1)}
_15008._tcp.node1 TLSA 2 0 1 ${'ab'.repeat(32)}
_2222._tcp.node2 ${tlsa(k2)}

wrong A 127.0.0.21
_ugate.wrong TXT "v=ugate1 id=${k1.id} carriers=ssh:15022"
_15022._tcp.wrong ${tlsa(k2)}

txtonly A 127.0.0.31
txtonly AAAA fd00::31
_ugate.txtonly TXT "v=ugate1 id=${k1.id}" " carriers=ssh:15022,hbone:15008"

plain A 127.0.0.41
alias CNAME plain
bad A 127.0.0.51
_ugate.bad TXT "v=ugate1 id=notanodeid carriers=ssh:15022"
short 2 A 127.0.0.61
long 86400 A 127.0.0.62
_ugate-ssh._tcp.gone SRV 0 0 15022 .
gone A 127.0.0.71
${Array.from({ length: BIG }, (_, i) => `big A 127.0.1.${i + 1}`).join('\n')}
`;

let bind: Bind9;
let blackhole: UdpSocket;
let dead: string;

beforeAll(async () => {
  bind = await startBind9({
    zones: [
      { origin: 'mesh.test', records: MESH },
      { origin: '0.0.127.in-addr.arpa', records: '11 PTR node1.mesh.test.' },
      { origin: '0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa', records: '1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR node1.mesh.test.' },
    ],
  });
  // A server that never answers (a firewalled or dead resolver).
  blackhole = createSocket('udp4');
  await new Promise<void>((resolve) => blackhole.bind(0, '127.0.0.1', resolve));
  dead = `127.0.0.1:${blackhole.address().port}`;
});

afterAll(async () => {
  blackhole?.close();
  await bind?.stop();
});

const signal = () => AbortSignal.timeout(10_000);
const byKey = (a: Endpoint, b: Endpoint) => JSON.stringify(a).localeCompare(JSON.stringify(b));
const sorted = (ans: Answer | undefined) => [...(ans?.endpoints ?? [])].sort(byKey);
const ep = (carrier: Endpoint['carrier'], host: string, port: number, rest: Partial<Endpoint> = {}): Endpoint => ({
  carrier,
  address: { host, port },
  ...rest,
});

describe('dnsQuery', () => {
  it('reads answers and NXDOMAIN from a real server', async () => {
    const r = await dnsQuery([bind.server], 'plain.mesh.test', 'A');
    expect(r.rcode).toBe('NOERROR');
    expect(r.transport).toBe('udp');
    expect(r.answers.map((a) => a.type === 'A' && a.data)).toEqual(['127.0.0.41']);
    const nx = await dnsQuery([bind.server], 'nope.mesh.test', 'A');
    expect(nx.rcode).toBe('NXDOMAIN');
    expect(nx.answers).toEqual([]);
    expect(nx.authorities.map((a) => a.type)).toEqual(['SOA']);
  });

  it('retries over TCP when the UDP reply is truncated', async () => {
    const r = await dnsQuery([bind.server], 'big.mesh.test', 'A');
    expect(r.transport).toBe('tcp');
    expect(r.answers).toHaveLength(BIG);
  });

  it('moves to the next server when one does not answer', async () => {
    const r = await dnsQuery([dead, bind.server], 'plain.mesh.test', 'A', { timeoutMs: 300 });
    expect(r.server).toBe(bind.server);
    expect(r.answers).toHaveLength(1);
  });

  it('fails with UNREACHABLE naming every server when none answers', async () => {
    const err = await dnsQuery([dead, dead], 'plain.mesh.test', 'A', { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
    expect((err as Error).message).toContain(`${dead} over udp: no reply within 200 ms`);
    expect((err as Error).message.split(dead)).toHaveLength(3);
  });

  it('fails fast on a closed port (ICMP port unreachable), without waiting for the timeout', async () => {
    const probe = createSocket('udp4');
    await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
    const closed = `127.0.0.1:${probe.address().port}`;
    await new Promise<void>((resolve) => probe.close(resolve));
    const err = await dnsQuery([closed], 'plain.mesh.test', 'A', { timeoutMs: 20_000 }).catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
    expect((err as Error).message).toContain('ECONNREFUSED');
  });

  it('treats REFUSED as a failed server, not an answer', async () => {
    // This instance is authoritative only: a name outside its zones is REFUSED.
    const err = await dnsQuery([bind.server], 'example.com', 'A').catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
    expect((err as Error).message).toContain('answered REFUSED');
  });

  it('ignores replies with another id or another question', async () => {
    const liar = createSocket('udp4');
    await new Promise<void>((resolve) => liar.bind(0, '127.0.0.1', resolve));
    liar.on('message', (msg, rinfo) => {
      const q = decode(msg);
      const answer = { type: 'A' as const, name: 'plain.mesh.test', ttl: 60, data: '10.6.6.6' };
      const wrongId = { ...q, type: 'response' as const, id: ((q.id ?? 0) + 1) & 0xffff, answers: [answer] };
      const wrongQuestion = {
        ...q,
        type: 'response' as const,
        questions: [{ name: 'other.mesh.test', type: 'A' as const }],
        answers: [answer],
      };
      liar.send(encode(wrongId), rinfo.port, rinfo.address);
      liar.send(encode(wrongQuestion), rinfo.port, rinfo.address);
      liar.send(Buffer.from('not dns'), rinfo.port, rinfo.address);
    });
    try {
      const server = `127.0.0.1:${liar.address().port}`;
      const err = await dnsQuery([server], 'plain.mesh.test', 'A', { timeoutMs: 300 }).catch((e: unknown) => e);
      expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
      const ok = await dnsQuery([server, bind.server], 'plain.mesh.test', 'A', { timeoutMs: 300 });
      expect(ok.answers.map((a) => a.type === 'A' && a.data)).toEqual(['127.0.0.41']);
    } finally {
      liar.close();
    }
  });

  it('stops when the caller aborts', async () => {
    const ac = new AbortController();
    const p = dnsQuery([dead], 'plain.mesh.test', 'A', { timeoutMs: 5_000, signal: ac.signal });
    ac.abort();
    const err = await p.catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.ABORTED);
  });
});

describe('dnsSource', () => {
  const src = () => dnsSource({ servers: [bind.server] });

  it('turns SRV + TLSA 3 1 1 into carrier endpoints pinned to the node IDs', async () => {
    const ans = await src().lookup(makeTarget('web.mesh.test', 443), signal());
    expect(sorted(ans)).toEqual(
      [
        ep('ssh', '127.0.0.11', 15022, { identity: k1.id, weight: 60, priority: 10 }),
        ep('ssh', 'fd00::11', 15022, { identity: k1.id, weight: 60, priority: 10 }),
        ep('ssh', '127.0.0.12', 2222, { identity: k2.id, weight: 0, priority: 20 }),
        ep('hbone', '127.0.0.11', 15008, { identity: k1.id, weight: 40, priority: 10 }),
        ep('hbone', 'fd00::11', 15008, { identity: k1.id, weight: 40, priority: 10 }),
      ].sort(byKey),
    );
    // The smallest TTL of the records used (node2's A record, 120 s).
    expect(ans?.ttlMs).toBe(120_000);
    expect(ans?.detail).toContain('_ugate-ssh._tcp.web.mesh.test SRV');
    expect(ans?.detail).toContain('_15022._tcp.node1.mesh.test TLSA');
    expect(ans?.detail).toContain('_15008._tcp.node1.mesh.test: 1 TLSA record(s) other than 3 1 1 ignored');
  });

  it('uses the TLSA identity when it disagrees with the TXT id, and says so', async () => {
    const ans = await src().lookup(makeTarget('wrong.mesh.test', 22), signal());
    expect(ans?.endpoints).toEqual([ep('ssh', '127.0.0.21', 15022, { identity: k2.id, weight: 1, priority: 0 })]);
    expect(ans?.detail).toContain(`disagrees with TXT id ${k1.id.slice(0, 12)}`);
    expect(ans?.detail).toContain('using the TLSA');
  });

  it('reads carriers and the node ID from the TXT record when there is no SRV', async () => {
    const ans = await src().lookup(makeTarget('txtonly.mesh.test', 80), signal());
    const common = { identity: k1.id, weight: 1, priority: 0 };
    expect(sorted(ans)).toEqual(
      [
        ep('ssh', '127.0.0.31', 15022, common),
        ep('ssh', 'fd00::31', 15022, common),
        ep('hbone', '127.0.0.31', 15008, common),
        ep('hbone', 'fd00::31', 15008, common),
      ].sort(byKey),
    );
    expect(ans?.detail).toContain('_ugate.txtonly.mesh.test TXT');
  });

  it('falls back to direct endpoints on the requested port for plain A records (through CNAMEs too)', async () => {
    const ans = await src().lookup(makeTarget('plain.mesh.test', 8080), signal());
    expect(ans?.endpoints).toEqual([ep('direct', '127.0.0.41', 8080)]);
    const alias = await src().lookup(makeTarget('alias.mesh.test', 8080), signal());
    expect(alias?.endpoints).toEqual([ep('direct', '127.0.0.41', 8080)]);
    expect(alias?.detail).toContain('alias.mesh.test A (CNAME plain.mesh.test)');
  });

  it('ignores a malformed TXT record and says why', async () => {
    const ans = await src().lookup(makeTarget('bad.mesh.test', 8080), signal());
    expect(ans?.endpoints).toEqual([ep('direct', '127.0.0.51', 8080)]);
    expect(ans?.detail).toContain('id= is not a node ID');
  });

  it('skips SRV targets of "."', async () => {
    const ans = await src().lookup(makeTarget('gone.mesh.test', 8080), signal());
    expect(ans?.endpoints).toEqual([ep('direct', '127.0.0.71', 8080)]);
    expect(ans?.detail).toContain('_ugate-ssh._tcp.gone.mesh.test SRV to .:15022 means "not available", skipped');
  });

  it('clamps the TTL to [minTtlMs, maxTtlMs]', async () => {
    const s = dnsSource({ servers: [bind.server], minTtlMs: 5_000, maxTtlMs: 60_000 });
    expect((await s.lookup(makeTarget('short.mesh.test', 1), signal()))?.ttlMs).toBe(5_000);
    expect((await s.lookup(makeTarget('long.mesh.test', 1), signal()))?.ttlMs).toBe(60_000);
    expect((await s.lookup(makeTarget('plain.mesh.test', 1), signal()))?.ttlMs).toBe(60_000);
    const wide = dnsSource({ servers: [bind.server], minTtlMs: 0, maxTtlMs: 10_000_000 });
    expect((await wide.lookup(makeTarget('short.mesh.test', 1), signal()))?.ttlMs).toBe(2_000);
  });

  it('answers undefined for NXDOMAIN', async () => {
    expect(await src().lookup(makeTarget('nope.mesh.test', 80), signal())).toBeUndefined();
  });

  it('reads every record of a truncated answer over TCP', async () => {
    const ans = await src().lookup(makeTarget('big.mesh.test', 80), signal());
    expect(ans?.endpoints).toHaveLength(BIG);
    expect(new Set(ans?.endpoints.map((e) => e.address.host)).size).toBe(BIG);
  });

  it('fails (UNREACHABLE) when no server answers, and uses the next server when one does', async () => {
    const down = dnsSource({ servers: [dead], timeoutMs: 200 });
    const err = await down.lookup(makeTarget('plain.mesh.test', 80), signal()).catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
    const second = dnsSource({ servers: [dead, bind.server], timeoutMs: 200 });
    expect((await second.lookup(makeTarget('plain.mesh.test', 80), signal()))?.endpoints).toHaveLength(1);
  });

  it('with requireAd, drops endpoints whose identity comes from an unvalidated answer', async () => {
    const strict = dnsSource({ servers: [bind.server], requireAd: true });
    const web = await strict.lookup(makeTarget('web.mesh.test', 443), signal());
    expect(web?.endpoints).toEqual([]);
    expect(web?.detail).toContain('not DNSSEC-validated (AD bit clear)');
    const txt = await strict.lookup(makeTarget('txtonly.mesh.test', 443), signal());
    expect(txt?.endpoints).toEqual([]);
    // Plain names carry no identity: unaffected.
    expect((await strict.lookup(makeTarget('plain.mesh.test', 80), signal()))?.endpoints).toHaveLength(1);
  });

  it('maps IPv4 and IPv6 addresses to names with PTR', async () => {
    const s = src();
    expect(await s.reverse?.('127.0.0.11', signal())).toBe('node1.mesh.test');
    expect(await s.reverse?.('fd00::11', signal())).toBe('node1.mesh.test');
    expect(await s.reverse?.('::ffff:127.0.0.11', signal())).toBe('node1.mesh.test');
    expect(await s.reverse?.('127.0.0.99', signal())).toBeUndefined();
    expect(await s.reverse?.('not-an-ip', signal())).toBeUndefined();
  });

  it('is asked only about names under its domains, never about IPs', () => {
    const s = dnsSource({ servers: [bind.server], domains: ['mesh.test', '*.corp.example'] });
    expect(s.name).toBe('dns');
    expect(s.handles(makeTarget('web.mesh.test', 1))).toBe(true);
    expect(s.handles(makeTarget('mesh.test', 1))).toBe(true);
    expect(s.handles(makeTarget('a.b.corp.example', 1))).toBe(true);
    expect(s.handles(makeTarget('evilmesh.test', 1))).toBe(false);
    expect(s.handles(makeTarget('example.com', 1))).toBe(false);
    expect(s.handles(makeTarget('127.0.0.1', 1))).toBe(false);
    expect(src().handles(makeTarget('anything.example', 1))).toBe(true);
  });

  it('rejects a configuration it cannot use', () => {
    for (const init of [{ servers: [] }, { servers: ['dns.example:53'] }, { servers: [bind.server], minTtlMs: 10, maxTtlMs: 5 }]) {
      let err: unknown;
      try {
        dnsSource(init);
      } catch (e) {
        err = e;
      }
      expect(isUgateError(err) && err.code).toBe(ErrorCodes.CONFIG);
    }
  });
});

describe('dnsSource behind the resolver', () => {
  it('resolves names to pinned carriers, and an IP through its PTR name', async () => {
    const d = new Discovery({ router: new Router(), sources: [dnsSource({ servers: [bind.server], domains: ['mesh.test'] })] });
    const web = await d.explain(makeTarget('web.mesh.test', 443));
    expect(web.answeredBy).toBe('dns');
    // maxAttempts (3) upstreams, all from priority 10 (node1) before node2's priority 20, each pinned to node1's key.
    expect(web.upstreams.every((u) => u.identity === k1.id && ['ssh', 'hbone'].includes(u.carrier))).toBe(true);
    const byIp = await d.explain(makeTarget('127.0.0.11', 8080));
    expect(byIp.answeredBy).toBe('dns');
    expect(byIp.steps.some((s) => s.detail === '127.0.0.11 is node1.mesh.test')).toBe(true);
    // node1 itself publishes no ugate records: a direct endpoint, asked for its name.
    expect(byIp.upstreams.map((u) => [u.carrier, u.address?.host, u.address?.port]).sort()).toEqual([
      ['direct', '127.0.0.11', 8080],
      ['direct', 'fd00::11', 8080],
    ]);
  });
});

describe('record helpers', () => {
  it('parses v=ugate1 TXT strictly', () => {
    expect(parseUgateTxt(`v=ugate1 id=${k1.id} carriers=ssh:15022,hbone:15008`)).toEqual({
      id: k1.id,
      carriers: [
        { carrier: 'ssh', port: 15022 },
        { carrier: 'hbone', port: 15008 },
      ],
    });
    expect(parseUgateTxt('v=ugate1 carriers=hbonec:15009 future=x')).toEqual({ carriers: [{ carrier: 'hbonec', port: 15009 }] });
    const bad = [
      'v=spf1 -all',
      `v=ugate1 id=${k1.id}`,
      'v=ugate1 carriers=ssh:0',
      'v=ugate1 carriers=ssh:70000',
      'v=ugate1 carriers=ftp:21',
      'v=ugate1 carriers=ssh:1,ssh:2',
      'v=ugate1 carriers=ssh:1 carriers=hbone:2',
      'v=ugate1 carriers=ssh:1 junk',
      // A 52-character ID whose last character has non-zero padding bits is not canonical.
      `v=ugate1 id=${k1.id.slice(0, 51)}${k1.id.endsWith('a') ? 'b' : 'r'} carriers=ssh:1`,
    ];
    for (const t of bad) expect(typeof parseUgateTxt(t), t).toBe('string');
  });

  it('builds reverse names', () => {
    expect(reverseName('10.1.2.3')).toBe('3.2.1.10.in-addr.arpa');
    expect(reverseName('2001:db8::1')).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    expect(reverseName('::ffff:10.1.2.3')).toBe('3.2.1.10.in-addr.arpa');
    expect(reverseName('web.example')).toBeUndefined();
  });
});
