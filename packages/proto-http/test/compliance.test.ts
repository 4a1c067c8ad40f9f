/** The shared stream compliance suite (test/support/compliance.ts) through HTTP CONNECT. */
import type { Socket } from 'node:net';
import { direct, type Listener, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { httpProxy } from '@ugate/proto-http';
import { runCompliance } from '../../../test/support/compliance.js';
import { connectTcp } from '../../../test/support/servers.js';

/** The response head, leaving whatever follows it in the socket's buffer. */
function readHead(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (e?: Error, head?: string) => {
      s.off('readable', onReadable);
      s.off('end', onEnd);
      s.off('error', done);
      if (head !== undefined) resolve(head);
      else reject(e ?? new Error('closed before the CONNECT response'));
    };
    const onReadable = () => {
      for (let chunk = s.read() as Buffer | null; chunk; chunk = s.read() as Buffer | null) buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (end + 4 < buf.length) s.unshift(buf.subarray(end + 4));
      done(undefined, buf.subarray(0, end + 4).toString('latin1'));
    };
    const onEnd = () => done();
    s.on('readable', onReadable);
    s.on('end', onEnd);
    s.on('error', done);
  });
}

runCompliance('http CONNECT listener', async () => {
  const sw = new Switch({
    router: new Router({ routes: [{ match: '127.0.0.1', carrier: 'direct' }] }),
    policy: new Policy(),
    dialers: [direct({ connectTimeoutMs: 5_000 })],
    logger: silentLogger,
  });
  const listener: Listener = httpProxy({ listen: '127.0.0.1:0' })({ switch: sw, logger: silentLogger });
  await listener.listen();
  const port = Number(listener.addresses()[0]?.split(':')[1]);
  return {
    async connect(target) {
      const s = await connectTcp(port);
      const authority = `${target.host}:${target.port}`;
      s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const head = await readHead(s);
      if (head !== 'HTTP/1.1 200 Connection Established\r\n\r\n') throw new Error(`CONNECT answered ${JSON.stringify(head)}`);
      return s;
    },
    closeListener: () => listener.close(),
    async close() {
      await listener.close();
      await sw.drain(0);
    },
  };
});
