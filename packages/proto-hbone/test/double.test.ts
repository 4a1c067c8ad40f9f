/**
 * Double HBONE through a ugate east-west gateway: the client's outer CONNECT
 * goes to the gateway, which routes the authority to the destination's HBONE
 * port and forwards bytes; the client's TLS + HTTP/2 session inside it ends at
 * the destination, which sees the client's identity, not the gateway's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, type Listener, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordingLogger } from '../../../test/support/listener.js';
import { hashServer, randomBytes, readAll, sha256, type TestServer, waitFor } from '../../../test/support/servers.js';
import { createCa, hboneDialer, hboneServer, issueWorkloadCert, type Pem, WorkloadCredentials, writeCredentials } from '../src/index.js';

const TD = 'cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'ugate-double-'));
let ca: Pem;
let sink: TestServer;
const listeners: Listener[] = [];
const destLog = recordingLogger();
const gwLog = recordingLogger();
let gwAddr: string;

async function creds(sa: string, ns = 'default'): Promise<WorkloadCredentials> {
  writeCredentials(join(dir, sa), await issueWorkloadCert(ca, { trustDomain: TD, namespace: ns, serviceAccount: sa }), ca.certPem);
  return new WorkloadCredentials(join(dir, sa));
}

beforeAll(async () => {
  ca = await createCa({ trustDomain: TD });
  sink = await hashServer();
  // destination node in "network 2": serves svc.remote:80 from the local sink
  const destSw = new Switch({
    router: new Router({ services: { 'svc.remote:80': `127.0.0.1:${sink.port}` } }),
    policy: new Policy(),
    dialers: [direct()],
    logger: destLog,
  });
  const dest = hboneServer({ listen: '127.0.0.1:0', credentials: await creds('dest'), acceptPeer: () => true })({
    switch: destSw,
    logger: destLog,
  });
  await dest.listen();
  // east-west gateway: sends anything for *.remote to the destination's HBONE port, bytes untouched
  const gwSw = new Switch({
    router: new Router({ routes: [{ match: '*.remote', carrier: 'direct', address: dest.addresses()[0]! }] }),
    policy: new Policy(),
    dialers: [direct()],
    logger: gwLog,
  });
  const gw = hboneServer({ listen: '127.0.0.1:0', credentials: await creds('eastwest', 'istio-system'), acceptPeer: () => true })({
    switch: gwSw,
    logger: gwLog,
  });
  await gw.listen();
  gwAddr = gw.addresses()[0]!;
  listeners.push(dest, gw);
});

afterAll(async () => {
  for (const l of listeners) await l.close();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('double HBONE', () => {
  it('reaches a service in another network end to end through the east-west gateway', async () => {
    const sw = new Switch({
      router: new Router({
        routes: [
          {
            match: '*.remote',
            carrier: 'hbone',
            identity: `spiffe://${TD}/ns/default/sa/dest`,
            gateway: { address: gwAddr, identity: `spiffe://${TD}/ns/istio-system/sa/eastwest` },
          },
        ],
      }),
      policy: new Policy(),
      dialers: [],
      logger: silentLogger,
    });
    const d = hboneDialer({ credentials: await creds('client'), network: 'net1' })({ logger: silentLogger });
    sw.addDialer(d);
    const open = () =>
      sw.open({
        sid: newSid(),
        target: makeTarget('svc.remote', 80),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      });
    const { stream } = await open();
    const data = randomBytes(3 * 1024 * 1024 + 5);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    // The destination saw the client (inner mTLS), with the forwarded network.
    await waitFor(() => destLog.lines.some((l) => l.fields.result === 'ok'), 5000, 'destination access line');
    const at = destLog.lines.find((l) => l.fields.result === 'ok')!;
    expect(at.fields.peer).toBe(`${TD}/ns/default/sa/client`);
    expect(at.fields.target).toBe('svc.remote:80');
    // The gateway saw the client's outer CONNECT and relayed more bytes than the payload (TLS overhead): it forwarded ciphertext.
    await waitFor(() => gwLog.lines.some((l) => l.fields.result === 'ok'), 5000, 'gateway access line');
    const g = gwLog.lines.find((l) => l.fields.result === 'ok')!;
    expect(g.fields.target).toBe('svc.remote:80');
    expect(g.fields.peer).toBe(`${TD}/ns/default/sa/client`);
    expect(Number(g.fields.bytesIn)).toBeGreaterThan(data.length);

    // A destination with another identity than expected is refused (checked end to end, not by the gateway).
    const wrong = new Switch({
      router: new Router({
        routes: [{ match: '*.remote', carrier: 'hbone', identity: `spiffe://${TD}/ns/default/sa/imposter`, gateway: { address: gwAddr } }],
      }),
      policy: new Policy(),
      dialers: [d],
      logger: silentLogger,
    });
    await expect(
      wrong.open({
        sid: newSid(),
        target: makeTarget('svc.remote', 80),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      }),
    ).rejects.toMatchObject({ code: 'UGATE_ERR_AUTH' });
    d.close();
  });
});
