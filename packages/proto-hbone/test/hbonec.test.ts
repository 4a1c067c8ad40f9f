import { createServer, Socket } from 'node:net';
import { direct, type Listener, makeTarget, newSid, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../test/support/proc.js';
import { hashServer, randomBytes, readAll, sha256, type TestServer, waitFor, whenClosed } from '../../../test/support/servers.js';
import { hboneDialer, hboneServer } from '../src/index.js';

let sink: TestServer;
let server: Listener;
let port: number;
const serverSw = new Switch({
  router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
  policy: new Policy(),
  dialers: [direct()],
  logger: silentLogger,
});

function client(address: string, ping?: { pingIntervalMs: number; pingTimeoutMs: number }) {
  const sw = new Switch({
    router: new Router({ routes: [{ match: '*', carrier: 'hbonec', address }] }),
    policy: new Policy(),
    dialers: [],
    logger: silentLogger,
  });
  const d = hboneDialer({ ...ping })({ logger: silentLogger });
  sw.addDialer(d);
  const open = (p: number) =>
    sw.open({
      sid: newSid(),
      target: makeTarget('127.0.0.1', p),
      protocol: 'test',
      source: { address: '127.0.0.1', port: 1 },
      peer: { kind: 'local', principals: [] },
    });
  return { d, open };
}

beforeAll(async () => {
  sink = await hashServer();
  port = await freePort();
  server = hboneServer({ listen: `127.0.0.1:${port}` })({ switch: serverSw, logger: silentLogger });
  await server.listen();
});

afterAll(async () => {
  await server.close();
  await serverSw.drain(0);
  await sink.close();
});

describe('hbonec (h2c)', () => {
  it('carries a CONNECT stream byte-exact with half-close', async () => {
    const { d, open } = client(`127.0.0.1:${port}`);
    const { stream } = await open(sink.port);
    const data = randomBytes(4 * 1024 * 1024);
    const reply = readAll(stream);
    stream.end(data);
    expect((await reply).toString()).toBe(sha256(data));
    d.close();
  });

  it('drops a peer that stops answering PINGs; its streams end with an error', async () => {
    // A TCP relay in front of the server that can go silent (a blackholed peer).
    let silent = false;
    const pairs: Socket[] = [];
    const relayPort = await freePort();
    const relay = createServer((a) => {
      const b = new Socket();
      pairs.push(a, b);
      b.connect(port, '127.0.0.1');
      a.on('data', (c) => silent || b.write(c));
      b.on('data', (c) => silent || a.write(c));
      for (const s of [a, b]) s.on('error', () => {});
    });
    await new Promise<void>((r) => relay.listen(relayPort, '127.0.0.1', () => r()));
    const { d, open } = client(`127.0.0.1:${relayPort}`, { pingIntervalMs: 100, pingTimeoutMs: 600 });
    const { stream } = await open(sink.port);
    expect(d.sessions()).toBe(1);
    stream.on('error', () => {});
    silent = true;
    const closed = await whenClosed(stream, 10_000);
    expect(closed.error).toBeDefined();
    expect(closed.ended).toBe(false);
    await waitFor(() => d.sessions() === 0, 5000, 'session dropped');
    d.close();
    for (const s of pairs) s.destroy();
    relay.close();
  });
});
