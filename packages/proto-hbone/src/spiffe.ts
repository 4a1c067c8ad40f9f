import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { ErrorCodes, nodeIdFromSpki, UgateError } from '@ugate/core';

/** A SPIFFE workload identity in Istio's form: spiffe://<trust-domain>/ns/<namespace>/sa/<account>. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const NODE_ID = /^[a-z2-7]{52}$/;
const RE = /^spiffe:\/\/([a-z0-9._-]+)\/ns\/([^/]+)\/sa\/([^/]+)$/;

export function parseSpiffe(uri: string): SpiffeId | undefined {
  const m = RE.exec(uri.trim());
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! } : undefined;
}

export function spiffeUri(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Istio's principal form used in policy: `td/ns/<ns>/sa/<sa>` (no scheme). */
export function principalOf(id: SpiffeId): string {
  return `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/**
 * URI SANs from node's `subjectaltname` string (`URI:spiffe://…, DNS:x`). Only
 * URI SANs carry identity; subject and DNS SANs are ignored on purpose.
 */
export function uriSans(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  return subjectaltname
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/** The one SPIFFE identity of a certificate, or throw AUTH. */
export function certIdentity(subjectaltname: string | undefined): SpiffeId {
  const ids = uriSans(subjectaltname)
    .map(parseSpiffe)
    .filter((x): x is SpiffeId => x !== undefined);
  if (ids.length !== 1) throw new UgateError(ErrorCodes.AUTH, `certificate carries ${ids.length} SPIFFE identities, need exactly 1`);
  return ids[0]!;
}

/**
 * A `checkServerIdentity` for TLS clients: no host name check (HBONE sends no
 * SNI); the peer's URI SANs must include `identity` when one is expected.
 */
/**
 * A TLS `checkServerIdentity` for an expected peer identity: a SPIFFE URI (matched against the
 * URI SANs), or a node ID (52 base32 characters: SHA-256 of the certificate's key, as DANE
 * `TLSA 3 1 1` and `<id>.m` names pin it).
 */
export function expectIdentity(identity: string | undefined) {
  return (_host: string, cert: PeerCertificate): Error | undefined => {
    if (!identity) return undefined;
    if (NODE_ID.test(identity)) {
      const id = nodeIdFromSpki(new X509Certificate(cert.raw).publicKey.export({ type: 'spki', format: 'der' }));
      return id === identity ? undefined : new UgateError(ErrorCodes.AUTH, `peer key ${id} is not the expected ${identity}`);
    }
    const sans = uriSans(cert.subjectaltname);
    return sans.includes(identity)
      ? undefined
      : new UgateError(ErrorCodes.AUTH, `peer identity [${sans.join(', ')}] is not the expected ${identity}`);
  };
}
