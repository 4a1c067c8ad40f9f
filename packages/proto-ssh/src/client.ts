import type { Duplex } from 'node:stream';
import {
  type Counter,
  type Dialer,
  ErrorCodes,
  formatTarget,
  type Gauge,
  type Logger,
  type Metrics,
  makeTarget,
  meshName,
  type NodeIdentity,
  newSid,
  parseTarget,
  type StreamRequest,
  type Switch,
  type Target,
  UgateError as UErr,
  type UgateError,
} from '@ugate/core';
import ssh2 from 'ssh2';
import { knownHostMatches, nodeIdOfSshKey, parseKnownHosts } from './keys.js';
import { adoptChannel, channelOpenError, rejectChannel } from './wire.js';

const { Client } = ssh2;

export interface GatewayInit {
  /** Name used in logs and in route `via`; default the address. */
  name?: string;
  /** `host:port` of the gateway's SSH server. */
  address: string;
  /** SSH user name; default `ugate`. */
  user?: string;
  /** Pinned node ID of the gateway (its host key). */
  id?: string;
  /** known_hosts text to verify the host key against (e.g. for a stock sshd). */
  knownHosts?: string;
  /** Register this node's names on the gateway (ugate gateways). Default true; set false for OpenSSH sshd. */
  register?: boolean;
}

export interface SshCarrierInit {
  gateways: GatewayInit[];
  /** Names to register (besides `<id>.m`), e.g. the hosts of this node's services. */
  names?: string[];
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
  /** Reconnect back-off: starts at `initial`, doubles, capped at `max`, then jittered down by up to half. Default 500 ms → 1.5 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** How long a new stream waits for some gateway to be connected. Default 5 s. */
  waitForGatewayMs?: number;
  /** Channel open timeout. Default 10 s. */
  openTimeoutMs?: number;
  /** On-demand connections (to endpoints found by discovery) close after this long without channels. Default 60 s. */
  adhocIdleMs?: number;
}

export interface SshCarrierComponents {
  switch: Switch;
  logger: Logger;
  identity: NodeIdentity;
}

export interface SshCarrier extends Dialer {
  start(): void;
  stop(): Promise<void>;
  /** Resolves when at least one gateway is connected (and registered). */
  ready(timeoutMs?: number): Promise<void>;
  /** Reload: connect new gateways; removed ones take no new streams and close once their channels are done. */
  setGateways(gateways: GatewayInit[]): void;
  status(): { name: string; address: string; connected: boolean; registered: string[]; onDemand?: boolean; channels?: number }[];
}

class Gateway {
  readonly name: string;
  readonly address: Target;
  client: ssh2.Client | undefined;
  connected = false;
  registered: string[] = [];
  attempt = 0;
  timer: NodeJS.Timeout | undefined;
  stopped = false;
  /** On-demand connection to a discovered endpoint: no reconnects, closed when idle. */
  adhoc = false;
  channels = 0;
  lastUsed = Date.now();
  lastError: UgateError | undefined;
  /** Settles when an on-demand connection is up, or fails. */
  up: Promise<void> | undefined;
  /** Connection attempts so far (all but the first are reconnects). */
  connects = 0;
  constructor(readonly init: GatewayInit) {
    this.address = parseTarget(init.address, 15022);
    this.name = init.name ?? formatTarget(this.address);
  }
}

interface CarrierMetrics {
  connections: Gauge;
  reconnects: Counter;
}
/** Registered once per metrics sink: a node may build more than one carrier over its life. */
const carrierMetrics = new WeakMap<Metrics, CarrierMetrics>();
function metricsFor(m: Metrics): CarrierMetrics {
  let cm = carrierMetrics.get(m);
  if (!cm) {
    cm = {
      connections: m.gauge(
        'ugate_ssh_carrier_connections',
        'SSH carrier connections up now: configured gateways, and on-demand ones to discovered endpoints',
        ['kind'],
      ),
      reconnects: m.counter(
        'ugate_ssh_carrier_reconnects_total',
        'Attempts to connect to a gateway again after a failure or a lost connection',
      ),
    };
    carrierMetrics.set(m, cm);
  }
  return cm;
}

/**
 * The SSH mesh carrier: keeps a connection to each configured gateway,
 * registers this node's names on it, accepts streams the gateway forwards
 * (`forwarded-tcpip`), and opens streams (`direct-tcpip`) through a live
 * gateway. Reconnects with exponential back-off and re-registers.
 */
export function sshCarrier(init: SshCarrierInit) {
  return (c: SshCarrierComponents): SshCarrier => {
    const log = c.logger.child({ component: 'ssh-carrier' });
    const metrics = metricsFor(c.switch.metrics);
    const kindOf = (g: Gateway) => ({ kind: g.adhoc ? 'on-demand' : 'gateway' });
    let gws = init.gateways.map((g) => new Gateway(g));
    let started = false;
    /** Removed by a reload, still carrying streams. */
    const retired = new Set<Gateway>();
    const initial = init.backoff?.initialMs ?? 500;
    const max = init.backoff?.maxMs ?? 1500;
    const openTimeout = init.openTimeoutMs ?? 10_000;
    const names = [...new Set([meshName(c.identity.id), ...(init.names ?? []).map((n) => n.toLowerCase())])];
    let waiters: (() => void)[] = [];
    const wake = () => {
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    };

    function hostVerifier(g: Gateway) {
      return (blob: Buffer): boolean => {
        if (g.init.id && nodeIdOfSshKey(blob) === g.init.id) return true;
        if (g.init.knownHosts && knownHostMatches(parseKnownHosts(g.init.knownHosts), g.address.host, g.address.port, blob)) {
          return true;
        }
        log.warn(
          { code: ErrorCodes.AUTH, gateway: g.name, presented: nodeIdOfSshKey(blob) },
          'gateway host key does not match the pinned id / known_hosts',
        );
        return false;
      };
    }

    function connect(g: Gateway): void {
      if (g.stopped) return;
      const client = new Client();
      g.client = client;
      if (++g.connects > 1) metrics.reconnects.inc();
      const glog = log.child({ gateway: g.name });
      client.on('ready', () => {
        g.attempt = 0;
        // Usable (and reported connected) once its names are registered, so that a
        // stream routed to this node through the gateway finds them.
        const up = () => {
          if (g.client !== client) return;
          g.connected = true;
          metrics.connections.inc(kindOf(g));
          glog.info({ names: g.registered }, g.init.register === false ? 'gateway connected' : 'gateway connected, names registered');
          wake();
        };
        if (g.init.register === false) return up();
        let pending = names.length;
        for (const n of names) {
          client.forwardIn(n, 0, (err) => {
            if (err) glog.warn({ code: ErrorCodes.POLICY_DENIED, name: n }, `gateway refused registration: ${err.message}`);
            else g.registered.push(n);
            if (--pending === 0) up();
          });
        }
      });
      client.on('tcp connection', (info, accept, reject) => onForwarded(g, client, info, accept, reject));
      client.on('error', (err: Error & { level?: string }) => {
        const code = err.level === 'client-authentication' || /verification/i.test(err.message) ? ErrorCodes.AUTH : ErrorCodes.UNREACHABLE;
        g.lastError = new UErr(code, `${g.name}: ${err.message}`);
        glog[g.attempt > 1 ? 'debug' : 'warn']({ code, err: err.message, attempt: g.attempt }, 'gateway connection error');
      });
      client.on('close', () => {
        if (g.client !== client) return;
        const was = g.connected;
        if (was) metrics.connections.dec(kindOf(g));
        g.connected = false;
        g.registered = [];
        g.client = undefined;
        if (was) glog[g.adhoc ? 'debug' : 'warn']({ code: ErrorCodes.UNREACHABLE }, 'gateway connection lost');
        if (g.adhoc) {
          if (adhoc.get(g.name) === g) adhoc.delete(g.name);
          wake();
          return;
        }
        schedule(g);
      });
      client.connect({
        host: g.address.host,
        port: g.address.port,
        username: g.init.user ?? 'ugate',
        privateKey: c.identity.privateKeyPem,
        hostVerifier: hostVerifier(g),
        keepaliveInterval: init.keepaliveIntervalMs ?? 5000,
        keepaliveCountMax: init.keepaliveCountMax ?? 3,
        readyTimeout: 10_000,
      });
      // ssh2 leaves Nagle on; small channel open/close packets then wait for ACKs (opens/s ×2.5 without it).
      client.setNoDelay(true);
      // (connect() creates the table, so this follows it.) ssh2's client accepts forwarded-tcpip only for exact bind address:port pairs it
      // requested. ugate registers names (port 0) and the gateway forwards name:servicePort,
      // so answer for any port of a registered name.
      const forwarding = (client as unknown as { _forwarding: Record<string, number> })._forwarding;
      (client as unknown as { _forwarding: Record<string, number> })._forwarding = new Proxy(forwarding, {
        get(t, k) {
          if (typeof k === 'string' && !(k in t)) {
            const host = k.slice(0, k.lastIndexOf(':'));
            if (g.registered.includes(host)) return Number(k.slice(k.lastIndexOf(':') + 1));
          }
          return Reflect.get(t, k);
        },
      });
    }

    function schedule(g: Gateway): void {
      if (g.stopped || g.timer) return;
      // Jitter downwards only, so `max` is a promise: a node is back within `max` of its gateway.
      const delay = Math.min(max, initial * 2 ** Math.min(g.attempt, 20)) * (0.5 + Math.random() * 0.5);
      g.attempt++;
      g.timer = setTimeout(() => {
        g.timer = undefined;
        connect(g);
      }, delay);
    }

    /** Reconnect now rather than at the end of the back-off: a stream is waiting. */
    function kick(): void {
      for (const g of gws) {
        if (!g.client && g.timer) {
          clearTimeout(g.timer);
          g.timer = undefined;
          connect(g);
        }
      }
    }

    /** On-demand connections by `host:port|id`. */
    const adhoc = new Map<string, Gateway>();
    const adhocIdle = init.adhocIdleMs ?? 60_000;
    const sweep = setInterval(
      () => {
        for (const g of adhoc.values()) {
          if (g.channels === 0 && Date.now() - g.lastUsed > adhocIdle) {
            adhoc.delete(g.name);
            g.stopped = true;
            g.client?.end();
          }
        }
      },
      Math.min(adhocIdle, 30_000),
    );
    sweep.unref();

    /** A connection to an SSH server found by discovery, pinned to `id`; opened on first use. */
    async function adhocGateway(address: string, id: string | undefined): Promise<Gateway> {
      if (!id) throw new UErr(ErrorCodes.AUTH, `ssh endpoint ${address} has no key to pin (a node ID): refusing to connect`);
      const key = `${address}|${id}`;
      let g = adhoc.get(key);
      if (!g) {
        g = new Gateway({ name: key, address, id, register: false });
        g.adhoc = true;
        adhoc.set(key, g);
        const gw = g;
        g.up = new Promise<void>((resolve, reject) => {
          const check = () => {
            if (gw.connected) return resolve();
            if (!gw.client) return reject(gw.lastError ?? new UErr(ErrorCodes.UNREACHABLE, `ssh ${address}: connection closed`));
            waiters.push(check);
          };
          waiters.push(check);
        });
        g.up.catch(() => {});
        connect(g);
      }
      await g.up;
      return g;
    }

    function onForwarded(
      g: Gateway,
      client: ssh2.Client,
      info: ssh2.TcpConnectionDetails,
      accept: () => ssh2.ClientChannel,
      reject: () => void,
    ): void {
      let req: StreamRequest;
      try {
        req = {
          sid: newSid(),
          target: makeTarget(info.destIP, info.destPort),
          protocol: 'ssh-reverse',
          source: { address: info.srcIP, port: info.srcPort },
          peer: { kind: 'ssh-key', id: g.init.id, principals: [g.name] },
        };
      } catch (e) {
        rejectChannel(client, reject, e as UgateError);
        return;
      }
      c.switch.open(req).then(
        (opened) => void c.switch.serve(req, adoptChannel(accept(), { server: false }), opened),
        (err: UgateError) => rejectChannel(client, reject, err),
      );
    }

    function live(via?: string): Gateway[] {
      const up = gws.filter((g) => g.connected && g.client);
      return via ? up.filter((g) => g.name === via) : up;
    }

    async function waitLive(via: string | undefined, ms: number): Promise<Gateway[]> {
      const deadline = Date.now() + ms;
      kick();
      for (let l = live(via); ; l = live(via)) {
        if (l.length > 0) return l;
        const left = deadline - Date.now();
        if (left <= 0) return [];
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 250));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    }

    function openOn(g: Gateway, req: StreamRequest, dest: Target): Promise<Duplex> {
      return new Promise((resolve, reject) => {
        let done = false;
        const timer = setTimeout(() => {
          done = true;
          reject(new UErr(ErrorCodes.TIMEOUT, `open ${formatTarget(dest)} via ${g.name} timed out`));
        }, openTimeout);
        try {
          g.client!.forwardOut(req.source.address || '127.0.0.1', req.source.port, dest.host, dest.port, (err, ch) => {
            clearTimeout(timer);
            if (done) return ch?.destroy();
            if (err) return reject(channelOpenError(err, formatTarget(dest)));
            g.channels++;
            ch.once('close', () => {
              g.channels--;
              g.lastUsed = Date.now();
              if (g.channels === 0 && retired.delete(g)) g.client?.end();
            });
            resolve(adoptChannel(ch, { server: false }));
          });
        } catch (e) {
          clearTimeout(timer);
          reject(new UErr(ErrorCodes.UNREACHABLE, `gateway ${g.name}: ${(e as Error).message}`, { cause: e }));
        }
      });
    }

    return {
      carrier: 'ssh',
      async dial(req, up) {
        const dest = up.address ?? up.target ?? req.target;
        if (up.via && !gws.some((g) => g.name === up.via)) {
          // Not a configured gateway: an SSH server found by discovery, reached on demand.
          return openOn(await adhocGateway(up.via, up.identity), req, dest);
        }
        const candidates = await waitLive(up.via, init.waitForGatewayMs ?? 5000);
        if (candidates.length === 0) {
          throw new UErr(ErrorCodes.UNREACHABLE, `no gateway connected${up.via ? ` (${up.via})` : ''}`);
        }
        let last: UgateError | undefined;
        for (const g of candidates) {
          try {
            return await openOn(g, req, dest);
          } catch (e) {
            last = e as UgateError;
            // Only a dead carrier is worth another gateway; an answer from the far side is final.
            if (last.code !== ErrorCodes.UNREACHABLE || g.connected) throw last;
          }
        }
        throw last!;
      },
      start() {
        started = true;
        for (const g of gws) connect(g);
      },
      setGateways(next) {
        const same = (a: GatewayInit, b: GatewayInit) => JSON.stringify(a) === JSON.stringify(b);
        const keep: Gateway[] = [];
        for (const g of gws) {
          if (next.some((n) => same(n, g.init))) {
            keep.push(g);
            continue;
          }
          g.stopped = true;
          if (g.timer) clearTimeout(g.timer);
          if (g.channels > 0) retired.add(g);
          else g.client?.end();
        }
        const added = next.filter((n) => !keep.some((g) => same(n, g.init))).map((n) => new Gateway(n));
        gws = [...keep, ...added];
        if (started) for (const g of added) connect(g);
      },
      async stop() {
        clearInterval(sweep);
        for (const g of [...gws, ...adhoc.values(), ...retired]) {
          g.stopped = true;
          if (g.timer) clearTimeout(g.timer);
          g.client?.end();
        }
        wake();
      },
      async ready(timeoutMs = 10_000) {
        const l = await waitLive(undefined, timeoutMs);
        if (l.length === 0) throw new UErr(ErrorCodes.UNREACHABLE, 'no gateway connected');
      },
      status: () =>
        [...gws, ...adhoc.values()].map((g) => ({
          name: g.name,
          address: formatTarget(g.address),
          connected: g.connected,
          registered: [...g.registered],
          ...(g.adhoc ? { onDemand: true, channels: g.channels } : {}),
        })),
    };
  };
}
