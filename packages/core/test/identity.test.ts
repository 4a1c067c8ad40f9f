import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  base32,
  identityFromPem,
  isValidHost,
  KEY_FILE,
  loadOrCreateIdentity,
  meshName,
  nodeIdFromKey,
  nodeIdFromSpki,
  spkiDigest,
  sshPublicKeyText,
  vip6,
} from '@ugate/core';
import { afterAll, describe, expect, it } from 'vitest';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ugate-id-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Independent RFC 4648 base32 (lower case, no padding) via a bit string. */
function base32Reference(buf: Uint8Array): string {
  const bits = [...buf].map((b) => b.toString(2).padStart(8, '0')).join('');
  const padded = bits.padEnd(Math.ceil(bits.length / 5) * 5, '0');
  let out = '';
  for (let i = 0; i < padded.length; i += 5) out += 'abcdefghijklmnopqrstuvwxyz234567'[Number.parseInt(padded.slice(i, i + 5), 2)];
  return out;
}

/** Independent VIP6: 8 prefix bytes + first 8 digest bytes, canonicalised by the WHATWG URL parser. */
function vip6Reference(prefix8: Buffer, spki: Uint8Array): string {
  const bytes = Buffer.concat([prefix8, createHash('sha256').update(spki).digest().subarray(0, 8)]);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.subarray(i, i + 2).toString('hex'));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

const FD00 = Buffer.from('fd00000000000000', 'hex');

/** A deterministic input whose SHA-256 has a zero 16-bit group at `group` (0..3). */
const zeroGroupInputs = new Map<number, Buffer>();
function inputWithZeroGroup(group: number): Buffer {
  const known = zeroGroupInputs.get(group);
  if (known) return known;
  for (let i = 0; ; i++) {
    const input = Buffer.from(`vip6-search-${group}-${i}`);
    const d = createHash('sha256').update(input).digest();
    if (d.readUInt16BE(group * 2) === 0) {
      zeroGroupInputs.set(group, input);
      return input;
    }
  }
}

describe('base32', () => {
  it('matches the RFC 4648 §10 test vectors (lower case, no padding)', () => {
    const vectors: [string, string][] = [
      ['', ''],
      ['f', 'my'],
      ['fo', 'mzxq'],
      ['foo', 'mzxw6'],
      ['foob', 'mzxw6yq'],
      ['fooba', 'mzxw6ytb'],
      ['foobar', 'mzxw6ytboi'],
    ];
    for (const [input, out] of vectors) expect(base32(Buffer.from(input))).toBe(out);
  });

  it('matches an independent implementation on long and edge-case inputs', () => {
    const inputs = [
      Buffer.alloc(64, 0xff),
      Buffer.alloc(33, 0),
      Buffer.from([0x80]),
      Buffer.from([0x01]),
      ...Array.from({ length: 50 }, (_, i) =>
        createHash('sha512')
          .update(String(i))
          .digest()
          .subarray(0, i + 1),
      ),
    ];
    for (const b of inputs) expect(base32(b)).toBe(base32Reference(b));
  });
});

describe('node id and VIP6', () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });

  it('node id = base32(sha256(spki)): 52 lower-case chars, a DNS label', () => {
    const id = nodeIdFromSpki(spki);
    expect(id).toMatch(/^[a-z2-7]{52}$/);
    expect(id).toBe(base32Reference(createHash('sha256').update(spki).digest()));
    expect(nodeIdFromKey(publicKey)).toBe(id);
    expect(spkiDigest(spki).toString('hex')).toBe(createHash('sha256').update(spki).digest('hex'));
    expect(isValidHost(id)).toBe(true);
    expect(meshName(id)).toBe(`${id}.m`);
  });

  it('vip6 = fd00::/64 + first 8 bytes of sha256(spki)', () => {
    const v = vip6(spki);
    expect(isIP(v)).toBe(6);
    expect(v).toBe(vip6Reference(FD00, spki));
    const mesh = new BlockList();
    mesh.addSubnet('fd00::', 64, 'ipv6');
    expect(mesh.check(v, 'ipv6')).toBe(true);
  });

  it('vip6 agrees with the reference for many keys, including zero groups', () => {
    const inputs = [...Array.from({ length: 200 }, (_, i) => Buffer.from(`key-${i}`)), ...[0, 1, 2, 3].map(inputWithZeroGroup)];
    for (const input of inputs) expect(vip6(input)).toBe(vip6Reference(FD00, input));
  });

  it('honours a custom /64 prefix (with or without the length)', () => {
    const prefix = Buffer.from('fd12345678900001', 'hex');
    for (const input of [Buffer.from('x'), inputWithZeroGroup(0), inputWithZeroGroup(2)]) {
      expect(vip6(input, 'fd12:3456:7890:1::')).toBe(vip6Reference(prefix, input));
      expect(vip6(input, 'fd12:3456:7890:1::/64')).toBe(vip6Reference(prefix, input));
    }
    expect(vip6(Buffer.from('x'), 'fd00::/64')).toBe(vip6Reference(FD00, Buffer.from('x')));
  });
});

describe('identity files', () => {
  it('creates node.key (0600) and node.pub, then reuses the key', () => {
    const dir = join(tempDir(), 'nested', 'data');
    const first = loadOrCreateIdentity(dir);
    expect(first.created).toBe(true);
    const keyFile = join(dir, KEY_FILE);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(keyFile, 'utf8')).toBe(first.privateKeyPem);
    expect(readFileSync(join(dir, 'node.pub'), 'utf8')).toBe(`${first.sshPublicKey}\n`);
    expect(first.id).toMatch(/^[a-z2-7]{52}$/);
    expect(first.id).toBe(nodeIdFromSpki(first.spki));
    expect(first.vip6).toBe(vip6Reference(FD00, first.spki));

    const second = loadOrCreateIdentity(dir);
    expect(second.created).toBe(false);
    expect(second.id).toBe(first.id);
    expect(second.vip6).toBe(first.vip6);
    expect(second.privateKeyPem).toBe(first.privateKeyPem);
    expect(readFileSync(keyFile, 'utf8')).toBe(first.privateKeyPem);
  });

  it('never overwrites an existing key', () => {
    const dir = tempDir();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ type: 'sec1', format: 'pem' }).toString();
    writeFileSync(join(dir, KEY_FILE), pem, { mode: 0o600 });
    const id = loadOrCreateIdentity(dir, 'fd99::');
    expect(id.created).toBe(false);
    expect(id.id).toBe(nodeIdFromKey(createPublicKey(privateKey)));
    expect(id.vip6).toBe(vip6Reference(Buffer.from('fd99000000000000', 'hex'), id.spki));
    expect(readFileSync(join(dir, KEY_FILE), 'utf8')).toBe(pem);
    expect(existsSync(join(dir, 'node.pub'))).toBe(false);
  });

  it('identityFromPem accepts PKCS#8 as well as SEC1 and yields the same identity', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const a = identityFromPem(privateKey.export({ type: 'sec1', format: 'pem' }).toString());
    const b = identityFromPem(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    expect(b.id).toBe(a.id);
    expect(b.privateKeyPem).toBe(a.privateKeyPem);
    expect(a.privateKeyPem).toContain('BEGIN EC PRIVATE KEY');
  });
});

describe('sshPublicKeyText', () => {
  it('is accepted by ssh-keygen and equals its own conversion of the SPKI', () => {
    const dir = tempDir();
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const text = sshPublicKeyText(publicKey);
    expect(text).toMatch(/^ecdsa-sha2-nistp256 [A-Za-z0-9+/]+=*$/);

    const pubFile = join(dir, 'id.pub');
    writeFileSync(pubFile, `${text} test@ugate\n`);
    const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubFile], { encoding: 'utf8' });
    const blob = Buffer.from(text.split(' ')[1]!, 'base64');
    const expectedFp = createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
    expect(fp.trim()).toBe(`256 SHA256:${expectedFp} test@ugate (ECDSA)`);

    const pemFile = join(dir, 'spki.pem');
    writeFileSync(pemFile, publicKey.export({ type: 'spki', format: 'pem' }));
    const converted = execFileSync('ssh-keygen', ['-i', '-m', 'PKCS8', '-f', pemFile], { encoding: 'utf8' });
    expect(converted.trim()).toBe(text);
  });

  it('rejects keys that are not P-256', () => {
    expect(() => sshPublicKeyText(generateKeyPairSync('ed25519').publicKey)).toThrow('P-256');
    expect(() => sshPublicKeyText(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey)).toThrow('P-256');
  });
});
