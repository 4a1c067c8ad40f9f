import { connect, isIPv4, type Socket } from 'node:net';

export interface Endpoint {
  host: string;
  port: number;
}

/** Open a TCP connection; rejects on error or after `timeoutMs`. */
export function tcpConnect(to: Endpoint, timeoutMs = 10_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${to.host}:${to.port} timed out`));
    }, timeoutMs);
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
  });
}

const REPLIES: Record<number, string> = {
  1: 'general failure',
  2: 'not allowed by ruleset',
  3: 'network unreachable',
  4: 'host unreachable',
  5: 'connection refused',
  6: 'TTL expired',
  7: 'command not supported',
  8: 'address type not supported',
};

/** Bytes of a complete CONNECT reply at the start of `b`, or 0 when more are needed. */
function replyLength(b: Buffer): number {
  if (b.length < 5) return 0;
  const atyp = b[3];
  const addr = atyp === 1 ? 4 : atyp === 4 ? 16 : atyp === 3 ? 1 + b[4]! : -1;
  if (addr < 0) throw new Error(`SOCKS5: bad address type ${atyp} in reply`);
  const total = 4 + addr + 2;
  return b.length >= total ? total : 0;
}

function connectRequest(dest: Endpoint): Buffer {
  const port = Buffer.from([dest.port >> 8, dest.port & 0xff]);
  if (isIPv4(dest.host)) return Buffer.concat([Buffer.from([5, 1, 0, 1, ...dest.host.split('.').map(Number)]), port]);
  const name = Buffer.from(dest.host, 'utf8');
  return Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, port]);
}

/**
 * SOCKS5 CONNECT (no authentication) through `proxy` to `dest`. Resolves with
 * the socket paused and positioned after the reply: call `resume()` or attach
 * a reader. The greeting and the request are sent one after the other (no
 * pipelining) since not every server buffers an early request.
 */
export async function socksConnect(proxy: Endpoint, dest: Endpoint, timeoutMs = 10_000): Promise<Socket> {
  const s = await tcpConnect(proxy, timeoutMs);
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let phase: 'method' | 'reply' = 'method';
    const timer = setTimeout(() => fail(new Error(`SOCKS5 handshake with ${proxy.host}:${proxy.port} timed out`)), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      s.off('data', onData);
      s.destroy();
      reject(e);
    };
    const onData = (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      if (phase === 'method') {
        if (buf.length < 2) return;
        if (buf[0] !== 5 || buf[1] !== 0) return fail(new Error(`SOCKS5: method ${buf[1]} refused`));
        buf = buf.subarray(2);
        phase = 'reply';
        s.write(connectRequest(dest));
      }
      if (buf.length === 0) return;
      if (buf[0] !== 5) return fail(new Error('SOCKS5: bad reply version'));
      if (buf.length >= 2 && buf[1] !== 0) {
        return fail(new Error(`SOCKS5 CONNECT ${dest.host}:${dest.port}: ${REPLIES[buf[1]!] ?? `reply ${buf[1]}`}`));
      }
      let n: number;
      try {
        n = replyLength(buf);
      } catch (e) {
        return fail(e as Error);
      }
      if (n === 0) return;
      clearTimeout(timer);
      s.off('data', onData);
      s.off('error', fail);
      s.off('end', onEnd);
      s.pause();
      if (buf.length > n) s.unshift(buf.subarray(n));
      resolve(s);
    };
    const onEnd = () => fail(new Error('SOCKS5: proxy closed during the handshake'));
    s.on('data', onData);
    s.on('error', fail);
    s.on('end', onEnd);
    s.write(Buffer.from([5, 1, 0]));
  });
}
