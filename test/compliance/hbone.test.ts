/** The compliance suite over HBONE (HTTP/2 CONNECT over mTLS) and hbonec (h2c): ugate dialer → ugate server → target. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { createCa, hboneDialer, hboneServer, issueWorkloadCert, WorkloadCredentials, writeCredentials } from '@ugate/proto-hbone';
import { type ComplianceHarness, runCompliance } from '../support/compliance.js';

async function harness(tls: boolean): Promise<ComplianceHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'ugate-hbone-compliance-'));
  let creds: { server?: WorkloadCredentials; client?: WorkloadCredentials } = {};
  if (tls) {
    const ca = await createCa({ trustDomain: 'cluster.local' });
    for (const sa of ['server', 'client'] as const) {
      writeCredentials(
        join(dir, sa),
        await issueWorkloadCert(ca, { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: sa }),
        ca.certPem,
      );
    }
    creds = { server: new WorkloadCredentials(join(dir, 'server')), client: new WorkloadCredentials(join(dir, 'client')) };
  }
  const ssw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
    policy: new Policy(),
    dialers: [direct()],
    logger: silentLogger,
  });
  const srv = hboneServer({ listen: '127.0.0.1:0', credentials: creds.server })({ switch: ssw, logger: silentLogger });
  await srv.listen();
  const carrier = tls ? 'hbone' : 'hbonec';
  const csw = new Switch({
    router: new Router({
      routes: [{ match: '*', carrier, address: srv.addresses()[0]!, identity: tls ? 'spiffe://cluster.local/ns/ns/sa/server' : undefined }],
    }),
    policy: new Policy(),
    dialers: [],
    logger: silentLogger,
  });
  const d = hboneDialer({ credentials: creds.client })({ logger: silentLogger });
  csw.addDialer(d);
  return {
    async connect(t) {
      const req = {
        sid: newSid(),
        target: makeTarget(t.host, t.port),
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local' as const, principals: [] },
      };
      return (await csw.open(req)).stream;
    },
    closeListener: () => srv.close(),
    async close() {
      await srv.close();
      d.close();
      await ssw.drain(0);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

runCompliance('hbone (HTTP/2 CONNECT over mTLS)', () => harness(true));
runCompliance('hbonec (HTTP/2 CONNECT over h2c)', () => harness(false));
