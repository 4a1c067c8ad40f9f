/**
 * Discovery failover, as deployed (separate processes): a name with two endpoints — two nodes
 * that serve it over SSH, each pinned by its key — keeps working for new streams when one is
 * killed; `ugate resolve` explains the answer and shows the dead endpoint backing off.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, readAll, waitFor } from './support/servers.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-disc-failover-'));
const procs: Record<string, ReturnType<typeof start>> = {};
const servers: Server[] = [];
let socksPort: number;
let adminPort: number;
const ids: Record<string, string> = {};

async function id(name: string, yaml: string): Promise<{ id: string; publicKey: string }> {
  writeFileSync(join(dir, `${name}.yaml`), yaml);
  const r = await run('node', [BIN, 'id', '-c', join(dir, `${name}.yaml`), '--json']);
  return JSON.parse(r.stdout.toString());
}

/** A service that answers every connection with its own name, then closes. */
async function namedServer(name: string): Promise<number> {
  const s = createServer((c) => {
    c.on('error', () => {});
    c.end(`served by ${name}`);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

/** One SOCKS5 stream to NAME:8080 through the client node; returns what the service said. */
async function ask(name = 'web.mesh.internal'): Promise<string> {
  const s = await connectTcp(socksPort);
  const reply = readAll(s);
  const host = Buffer.from(name);
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([0x1f, 0x90])]));
  s.end();
  const got = await reply;
  if (got[1] !== 0 || got[3] !== 0) throw new Error(`socks replies ${got.subarray(0, 4).toString('hex')}`);
  return got.subarray(12).toString();
}

beforeAll(async () => {
  const base = 'socks: null\nhttp: null\nadmin: null\nhbone: null\nlog: { level: info, format: json }\n';
  const [p1, p2] = [await freePort(), await freePort()];
  socksPort = await freePort();
  adminPort = await freePort();
  const client = await id(
    'client',
    `dataDir: ./client\nhttp: null\nhbone: null\nlog: { format: json }\nsocks: { listen: 127.0.0.1:${socksPort} }\nadmin: { listen: 127.0.0.1:${adminPort} }\nssh: { listen: null }\nroutes: []\n`,
  );
  writeFileSync(join(dir, 'authorized_keys'), `${client.publicKey} client\n`);
  for (const [n, port] of [
    ['one', p1],
    ['two', p2],
  ] as const) {
    const svc = await namedServer(n);
    const r = await id(
      n,
      `dataDir: ./${n}\n${base}ssh: { listen: 127.0.0.1:${port}, authorizedKeys: ./authorized_keys }\nservices: { "web.mesh.internal:8080": "127.0.0.1:${svc}" }\n`,
    );
    ids[n] = r.id;
  }
  // The client knows web.mesh.internal from discovery: two SSH endpoints, each pinned to its node's key.
  writeFileSync(
    join(dir, 'client.yaml'),
    `dataDir: ./client\nhttp: null\nhbone: null\nlog: { format: json }\nsocks: { listen: 127.0.0.1:${socksPort} }\nadmin: { listen: 127.0.0.1:${adminPort} }\nssh: { listen: null }\nroutes: []\n` +
      'discovery:\n  health: { initialMs: 30000 }\n  static:\n    - name: web.mesh.internal\n      endpoints:\n' +
      `        - { carrier: ssh, address: "127.0.0.1:${p1}", identity: ${ids.one} }\n` +
      `        - { carrier: ssh, address: "127.0.0.1:${p2}", identity: ${ids.two} }\n` +
      // node two's address, but node one's key: the connection must be refused
      '    - name: wrong.mesh.internal:8080\n      endpoints:\n' +
      `        - { carrier: ssh, address: "127.0.0.1:${p2}", identity: ${ids.one} }\n`,
  );
  for (const n of ['one', 'two', 'client']) procs[n] = start('node', [BIN, 'run', '-c', join(dir, `${n}.yaml`)]);
  for (const n of ['one', 'two', 'client']) await waitFor(() => procs[n]!.output().includes('ugate node started'), 15_000, `${n} started`);
});

afterAll(async () => {
  await Promise.all(Object.values(procs).map((p) => p.stop('SIGKILL')));
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('discovery: two endpoints for one name', () => {
  it('spreads streams over both (equal weights), each over a key-pinned SSH connection', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20 && seen.size < 2; i++) seen.add(await ask());
    expect([...seen].sort()).toEqual(['served by one', 'served by two']);
  });

  it('ugate resolve (through the admin API) explains the answer', async () => {
    const r = await run('node', [BIN, 'resolve', 'web.mesh.internal:8080', '-c', join(dir, 'client.yaml')]);
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    expect(out).toContain('answered by: static');
    expect(out).toContain(`ssh 127.0.0.1:`);
    expect(out).toContain(`id=${ids.one}`);
    expect(out).toContain(`id=${ids.two}`);
    expect(out).toMatch(/static\s+answer\s+config discovery\.static web\.mesh\.internal/);
  });

  it('killing one keeps new streams working: the dead endpoint is skipped after its first failure', async () => {
    await procs.one!.stop('SIGKILL');
    const answers: string[] = [];
    for (let i = 0; i < 10; i++) answers.push(await ask());
    expect(new Set(answers)).toEqual(new Set(['served by two']));
    const res = await fetch(`http://127.0.0.1:${adminPort}/api/resolve?target=web.mesh.internal:8080`);
    const x = (await res.json()) as { upstreams: { via: string }[]; steps: { endpoints?: { identity: string; healthy: boolean }[] }[] };
    const eps = x.steps.flatMap((s) => s.endpoints ?? []);
    expect(eps.find((e) => e.identity === ids.one)?.healthy).toBe(false);
    expect(eps.find((e) => e.identity === ids.two)?.healthy).toBe(true);
    expect(x.upstreams.map((u) => u.via)).toHaveLength(1);
  });

  it('a key that does not match the pin is refused (AUTH), and nothing reaches the service', async () => {
    await expect(ask('wrong.mesh.internal')).rejects.toThrow(/socks replies 05000501/);
    await waitFor(() => procs.client!.output().includes('"target":"wrong.mesh.internal:8080"'), 5_000, 'access line');
    const line = procs
      .client!.output()
      .split('\n')
      .find((l) => l.includes('"target":"wrong.mesh.internal:8080"'))!;
    expect(JSON.parse(line)).toMatchObject({ code: 'UGATE_ERR_AUTH', carrier: 'ssh' });
  });

  it('<id>.m with no source announcing it: no route, explained', async () => {
    const r = await run('node', [BIN, 'resolve', `${ids.two}.m:8080`, '-c', join(dir, 'client.yaml'), '--json']);
    expect(r.code).toBe(3);
    const x = JSON.parse(r.stdout.toString()) as { error?: { code: string }; steps: { source: string; result: string }[] };
    expect(x.error?.code).toBe('UGATE_ERR_NO_ROUTE');
    expect(x.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'static:no record']);
  });
});
