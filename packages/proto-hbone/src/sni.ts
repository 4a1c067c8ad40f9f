import { createServer, type Socket } from 'node:net';
import {
  boundAddresses,
  Cancel,
  closeGracefully,
  ErrorCodes,
  type Listener,
  type Logger,
  makeTarget,
  newSid,
  Park,
  parseListen,
  type StreamRequest,
  type Switch,
  type UgateError,
} from '@ugate/core';
import { ALERT, parseClientHello, sniTarget, tlsAlert } from './client-hello.js';

export interface SniGatewayInit {
  /** `host:port`; default `0.0.0.0:15443`. */
  listen?: string;
  /** Time allowed for the ClientHello to arrive. Default 10 s. */
  helloTimeoutMs?: number;
}

/**
 * SNI gateway (Istio east-west style): reads the ClientHello without
 * terminating TLS, routes by its server name, and forwards the raw bytes —
 * ClientHello included — through the mesh.
 */
export function sniGateway(init: SniGatewayInit = {}) {
  return (c: { switch: Switch; logger: Logger }): Listener => {
    const log = c.logger.child({ component: 'sni' });
    const bind = parseListen(init.listen ?? '0.0.0.0:15443');
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (sock) => onConnection(sock));

    function onConnection(sock: Socket): void {
      sock.on('error', () => {});
      const src = `${sock.remoteAddress}:${sock.remotePort}`;
      let buf = Buffer.alloc(0);
      const reject = (code: string, why: string, alert?: number) => {
        sock.off('data', onData);
        sock.off('end', onEnd);
        clearTimeout(timer);
        log.warn({ code, src }, why);
        closeGracefully(sock, alert === undefined ? undefined : tlsAlert(alert));
      };
      const timer = setTimeout(() => reject(ErrorCodes.TIMEOUT, 'no complete ClientHello in time'), init.helloTimeoutMs ?? 10_000);
      const onData = (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        const r = parseClientHello(buf);
        if (r.status === 'more') return;
        if (r.status === 'error') return reject(ErrorCodes.BAD_REQUEST, r.reason, ALERT.DECODE_ERROR);
        if (!r.sni) return reject(ErrorCodes.BAD_REQUEST, 'ClientHello without server name', ALERT.UNRECOGNIZED_NAME);
        sock.off('data', onData);
        sock.off('end', onEnd);
        clearTimeout(timer);
        route(sock, r.sni, buf);
      };
      const onEnd = () => reject(ErrorCodes.BAD_REQUEST, `client closed after ${buf.length} bytes, before a complete ClientHello`);
      sock.on('data', onData);
      sock.once('end', onEnd);
    }

    function route(sock: Socket, sni: string, hello: Buffer): void {
      sock.pause();
      let req: StreamRequest;
      try {
        const t = sniTarget(sni);
        const cancel = new Cancel();
        req = {
          sid: newSid(),
          target: makeTarget(t.host, t.port),
          protocol: 'sni',
          source: { address: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 },
          peer: { kind: 'anonymous', principals: [] },
          signal: cancel,
        };
        const park = new Park(sock, hello, () => cancel.abort());
        c.switch.open(req).then(
          (opened) => {
            park.release();
            void c.switch.serve(req, sock, opened);
          },
          (err: UgateError) => {
            park.release();
            closeGracefully(sock, tlsAlert(err.code === ErrorCodes.POLICY_DENIED ? ALERT.ACCESS_DENIED : ALERT.UNRECOGNIZED_NAME));
          },
        );
      } catch (e) {
        log.warn({ code: ErrorCodes.BAD_REQUEST, src: `${sock.remoteAddress}:${sock.remotePort}`, sni }, (e as Error).message);
        closeGracefully(sock, tlsAlert(ALERT.UNRECOGNIZED_NAME));
      }
    }

    return {
      name: 'sni',
      listen: () =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(bind.port, bind.host, () => {
            server.off('error', reject);
            resolve();
          });
        }),
      close: async () => {
        server.close();
      },
      addresses: () => boundAddresses(server.address()),
    };
  };
}
