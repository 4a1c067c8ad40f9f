/**
 * The quickstart mesh, as a user runs it: up.sh starts gateway, alice and bob
 * as separate processes; apps use curl through alice's SOCKS5 and HTTP proxy
 * ports to reach bob, which opens no listening port.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { hboneDialer, WorkloadCredentials } from '@ugate/proto-hbone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGoPeer, runGoClient } from './support/go-peer.js';
import { run, start } from './support/proc.js';
import { randomBytes, readAll as readAllStream, sha256, waitFor } from './support/servers.js';

const QS = fileURLToPath(new URL('../examples/quickstart/', import.meta.url));
const RUN = join(QS, 'run');
const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const SOCKS = ['--socks5-hostname', '127.0.0.1:16080'];
const PROXY = ['-x', 'http://127.0.0.1:16081'];
const BOB = 'http://bob.mesh.internal:8080';

const curl = (...args: string[]) => run('curl', ['-sS', '--max-time', '30', ...args], { timeoutMs: 60_000 });
const pid = (name: string) => Number(readFileSync(join(RUN, `${name}.pid`), 'utf8'));
const alive = (name: string) => {
  try {
    process.kill(pid(name), 0);
    return true;
  } catch {
    return false;
  }
};
const log = (name: string) => readFileSync(join(RUN, `${name}.log`), 'utf8');

/** Send bytes to a port, wait for the peer to close (or 2 s). */
function garbage(port: number, data: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.setTimeout(2000, () => s.destroy());
    s.on('data', () => {});
    s.end(data);
  });
}

/** Connect, send the handshake and the payload, half-close, collect everything until the peer ends. */
function exchange(port: number, handshake: Buffer[], payload: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const got: Buffer[] = [];
    s.on('data', (c: Buffer) => got.push(c));
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(got));
    });
    s.on('error', reject);
    for (const h of handshake) s.write(h);
    // Pipelined: handshake, request and FIN in one go; nothing may be lost.
    s.end(payload);
  });
}

beforeAll(async () => {
  await buildGoPeer();
  const up = await run('bash', [join(QS, 'up.sh')], { timeoutMs: 60_000 });
  if (up.code !== 0) throw new Error(`up.sh failed: ${up.stdout}${up.stderr}`);
}, 90_000);

afterAll(async () => {
  await run('bash', [join(QS, 'down.sh')]);
});

describe('quickstart mesh', () => {
  it('fetches bob through alice by SOCKS5 and by HTTP proxy', async () => {
    const a = await curl(...SOCKS, `${BOB}/`);
    expect(a.stderr).toBe('');
    expect(a.stdout.toString()).toBe('hello from bob\n');
    const b = await curl(...PROXY, `${BOB}/`);
    expect(b.stdout.toString()).toBe('hello from bob\n');
    const c = await curl('-p', ...PROXY, `${BOB}/`); // CONNECT tunnel through the HTTP proxy
    expect(c.stdout.toString()).toBe('hello from bob\n');
  });

  it("reaches bob by its self-assigned name <id>.m: no config names it; the gateway has it from bob's key", async () => {
    const bobId = (JSON.parse((await run('node', [BIN, 'id', '-c', join(QS, 'bob.yaml'), '--json'])).stdout.toString()) as { id: string })
      .id;
    const r = await curl(...SOCKS, `http://${bobId}.m:8080/`);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe('hello from bob\n');
    const x = await run('node', [BIN, 'resolve', `${bobId}.m:8080`, '-c', join(QS, 'alice.yaml')]);
    expect(x.stdout.toString()).toMatch(/ssh via any connected gateway[\s\S]*route\s+answer\s+route \*\.m/);
  });

  it('carries a half-close end to end: request, FIN, then the full reply (SOCKS5 and CONNECT)', async () => {
    const request = 'GET / HTTP/1.1\r\nHost: bob.mesh.internal\r\nConnection: close\r\n\r\n';
    const host = Buffer.from('bob.mesh.internal');
    const viaSocks = await exchange(16080, [Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([0x1f, 0x90])], request);
    expect(viaSocks.subarray(0, 4)).toEqual(Buffer.from([5, 0, 5, 0]));
    expect(viaSocks.toString()).toMatch(/HTTP\/1\.1 200 OK[\s\S]*\r\n\r\nhello from bob\n$/);
    const viaConnect = await exchange(
      16081,
      [Buffer.from('CONNECT bob.mesh.internal:8080 HTTP/1.1\r\nHost: bob.mesh.internal:8080\r\n\r\n')],
      request,
    );
    expect(viaConnect.toString()).toMatch(/^HTTP\/1\.1 200[^\r]*\r\n[\s\S]*HTTP\/1\.1 200 OK[\s\S]*hello from bob\n$/);
  });

  it('bridges HBONE to SSH: an HBONE client reaches bob (SSH-only) through the gateway', async () => {
    const out = join(RUN, 'hbone-client');
    const issued = await run('node', [
      BIN,
      'ca',
      'issue',
      '--ca-dir',
      join(RUN, 'ca'),
      '--namespace',
      'mesh',
      '--account',
      'tester',
      '--out',
      out,
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const sw = new Switch({
      router: new Router({
        routes: [{ match: '*', carrier: 'hbone', address: '127.0.0.1:15008', identity: 'spiffe://cluster.local/ns/mesh/sa/gateway' }],
      }),
      policy: new Policy(),
      dialers: [],
      logger: silentLogger,
    });
    const d = hboneDialer({ credentials: new WorkloadCredentials(out) })({ logger: silentLogger });
    sw.addDialer(d);
    try {
      const { stream } = await sw.open({
        sid: newSid(),
        target: makeTarget('bob.mesh.internal', 8080),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      });
      const reply = readAllStream(stream);
      stream.end('GET / HTTP/1.1\r\nHost: bob.mesh.internal\r\nConnection: close\r\n\r\n');
      expect((await reply).toString()).toMatch(/200 OK[\s\S]*hello from bob\n$/);
      await expect(
        sw.open({
          sid: newSid(),
          target: makeTarget('nobody.mesh.internal', 80),
          protocol: 'test',
          source: { address: '127.0.0.1', port: 1 },
          peer: { kind: 'local', principals: [] },
        }),
      ).rejects.toMatchObject({ code: 'UGATE_ERR_NO_ROUTE' });
    } finally {
      d.close();
    }
    expect(log('gateway')).toMatch(/"proto":"hbone","target":"bob\.mesh\.internal:8080".*"carrier":"ssh-reverse".*"result":"ok"/);

    // The same with an independent HBONE client (Go standard library).
    const go = await runGoClient({
      port: 15008,
      authority: 'bob.mesh.internal:8080',
      cert: join(out, 'tls.crt'),
      key: join(out, 'tls.key'),
      ca: join(out, 'ca.crt'),
      expectIdentity: 'spiffe://cluster.local/ns/mesh/sa/gateway',
      input: Buffer.from('GET / HTTP/1.1\r\nHost: bob.mesh.internal\r\nConnection: close\r\n\r\n'),
    });
    expect(go.code, go.stderr).toBe(0);
    expect(go.stdout.toString()).toMatch(/200 OK[\s\S]*hello from bob\n$/);
  });

  it('moves 64 MiB each way byte-exact through both proxies', async () => {
    const size = 64 * 1024 * 1024;
    const file = join(RUN, 'upload.bin');
    const data = randomBytes(size);
    writeFileSync(file, data);
    const want = sha256(data);
    for (const via of [SOCKS, PROXY]) {
      const up = await curl(...via, '-T', file, `${BOB}/upload`);
      expect(up.stdout.toString().trim()).toBe(want);
      const down = await curl(...via, '-D', '-', `${BOB}/bytes/${size}`);
      const raw = down.stdout;
      const split = raw.indexOf('\r\n\r\n');
      const headers = raw.subarray(0, split).toString();
      const body = raw.subarray(split + 4);
      expect(body.length).toBe(size);
      expect(sha256(body)).toBe(/x-sha256: ([0-9a-f]{64})/i.exec(headers)?.[1]);
    }
    rmSync(file);
  });

  it('answers unknown names and policy denials with the protocol codes', async () => {
    // curl exit 97 = SOCKS proxy failure; its message ends with the reply code: (4) host unreachable, (2) not allowed.
    const unknown = await curl(...SOCKS, 'http://nobody.mesh.internal:8080/');
    expect(unknown.code).toBe(97);
    expect(unknown.stderr).toMatch(/connection to nobody\.mesh\.internal\. \(4\)/);
    const denied = await curl(...SOCKS, 'http://bob.mesh.internal:9000/');
    expect(denied.code).toBe(97);
    expect(denied.stderr).toMatch(/connection to bob\.mesh\.internal\. \(2\)/);
    const u2 = await curl('-o', '/dev/null', '-w', '%{http_code}', ...PROXY, 'http://nobody.mesh.internal:8080/');
    expect(u2.stdout.toString()).toBe('502');
    const d2 = await curl('-o', '/dev/null', '-w', '%{http_code}', ...PROXY, 'http://bob.mesh.internal:9000/');
    expect(d2.stdout.toString()).toBe('403');
    expect(log('alice')).toMatch(/"code":"UGATE_ERR_POLICY_DENIED"/);
    const metrics = (await curl('http://127.0.0.1:16000/metrics')).stdout.toString();
    expect(metrics).toMatch(/ugate_streams_total\{proto="socks5",carrier="ssh",result="UGATE_ERR_NO_ROUTE"\} [1-9]/);
    expect(metrics).toMatch(/ugate_streams_total\{proto="http-forward",carrier="none",result="UGATE_ERR_POLICY_DENIED"\} [1-9]/);
    expect(metrics).toContain('ugate_ssh_gateway_connected{gateway="gateway"} 1');
    expect(log('gateway')).toMatch(/"code":"UGATE_ERR_NO_ROUTE"/);
  });

  it('survives random and truncated bytes on every port; other streams are untouched', async () => {
    // a long download runs while garbage arrives
    const long = curl(...SOCKS, `${BOB}/bytes/${32 * 1024 * 1024}`, '-o', '/dev/null', '-w', '%{size_download}');
    const junk = randomBytes(4096);
    await Promise.all([
      garbage(16080, junk),
      garbage(16080, Buffer.from([5, 1])), // truncated greeting
      garbage(16080, Buffer.from([5, 1, 0, 5, 1, 0, 3, 200, 1, 2])), // truncated request
      garbage(16081, junk),
      garbage(16081, Buffer.from('GET http://bob.mesh.internal:8080/ HTTP/1.1\r\nHost')), // truncated headers
      garbage(15022, junk),
      garbage(15022, Buffer.from('SSH-2.0-OpenSSH_9.2\r\n')), // a banner, then nothing
    ]);
    expect((await long).stdout.toString()).toBe(String(32 * 1024 * 1024));
    for (const n of ['gateway', 'alice', 'bob']) expect(alive(n)).toBe(true);
    expect(log('alice')).toMatch(/"code":"UGATE_ERR_BAD_REQUEST"/);
    expect(log('gateway')).toMatch(/"code":"UGATE_ERR_BAD_REQUEST"/);
    // an SSH client with a key the gateway does not know
    const key = join(RUN, 'stranger');
    rmSync(key, { force: true });
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const ssh = await run('ssh', [
      '-F',
      '/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-i',
      key,
      '-p',
      '15022',
      '-W',
      'bob.mesh.internal:8080',
      'ugate@127.0.0.1',
    ]);
    expect(ssh.code).toBe(255);
    await waitFor(() => /"code":"UGATE_ERR_AUTH".*unknown key/.test(log('gateway')), 5000, 'auth failure logged');
    const again = await curl(...SOCKS, `${BOB}/`);
    expect(again.stdout.toString()).toBe('hello from bob\n');
  });

  it('recovers from a gateway kill -9: new streams work within 2 s of the gateway being back', async () => {
    process.kill(pid('gateway'), 'SIGKILL');
    await waitFor(() => !alive('gateway'), 5000, 'gateway gone');
    const down = await curl('--max-time', '3', ...SOCKS, `${BOB}/`);
    expect(down.code).not.toBe(0);
    const gw = start('node', [BIN, 'run', '-c', join(QS, 'gateway.yaml')]);
    writeFileSync(join(RUN, 'gateway.pid'), String(gw.child.pid));
    await waitFor(async () => (await curl('-f', 'http://127.0.0.1:15000/healthz/ready')).code === 0, 10_000, 'gateway ready');
    const back = Date.now();
    await waitFor(
      async () => (await curl('--max-time', '2', ...SOCKS, `${BOB}/`)).stdout.toString() === 'hello from bob\n',
      2000,
      'stream through the restarted gateway',
    );
    expect(Date.now() - back).toBeLessThanOrEqual(2000);
  });
});

// The dashboard, in a real browser (Debian's chromium, driven by playwright-core from @ugate/dashboard).
const OUT = fileURLToPath(new URL('./out/', import.meta.url));
const fromDashboard = createRequire(fileURLToPath(new URL('../packages/dashboard/package.json', import.meta.url)));

const nodeId = async (adminPort: number) => ((await (await fetch(`http://127.0.0.1:${adminPort}/api/node`)).json()) as { id: string }).id;

/** A SOCKS5 connection through alice to bob's upload endpoint that keeps sending until stopped. */
function slowUpload(): { stop: () => void; sent: () => number } {
  const host = Buffer.from('bob.mesh.internal');
  const s = connect({ host: '127.0.0.1', port: 16080 });
  s.on('error', () => {});
  s.on('data', () => {});
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([0x1f, 0x90])]));
  s.write('PUT /upload HTTP/1.1\r\nHost: bob.mesh.internal\r\nContent-Length: 1073741824\r\n\r\n');
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  let sent = 0;
  const t = setInterval(() => {
    if (s.writableLength > 1 << 20) return;
    s.write(chunk);
    sent += chunk.length;
  }, 20);
  return {
    stop: () => {
      clearInterval(t);
      s.destroy();
    },
    sent: () => sent,
  };
}

describe('quickstart dashboard', () => {
  it('shows gateway, alice and bob, and a live stream with throughput while alice uploads to bob', async () => {
    const { chromium } = fromDashboard('playwright-core') as typeof import('playwright-core');
    mkdirSync(OUT, { recursive: true });
    const gatewayId = await nodeId(15000);
    const aliceId = await nodeId(16000);
    const bobId = (JSON.parse((await run('node', [BIN, 'id', '-c', join(QS, 'bob.yaml'), '--json'])).stdout.toString()) as { id: string })
      .id;

    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    let upload: ReturnType<typeof slowUpload> | undefined;
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto('http://127.0.0.1:15000/');
      await page.locator('[data-testid="conn-state"][data-state="live"]').waitFor({ timeout: 10_000 });

      // The three nodes: the gateway in the middle, alice and bob as its peers, with their names.
      const gw = page.getByTestId(`node-${gatewayId}`);
      const alice = page.getByTestId(`node-${aliceId}`);
      const bob = page.getByTestId(`node-${bobId}`);
      for (const n of [gw, alice, bob]) await n.waitFor({ timeout: 10_000 });
      expect(await gw.getAttribute('class')).toContain('self');
      expect(await gw.textContent()).toContain('gateway.mesh.internal');
      expect(await alice.getAttribute('class')).toContain('peer');
      expect(await alice.textContent()).toContain('alice.mesh.internal');
      expect(await bob.getAttribute('class')).toContain('peer');
      expect(await bob.textContent()).toContain('bob.mesh.internal');
      await page.locator('[data-testid="throughput"][data-rate]').waitFor({ timeout: 10_000 }); // two snapshots seen
      const meshShot = join(OUT, 'dashboard-mesh.png');
      await page.screenshot({ path: meshShot, fullPage: true });
      console.log(`dashboard screenshot (mesh): ${meshShot}`);

      // A transfer alice → gateway → bob: a stream row, both links busy, bytes per second above zero.
      upload = slowUpload();
      const row = page.locator('tbody tr[data-testid^="stream-"]');
      await row.first().waitFor({ timeout: 10_000 });
      expect(await row.count()).toBe(1);
      const rate = (testid: string) => `Number(document.querySelector('[data-testid="${testid}"]')?.dataset.rate) > 0`;
      await page.waitForFunction(`${rate(`edge-node-${aliceId}`)} && ${rate(`edge-node-${bobId}`)} && ${rate('throughput')}`, undefined, {
        timeout: 10_000,
      });
      expect(await page.getByTestId(`edge-node-${aliceId}`).getAttribute('data-streams')).toBe('1');
      expect(await page.getByTestId(`edge-node-${bobId}`).getAttribute('data-streams')).toBe('1');
      expect(await page.getByTestId(`edge-node-${bobId}`).textContent()).toMatch(/^1 stream · [\d.]+ (B|KiB|MiB)\/s$/);
      expect(await row.getAttribute('data-target')).toBe('bob.mesh.internal:8080');
      expect(await row.locator('td[data-col="route"]').textContent()).toMatch(
        /^127\.0\.0\.1:\d+ \(alice\.mesh\.internal\) → bob\.mesh\.internal:8080$/,
      );
      expect(await row.locator('td[data-col="carrier"]').textContent()).toBe('ssh-reverse / bob.mesh.internal');
      const streamShot = join(OUT, 'dashboard-stream.png');
      await page.screenshot({ path: streamShot, fullPage: true });
      console.log(`dashboard screenshot (stream): ${streamShot}`);
      expect(upload.sent()).toBeGreaterThan(0);

      // The transfer ends: the row goes away, the links are idle again.
      upload.stop();
      await row.first().waitFor({ state: 'detached', timeout: 10_000 });
      await page.waitForFunction(`document.querySelector('[data-testid="edge-node-${bobId}"]')?.dataset.streams === '0'`, undefined, {
        timeout: 10_000,
      });
      expect(await page.getByTestId('no-streams').isVisible()).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      upload?.stop();
      await browser.close();
    }
  }, 60_000);
});
