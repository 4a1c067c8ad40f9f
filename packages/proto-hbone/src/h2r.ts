import { type ClientHttp2Session, createServer as createH2Server, connect as h2connect, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { type Dialer, ErrorCodes, formatTarget, type Logger, type Router, type Switch, type Target, UgateError } from '@ugate/core';
import { connectHandler, openStream } from './connect.js';
import type { WorkloadCredentials } from './credentials.js';
import { hboneDialer } from './dialer.js';
import { h2Settings } from './settings.js';
import { expectIdentity } from './spiffe.js';

/**
 * H2R — reverse HTTP/2, the form that passes through ordinary HTTP/2 proxies:
 * a node that accepts no connections sends `POST /h2r` (header `x-h2r-names`)
 * over its mTLS HBONE session to a gateway; after 200 the gateway runs an
 * HTTP/2 *client* session inside that stream and sends CONNECTs for the node's
 * names, which the node serves like any HBONE server. Registration is bound
 * to the identity the node proved on the outer mTLS session.
 */
export const H2R_PATH = '/h2r';

/** Gateway side: which principals may register which names. */
export interface H2rGatewayInit {
  /** `td/ns/NS/sa/SA` → names it may register. */
  allowed: Record<string, string[]>;
}

/** Gateway side: accept reversed sessions, register names, and dial them (carrier `h2r`). */
export function h2rGateway(init: H2rGatewayInit, c: { router: Router; logger: Logger }) {
  const sessions = new Map<string, ClientHttp2Session>();
  let seq = 0;
  const log = c.logger.child({ component: 'h2r' });

  /** Names `principal` asks for (all it may register when `asked` is empty); throws when any is not allowed. */
  function check(principal: string, asked: string[]): string[] {
    const may = (init.allowed[principal] ?? []).map((n) => n.toLowerCase());
    const names = asked.length > 0 ? asked : may;
    const denied = names.filter((n) => !may.includes(n));
    if (names.length === 0 || denied.length > 0) {
      throw new UgateError(ErrorCodes.POLICY_DENIED, `${principal} may not register ${denied.join(', ') || '(no names)'}`);
    }
    return names;
  }

  /** Run an HTTP/2 client session over the reversed transport and register `names` while it lives. */
  function reverse(transport: Duplex, principal: string, names: string[]): void {
    const key = `h2r${++seq}`;
    const session = h2connect('http://h2r.invalid', { createConnection: () => transport, settings: h2Settings(false) });
    session.on('error', () => {});
    const undo: (() => void)[] = [];
    session.once('connect', () => {
      sessions.set(key, session);
      for (const n of names) undo.push(c.router.register(n, 'h2r', key));
      log.info({ principal, names }, 'h2r peer registered');
    });
    const drop = () => {
      sessions.delete(key);
      for (const u of undo.splice(0)) u();
    };
    session.once('close', drop);
    transport.once('close', () => {
      drop();
      session.destroy();
    });
  }

  /** POST form: `POST /h2r` with `x-h2r-names`, from an authenticated peer. Throws when refused. */
  function accept(stream: ServerHttp2Stream, principal: string, namesHeader: string | undefined): string[] {
    const asked = (namesHeader ?? '')
      .split(',')
      .map((n) => n.trim().toLowerCase())
      .filter(Boolean);
    const names = check(principal, asked.length > 0 ? asked : ['']);
    stream.respond({ ':status': 200 });
    reverse(stream as unknown as Duplex, principal, names);
    return names;
  }

  /** ALPN form: a TLS connection negotiated as `h2r`; registers every name the principal may. */
  function acceptSocket(socket: Duplex, principal: string): string[] {
    const names = check(principal, []);
    reverse(socket, principal, names);
    return names;
  }

  const dialer: Dialer = {
    carrier: 'h2r',
    dial(req, up) {
      const session = up.via === undefined ? undefined : sessions.get(up.via);
      if (!session) return Promise.reject(new UgateError(ErrorCodes.UNREACHABLE, `${req.target.host} is not connected`));
      return openStream(session, { ':method': 'CONNECT', ':authority': formatTarget(req.target) }, formatTarget(req.target), 10_000);
    },
  };
  return { accept, acceptSocket, dialer, sessions: () => sessions.size };
}

export interface H2rNodeInit {
  /** The gateway's HBONE address and identity. */
  gateway: { address: Target; identity?: string };
  /** Names to register. */
  names: string[];
  credentials: WorkloadCredentials;
  /** `post` (default; passes through HTTP/2 proxies) or `alpn` (TLS negotiated as `h2r`). */
  mode?: 'post' | 'alpn';
  backoff?: { initialMs?: number; maxMs?: number };
}

/** Node side: keep a reversed session to the gateway and serve the CONNECTs it sends. */
export function h2rNode(init: H2rNodeInit) {
  return (c: { switch: Switch; logger: Logger }) => {
    const log = c.logger.child({ component: 'h2r-node' });
    const dialer = hboneDialer({ credentials: init.credentials })({ logger: c.logger });
    const handle = connectHandler({
      switch: c.switch,
      logger: log,
      protocol: 'h2r',
      peerOf: () => ({ kind: 'spiffe', principals: init.gateway.identity ? [init.gateway.identity.replace(/^spiffe:\/\//, '')] : [] }),
    });
    let stopped = false;
    let attempt = 0;
    let timer: NodeJS.Timeout | undefined;
    let current: Duplex | undefined;
    let onUp: (() => void) | undefined;
    let up = false;

    /** ALPN form: a TLS connection negotiated as `h2r` is itself the reversed transport. */
    function alpnTransport(): Promise<Duplex> {
      const cur = init.credentials.current;
      const { host, port } = init.gateway.address;
      return new Promise((resolve, reject) => {
        const sock = tlsConnect({
          host,
          port,
          key: cur.key,
          cert: cur.cert,
          ca: cur.ca,
          minVersion: 'TLSv1.3',
          ALPNProtocols: ['h2r'],
          servername: '',
          checkServerIdentity: expectIdentity(init.gateway.identity),
        });
        sock.once('error', reject);
        sock.once('secureConnect', () => {
          if (sock.alpnProtocol !== 'h2r') {
            sock.destroy();
            return reject(new UgateError(ErrorCodes.UNSUPPORTED, 'gateway does not offer h2r'));
          }
          sock.off('error', reject);
          sock.on('error', () => {});
          resolve(sock);
        });
      });
    }

    async function once(): Promise<void> {
      const stream =
        init.mode === 'alpn'
          ? await alpnTransport()
          : await dialer.dial(
              {
                sid: 'h2r',
                target: init.gateway.address,
                protocol: 'h2r',
                source: { address: '', port: 0 },
                peer: { kind: 'local', principals: [] },
              },
              {
                carrier: 'hbone',
                address: init.gateway.address,
                identity: init.gateway.identity,
                options: { mode: 'h2r', names: init.names.join(',') },
                reason: 'h2r',
              },
            );
      current = stream;
      const server = createH2Server({ settings: h2Settings(true) });
      server.on('stream', (s: ServerHttp2Stream, h) => handle(s, h));
      server.on('session', (session) => session.on('error', () => {}));
      server.emit('connection', stream);
      attempt = 0;
      up = true;
      onUp?.();
      log.info({ gateway: formatTarget(init.gateway.address), names: init.names }, 'h2r registered');
      await new Promise<void>((resolve) => stream.once('close', resolve));
      up = false;
      log.warn({ code: ErrorCodes.UNREACHABLE, gateway: formatTarget(init.gateway.address) }, 'h2r session lost');
    }

    function loop(): void {
      if (stopped) return;
      once().then(
        () => schedule(),
        (e: Error) => {
          log[attempt > 1 ? 'debug' : 'warn'](
            { code: (e as UgateError).code ?? ErrorCodes.UNREACHABLE, err: e.message },
            'h2r connect failed',
          );
          schedule();
        },
      );
    }
    function schedule(): void {
      if (stopped) return;
      const delay =
        Math.min(init.backoff?.maxMs ?? 1500, (init.backoff?.initialMs ?? 500) * 2 ** Math.min(attempt++, 20)) *
        (0.5 + Math.random() * 0.5);
      timer = setTimeout(loop, delay);
    }

    return {
      start: loop,
      ready: () => (up ? Promise.resolve() : new Promise<void>((r) => (onUp = r))),
      async stop() {
        stopped = true;
        if (timer) clearTimeout(timer);
        current?.destroy();
        dialer.close();
      },
    };
  };
}
