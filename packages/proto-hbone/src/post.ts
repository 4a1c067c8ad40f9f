import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { ErrorCodes, UgateError } from '@ugate/core';
import { createLocalJWKSet, type JSONWebKeySet, type JWTPayload, jwtVerify } from 'jose';
import type { WorkloadCredentials } from './credentials.js';
import { certIdentity, type SpiffeId } from './spiffe.js';

/**
 * POST mode: for HTTP infrastructure that cannot carry CONNECT. The request is
 * `POST` with `x-tun: host:port` and `authorization: Bearer <JWT>`; once
 * answered 200, the stream carries an inner, end-to-end mTLS session, so the
 * front end that checked the JWT never sees plaintext.
 */
export interface PostModeInit {
  /** Accepted token issuer (`iss`). */
  issuer: string;
  /** Accepted audience (`aud`). */
  audience: string;
  /** Keys that may sign tokens. */
  jwks: JSONWebKeySet;
  /** Allowed clock skew in seconds. Default 30. */
  clockToleranceSec?: number;
}

export type TokenCheck = (authorization: string | undefined) => Promise<JWTPayload>;

/** Verify `Bearer <JWT>` (signature by a JWKS key, issuer, audience, expiry); throws AUTH. */
export function tokenVerifier(init: PostModeInit): TokenCheck {
  const keys = createLocalJWKSet(init.jwks);
  return async (authorization) => {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
    if (!m) throw new UgateError(ErrorCodes.AUTH, 'missing bearer token');
    try {
      const { payload } = await jwtVerify(m[1]!, keys, {
        issuer: init.issuer,
        audience: init.audience,
        clockTolerance: init.clockToleranceSec ?? 30,
        requiredClaims: ['exp'],
      });
      return payload;
    } catch (e) {
      throw new UgateError(ErrorCodes.AUTH, `token rejected: ${(e as Error).message}`, { cause: e });
    }
  };
}

/** The inner mTLS session, server side, over an answered POST stream. Resolves with the peer's identity. */
export function acceptInnerTls(
  stream: Duplex,
  creds: WorkloadCredentials,
  timeoutMs: number,
): Promise<{ socket: TLSSocket; peer: SpiffeId }> {
  const c = creds.current;
  const socket = new TLSSocket(stream, {
    isServer: true,
    key: c.key,
    cert: c.cert,
    ca: c.ca,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new UgateError(ErrorCodes.TIMEOUT, 'inner TLS handshake timed out')), timeoutMs);
    const fail = (e: UgateError) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    socket.once('error', (e: Error) => fail(new UgateError(ErrorCodes.AUTH, `inner TLS: ${e.message}`, { cause: e })));
    socket.once('secure', () => {
      clearTimeout(timer);
      try {
        resolve({ socket, peer: certIdentity(socket.getPeerCertificate().subjectaltname) });
      } catch (e) {
        fail(e as UgateError);
      }
    });
  });
}
