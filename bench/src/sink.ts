/**
 * Target servers for the benchmark, run as their own process so that the
 * benchmark client and the servers do not share an event loop.
 *
 * Prints one JSON line `{"discard":port,"source":port,"echo":port}` once listening.
 * - discard: reads and drops everything; when the client half-closes, replies
 *   with the byte count as a decimal line and closes.
 * - source: reads an 8-byte big-endian length N, then sends N bytes and closes.
 * - echo: sends back what it reads; ends when the client ends.
 */
import { randomFillSync } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';

const CHUNK = randomFillSync(Buffer.allocUnsafe(256 * 1024));

function discard(sock: Socket): void {
  let n = 0;
  sock.on('data', (d: Buffer) => {
    n += d.length;
  });
  sock.on('end', () => sock.end(`${n}\n`));
}

function source(sock: Socket): void {
  let head: Buffer = Buffer.alloc(0);
  const onData = (d: Buffer) => {
    head = Buffer.concat([head, d]);
    if (head.length < 8) return;
    sock.off('data', onData);
    // Keep reading (and dropping) so a client half-close is seen and nothing backs up.
    sock.on('data', () => {});
    let left = Number(head.readBigUInt64BE(0));
    const pump = () => {
      while (left > 0) {
        const len = Math.min(left, CHUNK.length);
        left -= len;
        if (!sock.write(len === CHUNK.length ? CHUNK : CHUNK.subarray(0, len))) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  };
  sock.on('data', onData);
  sock.on('end', () => {
    if (head.length < 8) sock.end();
  });
}

function echo(sock: Socket): void {
  sock.on('data', (d: Buffer) => {
    if (!sock.write(d)) sock.pause();
  });
  sock.on('drain', () => sock.resume());
  sock.on('end', () => sock.end());
}

function listen(handler: (s: Socket) => void): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
    sock.on('error', () => sock.destroy());
    handler(sock);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => resolve(srv));
  });
}

const port = (s: Server) => (s.address() as { port: number }).port;
const [d, s, e] = await Promise.all([listen(discard), listen(source), listen(echo)]);
process.stdout.write(`${JSON.stringify({ discard: port(d), source: port(s), echo: port(e) })}\n`);
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
