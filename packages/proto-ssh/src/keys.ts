import { createHmac, createPublicKey } from 'node:crypto';
import { nodeIdFromSpki } from '@ugate/core';
import ssh2 from 'ssh2';

const { utils } = ssh2;

/** Node ID of an SSH public key given as its wire blob. Undefined when ssh2 cannot parse it. */
export function nodeIdOfSshKey(blob: Buffer): string | undefined {
  const key = utils.parseKey(blob);
  if (key instanceof Error) return undefined;
  const pem = key.getPublicPEM();
  if (!pem) return undefined;
  try {
    return nodeIdFromSpki(createPublicKey(pem).export({ type: 'spki', format: 'der' }));
  } catch {
    return undefined;
  }
}

export interface AuthorizedKey {
  readonly type: string;
  readonly blob: Buffer;
  readonly comment: string;
  /** `cert-authority`: the key signs user certificates. */
  readonly certAuthority: boolean;
  /** `principals="a,b"` (with cert-authority): accepted certificate principals. */
  readonly principals?: readonly string[];
  /** `permitlisten="name:0"`: names/ports the key may register or listen on. */
  readonly permitListen: readonly string[];
  /** `permitopen="host:port"`: destinations the key may open; empty = any. */
  readonly permitOpen: readonly string[];
}

const KEY_TYPE = /^(ssh-|ecdsa-sha2-|sk-)/;

/** Split `a,b="x,y",c` respecting double quotes. */
function splitOptions(s: string): { opts: string[]; rest: string } {
  const opts: string[] = [];
  let cur = '';
  let quoted = false;
  let i = 0;
  for (; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"') quoted = !quoted;
    else if (c === '\\' && quoted && s[i + 1] === '"') {
      cur += '"';
      i++;
      continue;
    }
    if (!quoted && (c === ',' || c === ' ' || c === '\t')) {
      if (cur) opts.push(cur);
      cur = '';
      if (c !== ',') break;
      continue;
    }
    if (c !== '"') cur += c;
  }
  if (cur) opts.push(cur);
  return { opts, rest: s.slice(i).trim() };
}

/** Parse an OpenSSH authorized_keys file. Unknown options are ignored; malformed lines are reported. */
export function parseAuthorizedKeys(text: string): { keys: AuthorizedKey[]; errors: string[] } {
  const keys: AuthorizedKey[] = [];
  const errors: string[] = [];
  text.split(/\r?\n/).forEach((raw, n) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    let opts: string[] = [];
    let rest = line;
    if (!KEY_TYPE.test(line)) ({ opts, rest } = splitOptions(line));
    const [type, b64, ...comment] = rest.split(/\s+/);
    if (!type || !b64 || !KEY_TYPE.test(type)) {
      errors.push(`line ${n + 1}: not a key`);
      return;
    }
    const blob = Buffer.from(b64, 'base64');
    const parsed = utils.parseKey(blob);
    if (parsed instanceof Error) {
      errors.push(`line ${n + 1}: ${parsed.message}`);
      return;
    }
    const value = (name: string) => opts.filter((o) => o.toLowerCase().startsWith(`${name}=`)).map((o) => o.slice(name.length + 1));
    const principals = value('principals');
    keys.push({
      type,
      blob,
      comment: comment.join(' '),
      certAuthority: opts.some((o) => o.toLowerCase() === 'cert-authority'),
      principals: principals.length ? principals.flatMap((p) => p.split(',')) : undefined,
      permitListen: value('permitlisten').map((v) => v.toLowerCase()),
      permitOpen: value('permitopen').map((v) => v.toLowerCase()),
    });
  });
  return { keys, errors };
}

/** One `known_hosts` entry: plain host patterns or a hashed `|1|salt|hash` host. */
interface KnownHost {
  readonly hosts: readonly string[];
  readonly hashed?: { salt: Buffer; hash: Buffer };
  readonly blob: Buffer;
}

export function parseKnownHosts(text: string): KnownHost[] {
  const out: KnownHost[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('@')) continue;
    const [hosts, , b64] = line.split(/\s+/);
    if (!hosts || !b64) continue;
    const blob = Buffer.from(b64, 'base64');
    if (hosts.startsWith('|1|')) {
      const [, , salt, hash] = hosts.split('|');
      if (salt && hash) out.push({ hosts: [], hashed: { salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') }, blob });
    } else out.push({ hosts: hosts.split(',').map((h) => h.toLowerCase()), blob });
  }
  return out;
}

/** OpenSSH's host key lookup name: `host` for port 22, `[host]:port` otherwise. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host.toLowerCase() : `[${host.toLowerCase()}]:${port}`;
}

export function knownHostMatches(entries: KnownHost[], host: string, port: number, blob: Buffer): boolean {
  const name = knownHostName(host, port);
  return entries.some((e) => {
    if (!e.blob.equals(blob)) return false;
    if (e.hashed) return createHmac('sha1', e.hashed.salt).update(name).digest().equals(e.hashed.hash);
    return e.hosts.includes(name);
  });
}
