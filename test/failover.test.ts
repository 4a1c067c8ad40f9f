/**
 * Two gateways: bob registers with both, alice keeps both; killing one (kill -9)
 * does not stop new streams. Separate processes, as deployed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from './support/servers.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-failover-'));
const procs: Record<string, ReturnType<typeof start>> = {};
let sink: TestServer;
let socksPort: number;

async function id(name: string, yaml: string): Promise<{ id: string; publicKey: string }> {
  writeFileSync(join(dir, `${name}.yaml`), yaml);
  const r = await run('node', [BIN, 'id', '-c', join(dir, `${name}.yaml`), '--json']);
  return JSON.parse(r.stdout.toString());
}

/** One SOCKS5 stream to bob's service: send data, half-close, expect its hash back. */
async function roundTrip(data: Buffer): Promise<string> {
  const s = await connectTcp(socksPort);
  const reply = readAll(s);
  const host = Buffer.from('bob.mesh.internal');
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([0x1f, 0x90])]));
  s.end(data);
  const got = await reply;
  if (got[1] !== 0 || got[3] !== 0) throw new Error(`socks replies ${got.subarray(0, 4).toString('hex')}`);
  return got.subarray(12).toString();
}

beforeAll(async () => {
  sink = await hashServer();
  const [p1, p2] = [await freePort(), await freePort()];
  socksPort = await freePort();
  const base = 'socks: null\nhttp: null\nadmin: null\nlog: { level: info, format: json }\n';
  const gw = (n: string, port: number) => `dataDir: ./${n}\n${base}ssh: { listen: 127.0.0.1:${port}, authorizedKeys: ./authorized_keys }\n`;
  const g1 = await id('gw1', gw('gw1', p1));
  const g2 = await id('gw2', gw('gw2', p2));
  const gateways = `[{ name: gw1, address: 127.0.0.1:${p1}, id: ${g1.id} }, { name: gw2, address: 127.0.0.1:${p2}, id: ${g2.id} }]`;
  const bob = await id(
    'bob',
    `dataDir: ./bob\nsocks: null\nhttp: null\nadmin: null\nlog: { format: json }\nssh: { listen: null, gateways: ${gateways} }\nservices: { "bob.mesh.internal:8080": "127.0.0.1:${sink.port}" }\n`,
  );
  const alice = await id(
    'alice',
    `dataDir: ./alice\nhttp: null\nadmin: null\nlog: { format: json }\nsocks: { listen: 127.0.0.1:${socksPort} }\nssh: { listen: null, gateways: ${gateways} }\nroutes: [{ match: "*.mesh.internal", carrier: ssh }]\n`,
  );
  writeFileSync(join(dir, 'authorized_keys'), `${alice.publicKey} alice\npermitlisten="bob.mesh.internal:0" ${bob.publicKey} bob\n`);
  for (const n of ['gw1', 'gw2', 'bob', 'alice']) procs[n] = start('node', [BIN, 'run', '-c', join(dir, `${n}.yaml`)]);
  await waitFor(() => (procs.bob!.output().match(/names registered/g) ?? []).length >= 2, 15_000, 'bob registered on both gateways');
  await waitFor(() => (procs.alice!.output().match(/gateway connected/g) ?? []).length >= 2, 15_000, 'alice connected to both');
});

afterAll(async () => {
  for (const p of Object.values(procs)) await p.stop('SIGKILL');
  await sink?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('two gateways', () => {
  it('keeps new streams working when one gateway is killed', async () => {
    const data = randomBytes(1024 * 1024);
    expect(await roundTrip(data)).toBe(sha256(data));
    // Kill the gateway alice prefers (the first); new streams must go through the other.
    await procs.gw1!.stop('SIGKILL');
    for (let i = 0; i < 10; i++) {
      const d = randomBytes(64 * 1024 + i);
      expect(await roundTrip(d)).toBe(sha256(d));
    }
    expect(procs.alice!.output()).toContain('gateway connection lost');
  });
});
