import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Child, descendants, freePort, startChild, stopChild, waitPort } from './procs.js';

export const SSHD = '/usr/sbin/sshd';

export interface OpenSshPair {
  /** The `ssh -N -D` client. */
  client: Child;
  /** The listening sshd; the connection is served by processes below it. */
  server: Child;
  socksPort: number;
  /** Processes serving the one SSH connection (privsep monitor + session child). */
  serverPids(): number[];
  stop(): Promise<void>;
}

export interface OpenSshKeys {
  dir: string;
  hostKey: string;
  clientKey: string;
  authorizedKeys: string;
}

export function opensshVersion(): string {
  try {
    // `ssh -V` prints to stderr; execFileSync only returns stdout.
    return execFileSync('bash', ['-c', 'ssh -V 2>&1'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Keys and authorized_keys in `dir` (ed25519 both, no passphrase). */
export function makeKeys(dir: string): OpenSshKeys {
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'host_ed25519');
  const clientKey = join(dir, 'client_ed25519');
  for (const k of [hostKey, clientKey]) {
    if (!existsSync(k)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ugate-bench', '-f', k]);
  }
  const authorizedKeys = join(dir, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${clientKey}.pub`, 'utf8'));
  return { dir, hostKey, clientKey, authorizedKeys };
}

function clientArgs(k: OpenSshKeys, port: number, cipher: string | undefined): string[] {
  const known = join(k.dir, 'known_hosts');
  writeFileSync(known, `[127.0.0.1]:${port} ${readFileSync(`${k.hostKey}.pub`, 'utf8')}`);
  return [
    '-F',
    '/dev/null',
    '-p',
    String(port),
    '-i',
    k.clientKey,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    `UserKnownHostsFile=${known}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'Compression=no',
    ...(cipher ? ['-o', `Ciphers=${cipher}`] : []),
  ];
}

/**
 * sshd on 127.0.0.1:free port with a temporary config, then `ssh -N -D` to it.
 * `cipher` forces the client's cipher list (undefined = OpenSSH defaults).
 * Returns the pair and the cipher/MAC the client reports (from a `ssh -v` probe).
 */
export async function startOpenSsh(k: OpenSshKeys, cipher: string | undefined): Promise<{ pair: OpenSshPair; negotiated: string }> {
  mkdirSync('/run/sshd', { recursive: true });
  const port = await freePort();
  const config = join(k.dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${k.hostKey}`,
      `AuthorizedKeysFile ${k.authorizedKeys}`,
      `PidFile ${join(k.dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'AllowTcpForwarding yes',
      'X11Forwarding no',
      'PrintMotd no',
      'UseDNS no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  execFileSync(SSHD, ['-t', '-f', config]);
  const server = startChild('sshd', [SSHD, '-D', '-e', '-f', config]);
  const stopServer = () => stopChild(server);
  try {
    await waitPort(port, 10_000, server);
    const args = clientArgs(k, port, cipher);
    // A verbose probe connection shows what the client negotiates with these options;
    // the forwarding client itself runs quiet so per-channel debug lines cost nothing.
    let negotiated = 'unknown';
    try {
      const probe = execFileSync('bash', ['-c', 'exec "$@" 2>&1', 'bash', 'ssh', '-v', ...args, 'root@127.0.0.1', 'true'], {
        encoding: 'utf8',
        timeout: 15_000,
      });
      const m = /kex: client->server cipher: (\S+) MAC: (\S+)/.exec(probe);
      if (m) negotiated = m[2] === '<implicit>' ? m[1]! : `${m[1]} + ${m[2]}`;
    } catch (e) {
      const out = (e as { stdout?: string }).stdout ?? '';
      throw new Error(`ssh probe to sshd failed:\n${out.slice(-2000)}`);
    }
    const socksPort = await freePort();
    const client = startChild('ssh -D', [
      'ssh',
      '-N',
      '-D',
      `127.0.0.1:${socksPort}`,
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'LogLevel=ERROR',
      ...args,
      'root@127.0.0.1',
    ]);
    await waitPort(socksPort, 10_000, client);
    const pair: OpenSshPair = {
      client,
      server,
      socksPort,
      serverPids: () => descendants(server.pid),
      async stop() {
        await stopChild(client);
        await stopServer();
      },
    };
    return { pair, negotiated };
  } catch (e) {
    await stopServer();
    throw e;
  }
}
