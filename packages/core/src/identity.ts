import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** RFC 4648 base32, lower case, no padding. */
export function base32(buf: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/** SHA-256 of a public key's SubjectPublicKeyInfo DER: the node ID digest and DANE `3 1 1` data. */
export function spkiDigest(spkiDer: Uint8Array): Buffer {
  return createHash('sha256').update(spkiDer).digest();
}

/** Node ID: 52 lower-case base32 characters, a valid DNS label. */
export function nodeIdFromSpki(spkiDer: Uint8Array): string {
  return base32(spkiDigest(spkiDer));
}

export function nodeIdFromKey(key: KeyObject): string {
  return nodeIdFromSpki(key.export({ type: 'spki', format: 'der' }));
}

/** VIP6: the mesh /64 prefix followed by the first 8 bytes of the key digest. */
export function vip6(spkiDer: Uint8Array, prefix = 'fd00::'): string {
  const p = ipv6Bytes(prefix);
  const d = spkiDigest(spkiDer);
  const bytes = Buffer.concat([p.subarray(0, 8), d.subarray(0, 8)]);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return compressIpv6(groups);
}

function ipv6Bytes(addr: string): Buffer {
  const a = addr.split('/')[0]!;
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':').filter(Boolean) : [];
  const t = tail ? tail.split(':').filter(Boolean) : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const buf = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) buf.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return buf;
}

function compressIpv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export interface NodeIdentity {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** SEC1 PEM: the form both OpenSSH-style tooling (ssh2) and X.509 tooling read. */
  readonly privateKeyPem: string;
  readonly spki: Buffer;
  readonly id: string;
  readonly vip6: string;
  /** `ecdsa-sha2-nistp256 AAAA…` — one authorized_keys / known_hosts line body. */
  readonly sshPublicKey: string;
}

function sshString(b: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** OpenSSH public key text for a P-256 key. */
export function sshPublicKeyText(pub: KeyObject): string {
  const jwk = pub.export({ format: 'jwk' });
  if (jwk.crv !== 'P-256' || !jwk.x || !jwk.y) throw new Error('node keys are ECDSA P-256');
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  const blob = Buffer.concat([sshString(Buffer.from('ecdsa-sha2-nistp256')), sshString(Buffer.from('nistp256')), sshString(point)]);
  return `ecdsa-sha2-nistp256 ${blob.toString('base64')}`;
}

export function identityFromPem(pem: string, prefix?: string): NodeIdentity {
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  return {
    privateKey,
    publicKey,
    privateKeyPem: privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
    spki,
    id: nodeIdFromSpki(spki),
    vip6: vip6(spki, prefix),
    sshPublicKey: sshPublicKeyText(publicKey),
  };
}

export const KEY_FILE = 'node.key';

/** Load `<dataDir>/node.key`, creating an ECDSA P-256 key on first start. Never overwrites. */
export function loadOrCreateIdentity(dataDir: string, prefix?: string): NodeIdentity & { created: boolean } {
  const file = join(dataDir, KEY_FILE);
  let pem: string;
  let created = false;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    pem = privateKey.export({ type: 'sec1', format: 'pem' }).toString();
    try {
      // 'wx': a concurrent first start must not replace a key another process just wrote.
      writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      pem = readFileSync(file, 'utf8');
    }
    if (created) {
      writeFileSync(join(dataDir, 'node.pub'), `${sshPublicKeyText(createPublicKey(pem))}\n`, { mode: 0o644 });
    }
  }
  return { ...identityFromPem(pem, prefix), created };
}

/** `<id>.m` — the self-assigned name; dialing it pins the key. */
export function meshName(id: string): string {
  return `${id}.m`;
}
