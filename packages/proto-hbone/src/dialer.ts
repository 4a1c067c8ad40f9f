import { type ClientHttp2Session, type ClientHttp2Stream, connect as h2connect } from 'node:http2';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import {
  type Dialer,
  ErrorCodes,
  formatTarget,
  type Logger,
  type StreamRequest,
  type Target,
  UgateError,
  type Upstream,
} from '@ugate/core';
import { openStream } from './connect.js';
import type { WorkloadCredentials } from './credentials.js';
import { keepAlive } from './keepalive.js';
import { H2, h2Settings } from './settings.js';
import { expectIdentity } from './spiffe.js';

/** Stream labels the dialer passes on as request headers (`forwarded` has its own default). */
const FORWARDED_LABELS = ['baggage', 'traceparent', 'x-forwarded-network'] as const;

export interface HboneDialerInit {
  /** Our workload credentials; omit to dial hbonec (h2c). */
  credentials?: WorkloadCredentials;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Streams per HTTP/2 session before another session is opened. Default 100. */
  maxStreamsPerSession?: number;
  /** Our network name, sent as `x-forwarded-network` on the inner CONNECT of double HBONE. */
  network?: string;
  /** Credentials for the inner session of POST mode when the outer one is h2c. Default: `credentials`. */
  innerCredentials?: WorkloadCredentials;
}

interface Pooled {
  /** Settles once the session is connected; concurrent opens share it. */
  readonly ready: Promise<ClientHttp2Session>;
  readonly session: ClientHttp2Session;
  /** Streams reserved on this session (counted from the moment one is picked). */
  streams: number;
  dead: boolean;
  /** `ready` has resolved: opens go straight to the session. */
  connected: boolean;
}

/**
 * The HBONE carrier: pooled HTTP/2 sessions keyed by (peer address, expected
 * identity), a new session beyond `maxStreamsPerSession` streams, the server's
 * URI SAN checked against the expected SPIFFE identity (no hostname check, no
 * SNI), ztunnel's windows and frame size, PING keepalive.
 */
export function hboneDialer(init: HboneDialerInit = {}) {
  return (c: { logger: Logger }): Dialer & { close(): void; sessions(): number } => {
    const creds = init.credentials;
    const log = c.logger.child({ component: creds ? 'hbone-dialer' : 'hbonec-dialer' });
    const pools = new Map<string, Pooled[]>();
    const perSession = init.maxStreamsPerSession ?? H2.clientMaxStreams;
    const timeout = init.connectTimeoutMs ?? 10_000;

    function drop(key: string, p: Pooled): void {
      p.dead = true;
      const list = pools.get(key);
      const i = list?.indexOf(p) ?? -1;
      if (list && i >= 0) list.splice(i, 1);
      if (list?.length === 0) pools.delete(key);
    }

    /** TLS to the peer (or over `socket`, for the inner session of double HBONE), verifying its SPIFFE identity. */
    function tlsTo(addr: Target, identity: string | undefined, socket?: Duplex) {
      const cur = creds!.current;
      return tlsConnect({
        ...(socket ? { socket } : { host: addr.host, port: addr.port }),
        key: cur.key,
        cert: cur.cert,
        ca: cur.ca,
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
        // ztunnel sends no SNI and checks no host name: identity is the URI SAN.
        servername: '',
        checkServerIdentity: expectIdentity(identity),
      });
    }

    /** An HTTP/2 session to `addr`, directly or over `socket`; resolves once connected. */
    function openSession(
      addr: Target,
      identity: string | undefined,
      socket?: Duplex,
    ): { session: ClientHttp2Session; ready: Promise<ClientHttp2Session> } {
      const session = h2connect(`${creds ? 'https' : 'http'}://${formatTarget(addr)}`, {
        settings: h2Settings(false),
        maxSessionMemory: 64,
        createConnection: creds ? () => tlsTo(addr, identity, socket) : socket ? () => socket : undefined,
      });
      session.on('error', () => {});
      const ready = new Promise<ClientHttp2Session>((resolve, reject) => {
        let settled = false;
        const settle = (err?: UgateError) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (err) {
            session.destroy();
            reject(err);
          } else resolve(session);
        };
        const timer = setTimeout(
          () => settle(new UgateError(ErrorCodes.TIMEOUT, `hbone connect to ${formatTarget(addr)} timed out`)),
          timeout,
        );
        session.on('error', (e: Error) => {
          const code = (e as { code?: string }).code;
          const auth = e instanceof UgateError || /certificate|CERT|self.signed|verify/i.test(`${code} ${e.message}`);
          settle(
            new UgateError(auth ? ErrorCodes.AUTH : ErrorCodes.UNREACHABLE, `hbone ${formatTarget(addr)}: ${e.message}`, { cause: e }),
          );
        });
        session.once('close', () => settle(new UgateError(ErrorCodes.UNREACHABLE, `hbone session to ${formatTarget(addr)} closed`)));
        session.once('connect', () => {
          session.setLocalWindowSize(H2.connectionWindow);
          keepAlive(session, init.pingIntervalMs ?? H2.pingIntervalMs, init.pingTimeoutMs ?? H2.pingTimeoutMs, (why) => {
            if (why === 'ended') {
              // nghttp2 ended the session on a connection error (GOAWAY sent) or it is over: node would keep the socket.
              log.debug({ code: ErrorCodes.UNREACHABLE, peer: formatTarget(addr) }, 'hbone session ended');
              return session.destroy(new UgateError(ErrorCodes.UNREACHABLE, 'hbone session ended (connection error)'));
            }
            log.warn({ code: ErrorCodes.TIMEOUT, peer: formatTarget(addr) }, 'hbone peer stopped answering PINGs');
            session.destroy(new UgateError(ErrorCodes.TIMEOUT, 'peer stopped answering PINGs'));
          });
          settle();
        });
      });
      return { session, ready };
    }

    function newSession(addr: Target, identity: string | undefined, key: string): Pooled {
      const { session, ready } = openSession(addr, identity);
      const pooled: Pooled = { ready, session, streams: 0, dead: false, connected: false };
      ready.then(
        () => {
          pooled.connected = true;
        },
        () => drop(key, pooled),
      );
      session.once('close', () => drop(key, pooled));
      const list = pools.get(key) ?? [];
      list.push(pooled);
      pools.set(key, list);
      return pooled;
    }

    /** Pick (and reserve a stream on) a session with room, or start a new one. */
    function sessionFor(addr: Target, identity: string | undefined): Pooled {
      const key = `${formatTarget(addr)}|${identity ?? ''}`;
      const p = pools.get(key)?.find((x) => x.streams < perSession && !x.dead) ?? newSession(addr, identity, key);
      p.streams++;
      return p;
    }

    function request(p: Pooled, session: ClientHttp2Session, req: StreamRequest): Promise<ClientHttp2Stream> {
      const authority = formatTarget(req.target);
      const headers: Record<string, string> = { ':method': 'CONNECT', ':authority': authority };
      const labels = req.labels;
      if (labels) {
        for (const h of FORWARDED_LABELS) {
          const v = labels[h];
          if (v) headers[h] = v;
        }
      }
      headers.forwarded = labels?.forwarded ?? `for="${req.source.address}:${req.source.port}"`;
      return respond(p, session, headers, authority);
    }

    /** Send the request headers on a reserved slot of `p`; resolve with the stream on 200. */
    function respond(p: Pooled, session: ClientHttp2Session, headers: Record<string, string>, what: string): Promise<ClientHttp2Stream> {
      return openStream(session, headers, what, timeout, () => p.streams--);
    }

    /** A pooled session with a stream slot reserved on it (released again if connecting fails). */
    async function acquire(addr: Target, identity: string | undefined): Promise<{ p: Pooled; session: ClientHttp2Session }> {
      const p = sessionFor(addr, identity);
      try {
        return { p, session: await p.ready };
      } catch (e) {
        p.streams--;
        throw e;
      }
    }

    function onPooled(addr: Target, identity: string | undefined, req: StreamRequest): Promise<ClientHttp2Stream> {
      const p = sessionFor(addr, identity);
      // The usual case, a session that is up: no extra promise turns per open.
      if (p.connected && !p.dead) return request(p, p.session, req);
      return p.ready.then(
        (session) => request(p, session, req),
        (e: unknown) => {
          p.streams--;
          throw e;
        },
      );
    }

    /**
     * Double HBONE: an outer CONNECT to the gateway for the target; inside that
     * stream, our own TLS + HTTP/2 session with the destination (whose identity
     * is checked end to end) and the inner CONNECT. The gateway only forwards bytes.
     */
    async function doubleHbone(req: StreamRequest, up: Upstream, gw: NonNullable<Upstream['gateway']>): Promise<ClientHttp2Stream> {
      if (!creds) throw new UgateError(ErrorCodes.CONFIG, 'double HBONE needs workload credentials');
      const outer = await onPooled(gw.address, gw.identity, req);
      const { session, ready } = openSession(req.target, up.identity, outer);
      const inner: Pooled = { ready, session, streams: 1, dead: false, connected: false };
      try {
        await ready;
      } catch (e) {
        outer.destroy();
        throw e;
      }
      const labels = { ...req.labels, 'x-forwarded-network': init.network ?? 'default' };
      const stream = await request(inner, session, { ...req, labels }).catch((e: unknown) => {
        session.destroy();
        throw e;
      });
      // One inner session per stream: it ends with the stream, and the outer stream with it.
      stream.once('close', () => session.close());
      session.once('close', () => outer.destroy());
      return stream;
    }

    /**
     * POST mode: `POST` + `x-tun` + bearer token to the front end (route `address`,
     * identity checked when the outer session is mTLS), then our own mTLS session
     * inside the stream with the end (`up.identity`).
     */
    async function postMode(req: StreamRequest, up: Upstream): Promise<Duplex> {
      if (!up.address) throw new UgateError(ErrorCodes.NO_ROUTE, `hbone route for ${formatTarget(req.target)} has no address`);
      const innerCreds = init.innerCredentials ?? creds;
      if (!innerCreds) throw new UgateError(ErrorCodes.CONFIG, 'POST mode needs workload credentials for the inner session');
      const { p, session } = await acquire(up.address, creds ? up.options?.frontIdentity : undefined);
      const headers = {
        ':method': 'POST',
        ':path': up.options?.path ?? '/',
        ':scheme': creds ? 'https' : 'http',
        ':authority': formatTarget(up.address),
        'x-tun': formatTarget(req.target),
        authorization: `Bearer ${up.options?.token ?? ''}`,
      };
      const stream = await respond(p, session, headers, formatTarget(req.target));
      const c2 = innerCreds.current;
      const inner = tlsConnect({
        socket: stream,
        key: c2.key,
        cert: c2.cert,
        ca: c2.ca,
        minVersion: 'TLSv1.3',
        servername: '',
        checkServerIdentity: expectIdentity(up.identity),
      });
      return new Promise((resolve, reject) => {
        inner.once('secureConnect', () => resolve(inner));
        inner.once('error', (e: Error) => {
          stream.destroy();
          reject(e instanceof UgateError ? e : new UgateError(ErrorCodes.AUTH, `inner TLS: ${e.message}`, { cause: e }));
        });
      });
    }

    /** The outer request of H2R: `POST /h2r` naming what to register; the answered stream is the reversed connection. */
    async function h2rRequest(req: StreamRequest, up: Upstream): Promise<ClientHttp2Stream> {
      const addr = up.address!;
      const { p, session } = await acquire(addr, up.identity);
      const headers = {
        ':method': 'POST',
        ':path': '/h2r',
        ':scheme': 'https',
        ':authority': formatTarget(addr),
        'x-h2r-names': up.options?.names ?? '',
      };
      return respond(p, session, headers, formatTarget(req.target));
    }

    return {
      carrier: creds ? 'hbone' : 'hbonec',
      async dial(original: StreamRequest, up: Upstream) {
        // The far end is asked for `up.target` when discovery names it (ztunnel wants podIP:targetPort).
        const req = up.target ? { ...original, target: up.target } : original;
        if (up.options?.mode === 'post') return postMode(req, up);
        if (up.options?.mode === 'h2r') return h2rRequest(req, up);
        if (up.gateway) return doubleHbone(req, up, up.gateway);
        if (!up.address) throw new UgateError(ErrorCodes.NO_ROUTE, `hbone route for ${formatTarget(req.target)} has no address`);
        return onPooled(up.address, up.identity, req);
      },
      close() {
        for (const list of pools.values()) for (const p of list) p.session?.close();
        pools.clear();
      },
      sessions: () => [...pools.values()].reduce((n, l) => n + l.length, 0),
    };
  };
}
