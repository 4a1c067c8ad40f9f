import { webcrypto } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { type SpiffeId, spiffeUri } from './spiffe.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

async function keyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

function serial(): string {
  // Positive, 16 random bytes.
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

export interface Pem {
  readonly certPem: string;
  readonly keyPem: string;
}

/** A self-signed mesh root: EC P-256, CA:TRUE, keyCertSign. */
export async function createCa(opts: { trustDomain: string; days?: number }): Promise<Pem> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `O=${opts.trustDomain}, CN=ugate mesh CA`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (opts.days ?? 3650) * DAY),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

/**
 * A workload certificate as Istio issues them: no subject, the SPIFFE URI as
 * the only (critical) SAN, serverAuth + clientAuth.
 */
export async function issueWorkloadCert(ca: Pem, id: SpiffeId, opts: { days?: number } = {}): Promise<Pem> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(ca.keyPem), ALG, false, ['sign']);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: '',
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (opts.days ?? 1) * DAY),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey as unknown as CryptoKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeUri(id) }], true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** Istio's file names in a credentials folder. */
export const CERT_FILES = { cert: 'tls.crt', key: 'tls.key', ca: 'ca.crt' } as const;

export function writeCredentials(dir: string, leaf: Pem, caCertPem: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, CERT_FILES.cert), leaf.certPem, { mode: 0o644 });
  writeFileSync(join(dir, CERT_FILES.key), leaf.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, CERT_FILES.ca), caCertPem, { mode: 0o644 });
}

export function readCa(dir: string): Pem {
  return { certPem: readFileSync(join(dir, 'ca.crt'), 'utf8'), keyPem: readFileSync(join(dir, 'ca.key'), 'utf8') };
}

export function writeCa(dir: string, ca: Pem): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // The key first, with 'wx': an existing mesh root is never overwritten, not even its certificate.
  writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600, flag: 'wx' });
  writeFileSync(join(dir, 'ca.crt'), ca.certPem, { mode: 0o644 });
}
