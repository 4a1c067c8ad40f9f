/** POST mode: POST + x-tun + bearer JWT, then an inner end-to-end mTLS session inside the stream. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, type Listener, makeTarget, newSid, Policy, Router, Switch } from '@ugate/core';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordingLogger } from '../../../test/support/listener.js';
import { hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from '../../../test/support/servers.js';
import { createCa, hboneDialer, hboneServer, issueWorkloadCert, type Pem, WorkloadCredentials, writeCredentials } from '../src/index.js';

const TD = 'cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'ugate-post-'));
const log = recordingLogger();
let ca: Pem;
let sink: TestServer;
let server: Listener;
let sign: (claims: { aud?: string; exp?: number | string }) => Promise<string>;

async function creds(sa: string): Promise<WorkloadCredentials> {
  writeCredentials(join(dir, sa), await issueWorkloadCert(ca, { trustDomain: TD, namespace: 'default', serviceAccount: sa }), ca.certPem);
  return new WorkloadCredentials(join(dir, sa));
}

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  sink = await hashServer();
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
  sign = ({ aud = 'ugate', exp = '5m' }) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('https://issuer.test')
      .setAudience(aud)
      .setSubject('tester')
      .setIssuedAt()
      .setExpirationTime(exp)
      .sign(privateKey);
  const sw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
    policy: new Policy(),
    dialers: [direct()],
    logger: log,
  });
  server = hboneServer({
    listen: '127.0.0.1:0',
    credentials: await creds('server'),
    post: { issuer: 'https://issuer.test', audience: 'ugate', jwks: { keys: [jwk] } },
  })({ switch: sw, logger: log });
  await server.listen();
});

afterAll(async () => {
  await server.close();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

async function client(token: string) {
  const sw = new Switch({
    router: new Router({
      routes: [
        {
          match: '*',
          carrier: 'hbone',
          address: server.addresses()[0]!,
          identity: `spiffe://${TD}/ns/default/sa/server`,
          options: { mode: 'post', token },
        },
      ],
    }),
    policy: new Policy(),
    dialers: [],
    logger: log,
  });
  const d = hboneDialer({ credentials: await creds('client') })({ logger: log });
  sw.addDialer(d);
  const open = () =>
    sw.open({
      sid: newSid(),
      target: makeTarget('127.0.0.1', sink.port),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });
  return { d, open };
}

describe('HBONE POST mode', () => {
  it('with a valid token: the inner mTLS stream carries bytes exactly, half-close included', async () => {
    const { d, open } = await client(await sign({}));
    const { stream } = await open();
    const data = randomBytes(2 * 1024 * 1024 + 11);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    await waitFor(() => log.lines.some((l) => l.fields.proto === 'hbone-post' && l.fields.result === 'ok'), 5000, 'access line');
    d.close();
  });

  it('refuses an expired token and a token for another audience with 401 (AUTH)', async () => {
    for (const token of [await sign({ exp: Math.floor(Date.now() / 1000) - 3600 }), await sign({ aud: 'someone-else' }), 'not-a-jwt']) {
      const { d, open } = await client(token);
      await expect(open()).rejects.toMatchObject({ code: 'UGATE_ERR_AUTH' });
      d.close();
    }
    const rejected = log.lines.filter((l) => l.msg === 'hbone POST rejected').map((l) => String(l.fields.err));
    expect(rejected.some((e) => /exp/.test(e))).toBe(true);
    expect(rejected.some((e) => /aud/.test(e))).toBe(true);
  });
});
