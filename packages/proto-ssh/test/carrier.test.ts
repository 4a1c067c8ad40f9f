import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  direct,
  type Logger,
  loadOrCreateIdentity,
  makeTarget,
  meshName,
  type NodeIdentity,
  newSid,
  Policy,
  Router,
  Switch,
} from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeCryptoLoaded, type SshCarrier, type SshServer, sshCarrier, sshServer } from '../src/index.js';

interface Line {
  level: string;
  obj: Record<string, unknown>;
  msg?: string;
}
function recorder(lines: Line[]): Logger {
  const mk =
    (level: string, bindings: Record<string, unknown>) =>
    (a: object | string, msg?: string): void => {
      lines.push(typeof a === 'string' ? { level, obj: bindings, msg: a } : { level, obj: { ...bindings, ...a }, msg });
    };
  const make = (b: Record<string, unknown>): Logger => ({
    error: mk('error', b),
    warn: mk('warn', b),
    info: mk('info', b),
    debug: mk('debug', b),
    child: (more) => make({ ...b, ...more }),
  });
  return make({});
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

/** Replies with the sha256 hex of everything received, after the client half-closes. */
function hashServer(): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, (s: Socket) => {
    const h = createHash('sha256');
    s.on('data', (c) => h.update(c));
    s.on('end', () => s.end(h.digest('hex')));
    s.on('error', () => {});
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

function tmpIdentity(dirs: string[]): NodeIdentity {
  const d = mkdtempSync(join(tmpdir(), 'ugate-ssh-'));
  dirs.push(d);
  return loadOrCreateIdentity(d);
}

describe('ssh carrier ↔ ssh server', () => {
  const dirs: string[] = [];
  const gwLines: Line[] = [];
  let sink: Server;
  let gw: { sw: Switch; srv: SshServer; id: NodeIdentity; port: number };
  let bob: { sw: Switch; carrier: SshCarrier; id: NodeIdentity };
  let alice: { sw: Switch; carrier: SshCarrier; id: NodeIdentity };

  beforeAll(async () => {
    sink = await hashServer();
    const sinkPort = (sink.address() as { port: number }).port;
    const gid = tmpIdentity(dirs);
    const bid = tmpIdentity(dirs);
    const aid = tmpIdentity(dirs);
    const gsw = new Switch({
      router: new Router(),
      policy: new Policy([{ action: 'deny', to: ['denied.mesh.internal'] }]),
      dialers: [direct()],
      logger: recorder(gwLines),
    });
    const authorizedKeys = [
      `${aid.sshPublicKey} alice`,
      `permitlisten="bob.mesh.internal:0",permitlisten="denied.mesh.internal:0" ${bid.sshPublicKey} bob`,
    ].join('\n');
    const srv = sshServer({ listen: '127.0.0.1:0', authorizedKeys })({ switch: gsw, logger: recorder(gwLines), identity: gid });
    await srv.listen();
    const port = Number(srv.addresses()[0]!.split(':').pop());
    gw = { sw: gsw, srv, id: gid, port };

    const bsw = new Switch({
      router: new Router({
        services: { 'bob.mesh.internal:8080': `127.0.0.1:${sinkPort}`, 'denied.mesh.internal:1': `127.0.0.1:${sinkPort}` },
      }),
      policy: new Policy(),
      dialers: [direct()],
      logger: recorder(gwLines),
    });
    const bc = sshCarrier({
      gateways: [{ address: `127.0.0.1:${port}`, id: gid.id }],
      names: ['bob.mesh.internal', 'denied.mesh.internal', 'stolen.mesh.internal'],
    })({ switch: bsw, logger: recorder(gwLines), identity: bid });
    bsw.addDialer(bc);
    bc.start();
    bob = { sw: bsw, carrier: bc, id: bid };

    const asw = new Switch({
      router: new Router({
        routes: [
          { match: '*.mesh.internal', carrier: 'ssh' },
          { match: '*.m', carrier: 'ssh' },
        ],
      }),
      policy: new Policy(),
      dialers: [direct()],
      logger: recorder(gwLines),
    });
    const ac = sshCarrier({ gateways: [{ address: `127.0.0.1:${port}`, id: gid.id }] })({
      switch: asw,
      logger: recorder(gwLines),
      identity: aid,
    });
    asw.addDialer(ac);
    ac.start();
    alice = { sw: asw, carrier: ac, id: aid };
    await bc.ready();
    await ac.ready();
    // registrations complete before ready() resolves
    expect(bc.status()[0]!.registered.sort()).toEqual(['bob.mesh.internal', 'denied.mesh.internal', meshName(bid.id)].sort());
  });

  afterAll(async () => {
    await alice?.carrier.stop();
    await bob?.carrier.stop();
    await gw?.srv.close();
    await gw?.srv.disconnect();
    sink?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const open = (target: string, port: number) =>
    alice.sw.open({
      sid: newSid(),
      target: makeTarget(target, port),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });

  it('loads the native crypto binding', () => {
    expect(nativeCryptoLoaded).toBe(true);
  });

  it('refuses to register a name the key is not allowed', () => {
    expect(bob.carrier.status()[0]!.registered).not.toContain('stolen.mesh.internal');
    expect(gwLines.some((l) => l.obj.code === 'UGATE_ERR_POLICY_DENIED' && String(l.msg).includes('stolen.mesh.internal'))).toBe(true);
  });

  it('reaches a registered name through the gateway, byte-exact with half-close', async () => {
    const data = randomBytes(8 * 1024 * 1024 + 17);
    const { stream } = await open('bob.mesh.internal', 8080);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha(data));
  });

  it('reaches the self-assigned <id>.m name; unknown ports there are refused by bob', async () => {
    bob.sw.router.addService(
      `${meshName(bob.id.id)}:8081`,
      (sink.address() as { address: string; port: number }).address + `:${(sink.address() as { port: number }).port}`,
    );
    const data = randomBytes(100_000);
    const { stream } = await open(meshName(bob.id.id), 8081);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha(data));
    // bob's <id>.m:8080 is not a service of bob → bob refuses; the code travels back over both hops
    await expect(open(meshName(bob.id.id), 8080)).rejects.toMatchObject({ code: 'UGATE_ERR_NO_ROUTE' });
  });

  it("lets no key register another node's <id>.m name", async () => {
    const c = sshCarrier({ gateways: [{ address: `127.0.0.1:${gw.port}`, id: gw.id.id }], names: [meshName(bob.id.id)] })({
      switch: alice.sw,
      logger: recorder([]),
      identity: alice.id,
    });
    // alice's own carrier is already registered; a second one with alice's key claims bob's id name
    c.start();
    await c.ready();
    expect(c.status()[0]!.registered).toEqual([meshName(alice.id.id)]);
    await c.stop();
  });

  it('carries policy denial from the gateway as POLICY_DENIED', async () => {
    await expect(open('denied.mesh.internal', 1)).rejects.toMatchObject({ code: 'UGATE_ERR_POLICY_DENIED' });
  });

  it('carries an unknown name as NO_ROUTE', async () => {
    await expect(open('nobody.mesh.internal', 80)).rejects.toMatchObject({ code: 'UGATE_ERR_NO_ROUTE' });
  });

  it('runs 40 concurrent streams over one connection', async () => {
    const runs = Array.from({ length: 40 }, async (_, i) => {
      const data = randomBytes(64 * 1024 + i);
      const { stream } = await open('bob.mesh.internal', 8080);
      const reply = readAll(stream);
      stream.end(data);
      expect((await reply).toString()).toBe(sha(data));
    });
    await Promise.all(runs);
  });
});
