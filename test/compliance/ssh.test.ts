/**
 * The compliance suite over the SSH carrier, both ways a stream crosses it:
 *  - direct: node → (direct-tcpip) → gateway → target;
 *  - reverse: node → gateway → (forwarded-tcpip) → a node with no listener → target.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, loadOrCreateIdentity, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { type SshCarrier, sshCarrier, sshServer } from '@ugate/proto-ssh';
import { type ComplianceHarness, runCompliance } from '../support/compliance.js';

async function mesh(reverse: boolean): Promise<ComplianceHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'ugate-ssh-compliance-'));
  const [gid, aid, bid] = ['gw', 'alice', 'bob'].map((n) => loadOrCreateIdentity(join(dir, n)));
  const sw = (routes: ConstructorParameters<typeof Router>[0]) =>
    new Switch({ router: new Router(routes), policy: new Policy(), dialers: [direct()], logger: silentLogger });
  const gsw = sw({ routes: [{ match: '*', carrier: 'direct' }] });
  const srv = sshServer({
    listen: '127.0.0.1:0',
    authorizedKeys: `${aid!.sshPublicKey}\npermitlisten="bob.mesh.internal:0" ${bid!.sshPublicKey}\n`,
  })({ switch: gsw, logger: silentLogger, identity: gid! });
  await srv.listen();
  const gateways = [{ address: srv.addresses()[0]!, id: gid!.id }];
  const carriers: SshCarrier[] = [];
  const carrier = (s: Switch, identity: typeof aid, names: string[]) => {
    const c = sshCarrier({ gateways, names })({ switch: s, logger: silentLogger, identity: identity! });
    s.addDialer(c);
    c.start();
    carriers.push(c);
    return c;
  };
  const asw = sw({ routes: [{ match: '*', carrier: 'ssh' }] });
  await carrier(asw, aid, []).ready();
  const bsw = sw({});
  if (reverse) await carrier(bsw, bid, ['bob.mesh.internal']).ready();

  return {
    async connect(t) {
      let target = makeTarget(t.host, t.port);
      if (reverse) {
        bsw.router.addService(`bob.mesh.internal:${t.port}`, `${t.host}:${t.port}`);
        target = makeTarget('bob.mesh.internal', t.port);
      }
      const opened = await asw.open({
        sid: newSid(),
        target,
        protocol: 'test',
        source: { address: '127.0.0.1', port: 1 },
        peer: { kind: 'local', principals: [] },
      });
      return opened.stream;
    },
    closeListener: () => srv.close(),
    async close() {
      await srv.close();
      for (const c of carriers) await c.stop();
      await srv.disconnect();
      await Promise.all([asw.drain(0), bsw.drain(0), gsw.drain(0)]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

runCompliance('ssh carrier (direct-tcpip through a gateway)', () => mesh(false));
runCompliance('ssh carrier (forwarded-tcpip to a node without listeners)', () => mesh(true));
