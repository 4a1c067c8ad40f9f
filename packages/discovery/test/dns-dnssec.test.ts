import { generateKeyPairSync } from 'node:crypto';
import { ErrorCodes, identityFromPem, isUgateError, makeTarget, spkiDigest } from '@ugate/core';
import { dnsQuery, dnsSource } from '@ugate/discovery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Bind9, startBind9 } from '../../../test/support/bind9.js';

const node = identityFromPem(
  generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
);
const ZONE = {
  origin: 'secure.test',
  sign: true,
  records: `
node1 A 127.0.0.11
_ugate-hbone._tcp.web SRV 0 1 15008 node1
_15008._tcp.node1 TLSA 3 1 1 ${spkiDigest(node.spki).toString('hex')}
`,
};

// auth: serves the signed zone. validator: a resolver that trusts auth's key.
// impostor: the same zone signed with another key, whose anchor a misconfigured resolver trusts.
let auth: Bind9;
let impostor: Bind9;
let validator: Bind9;
let misled: Bind9;

beforeAll(async () => {
  [auth, impostor] = await Promise.all([startBind9({ zones: [ZONE] }), startBind9({ zones: [ZONE] })]);
  [validator, misled] = await Promise.all([
    startBind9({ forward: [{ origin: 'secure.test', to: auth.server }], trustAnchors: auth.trustAnchors }),
    startBind9({ forward: [{ origin: 'secure.test', to: auth.server }], trustAnchors: impostor.trustAnchors }),
  ]);
});

afterAll(async () => {
  await Promise.all([validator?.stop(), misled?.stop(), auth?.stop(), impostor?.stop()]);
});

const signal = () => AbortSignal.timeout(10_000);

describe('dnsSource with requireAd behind a validating resolver', () => {
  it('reports the AD bit only for answers the resolver validated', async () => {
    expect((await dnsQuery([validator.server], '_15008._tcp.node1.secure.test', 'TLSA')).authentic).toBe(true);
    expect((await dnsQuery([auth.server], '_15008._tcp.node1.secure.test', 'TLSA')).authentic).toBe(false);
  });

  it('uses TLSA identities from validated answers', async () => {
    const ans = await dnsSource({ servers: [validator.server], requireAd: true }).lookup(makeTarget('web.secure.test', 443), signal());
    expect(ans?.endpoints).toEqual([
      { carrier: 'hbone', address: { host: '127.0.0.11', port: 15008 }, identity: node.id, weight: 1, priority: 0 },
    ]);
  });

  it('drops them when the same records arrive without validation', async () => {
    const ans = await dnsSource({ servers: [auth.server], requireAd: true }).lookup(makeTarget('web.secure.test', 443), signal());
    expect(ans?.endpoints).toEqual([]);
    expect(ans?.detail).toContain('_15008._tcp.node1.secure.test TLSA not DNSSEC-validated');
  });

  it('fails when validation fails (the resolver answers SERVFAIL)', async () => {
    const err = await dnsSource({ servers: [misled.server], requireAd: true })
      .lookup(makeTarget('web.secure.test', 443), signal())
      .catch((e: unknown) => e);
    expect(isUgateError(err) && err.code).toBe(ErrorCodes.UNREACHABLE);
    expect((err as Error).message).toContain('SERVFAIL');
  });
});
