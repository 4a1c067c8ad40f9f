import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import ssh2 from 'ssh2';

const { utils } = ssh2;

/** Reads SSH wire types (RFC 4251 §5) from a buffer; throws RangeError on truncation. */
class Reader {
  #off = 0;
  constructor(readonly buf: Buffer) {}
  get offset(): number {
    return this.#off;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.#off);
    this.#off += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64BE(this.#off);
    this.#off += 8;
    return v;
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.#off + n > this.buf.length) throw new RangeError('truncated');
    const v = this.buf.subarray(this.#off, this.#off + n);
    this.#off += n;
    return v;
  }
  string(): string {
    return this.bytes().toString('utf8');
  }
}

function sshString(b: Buffer | string): Buffer {
  const body = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

export interface SshCertificate {
  /** Plain public key blob of the certified key (what signs the user's authentication). */
  readonly keyBlob: Buffer;
  readonly serial: bigint;
  /** 1 = user, 2 = host. */
  readonly type: number;
  readonly keyId: string;
  readonly principals: string[];
  readonly validAfter: bigint;
  readonly validBefore: bigint;
  readonly criticalOptions: Buffer;
  /** Public key blob of the signing CA. */
  readonly caBlob: Buffer;
  /** Bytes the CA signed (everything before the signature field). */
  readonly signed: Buffer;
  readonly signature: Buffer;
}

/** Parse an OpenSSH certificate blob (PROTOCOL.certkeys). Throws on malformed input. */
export function parseCertificate(blob: Buffer): SshCertificate {
  const r = new Reader(blob);
  const type = r.string();
  const m = /^(.+)-cert-v01@openssh\.com$/.exec(type);
  if (!m) throw new Error(`not a certificate: ${type}`);
  const keyType = m[1]!;
  r.bytes(); // nonce
  let keyBlob: Buffer;
  if (keyType === 'ssh-ed25519') keyBlob = Buffer.concat([sshString(keyType), sshString(r.bytes())]);
  else if (keyType.startsWith('ecdsa-sha2-')) keyBlob = Buffer.concat([sshString(keyType), sshString(r.bytes()), sshString(r.bytes())]);
  else if (keyType === 'ssh-rsa') {
    const e = r.bytes();
    const n = r.bytes();
    keyBlob = Buffer.concat([sshString(keyType), sshString(e), sshString(n)]);
  } else throw new Error(`unsupported certificate key type ${keyType}`);
  const serial = r.u64();
  const certType = r.u32();
  const keyId = r.string();
  const pr = new Reader(r.bytes());
  const principals: string[] = [];
  while (pr.offset < pr.buf.length) principals.push(pr.string());
  const validAfter = r.u64();
  const validBefore = r.u64();
  const criticalOptions = r.bytes();
  r.bytes(); // extensions
  r.bytes(); // reserved
  const caBlob = r.bytes();
  const signed = blob.subarray(0, r.offset);
  const signature = r.bytes();
  return { keyBlob, serial, type: certType, keyId, principals, validAfter, validBefore, criticalOptions, caBlob, signed, signature };
}

/** A KeyObject for an SSH public key blob, or undefined. */
export function publicKeyOf(blob: Buffer): KeyObject | undefined {
  const k = utils.parseKey(blob);
  if (k instanceof Error) return undefined;
  const pem = k.getPublicPEM();
  try {
    return pem ? createPublicKey(pem) : undefined;
  } catch {
    return undefined;
  }
}

const EC_SIZE: Record<string, [string, number]> = {
  'ecdsa-sha2-nistp256': ['sha256', 32],
  'ecdsa-sha2-nistp384': ['sha384', 48],
  'ecdsa-sha2-nistp521': ['sha512', 66],
};

/** Verify an SSH signature blob (`string algo, string sig`) over `data`. */
export function verifySshSignature(key: KeyObject, data: Buffer, sigBlob: Buffer): boolean {
  try {
    const r = new Reader(sigBlob);
    const algo = r.string();
    const sig = r.bytes();
    if (algo === 'ssh-ed25519') return verify(null, data, key, sig);
    const ec = EC_SIZE[algo];
    if (ec) {
      const [hash, size] = ec;
      const sr = new Reader(sig);
      const fix = (b: Buffer) => {
        const t = b[0] === 0 ? b.subarray(1) : b;
        return Buffer.concat([Buffer.alloc(Math.max(0, size - t.length)), t]);
      };
      const rs = Buffer.concat([fix(sr.bytes()), fix(sr.bytes())]);
      return verify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, rs);
    }
    const rsa = { 'rsa-sha2-256': 'sha256', 'rsa-sha2-512': 'sha512' }[algo];
    if (rsa) return verify(rsa, data, key, sig);
    return false;
  } catch {
    return false;
  }
}

export type CertCheck = { ok: true; cert: SshCertificate } | { ok: false; why: string };

/**
 * Check a user certificate against trusted CA blobs: CA signature, type,
 * validity window, no critical options we do not understand, and that one
 * of its principals is acceptable.
 */
export function checkUserCertificate(
  certBlob: Buffer,
  isTrustedCa: (caBlob: Buffer) => boolean,
  principalOk: (p: string) => boolean,
  now = BigInt(Math.floor(Date.now() / 1000)),
): CertCheck {
  let cert: SshCertificate;
  try {
    cert = parseCertificate(certBlob);
  } catch (e) {
    return { ok: false, why: `malformed certificate: ${(e as Error).message}` };
  }
  if (cert.type !== 1) return { ok: false, why: 'not a user certificate' };
  if (!isTrustedCa(cert.caBlob)) return { ok: false, why: 'certificate signed by an untrusted CA' };
  const ca = publicKeyOf(cert.caBlob);
  if (!ca || !verifySshSignature(ca, cert.signed, cert.signature)) return { ok: false, why: 'bad CA signature' };
  if (now < cert.validAfter || now >= cert.validBefore) return { ok: false, why: 'certificate expired or not yet valid' };
  if (cert.criticalOptions.length > 0) return { ok: false, why: 'certificate has critical options' };
  if (!cert.principals.some(principalOk)) return { ok: false, why: `no acceptable principal in [${cert.principals.join(', ')}]` };
  return { ok: true, cert };
}
