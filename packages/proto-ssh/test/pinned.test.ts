/** Peers trusted by pinned node ID alone (no authorized_keys), and the names they may register. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { direct, loadOrCreateIdentity, meshName, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { expect, it } from 'vitest';
import { sshCarrier, sshServer } from '../src/index.js';

it('accepts a key by pinned node ID, lets it register only its listed names, refuses other keys', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ugate-pinned-'));
  const [gid, bid, eid] = ['gw', 'bob', 'eve'].map((n) => loadOrCreateIdentity(join(dir, n)));
  const gsw = new Switch({ router: new Router(), policy: new Policy(), dialers: [direct()], logger: silentLogger });
  const srv = sshServer({ listen: '127.0.0.1:0', peers: [{ id: bid!.id, names: ['bob.mesh.internal'] }] })({
    switch: gsw,
    logger: silentLogger,
    identity: gid!,
  });
  await srv.listen();
  const carrier = (id: typeof bid) => {
    const sw = new Switch({ router: new Router(), policy: new Policy(), dialers: [], logger: silentLogger });
    const c = sshCarrier({
      gateways: [{ address: srv.addresses()[0]!, id: gid!.id }],
      names: ['bob.mesh.internal', 'other.mesh.internal'],
      waitForGatewayMs: 1500,
    })({
      switch: sw,
      logger: silentLogger,
      identity: id!,
    });
    c.start();
    return c;
  };
  const bob = carrier(bid);
  await bob.ready();
  expect(bob.status()[0]!.registered.sort()).toEqual(['bob.mesh.internal', meshName(bid!.id)].sort());
  const eve = carrier(eid);
  await expect(eve.ready(1500)).rejects.toMatchObject({ code: 'UGATE_ERR_UNREACHABLE' });
  expect(eve.status()[0]!.connected).toBe(false);
  await bob.stop();
  await eve.stop();
  await srv.close();
  await srv.disconnect();
  rmSync(dir, { recursive: true, force: true });
});
