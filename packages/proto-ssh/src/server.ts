import { createServer, isIP, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  abortStream,
  type Counter,
  type Dialer,
  ErrorCodes,
  formatTarget,
  type Gauge,
  type Listener,
  type Logger,
  type Metrics,
  makeTarget,
  meshName,
  type NodeIdentity,
  newSid,
  type PeerIdentity,
  parseListen,
  type StreamRequest,
  type Switch,
  toUgateError,
  UgateError,
  type Upstream,
} from '@ugate/core';
import ssh2 from 'ssh2';
import { checkUserCertificate, publicKeyOf, verifySshSignature } from './cert.js';
import { type AuthorizedKey, nodeIdOfSshKey, parseAuthorizedKeys } from './keys.js';
import { adoptChannel, channelOpenError, rejectChannel } from './wire.js';

const { Server, utils } = ssh2;
type Connection = ssh2.Connection;

export interface SshServerInit {
  /** `host:port`; default `0.0.0.0:15022`. */
  listen?: string;
  /** authorized_keys text (OpenSSH format; `permitlisten`, `permitopen`, `cert-authority` honoured). */
  authorizedKeys?: string;
  /** Peers trusted by pinned node ID, with the names each may register. */
  peers?: { id: string; names?: string[] }[];
  /** Server-side keepalive; default 15 s, 3 misses. */
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
  /** Time allowed from TCP accept to successful authentication. Default 20 s. */
  authTimeoutMs?: number;
  /** Channel-open timeout towards a registered client. Default 10 s. */
  openTimeoutMs?: number;
}

export interface SshServerComponents {
  switch: Switch;
  logger: Logger;
  identity: NodeIdentity;
}

interface ConnState {
  readonly key: string;
  readonly conn: Connection;
  peer?: PeerIdentity;
  authKey?: AuthorizedKey;
  /** Names this peer may register besides its `<id>.m`. */
  names: Set<string>;
  readonly undo: Map<string, () => void>;
}

/** Ports that, in `tcpip-forward`, mean "register my name" rather than "open a listener". */
const REGISTER_PORTS = new Set([0, 15022]);

export interface SshServer extends Listener {
  /** Dialer for carrier `ssh-reverse`: streams to names registered by connected clients. */
  readonly reverse: Dialer;
  /** Connected, authenticated peers. */
  peers(): { key: string; id?: string; names: string[] }[];
  /** End every connection (after draining); peers reconnect elsewhere. */
  disconnect(): Promise<void>;
}

let connSeq = 0;

interface ServerMetrics {
  connections: Gauge;
  handshakeFailures: Counter;
}
/** Registered once per metrics sink: a reload makes a new server when its settings change. */
const serverMetrics = new WeakMap<Metrics, ServerMetrics>();
function metricsFor(m: Metrics): ServerMetrics {
  let sm = serverMetrics.get(m);
  if (!sm) {
    sm = {
      connections: m.gauge('ugate_ssh_server_connections', 'Authenticated SSH peers connected to this node now'),
      handshakeFailures: m.counter(
        'ugate_ssh_handshake_failures_total',
        'SSH connections that never authenticated: protocol (not SSH, or a broken key exchange), auth, timeout',
        ['reason'],
      ),
    };
    serverMetrics.set(m, sm);
  }
  return sm;
}
type HandshakeFailure = 'protocol' | 'auth' | 'timeout';

export function sshServer(init: SshServerInit = {}) {
  return (c: SshServerComponents): SshServer => {
    const log = c.logger.child({ component: 'ssh-server' });
    const metrics = metricsFor(c.switch.metrics);
    const bind = parseListen(init.listen ?? '0.0.0.0:15022');
    const { keys, errors } = parseAuthorizedKeys(init.authorizedKeys ?? '');
    for (const e of errors) log.warn({ code: ErrorCodes.CONFIG }, `authorized_keys ${e}`);
    const pinned = new Map((init.peers ?? []).map((p) => [p.id, new Set((p.names ?? []).map((n) => n.toLowerCase()))]));
    const conns = new Map<string, ConnState>();
    const openTimeout = init.openTimeoutMs ?? 10_000;

    const server = new Server(
      {
        hostKeys: [c.identity.privateKeyPem],
        ident: 'ugate',
        keepaliveInterval: init.keepaliveIntervalMs ?? 15_000,
        keepaliveCountMax: init.keepaliveCountMax ?? 3,
      } as ssh2.ServerConfig,
      (conn, info) => onConnection(conn, info),
    );

    // TCP is accepted here, not by ssh2, so that bytes which never become an SSH
    // identification line and clients that never authenticate are seen and timed out.
    interface Pending {
      identified: boolean;
      timer: NodeJS.Timeout;
      /** Counted as a handshake failure already (each connection counts once). */
      failed?: HandshakeFailure;
    }
    const pending = new Map<Socket, Pending>();
    const handshakeFailed = (state: Pending | undefined, reason: HandshakeFailure) => {
      if (!state || state.failed) return;
      state.failed = reason;
      metrics.handshakeFailures.inc({ reason });
    };
    const tcp = createServer({ noDelay: true }, (sock) => {
      const src = `${sock.remoteAddress}:${sock.remotePort}`;
      const state: Pending = {
        identified: false,
        timer: setTimeout(() => {
          log.warn({ code: ErrorCodes.AUTH, src }, 'ssh authentication timed out');
          handshakeFailed(state, 'timeout');
          sock.destroy();
        }, init.authTimeoutMs ?? 20_000),
      };
      pending.set(sock, state);
      sock.once('close', () => {
        clearTimeout(state.timer);
        pending.delete(sock);
        if (!state.identified && sock.bytesRead > 0) {
          log.warn({ code: ErrorCodes.BAD_REQUEST, src, bytes: sock.bytesRead }, 'not an SSH client: no valid identification line');
          handshakeFailed(state, 'protocol');
        }
      });
      server.injectSocket(sock);
    });

    function onConnection(conn: Connection, info: ssh2.ClientInfo): void {
      const st: ConnState = { key: `c${++connSeq}`, conn, names: new Set(), undo: new Map() };
      const src = `${info.ip}:${info.port}`;
      const clog = log.child({ conn: st.key, src });
      let authFailure: string | undefined;
      const sock = (conn as unknown as { _sock: Socket })._sock;
      const state = pending.get(sock);
      if (state) state.identified = true;

      conn.on('authentication', (ctx) => {
        if (ctx.method !== 'publickey') {
          if (ctx.method !== 'none') authFailure = `method ${ctx.method} not allowed`;
          return ctx.reject(['publickey']);
        }
        if (ctx.key.algo.endsWith('-cert-v01@openssh.com')) return certAuth(ctx);
        const id = nodeIdOfSshKey(ctx.key.data);
        const ak = keys.find((k) => !k.certAuthority && k.blob.equals(ctx.key.data));
        const pinnedNames = id === undefined ? undefined : pinned.get(id);
        if (!ak && !pinnedNames) {
          authFailure = `unknown key ${ctx.key.algo} id=${id ?? '?'}`;
          return ctx.reject(['publickey']);
        }
        if (!ctx.signature) return ctx.accept();
        const key = utils.parseKey(ctx.key.data);
        if (key instanceof Error || key.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) {
          authFailure = 'bad signature';
          return ctx.reject(['publickey']);
        }
        st.peer = { kind: 'ssh-key', id, principals: [ctx.username] };
        st.authKey = ak;
        for (const n of pinnedNames ?? []) st.names.add(n);
        for (const p of ak?.permitListen ?? []) {
          const t = /^(.+):(0|15022|\*)$/.exec(p);
          if (t && !isIP(t[1]!)) st.names.add(t[1]!);
        }
        ctx.accept();
      });

      function certAuth(ctx: ssh2.PublicKeyAuthContext): void {
        let ca: AuthorizedKey | undefined;
        const check = checkUserCertificate(
          ctx.key.data,
          (blob) => {
            ca = keys.find((k) => k.certAuthority && k.blob.equals(blob));
            return ca !== undefined;
          },
          // OpenSSH semantics: `principals=` on the CA line lists acceptable principals, else the user name must be one.
          (p) => (ca?.principals ? ca.principals.includes(p) : p === ctx.username),
        );
        if (!check.ok) {
          authFailure = check.why;
          return ctx.reject(['publickey']);
        }
        if (!ctx.signature) return ctx.accept();
        const key = publicKeyOf(check.cert.keyBlob);
        if (!key || !verifySshSignature(key, ctx.blob!, ctx.signature)) {
          authFailure = 'bad signature';
          return ctx.reject(['publickey']);
        }
        st.peer = { kind: 'ssh-cert', id: nodeIdOfSshKey(check.cert.keyBlob), principals: [ctx.username, ...check.cert.principals] };
        st.authKey = ca;
        // A certificate's principals are the names its holder is (and may register).
        for (const p of check.cert.principals) if (p.includes('.')) st.names.add(p.toLowerCase());
        ctx.accept();
      }

      conn.on('ready', () => {
        if (state) clearTimeout(state.timer);
        conns.set(st.key, st);
        metrics.connections.inc();
        clog.info({ peer: st.peer?.id, user: st.peer?.principals[0] }, 'ssh peer authenticated');
      });

      conn.on('tcpip', (accept, reject, i) => onDirect(st, accept, reject, i, info));
      conn.on('request', (accept, reject, name, i) => onGlobal(st, accept, reject, name, i as ssh2.TcpipBindInfo, clog));
      conn.on('session', (_accept, reject) => reject());

      conn.on('error', (err: Error) => {
        const level = st.peer ? 'debug' : 'warn';
        clog[level]({ code: st.peer ? ErrorCodes.ABORTED : ErrorCodes.BAD_REQUEST, err: err.message }, 'ssh connection error');
        if (!st.peer) handshakeFailed(state, 'protocol');
        authFailure = undefined;
      });
      conn.on('close', () => {
        if (!st.peer && authFailure) {
          clog.warn({ code: ErrorCodes.AUTH }, `ssh authentication failed: ${authFailure}`);
          handshakeFailed(state, 'auth');
        }
        if (conns.delete(st.key)) metrics.connections.dec();
        for (const u of st.undo.values()) u();
        st.undo.clear();
      });
    }

    function onDirect(
      st: ConnState,
      accept: () => ssh2.ServerChannel,
      reject: () => void,
      i: ssh2.TcpipRequestInfo,
      info: ssh2.ClientInfo,
    ): void {
      const peer = st.peer!;
      let req: StreamRequest;
      try {
        req = {
          sid: newSid(),
          target: makeTarget(i.destIP, i.destPort),
          protocol: 'ssh-direct',
          source: { address: i.srcIP || info.ip, port: i.srcPort || info.port },
          peer,
        };
        const permit = st.authKey?.permitOpen ?? [];
        if (permit.length > 0 && !permit.some((p) => p === formatTarget(req.target) || p === `${req.target.host}:*`)) {
          throw new UgateError(ErrorCodes.POLICY_DENIED, `permitopen does not allow ${formatTarget(req.target)}`);
        }
      } catch (e) {
        const err = toUgateError(e);
        log.warn({ conn: st.key, code: err.code, dest: `${i.destIP}:${i.destPort}` }, err.message);
        rejectChannel(st.conn, reject, err);
        return;
      }
      c.switch.open(req).then(
        (opened) => {
          const ch = accept();
          if (!ch) return abortStream(opened.stream);
          void c.switch.serve(req, adoptChannel(ch, { server: true }), opened);
        },
        (err: UgateError) => rejectChannel(st.conn, reject, err),
      );
    }

    function onGlobal(
      st: ConnState,
      accept: ((port?: number) => void) | undefined,
      reject: (() => void) | undefined,
      name: string,
      i: ssh2.TcpipBindInfo,
      clog: Logger,
    ): void {
      const ok = (port?: number) => accept?.(port);
      const fail = (code: string, why: string) => {
        clog.warn({ code, request: name, bind: `${i.bindAddr}:${i.bindPort}` }, why);
        reject?.();
      };
      const peer = st.peer!;
      if (name !== 'tcpip-forward' && name !== 'cancel-tcpip-forward') {
        reject?.();
        return;
      }
      const addr = (i.bindAddr ?? '').toLowerCase();
      const ukey = `${addr}:${i.bindPort}`;
      if (name === 'cancel-tcpip-forward') {
        const undo = st.undo.get(ukey);
        if (!undo) {
          reject?.();
          return;
        }
        undo();
        st.undo.delete(ukey);
        return ok();
      }
      const isName = addr !== '' && addr !== 'localhost' && !isIP(addr);
      if (isName && REGISTER_PORTS.has(i.bindPort)) {
        if (addr !== meshName(peer.id ?? '') && !st.names.has(addr)) {
          return fail(ErrorCodes.POLICY_DENIED, `peer may not register ${addr}`);
        }
        if (st.undo.has(ukey)) return ok(i.bindPort);
        st.undo.set(ukey, c.switch.router.register(addr, 'ssh-reverse', st.key));
        clog.info({ name: addr }, 'name registered');
        return ok(i.bindPort);
      }
      // A real listener, as `ssh -R`: loopback unless an explicit address is given.
      const host = addr === '' || addr === 'localhost' ? '127.0.0.1' : addr;
      const permit = st.authKey?.permitListen ?? [];
      if (permit.length > 0 && !permit.some((p) => p === `${i.bindPort}` || p === ukey || p === `${host}:${i.bindPort}`)) {
        return fail(ErrorCodes.POLICY_DENIED, 'permitlisten does not allow this listener');
      }
      try {
        c.switch.policy.authorize({
          sid: '-',
          target: makeTarget(host, i.bindPort === 0 ? 1 : i.bindPort),
          protocol: 'ssh-listen',
          source: { address: '', port: 0 },
          peer,
        });
      } catch (e) {
        return fail(ErrorCodes.POLICY_DENIED, (e as Error).message);
      }
      const srv = createServer({ allowHalfOpen: true, noDelay: true }, (sock) => onForwarded(st, sock, addr, srv));
      srv.once('error', (e) => fail(toUgateError(e).code, `listen ${host}:${i.bindPort}: ${e.message}`));
      srv.listen(i.bindPort, host, () => {
        const port = (srv.address() as { port: number }).port;
        const key = `${addr}:${i.bindPort === 0 ? port : i.bindPort}`;
        st.undo.set(key, () => srv.close());
        clog.info({ listen: `${host}:${port}` }, 'remote forward listening');
        ok(port);
      });
    }

    function onForwarded(st: ConnState, sock: Socket, addr: string, srv: NetServer): void {
      sock.on('error', () => {});
      const port = (srv.address() as { port: number }).port;
      const req: StreamRequest = {
        sid: newSid(),
        target: makeTarget(addr || '127.0.0.1', port),
        protocol: 'ssh-remote-forward',
        source: { address: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 },
        peer: { kind: 'anonymous', principals: [] },
      };
      st.conn.forwardOut(addr, port, req.source.address, req.source.port, (err, ch) => {
        if (err) {
          log.warn({ sid: req.sid, code: ErrorCodes.REFUSED, err: err.message }, 'remote forward refused by client');
          return abortStream(sock);
        }
        const upstream: Upstream = { carrier: 'ssh-reverse', via: st.key, reason: 'remote forward' };
        void c.switch.serve(req, sock, { stream: adoptChannel(ch, { server: true }), upstream });
      });
    }

    const reverse: Dialer = {
      carrier: 'ssh-reverse',
      dial(req, up) {
        const st = up.via === undefined ? undefined : conns.get(up.via);
        if (!st) return Promise.reject(new UgateError(ErrorCodes.UNREACHABLE, `${req.target.host} is not connected`));
        return new Promise<Duplex>((resolve, reject) => {
          let done = false;
          const timer = setTimeout(() => {
            done = true;
            reject(new UgateError(ErrorCodes.TIMEOUT, `open to ${formatTarget(req.target)} timed out`));
          }, openTimeout);
          st.conn.forwardOut(req.target.host, req.target.port, req.source.address, req.source.port, (err, ch) => {
            clearTimeout(timer);
            if (done) {
              ch?.destroy();
              return;
            }
            if (err) reject(channelOpenError(err, formatTarget(req.target)));
            else resolve(adoptChannel(ch, { server: true }));
          });
        });
      },
    };
    c.switch.addDialer(reverse);

    return {
      name: 'ssh',
      reverse,
      peers: () => [...conns.values()].map((s) => ({ key: s.key, id: s.peer?.id, names: [...s.undo.keys()] })),
      listen: () =>
        new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(bind.port, bind.host, () => {
            tcp.off('error', reject);
            tcp.on('error', (e: Error) => log.error({ code: ErrorCodes.INTERNAL, err: e.message }, 'ssh server error'));
            resolve();
          });
        }),
      // Stop accepting; live connections and their channels keep running until disconnect().
      close: async () => {
        tcp.close();
      },
      disconnect: async () => {
        for (const s of conns.values()) s.conn.end();
      },
      addresses: () => {
        const a = tcp.address();
        return a && typeof a === 'object' ? [formatTarget({ host: a.address, port: a.port })] : [];
      },
    };
  };
}
