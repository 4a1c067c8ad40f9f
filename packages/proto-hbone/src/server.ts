import {
  createSecureServer,
  createServer,
  type Http2Server,
  type Http2Session,
  constants as h2constants,
  type IncomingHttpHeaders,
  type SecureServerOptions,
  type ServerHttp2Stream,
} from 'node:http2';
import type { TLSSocket } from 'node:tls';
import {
  boundAddresses,
  type Counter,
  ErrorCodes,
  type Listener,
  type Logger,
  type Metrics,
  newSid,
  type PeerIdentity,
  parseListen,
  parseTarget,
  type StreamRequest,
  type Switch,
  toUgateError,
  UgateError,
} from '@ugate/core';
import { connectHandler, hboneStatusFor, replyError } from './connect.js';
import type { Credentials, WorkloadCredentials } from './credentials.js';
import { type H2rGatewayInit, h2rGateway } from './h2r.js';
import { closeWhenReset, keepAlive } from './keepalive.js';
import { acceptInnerTls, type PostModeInit, tokenVerifier } from './post.js';
import { bufferWrites, H2, h2Settings } from './settings.js';
import { certIdentity, principalOf, type SpiffeId } from './spiffe.js';

export interface HboneServerInit {
  /** `host:port`; default `0.0.0.0:15008`. */
  listen?: string;
  /** Workload credentials (mTLS). Omit for hbonec (h2c, trusted networks only). */
  credentials?: WorkloadCredentials;
  /**
   * Which peers may connect at all. Default: same trust domain as ours. Finer
   * decisions are the switch's policy (principals, namespaces).
   */
  acceptPeer?: (peer: SpiffeId, ours: SpiffeId) => boolean;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** TLS handshake deadline. Default 10 s (node's own is 120 s). */
  handshakeTimeoutMs?: number;
  /** Accept POST mode (JWT + inner mTLS); needs `credentials` for the inner session. */
  post?: PostModeInit;
  /** Accept reversed connections (H2R, `POST /h2r`): which principal may register which names. */
  h2r?: H2rGatewayInit;
}

export interface HboneServerComponents {
  switch: Switch;
  logger: Logger;
}

function tlsOptions(c: Credentials): SecureServerOptions {
  return { key: c.key, cert: c.cert, ca: c.ca };
}

/** Registered once per metrics sink (a node may make several HBONE servers over its life). */
const handshakeCounters = new WeakMap<Metrics, Counter>();
function handshakeFailures(m: Metrics): Counter {
  let counter = handshakeCounters.get(m);
  if (!counter) {
    counter = m.counter(
      'ugate_hbone_handshake_failures_total',
      'HBONE mTLS connections refused before HTTP/2: tls (handshake failed), timeout, peer (identity not accepted)',
      ['reason'],
    );
    handshakeCounters.set(m, counter);
  }
  return counter;
}

/** How long a session told to go away (GOAWAY) may stay before its socket is closed. */
const noop = () => {};

/** Per-session budget of streams closed before they were answered ("rapid reset"). */
interface Resets {
  readonly session: Http2Session;
  readonly src: string;
  early: number;
  since: number;
}
const kResets = Symbol('ugate.hbone.resets');
type Counted = ServerHttp2Stream & { [kResets]?: Resets };

const GOAWAY_GRACE_MS = 1_000;

/**
 * HBONE server: HTTP/2 CONNECT over mTLS (TLS 1.3, ALPN h2, client
 * certificate from the mesh CA required), or over h2c without credentials.
 */
export function hboneServer(init: HboneServerInit) {
  return (c: HboneServerComponents): Listener => {
    const creds = init.credentials;
    const proto = creds ? 'hbone' : 'hbonec';
    const log = c.logger.child({ component: proto });
    const bind = parseListen(init.listen ?? (creds ? '0.0.0.0:15008' : '127.0.0.1:15009'));
    const acceptPeer = init.acceptPeer ?? ((peer, ours) => peer.trustDomain === ours.trustDomain);
    const options = {
      // 16 KiB of headers is plenty for CONNECT; node would otherwise accept ~7 MiB per stream.
      settings: { ...h2Settings(true), maxHeaderListSize: 16 * 1024 },
      maxSessionMemory: 64,
      maxOutstandingPings: 10,
      // An `h2r` connection is handed over through 'unknownProtocol'; node would destroy it after 10 s.
      ...(init.h2r ? { unknownProtocolTimeout: 2 ** 31 - 1 } : {}),
    };
    const server: Http2Server = creds
      ? createSecureServer({
          ...options,
          ...tlsOptions(creds.current),
          requestCert: true,
          rejectUnauthorized: true,
          handshakeTimeout: init.handshakeTimeoutMs ?? 10_000,
          minVersion: 'TLSv1.3',
          ALPNProtocols: ['h2'],
          allowHTTP1: false,
        })
      : createServer(options);

    const offCreds = creds?.onChange((next) =>
      (server as unknown as { setSecureContext(o: object): void }).setSecureContext(tlsOptions(next)),
    );

    if (creds) {
      const failures = handshakeFailures(c.switch.metrics);
      server.on('secureConnection', (sock: TLSSocket) => {
        try {
          const peer = certIdentity(sock.getPeerCertificate().subjectaltname);
          if (!acceptPeer(peer, creds.current.id)) throw new Error(`peer trust domain ${peer.trustDomain} is not accepted`);
        } catch (e) {
          log.warn(
            { code: ErrorCodes.AUTH, src: `${sock.remoteAddress}:${sock.remotePort}`, err: (e as Error).message },
            'hbone peer rejected',
          );
          failures.inc({ reason: 'peer' });
          sock.destroy();
        }
      });
      // Prepended: node's http2 server destroys the socket in its own listener, after which the address is gone.
      server.prependListener('tlsClientError', (err: Error, sock: TLSSocket) => {
        const timedOut = (err as { code?: string }).code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
        log.warn(
          { code: timedOut ? ErrorCodes.TIMEOUT : ErrorCodes.AUTH, src: `${sock.remoteAddress}:${sock.remotePort}`, err: err.message },
          'hbone TLS handshake failed',
        );
        failures.inc({ reason: timedOut ? 'timeout' : 'tls' });
      });
    }
    const RESET_LIMIT = 100;
    const RESET_WINDOW_MS = 10_000;
    /** Sessions told to go away (GOAWAY with this code sent, socket closing): new streams are refused, not served. */
    const leaving = new WeakMap<Http2Session, number>();
    server.on('session', (session: Http2Session) => {
      const src = `${session.socket?.remoteAddress}:${session.socket?.remotePort}`;
      session.setLocalWindowSize(H2.connectionWindow);
      // (Also emitted as the server's 'sessionError', which has no address to log.)
      session.on('error', (err: Error) => log.debug({ code: ErrorCodes.BAD_REQUEST, src, err: err.message }, 'hbone session error'));
      keepAlive(session, init.pingIntervalMs ?? H2.pingIntervalMs, init.pingTimeoutMs ?? H2.pingTimeoutMs, (why) => {
        const code = leaving.get(session);
        if (code !== undefined) return closeWith(session, code);
        // nghttp2 ended the session on a connection error and sent GOAWAY; node would keep the socket.
        if (why === 'ended') log.debug({ code: ErrorCodes.BAD_REQUEST, src, err: 'connection error (GOAWAY sent)' }, 'hbone session error');
        else log.warn({ code: ErrorCodes.TIMEOUT, src }, 'hbone peer stopped answering PINGs');
        session.destroy();
      });
      // "Rapid reset": streams the peer cancels before we answer cost a dial each. Beyond a
      // budget per window, end the session (node's own limit stops reading but keeps the socket).
      const resets: Resets = { session, src, early: 0, since: Date.now() };
      session.on('stream', (st: Counted) => {
        st[kResets] = resets;
        st.on('close', countEarlyClose);
      });
    });

    /** A stream closed before it was answered counts against its session's budget. */
    function countEarlyClose(this: Counted): void {
      const r = this[kResets];
      if (!r || this.headersSent || r.session.destroyed || leaving.has(r.session)) return;
      if (Date.now() - r.since > RESET_WINDOW_MS) {
        r.early = 0;
        r.since = Date.now();
      }
      if (++r.early > RESET_LIMIT) {
        log.warn(
          { code: ErrorCodes.BAD_REQUEST, src: r.src, early: r.early },
          'hbone peer resets streams before they open; closing the session',
        );
        goAway(r.session, h2constants.NGHTTP2_ENHANCE_YOUR_CALM, this.id ?? 0);
      }
    }

    /**
     * Tell the peer why (GOAWAY `code`), then close the connection once that frame is out.
     * A GOAWAY submitted right before destroy() is never written (here we are inside a
     * stream's 'close', i.e. within nghttp2's receive callbacks), so the session is
     * destroyed on its own 'close' (the peer hung up), once nghttp2 is done with it
     * (keepAlive's check), or after a short grace. Streams the peer opens meanwhile
     * are refused.
     */
    function goAway(session: Http2Session, code: number, lastStreamId: number): void {
      leaving.set(session, code);
      session.goaway(code, lastStreamId);
      const grace = setTimeout(() => closeWith(session, code), GOAWAY_GRACE_MS);
      grace.unref();
      session.once('close', () => clearTimeout(grace));
    }
    /** destroy() whose own final GOAWAY repeats `code` (a plain destroy() would add one with NO_ERROR), with no 'error' event. */
    function closeWith(session: Http2Session, code: number): void {
      session.destroy(null as unknown as Error, code);
    }
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => onStream(stream, headers));

    /** The peer of a session, parsed once: getPeerCertificate() builds the whole certificate object. */
    const peers = new WeakMap<Http2Session, PeerIdentity>();
    function peerOf(stream: ServerHttp2Stream): PeerIdentity {
      const session = stream.session;
      const sock = session?.socket as TLSSocket | undefined;
      if (!creds || !session || !sock?.getPeerCertificate) return { kind: 'anonymous', principals: [] };
      let peer = peers.get(session);
      if (!peer) {
        const id = certIdentity(sock.getPeerCertificate().subjectaltname);
        peer = { kind: 'spiffe', principals: [principalOf(id)] };
        peers.set(session, peer);
      }
      return peer;
    }

    const checkToken = init.post ? tokenVerifier(init.post) : undefined;

    /** POST mode: JWT first, then the inner mTLS session decides who the peer is. */
    async function onPost(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, src: { address: string; port: number }): Promise<void> {
      const where = `${src.address}:${src.port}`;
      let req: StreamRequest;
      try {
        if (!checkToken || !creds) throw new UgateError(ErrorCodes.BAD_REQUEST, 'POST mode is not enabled');
        const tun = headers['x-tun'];
        if (typeof tun !== 'string') throw new UgateError(ErrorCodes.BAD_REQUEST, 'POST without x-tun');
        const target = parseTarget(tun);
        const claims = await checkToken(headers.authorization);
        stream.respond({ ':status': 200 });
        closeWhenReset(stream);
        const { socket, peer } = await acceptInnerTls(stream, creds, 10_000);
        if (!acceptPeer(peer, creds.current.id))
          throw new UgateError(ErrorCodes.AUTH, `inner peer trust domain ${peer.trustDomain} is not accepted`);
        req = {
          sid: newSid(),
          target,
          protocol: 'hbone-post',
          source: src,
          peer: { kind: 'spiffe', principals: [principalOf(peer), ...(claims.sub ? [`jwt:${claims.sub}`] : [])] },
        };
        c.switch.open(req).then(
          (opened) => void c.switch.serve(req, socket, opened),
          () => socket.destroy(),
        );
      } catch (e) {
        const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
        log.warn({ code: err.code, src: where, err: err.message }, 'hbone POST rejected');
        if (!stream.headersSent) replyError(stream, hboneStatusFor(err), err);
        else stream.destroy();
      }
    }

    const handleConnect = connectHandler({ switch: c.switch, logger: log, protocol: proto, peerOf });

    const h2r = init.h2r && creds ? h2rGateway(init.h2r, { router: c.switch.router, logger: log }) : undefined;
    if (h2r) {
      c.switch.addDialer(h2r.dialer);
      // ALPN form of H2R: node's http2 server would start a server session on any ALPN but
      // http/1.1, so an `h2r` connection is marked as "no ALPN" first and handed over by
      // the 'unknownProtocol' event instead.
      // node's http2 server fixes its ALPN list to ['h2'] and setSecureContext() does not change it;
      // the tls.Server keeps the wire-format list in `ALPNProtocols`, which is what OpenSSL is given.
      const alpn = server as unknown as { ALPNProtocols?: Buffer };
      if (Buffer.isBuffer(alpn.ALPNProtocols)) alpn.ALPNProtocols = Buffer.from('\x02h2\x03h2r', 'latin1');
      else log.warn({ code: ErrorCodes.UNSUPPORTED }, 'cannot offer ALPN h2r on this node version; only the POST form of H2R works');
      const reversed = new WeakSet<TLSSocket>();
      server.prependListener('secureConnection', (sock: TLSSocket) => {
        if (sock.alpnProtocol !== 'h2r' || sock.destroyed) return;
        reversed.add(sock);
        (sock as unknown as { alpnProtocol: string | false }).alpnProtocol = false;
      });
      server.on('unknownProtocol', (sock: TLSSocket) => {
        if (!reversed.has(sock)) return sock.destroy();
        if (sock.destroyed) return;
        try {
          h2r.acceptSocket(sock, principalOf(certIdentity(sock.getPeerCertificate().subjectaltname)));
        } catch (e) {
          log.warn({ code: toUgateError(e).code, err: (e as Error).message }, 'h2r registration refused');
          sock.destroy();
        }
      });
    }

    function onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
      stream.on('error', noop);
      bufferWrites(stream);
      if (stream.session && leaving.has(stream.session)) {
        stream.close(h2constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      if (h2r && headers[':method'] === 'POST' && headers[':path'] === '/h2r') {
        try {
          const sock = stream.session?.socket as TLSSocket | undefined;
          const id = certIdentity(sock?.getPeerCertificate().subjectaltname);
          h2r.accept(stream, principalOf(id), headers['x-h2r-names'] as string | undefined);
        } catch (e) {
          const err = toUgateError(e, ErrorCodes.BAD_REQUEST);
          log.warn({ code: err.code, err: err.message }, 'h2r registration refused');
          replyError(stream, hboneStatusFor(err), err);
        }
        return;
      }
      if (headers[':method'] === 'POST' && init.post) {
        const sock = stream.session?.socket;
        void onPost(stream, headers, { address: sock?.remoteAddress ?? '', port: sock?.remotePort ?? 0 });
        return;
      }
      handleConnect(stream, headers);
    }

    return {
      name: proto,
      listen: () =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(bind.port, bind.host, () => {
            server.off('error', reject);
            server.on('error', (e: Error) => log.error({ code: ErrorCodes.INTERNAL, err: e.message }, 'hbone server error'));
            resolve();
          });
        }),
      close: async () => {
        offCreds?.();
        server.close();
      },
      addresses: () => boundAddresses(server.address()),
    };
  };
}
