/** The `ugate` command as a user runs it: check, id, run with the embedded default, SIGTERM drain. */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { sleep } from './support/listener.js';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, startServer, waitFor } from './support/servers.js';
import { socksConnect, startUgate } from './support/ugate-node.js';

const BIN = fileURLToPath(new URL('../apps/ugate/bin/ugate.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ugate-cli-'));
const ugate = (args: string[], env: NodeJS.ProcessEnv = {}) => run('node', [BIN, ...args], { env: { ...process.env, HOME: dir, ...env } });

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ugate CLI', () => {
  it('check: prints each error with its key path and exits 1', async () => {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'socks:\n  listen: nowhere\nroutes:\n  - { match: "*", carrier: warp }\nextra: 1\n');
    const r = await ugate(['check', '-c', f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('socks.listen: expected host:port');
    expect(r.stderr).toContain('routes.0.carrier');
    expect(r.stderr).toContain('Unrecognized key: "extra"');
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'names: [x.mesh.internal]\n');
    const ok = await ugate(['check', '-c', good]);
    expect(ok.code).toBe(0);
    expect(ok.stdout.toString()).toContain(': ok');
  });

  it('check: a YAML syntax error and a missing file exit 1 with a message', async () => {
    const f = join(dir, 'syntax.yaml');
    writeFileSync(f, 'socks: [unclosed\n');
    const r = await ugate(['check', '-c', f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/syntax\.yaml/);
    const m = await ugate(['check', '-c', join(dir, 'missing.yaml')]);
    expect(m.code).toBe(1);
    expect(m.stderr).toMatch(/cannot read/);
  });

  it('id: creates the key once, keeps it, resolves dataDir against the config folder', async () => {
    const f = join(dir, 'node.yaml');
    writeFileSync(f, 'dataDir: ./nodedata\nnames: [n1.mesh.internal]\nservices: { "web.mesh.internal:80": 127.0.0.1:8080 }\n');
    const a = await ugate(['id', '-c', f, '--json']);
    const b = await ugate(['id', '-c', f, '--json']);
    const ja = JSON.parse(a.stdout.toString());
    expect(JSON.parse(b.stdout.toString())).toEqual(ja);
    expect(ja.id).toMatch(/^[a-z2-7]{52}$/);
    expect(ja.vip6).toMatch(/^fd00::/);
    expect(ja.names).toEqual(['n1.mesh.internal', 'web.mesh.internal', `${ja.id}.m`]);
    expect(ja.publicKey).toMatch(/^ecdsa-sha2-nistp256 AAAA/);
    const text = await ugate(['id', '-c', f]);
    expect(text.stdout.toString()).toContain(`id:         ${ja.id}`);
  });

  it('runs the embedded default node without arguments; SIGTERM drains live streams, refuses new ones, exits 0', async () => {
    const socksPort = await freePort();
    // A server that answers only when told to, to hold a stream open across SIGTERM.
    const held = await startServer();
    const p = start('node', [BIN], {
      env: {
        ...process.env,
        HOME: dir,
        UGATE_SSH__LISTEN: 'null',
        UGATE_HTTP: 'null',
        UGATE_ADMIN: 'null',
        UGATE_SOCKS__LISTEN: `127.0.0.1:${socksPort}`,
        UGATE_LOG__FORMAT: 'json',
      },
    });
    try {
      await waitFor(() => p.output().includes('ugate node started'), 10_000, 'node started');
      expect(p.output()).toContain('(embedded default)');
      // open a SOCKS stream to the held server
      const s = await connectTcp(socksPort);
      const got: Buffer[] = [];
      s.on('data', (c: Buffer) => got.push(c));
      s.write(Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, held.port >> 8, held.port & 255]));
      const upstream = await held.accept();
      await waitFor(() => Buffer.concat(got).length >= 12, 5000, 'socks reply');
      p.child.kill('SIGTERM');
      await waitFor(() => p.output().includes('draining'), 5000, 'draining');
      // new connections are refused while the old stream lives
      const refused = await new Promise<boolean>((resolve) => {
        const c = connect({ host: '127.0.0.1', port: socksPort });
        c.on('connect', () => {
          c.destroy();
          resolve(false);
        });
        c.on('error', () => resolve(true));
      });
      expect(refused, p.output()).toBe(true);
      upstream.end('still here');
      const end = new Promise((r) => s.on('end', r));
      s.end();
      await end;
      expect(Buffer.concat(got).subarray(12).toString(), p.output()).toBe('still here');
      expect(await p.stop(), p.output()).toBe(0);
      expect(p.output()).toMatch(/"result":"ok"/);
    } finally {
      await p.stop('SIGKILL');
      await held.close();
    }
  });
});

describe('ugate run: SIGTERM drain', () => {
  /** A config file with a SOCKS listener, an admin endpoint and a hashing sink as a service. */
  async function drainNode(name: string, drainMs: number, sinkPort: number) {
    const [socksPort, adminPort] = await Promise.all([freePort(), freePort()]);
    const yaml = `dataDir: ./drain-data
log: { format: json }
ssh: { listen: null }
hbone: null
http: null
socks: { listen: 127.0.0.1:${socksPort} }
admin: { listen: 127.0.0.1:${adminPort} }
limits: { drainMs: ${drainMs} }
routes: []
services: { "sink.mesh.internal:9": 127.0.0.1:${sinkPort} }
`;
    return { socksPort, node: await startUgate(join(dir, `${name}.yaml`), yaml, adminPort) };
  }
  /** Connect: 'open' or the error code. */
  const reach = (port: number) =>
    new Promise<string>((resolve) => {
      const c = connect({ host: '127.0.0.1', port });
      c.on('connect', () => {
        c.destroy();
        resolve('open');
      });
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });

  it('a running transfer completes byte-exact after SIGTERM, well within the deadline; new connections are refused; exit 0', async () => {
    let received = 0;
    const sink = createServer({ allowHalfOpen: true }, (s) => {
      const h = createHash('sha256');
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        received += d.length;
        h.update(d);
      });
      s.on('end', () => s.end(h.digest('hex')));
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
    // The deadline (60 s) is far beyond how long this test waits for the exit (20 s).
    const { socksPort, node } = await drainNode('drain', 60_000, (sink.address() as { port: number }).port);
    try {
      const { rep, wire } = await socksConnect(socksPort, 'sink.mesh.internal', 9);
      expect(rep).toBe(0);
      // A steady writer: the transfer is in full flow when SIGTERM arrives.
      const hash = createHash('sha256');
      let written = 0;
      let finishing = false;
      const writer = (async () => {
        while (!finishing) {
          const c = randomBytes(64 * 1024);
          hash.update(c);
          written += c.length;
          if (!wire.socket.write(c)) await once(wire.socket, 'drain');
          await sleep(5);
        }
        wire.end();
      })();
      // A dashboard watching the event stream must not hold the exit either.
      const events = await node.api('/api/events');
      expect(events.status).toBe(200);
      // Ended or cut by the stopping node (either is fine for an event stream), never left hanging.
      const eventsDone = events.text().then(
        () => 'ended',
        () => 'cut',
      );
      await waitFor(() => received > 1024 * 1024, 10_000, 'transfer under way');

      node.signal('SIGTERM');
      await node.waitLog((l) => l.msg === 'stopping: no new streams, draining', 'draining');
      expect(await reach(socksPort)).toBe('ECONNREFUSED');
      // Still flowing after SIGTERM.
      const at = received;
      await waitFor(() => received > at + 1024 * 1024, 10_000, 'transfer still moving during the drain');
      finishing = true;
      await writer;
      const reply = (await wire.readToEnd(20_000)).toString();
      expect(received).toBe(written);
      expect(reply).toBe(hash.digest('hex'));

      const code = await Promise.race([node.exited, sleep(20_000).then(() => 'still running')]);
      expect(code, node.output()).toBe(0);
      expect(['ended', 'cut']).toContain(await eventsDone);
      const access = node.logs().find((l) => l.msg === 'stream' && l.src === wire.src);
      expect(access).toMatchObject({ result: 'ok', bytesIn: written, bytesOut: 64 });
      // The transfer ended (and logged) before the node said it stopped.
      const logs = node.logs();
      const stopped = logs.findIndex((l) => l.msg === 'ugate node stopped');
      expect(stopped, JSON.stringify(logs.slice(-4))).toBeGreaterThan(logs.indexOf(access!));
    } finally {
      await node.stop('SIGKILL');
      sink.close();
    }
  }, 60_000);

  it('a stream still open at the deadline is cut, and the node exits 0', async () => {
    const held = await startServer();
    const { socksPort, node } = await drainNode('deadline', 3_000, held.port);
    try {
      const { rep, wire } = await socksConnect(socksPort, 'sink.mesh.internal', 9);
      expect(rep).toBe(0);
      const upstream = await held.accept();
      node.signal('SIGTERM');
      await node.waitLog((l) => l.msg === 'stopping: no new streams, draining', 'draining');
      // Alive during the drain...
      upstream.write('during the drain');
      expect((await wire.read(16)).toString()).toBe('during the drain');
      // ...and cut at the deadline.
      const code = await Promise.race([node.exited, sleep(20_000).then(() => 'still running')]);
      expect(code, node.output()).toBe(0);
      await wire.waitClosed();
      expect((wire.error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
      // ...and it still gets its access line.
      expect(node.logs().find((l) => l.msg === 'stream' && l.src === wire.src)).toMatchObject({ result: 'UGATE_ERR_ABORTED' });
    } finally {
      await node.stop('SIGKILL');
      await held.close();
    }
  }, 60_000);
});
