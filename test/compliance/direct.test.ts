/**
 * The compliance suite against the core data path itself: a plain TCP
 * port-forward listener (one per target) whose accepted sockets go through
 * Switch.pipe → Router → direct dialer → relay.
 */
import { createServer, type Server } from 'node:net';
import { direct, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { type ComplianceHarness, runCompliance } from '../support/compliance.js';
import { connectTcp, LOCALHOST } from '../support/servers.js';

async function coreHarness(): Promise<ComplianceHarness> {
  const sw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
    policy: new Policy(),
    dialers: [direct({ connectTimeoutMs: 5_000 })],
    logger: silentLogger,
  });
  const listeners = new Map<string, Promise<Server>>();
  const pipes = new Set<Promise<void>>();

  const listenerFor = (target: { host: string; port: number }): Promise<Server> => {
    const key = `${target.host}:${target.port}`;
    let l = listeners.get(key);
    if (!l) {
      const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
        const req = {
          sid: newSid(),
          target: makeTarget(target.host, target.port),
          protocol: 'tcp-forward',
          source: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
          peer: { kind: 'local' as const, principals: [] },
        };
        const p = sw.pipe(req, socket);
        pipes.add(p);
        void p.finally(() => pipes.delete(p));
      });
      l = new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, LOCALHOST, () => resolve(server));
      });
      listeners.set(key, l);
    }
    return l;
  };

  const closeListener = async () => {
    // Stop accepting; server.close()'s callback would wait for live connections, so don't await it.
    for (const l of listeners.values()) {
      const server = await l;
      if (server.listening) server.close();
    }
  };

  return {
    async connect(target) {
      const server = await listenerFor(target);
      const addr = server.address();
      if (addr === null || typeof addr === 'string') throw new Error('listener has no port');
      return connectTcp(addr.port);
    },
    closeListener,
    async close() {
      await closeListener();
      await sw.drain(0);
      await Promise.all(pipes);
    },
  };
}

runCompliance('core switch + direct dialer', coreHarness);
