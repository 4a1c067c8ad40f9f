import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
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
  return vip6FromDigest(spkiDigest(spkiDer), prefix);
}

/** VIP6 from a key digest (see `vip6`). */
export function vip6FromDigest(digest: Uint8Array, prefix = 'fd00::'): string {
  const p = ipv6Bytes(prefix.split('/')[0]!) ?? Buffer.alloc(16);
  return formatIpv6(Buffer.concat([p.subarray(0, 8), Buffer.from(digest).subarray(0, 8)]));
}

/** VIP6 of the node an ID names (`<id>.m`), or undefined if `id` is not a node ID. */
export function vip6FromId(id: string, prefix = 'fd00::'): string | undefined {
  const d = nodeIdDigest(id);
  return d && vip6FromDigest(d, prefix);
}

const NODE_ID = /^[a-z2-7]{52}$/;

/** The 32-byte key digest a node ID encodes; undefined unless `id` is a canonical node ID. */
export function nodeIdDigest(id: string): Buffer | undefined {
  if (!NODE_ID.test(id)) return undefined;
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of id) {
    value = ((value << 5) | B32.indexOf(ch)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  const digest = Buffer.from(out);
  // The last character carries 4 padding bits: only the canonical spelling (zero padding) is a node ID.
  return digest.length === 32 && base32(digest) === id ? digest : undefined;
}

/** The 16 bytes of an IPv6 address (an embedded IPv4 tail and a `%zone` are accepted), else undefined. */
export function ipv6Bytes(text: string): Buffer | undefined {
  let a = text.split('%')[0]!;
  if (isIP(a) !== 6) return undefined;
  const tail = a.slice(a.lastIndexOf(':') + 1);
  if (tail.includes('.')) {
    const o = tail.split('.').map(Number);
    a = `${a.slice(0, a.length - tail.length)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head = '', rest] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = rest ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const buf = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) buf.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return buf;
}

/** RFC 5952 text of 16 address bytes: lower-case hex, the first longest run (≥ 2) of zero groups as `::`. */
export function formatIpv6(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
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
