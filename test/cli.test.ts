/** The `ugate` command as a user runs it: check, id, run with the embedded default, SIGTERM drain. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, startServer, waitFor } from './support/servers.js';

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
