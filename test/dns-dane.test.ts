/**
 * DNS discovery end to end, against bind9, with ugate nodes as separate processes:
 * SRV + TLSA (DANE `3 1 1`) name a node and pin its key; a wrong TLSA is refused; a TXT record
 * advertises carriers and ID; an IP-only stream is mapped to its name by PTR; the built-in DNS
 * server answers mesh names to dig and forwards the rest.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Bind9, startBind9 } from './support/bind9.js';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, readAll, waitFor } from './support/servers.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-dns-dane-'));
const procs: Record<string, ReturnType<typeof start>> = {};
let bind: Bind9;
let svc: Server;
let socksPort: number;
let dnsPort: number;
const who: Record<string, { id: string; publicKey: string; vip6: string }> = {};

async function id(name: string, yaml: string) {
  writeFileSync(join(dir, `${name}.yaml`), yaml);
  const r = await run('node', [BIN, 'id', '-c', join(dir, `${name}.yaml`), '--json']);
  who[name] = JSON.parse(r.stdout.toString());
  return who[name]!;
}

/** The hex SHA-256 of a node's key (the TLSA 3 1 1 data) from its base32 node ID. */
function digestHex(nodeId: string): string {
  const A = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of nodeId) {
    value = (value << 5) | A.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out).toString('hex');
}

/** SOCKS5 CONNECT to host:port (a name, or an IPv4 address) through the client node; resolves what the service said. */
async function ask(host: string, port = 8080): Promise<string> {
  const s = await connectTcp(socksPort);
  const reply = readAll(s);
  const ip = /^\d+\.\d+\.\d+\.\d+$/.test(host);
  const addr = ip ? Buffer.from([1, ...host.split('.').map(Number)]) : Buffer.concat([Buffer.from([3, host.length]), Buffer.from(host)]);
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0]), addr, Buffer.from([port >> 8, port & 255])]));
  s.end();
  const got = await reply;
  if (got[3] !== 0) throw new Error(`socks reply ${got[3]}`);
  return got.subarray(12).toString();
}

const dig = (...args: string[]) => run('dig', ['@127.0.0.1', '-p', String(dnsPort), '+time=3', '+tries=1', ...args]);

beforeAll(async () => {
  svc = createServer((c) => {
    c.on('error', () => {});
    c.end('served by b');
  });
  await new Promise<void>((r) => svc.listen(0, '127.0.0.1', r));
  const svcPort = (svc.address() as { port: number }).port;
  const sshPort = await freePort();
  socksPort = await freePort();
  dnsPort = await freePort();
  const adminPort = await freePort();
  const quiet = 'hbone: null\nhttp: null\nlog: { level: info, format: json }\n';
  await id('other', `dataDir: ./other\n${quiet}`);
  const client = await id('client', `dataDir: ./client\n${quiet}`);
  writeFileSync(join(dir, 'b_keys'), `${client.publicKey} client\n`);
  await id(
    'b',
    `dataDir: ./b\n${quiet}socks: null\nadmin: null\nssh: { listen: 127.0.0.1:${sshPort}, authorizedKeys: ./b_keys }\n` +
      `services: { "good.dane.test:8080": "127.0.0.1:${svcPort}", "txt.dane.test:8080": "127.0.0.1:${svcPort}", "bad.dane.test:8080": "127.0.0.1:${svcPort}" }\n`,
  );
  bind = await startBind9({
    zones: [
      {
        origin: 'dane.test',
        records: [
          'b A 127.0.0.1',
          `_${sshPort}._tcp.b TLSA 3 1 1 ${digestHex(who.b!.id)}`,
          `_ugate-ssh._tcp.good SRV 0 1 ${sshPort} b`,
          'evil A 127.0.0.1',
          `_${sshPort}._tcp.evil TLSA 3 1 1 ${digestHex(who.other!.id)}`,
          `_ugate-ssh._tcp.bad SRV 0 1 ${sshPort} evil`,
          'txt A 127.0.0.1',
          `_ugate.txt TXT "v=ugate1 id=${who.b!.id} carriers=ssh:${sshPort}"`,
        ].join('\n'),
      },
      { origin: '0.0.127.in-addr.arpa', records: '77 PTR good.dane.test.' },
    ],
  });
  writeFileSync(
    join(dir, 'client.yaml'),
    `dataDir: ./client\n${quiet}ssh: { listen: null }\nnames: [client.mesh.internal]\nroutes: []\n` +
      `socks: { listen: 127.0.0.1:${socksPort} }\nadmin: { listen: 127.0.0.1:${adminPort} }\n` +
      `dns: { listen: 127.0.0.1:${dnsPort}, domain: mesh.internal, forwarders: ["${bind.server}"] }\n` +
      `discovery: { dns: { servers: ["${bind.server}"], domains: [dane.test] } }\n`,
  );
  for (const n of ['b', 'client']) procs[n] = start('node', [BIN, 'run', '-c', join(dir, `${n}.yaml`)]);
  for (const n of ['b', 'client']) await waitFor(() => procs[n]!.output().includes('ugate node started'), 15_000, `${n} started`);
}, 60_000);

afterAll(async () => {
  await Promise.all(Object.values(procs).map((p) => p.stop('SIGKILL')));
  await bind?.stop();
  svc?.close();
  rmSync(dir, { recursive: true, force: true });
});

const accessLines = (n: string, target: string) =>
  procs[n]!.output()
    .split('\n')
    .filter((l) => l.includes('"msg":"stream"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.target === target);
const accessLine = (n: string, target: string) => accessLines(n, target)[0];

describe('DNS discovery with DANE', () => {
  it('SRV + a matching TLSA: the stream goes over SSH to b, whose key the TLSA pins', async () => {
    expect(await ask('good.dane.test')).toBe('served by b');
    const r = await run('node', [BIN, 'resolve', 'good.dane.test:8080', '-c', join(dir, 'client.yaml'), '--json']);
    const x = JSON.parse(r.stdout.toString()) as { answeredBy: string; upstreams: Record<string, unknown>[] };
    expect(x.answeredBy).toBe('dns');
    expect(x.upstreams[0]).toMatchObject({ carrier: 'ssh', via: expect.stringMatching(/^127\.0\.0\.1:\d+$/), identity: who.b!.id });
  });

  it('a TLSA naming another key: the connection is refused (AUTH) and nothing reaches b', async () => {
    await expect(ask('bad.dane.test')).rejects.toThrow('socks reply 1');
    await waitFor(() => accessLine('client', 'bad.dane.test:8080') !== undefined, 5_000, 'access line');
    expect(accessLine('client', 'bad.dane.test:8080')).toMatchObject({ code: 'UGATE_ERR_AUTH', carrier: 'ssh' });
    expect(accessLine('b', 'bad.dane.test:8080')).toBeUndefined();
  });

  it('a TXT record advertises the carriers and the ID of a node', async () => {
    expect(await ask('txt.dane.test')).toBe('served by b');
  });

  it('an IP-only stream is mapped to its name by PTR and asks b for that name', async () => {
    const before = accessLines('b', 'good.dane.test:8080').length;
    expect(await ask('127.0.0.77')).toBe('served by b');
    await waitFor(() => accessLines('b', 'good.dane.test:8080').length === before + 1, 5_000, 'b access line for the name');
    // The client logs its line when its relay has finished, which can be after b's.
    await waitFor(() => accessLine('client', '127.0.0.77:8080') !== undefined, 5_000, 'client access line');
    expect(accessLine('client', '127.0.0.77:8080')).toMatchObject({ result: 'ok', carrier: 'ssh' });
  });
});

describe('precedence between sources', () => {
  it('the same name in static config and DNS: the configured order decides, and resolve says which answered', async () => {
    const both = (order: string) =>
      `dataDir: ./client\nssh: { listen: null }\nhbone: null\nadmin: null\nroutes: [{ match: "*", carrier: direct }]\n` +
      `discovery:\n  order: ${order}\n  dns: { servers: ["${bind.server}"], domains: [dane.test] }\n` +
      '  static: [{ name: good.dane.test, endpoints: [{ carrier: direct, address: "127.0.0.1:9" }] }]\n';
    const resolve = async (order: string) => {
      writeFileSync(join(dir, 'both.yaml'), both(order));
      const r = await run('node', [BIN, 'resolve', 'good.dane.test:8080', '-c', join(dir, 'both.yaml'), '--local', '--json']);
      return JSON.parse(r.stdout.toString()) as { answeredBy: string; steps: { source: string; result: string }[] };
    };
    const staticFirst = await resolve('[static, dns]');
    expect(staticFirst.answeredBy).toBe('static');
    expect(staticFirst.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'static:answer']);
    const dnsFirst = await resolve('[dns, static]');
    expect(dnsFirst.answeredBy).toBe('dns');
    expect(dnsFirst.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'dns:answer']);
    // a name neither knows falls through both to the catch-all route
    writeFileSync(join(dir, 'both.yaml'), both('[static, dns]'));
    const r = await run('node', [BIN, 'resolve', 'nothing.dane.test:80', '-c', join(dir, 'both.yaml'), '--local']);
    expect(r.stdout.toString()).toMatch(
      /config\s+no record[\s\S]*static\s+no record[\s\S]*dns\s+no record[\s\S]*default\s+answer\s+route \*/,
    );
  });
});

describe('the built-in DNS server (dig)', () => {
  it('answers <id>.m and the node names with VIP6 addresses', async () => {
    const m = await dig(`${who.client!.id}.m`, 'AAAA', '+short');
    expect(m.stdout.toString().trim()).toBe(who.client!.vip6);
    const named = await dig('client.mesh.internal', 'AAAA', '+short');
    expect(named.stdout.toString().trim()).toBe(who.client!.vip6);
    const tcp = await dig(`${who.b!.id}.m.mesh.internal`, 'AAAA', '+short', '+tcp');
    expect(tcp.stdout.toString().trim()).toBe(who.b!.vip6);
  });

  it('unknown mesh names are NXDOMAIN; other names are forwarded to bind9', async () => {
    expect((await dig('nope.mesh.internal', 'AAAA')).stdout.toString()).toContain('status: NXDOMAIN');
    expect((await dig('b.dane.test', 'A', '+short')).stdout.toString().trim()).toBe('127.0.0.1');
    expect((await dig('-x', '127.0.0.77', '+short')).stdout.toString().trim()).toBe('good.dane.test.');
  });
});
