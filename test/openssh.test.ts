/**
 * Interop with stock OpenSSH: the ssh client's -W, -L, -D, -R and -J against a
 * ugate gateway, and a ugate node using a stock sshd as its upstream carrier.
 */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createNode, type UgateNode } from 'ugate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, run, start } from './support/proc.js';
import { connectTcp, hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from './support/servers.js';

const dir = mkdtempSync(join(tmpdir(), 'ugate-openssh-'));
const userKey = join(dir, 'user');
const knownHosts = join(dir, 'known_hosts');
let sink: TestServer;
let gw: UgateNode;
let bob: UgateNode;
let gwPort: number;
const procs: { stop: () => Promise<unknown> }[] = [];

const sshConfig = join(dir, 'ssh_config');
const otherConfig = join(dir, 'ssh_config_other');

function writeSshConfig(file: string, key: string): void {
  writeFileSync(
    file,
    [
      'Host *',
      '  BatchMode yes',
      '  IdentitiesOnly yes',
      `  IdentityFile ${key}`,
      `  UserKnownHostsFile ${knownHosts}`,
      '  StrictHostKeyChecking yes',
      '  ExitOnForwardFailure yes',
      '',
    ].join('\n'),
  );
}

/** ssh arguments with the test's config file; -J passes -F on to the jump connection. */
function ssh(...args: string[]): string[] {
  return ['-F', sshConfig, ...args];
}

async function hashVia(port: number, data: Buffer): Promise<string> {
  const s = await connectTcp(port);
  const reply = readAll(s);
  s.end(data);
  return (await reply).toString();
}

/** Retry connecting until an ssh -L/-D/-R listener is up. */
async function listening(port: number, output?: () => string): Promise<void> {
  await waitFor(
    () =>
      connectTcp(port).then(
        (s) => {
          s.destroy();
          return true;
        },
        () => false,
      ),
    10_000,
    `port ${port}`,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n${output?.() ?? ''}`);
  });
}

beforeAll(async () => {
  sink = await hashServer();
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKey]);
  writeSshConfig(sshConfig, userKey);
  const userPub = (await run('cat', [`${userKey}.pub`])).stdout.toString().trim();
  gwPort = await freePort();
  // bob first, to learn its key for the gateway's authorized_keys
  const bobDir = join(dir, 'bob');
  bob = createNode(
    {
      dataDir: bobDir,
      ssh: { listen: null, gateways: [] },
      socks: null,
      http: null,
      admin: null,
    },
    { baseDir: dir },
  );
  // SSH certificates: two trusted CAs (ed25519 and ECDSA), one untrusted.
  const keygen = (...a: string[]) => run('ssh-keygen', ['-q', ...a]);
  for (const [name, type] of [
    ['ca-ed', 'ed25519'],
    ['ca-ec', 'ecdsa'],
    ['ca-x', 'ed25519'],
    ['cert-a', 'ecdsa'],
    ['cert-b', 'ed25519'],
    ['cert-old', 'ecdsa'],
    ['cert-x', 'ed25519'],
  ] as const) {
    await keygen('-t', type, '-N', '', '-f', join(dir, name));
  }
  await keygen('-s', join(dir, 'ca-ed'), '-I', 'a', '-n', 'ugate,a.mesh.internal', '-V', '-5m:+1h', join(dir, 'cert-a.pub'));
  await keygen('-s', join(dir, 'ca-ec'), '-I', 'b', '-n', 'ugate', '-V', '-5m:+1h', join(dir, 'cert-b.pub'));
  await keygen('-s', join(dir, 'ca-ed'), '-I', 'old', '-n', 'ugate', '-V', '20200101:20200102', join(dir, 'cert-old.pub'));
  await keygen('-s', join(dir, 'ca-x'), '-I', 'x', '-n', 'ugate', '-V', '-5m:+1h', join(dir, 'cert-x.pub'));
  const caLine = async (n: string) => `cert-authority ${(await run('cat', [join(dir, `${n}.pub`)])).stdout.toString().trim()}`;
  writeFileSync(
    join(dir, 'authorized_keys'),
    `${userPub}\npermitlisten="bob.mesh.internal:0" ${bob.identity.sshPublicKey} bob\n${await caLine('ca-ed')}\n${await caLine('ca-ec')}\n`,
  );
  gw = createNode(
    {
      dataDir: join(dir, 'gw'),
      ssh: { listen: `127.0.0.1:${gwPort}`, authorizedKeys: 'authorized_keys' },
      socks: null,
      http: null,
      admin: null,
      routes: [
        { match: '*.mesh.internal', carrier: 'reject' },
        { match: '*', carrier: 'direct' },
      ],
    },
    { baseDir: dir },
  );
  writeFileSync(knownHosts, `[127.0.0.1]:${gwPort} ${gw.identity.sshPublicKey}\n`);
  await gw.start();
  bob = createNode(
    {
      dataDir: bobDir,
      ssh: { listen: null, gateways: [{ address: `127.0.0.1:${gwPort}`, id: gw.identity.id }] },
      services: { 'bob.mesh.internal:8080': `127.0.0.1:${sink.port}` },
      socks: null,
      http: null,
      admin: null,
    },
    { baseDir: dir },
  );
  await bob.start();
  await waitFor(() => gw.switch.router.registrations().some((r) => r.host === 'bob.mesh.internal'), 10_000, 'bob registered');
});

afterAll(async () => {
  for (const p of procs) await p.stop();
  await bob?.stop(0);
  await gw?.stop(0);
  await sink?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('OpenSSH client → ugate gateway', () => {
  it('ssh -W reaches a registered name, byte-exact, half-close both ways', async () => {
    const data = randomBytes(4 * 1024 * 1024 + 3);
    const r = await run('ssh', ssh('-W', 'bob.mesh.internal:8080', '-p', String(gwPort), 'ugate@127.0.0.1'), { input: data });
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe(sha256(data));
    expect(r.code).toBe(0);
  });

  it('ssh -W to an unknown name fails with the ugate code in the message', async () => {
    const r = await run('ssh', ssh('-W', 'nobody.mesh.internal:80', '-p', String(gwPort), 'ugate@127.0.0.1'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('UGATE_ERR_NO_ROUTE');
  });

  it('rejects an unknown key', async () => {
    const other = join(dir, 'other');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    writeSshConfig(otherConfig, other);
    const r = await run('ssh', ['-F', otherConfig, '-W', 'bob.mesh.internal:8080', '-p', String(gwPort), 'ugate@127.0.0.1']);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('Permission denied (publickey)');
  });

  it('accepts SSH certificates from trusted CAs; refuses expired and untrusted ones', async () => {
    const withKey = async (key: string) => {
      const cfg = join(dir, `ssh_config_${key}`);
      writeSshConfig(cfg, join(dir, key));
      const data = randomBytes(100_000);
      const r = await run('ssh', ['-F', cfg, '-W', 'bob.mesh.internal:8080', '-p', String(gwPort), 'ugate@127.0.0.1'], { input: data });
      return { ok: r.code === 0 && r.stdout.toString() === sha256(data), stderr: r.stderr };
    };
    expect(await withKey('cert-a')).toEqual({ ok: true, stderr: '' });
    expect(await withKey('cert-b')).toEqual({ ok: true, stderr: '' });
    for (const bad of ['cert-old', 'cert-x']) {
      const r = await withKey(bad);
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain('Permission denied (publickey)');
    }
  });

  it('ssh -L forwards to a mesh name', async () => {
    const lport = await freePort();
    const p = start('ssh', ssh('-N', '-L', `127.0.0.1:${lport}:bob.mesh.internal:8080`, '-p', String(gwPort), 'ugate@127.0.0.1'));
    procs.push(p);
    await listening(lport, p.output);
    const data = randomBytes(1024 * 1024);
    expect(await hashVia(lport, data)).toBe(sha256(data));
    await p.stop();
  });

  it('ssh -D (SOCKS in the ssh client) reaches a mesh name', async () => {
    const dport = await freePort();
    const p = start('ssh', ssh('-N', '-D', `127.0.0.1:${dport}`, '-p', String(gwPort), 'ugate@127.0.0.1'));
    procs.push(p);
    await listening(dport, p.output);
    const data = randomBytes(256 * 1024);
    // A hand-written SOCKS5 client: the sink answers with a hash, not HTTP.
    const s = await connectTcp(dport);
    const reply = readAll(s);
    const host = Buffer.from('bob.mesh.internal');
    s.write(Buffer.from([5, 1, 0]));
    s.write(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([8080 >> 8, 8080 & 255])]));
    s.end(data);
    const got = await reply;
    // method reply (2 bytes) + connect reply (10 bytes) + hash
    expect(got.subarray(0, 2)).toEqual(Buffer.from([5, 0]));
    expect(got.subarray(2, 4)).toEqual(Buffer.from([5, 0]));
    expect(got.subarray(-64).toString()).toBe(sha256(data));
    await p.stop();
  });

  it('ssh -R opens a listener on the gateway that reaches the ssh client side', async () => {
    const rport = await freePort();
    const p = start('ssh', ssh('-N', '-R', `127.0.0.1:${rport}:127.0.0.1:${sink.port}`, '-p', String(gwPort), 'ugate@127.0.0.1'));
    procs.push(p);
    await listening(rport, p.output);
    const data = randomBytes(2 * 1024 * 1024 + 1);
    expect(await hashVia(rport, data)).toBe(sha256(data));
    await p.stop();
    // the listener goes away with the connection
    await waitFor(
      () =>
        connectTcp(rport).then(
          (s) => {
            s.destroy();
            return false;
          },
          () => true,
        ),
      5000,
      'listener closed',
    );
  });
});

describe('ugate node → stock OpenSSH sshd carrier', () => {
  let sshd: ReturnType<typeof start>;
  let node: UgateNode;
  let sshdPort: number;

  beforeAll(async () => {
    sshdPort = await freePort();
    const hostKey = join(dir, 'sshd_host');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    const hostPub = (await run('cat', [`${hostKey}.pub`])).stdout.toString().split(' ').slice(0, 2).join(' ');
    writeFileSync(join(dir, 'sshd_known_hosts'), `[127.0.0.1]:${sshdPort} ${hostPub}\n`);
    node = createNode(
      {
        dataDir: join(dir, 'client'),
        ssh: {
          listen: null,
          gateways: [{ name: 'sshd', address: `127.0.0.1:${sshdPort}`, user: 'root', knownHosts: 'sshd_known_hosts', register: false }],
        },
        routes: [{ match: '*', carrier: 'ssh' }],
        socks: null,
        http: null,
        admin: null,
      },
      { baseDir: dir },
    );
    const userPub = (await run('cat', [`${userKey}.pub`])).stdout.toString();
    writeFileSync(join(dir, 'sshd_authorized_keys'), `${node.identity.sshPublicKey}\n${userPub}`);
    appendFileSync(knownHosts, `[127.0.0.1]:${sshdPort} ${hostPub}\n`);
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `Port ${sshdPort}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${join(dir, 'sshd_authorized_keys')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'AllowTcpForwarding yes',
        'LogLevel ERROR',
      ].join('\n'),
    );
    await run('mkdir', ['-p', '/run/sshd']);
    sshd = start('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')]);
    await listening(sshdPort);
    await node.start();
  });

  afterAll(async () => {
    await node?.stop(0);
    await sshd?.stop();
  });

  it('opens streams through sshd with direct-tcpip, byte-exact with half-close', async () => {
    const data = randomBytes(8 * 1024 * 1024 + 5);
    const s: Duplex = await node.dial(`127.0.0.1:${sink.port}`);
    const reply = readAll(s);
    s.end(data);
    expect((await reply).toString()).toBe(sha256(data));
  });

  it('ssh -J jumps through the ugate gateway to sshd', async () => {
    const data = randomBytes(1024 * 1024 + 7);
    const r = await run('ssh', ssh('-J', `ugate@127.0.0.1:${gwPort}`, '-p', String(sshdPort), 'root@127.0.0.1', 'sha256sum'), {
      input: data,
    });
    expect(r.stdout.toString().split(' ')[0]).toBe(sha256(data));
    expect(r.code).toBe(0);
  });

  it('maps sshd refusing the destination to a refused stream', async () => {
    const closed = await freePort();
    await expect(node.dial(`127.0.0.1:${closed}`)).rejects.toMatchObject({ code: 'UGATE_ERR_REFUSED' });
  });
});
