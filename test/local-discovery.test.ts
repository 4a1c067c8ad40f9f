/**
 * Two ugate nodes on a LAN of their own (two network namespaces joined by a veth pair) find each
 * other by signed multicast announcements and connect by the self-assigned name `<id>.m`, with
 * no address in either config. The connection pins the announced key.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLan, execIn, type NetnsLan, requireNetns, startIn } from './support/netns.js';
import { run } from './support/proc.js';
import { waitFor } from './support/servers.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-local-disc-'));
let lan: NetnsLan;
const procs: ReturnType<typeof startIn>[] = [];
const ids: Record<string, string> = {};

async function id(name: string, yaml: string): Promise<{ id: string; publicKey: string }> {
  writeFileSync(join(dir, `${name}.yaml`), yaml);
  const r = await run('node', [BIN, 'id', '-c', join(dir, `${name}.yaml`), '--json']);
  return JSON.parse(r.stdout.toString());
}

beforeAll(async () => {
  await requireNetns();
  lan = await createLan();
  const common = 'hbone: null\nhttp: null\nlog: { level: debug, format: json }\ndiscovery: { local: { intervalMs: 1000 } }\n';
  // a: serves web.lan:8080 (a local HTTP server inside its namespace) over SSH; knows b's key
  // b: an app's SOCKS port; announces its own SSH listener too
  const b = await id(
    'b',
    `dataDir: ./b\n${common}ssh: { listen: 0.0.0.0:15022 }\nsocks: { listen: 127.0.0.1:16080 }\nadmin: { listen: 127.0.0.1:15000 }\nroutes: []\n`,
  );
  writeFileSync(join(dir, 'a_keys'), `${b.publicKey} b\n`);
  const a = await id(
    'a',
    `dataDir: ./a\n${common}ssh: { listen: 0.0.0.0:15022, authorizedKeys: ./a_keys }\nsocks: null\nadmin: null\nnames: [a.lan]\nservices: { "web.lan:8080": "127.0.0.1:18080" }\n`,
  );
  ids.a = a.id;
  ids.b = b.id;
  procs.push(startIn(lan.a, 'python3', ['-m', 'http.server', '18080', '--bind', '127.0.0.1', '--directory', dir]));
  writeFileSync(join(dir, 'hello.txt'), 'hello from the a side\n');
  procs.push(startIn(lan.a, 'node', [BIN, 'run', '-c', join(dir, 'a.yaml')]));
  procs.push(startIn(lan.b, 'node', [BIN, 'run', '-c', join(dir, 'b.yaml')]));
  await waitFor(() => procs.every((p, i) => i === 0 || p.output().includes('ugate node started')), 15_000, 'both nodes started');
}, 60_000);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await lan?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('local discovery between two network namespaces', () => {
  it('b reaches a by <id>.m (found by multicast, key pinned) and by the name a announces', async () => {
    const curl = (url: string) =>
      execIn(lan.b, 'curl', ['-sS', '--max-time', '10', '--socks5-hostname', '127.0.0.1:16080', url], { timeoutMs: 15_000 });
    await waitFor(async () => (await curl(`http://${ids.a}.m:8080/hello.txt`)).code === 0, 15_000, `b resolves ${ids.a}.m`);
    const byId = await curl(`http://${ids.a}.m:8080/hello.txt`);
    expect(byId.stdout.toString()).toBe('hello from the a side\n');
    const byName = await curl('http://web.lan:8080/hello.txt');
    expect(byName.stdout.toString()).toBe('hello from the a side\n');
  });

  it('ugate resolve on b explains: the local source, a at its veth address, pinned to its key', async () => {
    const r = await execIn(lan.b, 'node', [BIN, 'resolve', `${ids.a}.m:8080`, '-c', join(dir, 'b.yaml'), '--json'], { timeoutMs: 15_000 });
    const x = JSON.parse(r.stdout.toString()) as { answeredBy: string; upstreams: { carrier: string; via: string; identity: string }[] };
    expect(x.answeredBy).toBe('local');
    expect(x.upstreams[0]).toEqual(expect.objectContaining({ carrier: 'ssh', via: `${lan.ipA}:15022`, identity: ids.a }));
  });

  it('the stream really went over SSH to a, which saw b by its key', async () => {
    const target = `"target":"${ids.a}.m:8080"`;
    await waitFor(() => procs[1]!.output().includes(target), 5_000, "a's access line");
    const a = procs[1]!.output();
    const line = a
      .split('\n')
      .filter((l) => l.includes('"msg":"stream"') && l.includes('"proto":"ssh-direct"'))
      .map((l) => JSON.parse(l) as { peer: string; target: string; result: string })
      .find((l) => l.target === `${ids.a}.m:8080`);
    expect(line).toMatchObject({ peer: ids.b, result: 'ok' });
  });
});
