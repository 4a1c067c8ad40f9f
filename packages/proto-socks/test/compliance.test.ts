/** The shared stream compliance suite (test/support/compliance.ts) through the SOCKS5 listener. */
import type { Socket } from 'node:net';
import { direct, type Listener, Policy, Router, Switch, silentLogger } from '@ugate/core';
import { socks } from '@ugate/proto-socks';
import { runCompliance } from '../../../test/support/compliance.js';
import { connectTcp } from '../../../test/support/servers.js';

/** Exactly `n` bytes from a socket, leaving whatever follows in its buffer. */
function readExactly(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (e?: Error, chunk?: Buffer) => {
      s.off('readable', onReadable);
      s.off('end', onEnd);
      s.off('error', done);
      if (chunk) resolve(chunk);
      else reject(e ?? new Error('closed during the SOCKS handshake'));
    };
    const onReadable = () => {
      const chunk = s.read(n) as Buffer | null;
      if (chunk) done(undefined, chunk);
    };
    const onEnd = () => done();
    s.on('readable', onReadable);
    s.on('end', onEnd);
    s.on('error', done);
  });
}

runCompliance('socks5 listener', async () => {
  const sw = new Switch({
    router: new Router({ routes: [{ match: '127.0.0.1', carrier: 'direct' }] }),
    policy: new Policy(),
    dialers: [direct({ connectTimeoutMs: 5_000 })],
    logger: silentLogger,
  });
  const listener: Listener = socks({ listen: '127.0.0.1:0' })({ switch: sw, logger: silentLogger });
  await listener.listen();
  const port = Number(listener.addresses()[0]?.split(':')[1]);
  return {
    async connect(target) {
      const s = await connectTcp(port);
      const ip = target.host.split('.').map(Number);
      s.write(Buffer.from([5, 1, 0, 5, 1, 0, 1, ...ip, target.port >> 8, target.port & 0xff]));
      const reply = await readExactly(s, 12);
      if (!reply.equals(Buffer.from([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))) throw new Error(`SOCKS reply ${reply.toString('hex')}`);
      return s;
    },
    closeListener: () => listener.close(),
    async close() {
      await listener.close();
      await sw.drain(0);
    },
  };
});
