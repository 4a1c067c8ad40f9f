import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  direct,
  ErrorCodes,
  formatTarget,
  type Listener,
  type Logger,
  loadOrCreateIdentity,
  meshName,
  type NodeIdentity,
  newSid,
  Policy,
  parseTarget,
  type RouteInit,
  Router,
  Switch,
  silentLogger,
  type Target,
  toUgateError,
  UgateError,
  vip6FromId,
} from '@ugate/core';
import { Discovery, dnsServer, type Explanation, pinnedId, type Source } from '@ugate/discovery';
import { findIstioCredentials, h2rNode, hboneDialer, hboneServer, sniGateway, WorkloadCredentials } from '@ugate/proto-hbone';
import { httpProxy } from '@ugate/proto-http';
import { socks } from '@ugate/proto-socks';
import { type GatewayInit, type SshCarrier, type SshServer, sshCarrier, sshServer } from '@ugate/proto-ssh';
import { startAdmin } from './admin.js';
import { type Config, type ConfigInput, parseConfig, redactConfig, resolvePath } from './config.js';
import type { LogLevel } from './logger.js';
import { promMetrics } from './metrics.js';
import { buildSources } from './sources.js';

export interface NodeOptions {
  /** Folder that relative paths in the config resolve against. Default: cwd. */
  baseDir?: string;
  logger?: Logger & { getLevel?(): LogLevel; setLevel?(l: LogLevel): void };
  /** Where `reload()` without an argument reads the config again (the file the node started from). */
  loadConfig?: () => { config: Config; baseDir: string };
  /** With `workers: N`, this worker's index: only worker 0 announces on the LAN. */
  worker?: number;
  /** Static files of the dashboard, served by the admin endpoint. */
  dashboard?: (path: string) => { type: string; body: Buffer } | undefined;
}

export interface ReloadResult {
  ok: boolean;
  /** Top-level config keys that changed and were applied. */
  applied?: string[];
  /** Keys that changed but only take effect after a restart. */
  restartNeeded?: string[];
  /** Streams closed because the new policy denies them. */
  closedStreams?: string[];
  errors?: string[];
}

export type ViewName = 'node' | 'listeners' | 'carriers' | 'routes' | 'streams' | 'config' | 'snapshot';

export interface UgateNode {
  readonly identity: NodeIdentity;
  readonly config: Config;
  readonly switch: Switch;
  readonly ready: boolean;
  /** All names this node answers to. */
  readonly names: string[];
  readonly discovery: Discovery;
  start(): Promise<void>;
  /** Stop accepting, drain live streams until the deadline, close carriers. */
  stop(drainMs?: number): Promise<void>;
  /** Open a stream to `host:port` through the mesh, as a local app would. */
  dial(target: string): Promise<Duplex>;
  /** How `host:port` resolves now: each source asked, what it said, the upstreams in order. */
  explain(target: string | Target): Promise<Explanation>;
  /** Apply a new config (default: read it again) without dropping streams that are still allowed. */
  reload(next?: ConfigInput | Config): Promise<ReloadResult>;
  /** Abort a live stream by its sid (admin). */
  closeStream(sid: string): boolean;
  logLevel(): string;
  setLogLevel(level: string): void;
  /** Bound listener addresses by listener name. */
  addresses(): Record<string, string[]>;
  /** JSON views for the admin API. */
  view(name: ViewName): unknown;
  state(): object;
  metricsText(): Promise<string>;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** Keys a reload cannot change: they are the node's identity or shape its carriers at start. */
const RESTART_KEYS = ['dataDir', 'meshPrefix', 'names', 'network', 'workload', 'h2r', 'admin', 'limits', 'log'] as const;

function readText(baseDir: string, p: string | undefined): string | undefined {
  return p === undefined ? undefined : readFileSync(resolvePath(baseDir, p), 'utf8');
}

/** A route's `tokenFile` option is read here; the dialer sees `token`. */
function routesOf(config: Config, baseDir: string) {
  return config.routes.map((r) =>
    r.options?.tokenFile ? { ...r, options: { ...r.options, token: (readText(baseDir, r.options.tokenFile) ?? '').trim() } } : r,
  );
}

function gatewaysOf(config: Config, baseDir: string): GatewayInit[] {
  return config.ssh.gateways.map((g) => ({ ...g, knownHosts: readText(baseDir, g.knownHosts) }));
}

/** Build a node from a config object. Nothing listens until `start()`. */
export function createNode(input: ConfigInput | Config, opts: NodeOptions = {}): UgateNode {
  let config = parseConfig(input);
  let baseDir = opts.baseDir ?? process.cwd();
  const log: NonNullable<NodeOptions['logger']> = opts.logger ?? silentLogger;
  const started = Date.now();
  const identity = loadOrCreateIdentity(resolvePath(baseDir, config.dataDir), config.meshPrefix);
  const router = new Router({ routes: routesOf(config, baseDir), services: config.services });
  const policy = new Policy(config.policy);
  const metrics = promMetrics();
  const policyClosed = metrics.counter('ugate_policy_closed_streams_total', 'Live streams closed because a policy change denies them');
  const reauthorize = () => {
    const closed = sw.reauthorize();
    if (closed.length) {
      policyClosed.inc(undefined, closed.length);
      log.info({ streams: closed }, 'policy changed: closed the streams it now denies');
    }
    return closed;
  };
  const discovery = new Discovery({
    router,
    sources: buildSources(config, baseDir, identity, log, opts.worker),
    policy,
    onPolicyChange: reauthorize,
    // `<id>.m` that no source knows: ask the SSH gateways, where the key's owner registers it.
    fallback: (t) =>
      pinnedId(t.host) && config.ssh.gateways.length
        ? { carrier: 'ssh', reason: `gateway: ${t.host} is registered there by the holder of its key` }
        : undefined,
    logger: log,
    lookupTimeoutMs: config.discovery.lookupTimeoutMs,
    negativeTtlMs: config.discovery.negativeTtlMs,
    maxAttempts: config.discovery.maxAttempts,
    health: config.discovery.health,
  });
  const sw = new Switch({
    metrics,
    router,
    resolver: discovery,
    policy,
    dialers: [direct({ connectTimeoutMs: config.limits.connectTimeoutMs })],
    logger: log.child({ component: 'access' }),
    idleTimeoutMs: config.limits.idleTimeoutMs,
  });
  const components = { switch: sw, logger: log, identity };
  const names = [...new Set([...config.names.map((n) => n.toLowerCase()), ...router.serviceHosts(), meshName(identity.id)])];
  router.addSelfName(meshName(identity.id));
  for (const n of config.names) router.addSelfName(n);

  // Also without gateways: SSH endpoints found by discovery are reached on demand.
  const carrier: SshCarrier = sshCarrier({
    gateways: gatewaysOf(config, baseDir),
    names,
    keepaliveIntervalMs: config.ssh.keepaliveIntervalMs,
    backoff: config.ssh.backoff,
    openTimeoutMs: config.limits.connectTimeoutMs,
  })(components);
  sw.addDialer(carrier);
  const gatewayUp = metrics.gauge('ugate_ssh_gateway_connected', 'SSH gateway connection up (1) or down (0)', ['gateway']);
  const certDir = config.workload.certDir ? resolvePath(baseDir, config.workload.certDir) : findIstioCredentials();
  const workload = certDir ? new WorkloadCredentials(certDir, log.child({ component: 'workload' })) : undefined;
  const closers: (() => void)[] = [];
  if (workload) {
    const d = hboneDialer({ credentials: workload, connectTimeoutMs: config.limits.connectTimeoutMs, network: config.network })(components);
    sw.addDialer(d);
    closers.push(() => d.close());
  } else if (input && (input as { hbone?: unknown }).hbone) {
    log.warn({ code: ErrorCodes.CONFIG }, 'hbone is configured but there are no workload credentials (workload.certDir); HBONE is off');
  }
  const h2r =
    workload && config.h2r
      ? h2rNode({
          gateway: { address: parseTarget(config.h2r.gateway.address), identity: config.h2r.gateway.identity },
          names,
          credentials: workload,
        })(components)
      : undefined;
  if (config.h2r && !workload) log.warn({ code: ErrorCodes.CONFIG }, 'h2r needs workload credentials (workload.certDir); H2R is off');
  const hc = hboneDialer({ connectTimeoutMs: config.limits.connectTimeoutMs })(components);
  sw.addDialer(hc);
  closers.push(() => hc.close());

  // ---- listeners: built from the config, each keyed by its own settings so a reload replaces only what changed
  interface Wanted {
    key: string;
    make: () => Listener;
  }
  /** The SSH servers made so far: a reload's replaced server keeps its connections until stop(). */
  const sshServers: SshServer[] = [];
  function wanted(cfg: Config, dir: string): Map<string, Wanted> {
    const w = new Map<string, Wanted>();
    const add = (name: string, settings: unknown, make: () => Listener) => w.set(name, { key: JSON.stringify(settings), make });
    if (cfg.ssh.listen) {
      const settings = {
        listen: cfg.ssh.listen,
        authorizedKeys: readText(dir, cfg.ssh.authorizedKeys),
        peers: cfg.ssh.peers,
        keepaliveIntervalMs: cfg.ssh.keepaliveIntervalMs,
      };
      add('ssh', settings, () => {
        const srv = sshServer(settings)(components);
        sshServers.push(srv);
        return srv;
      });
    }
    if (workload && cfg.hbone) {
      const h = cfg.hbone;
      const jwks = h.post ? readText(dir, h.post.jwksFile) : undefined;
      add('hbone', { h, jwks }, () => {
        const ok = (list: string[] | undefined, ours: string, theirs: string) =>
          list ? list.includes('*') || list.includes(theirs) : theirs === ours;
        return hboneServer({
          listen: h.listen,
          credentials: workload,
          h2r: h.h2r && { allowed: h.h2r },
          post: h.post && { issuer: h.post.issuer, audience: h.post.audience, jwks: JSON.parse(jwks ?? '{}') },
          acceptPeer: (peer, ours) =>
            ok(h.accept?.trustDomains, ours.trustDomain, peer.trustDomain) && ok(h.accept?.namespaces, ours.namespace, peer.namespace),
        })(components);
      });
    }
    const { hbonec, sni, socks: sk, http } = cfg;
    if (hbonec) add('hbonec', hbonec, () => hboneServer({ listen: hbonec.listen })(components));
    if (sni) add('sni', sni, () => sniGateway({ listen: sni.listen })(components));
    if (sk) add('socks', sk, () => socks({ listen: sk.listen, users: sk.users })(components));
    if (http) add('http', http, () => httpProxy({ listen: http.listen, users: http.users })(components));
    const dns = cfg.dns;
    if (dns) {
      add('dns', dns, () =>
        dnsServer({
          listen: dns.listen,
          domain: dns.domain,
          meshPrefix: cfg.meshPrefix,
          forwarders: dns.forwarders,
          lookup: meshRecords,
          logger: log.child({ component: 'dns' }),
        }),
      );
    }
    return w;
  }
  /**
   * What the built-in DNS server answers for a mesh name: this node's names → its VIP6; names
   * of peers connected here, and names discovery learned with a pinned node ID → that node's VIP6.
   */
  function meshRecords(name: string): { aaaa: string[] } | undefined {
    const n = name.toLowerCase();
    const domain = config.dns?.domain;
    const bare = domain && n.endsWith(`.${domain}`) ? n.slice(0, -domain.length - 1) : n;
    const ids = new Set<string>();
    for (const c of new Set([n, bare])) {
      if (names.includes(c)) ids.add(identity.id);
      for (const p of sshServers.flatMap((s) => s.peers())) if (p.id && p.names.includes(c)) ids.add(p.id);
      for (const ep of discovery.known(c)) if (ep.identity && !ep.identity.startsWith('spiffe:')) ids.add(ep.identity);
    }
    if (ids.size === 0) return undefined;
    return { aaaa: [...ids].map((id) => vip6FromId(id, config.meshPrefix)).filter((v): v is string => v !== undefined) };
  }
  const listeners = new Map<string, { key: string; listener: Listener }>();
  for (const [name, w] of wanted(config, baseDir)) listeners.set(name, { key: w.key, listener: w.make() });

  /** Bring the running listeners to `next`: unchanged ones stay, changed ones are closed and made anew. */
  async function applyListeners(next: Map<string, Wanted>): Promise<string[]> {
    const errors: string[] = [];
    for (const [name, cur] of listeners) {
      if (next.get(name)?.key === cur.key) continue;
      await cur.listener.close().catch(() => {});
      listeners.delete(name);
    }
    for (const [name, w] of next) {
      if (listeners.has(name)) continue;
      const l = w.make();
      try {
        await l.listen();
        listeners.set(name, { key: w.key, listener: l });
      } catch (e) {
        errors.push(`${name}: ${(e as Error).message}`);
      }
    }
    return errors;
  }

  let admin: Server | undefined;
  let ready = false;
  let running = false;

  const streamView = () =>
    sw.streams().map(({ req, upstream, started: t0, stats }) => ({
      sid: req.sid,
      proto: req.protocol,
      src: `${req.source.address}:${req.source.port}`,
      target: formatTarget(req.target),
      peer: req.peer.id ?? req.peer.principals[0] ?? req.peer.kind,
      carrier: upstream.carrier,
      via: upstream.via,
      upstream: upstream.address && formatTarget(upstream.address),
      bytesIn: stats.bytesAtoB,
      bytesOut: stats.bytesBtoA,
      ageMs: Date.now() - t0,
    }));

  const carrierView = () => {
    const streams = streamView();
    const on = (via: string) => streams.filter((s) => s.carrier === 'ssh' && s.via === via);
    return {
      ssh: {
        gateways: carrier.status().map((g) => ({
          ...g,
          streams: on(g.name).length,
          bytes: on(g.name).reduce((n, s) => n + s.bytesIn + s.bytesOut, 0),
        })),
        peers: sshServers.flatMap((s) => s.peers()),
      },
      hbone: { workload: workload ? { id: workload.current.id, notAfter: workload.current.notAfter } : undefined },
    };
  };

  const node: UgateNode = {
    identity,
    get config() {
      return config;
    },
    switch: sw,
    names,
    discovery,
    get ready() {
      return ready;
    },
    async start() {
      running = true;
      carrier.start();
      await discovery.start();
      workload?.watch();
      h2r?.start();
      try {
        for (const { listener } of listeners.values()) await listener.listen();
        if (config.admin) {
          const token = config.admin.token ?? readText(baseDir, config.admin.tokenFile)?.trim();
          admin = await startAdmin(node, { listen: config.admin.listen, token, static: opts.dashboard });
        }
      } catch (e) {
        await node.stop(0);
        throw e;
      }
      ready = true;
      log.info(
        { id: identity.id, vip6: identity.vip6, names, listen: node.addresses(), admin: config.admin?.listen },
        'ugate node started',
      );
    },
    async stop(drainMs = config.limits.drainMs) {
      ready = false;
      running = false;
      await Promise.all([...listeners.values()].map(({ listener }) => listener.close().catch(() => {})));
      await sw.drain(drainMs);
      for (const s of sshServers) await s.disconnect();
      await carrier.stop();
      await discovery.close();
      workload?.stop();
      await h2r?.stop();
      for (const close of closers) close();
      await new Promise<void>((resolve) => {
        if (!admin) return resolve();
        admin.close(() => resolve());
        admin.closeAllConnections(); // /api/events streams never end by themselves
      });
      log.info({ id: identity.id }, 'ugate node stopped');
    },
    async dial(target: string) {
      const req = {
        sid: newSid(),
        target: parseTarget(target),
        protocol: 'api',
        source: { address: '127.0.0.1', port: 0 },
        peer: { kind: 'local' as const, principals: [] },
      };
      const opened = await sw.open(req);
      return opened.stream;
    },
    explain: async (target) => discovery.explain(typeof target === 'string' ? parseTarget(target) : target),

    async reload(nextInput) {
      let next: Config;
      let nextDir = baseDir;
      let prepared: { routes: RouteInit[]; gateways: GatewayInit[]; listeners: Map<string, Wanted>; sources?: Source[] };
      try {
        if (nextInput !== undefined) next = parseConfig(nextInput);
        else if (opts.loadConfig) ({ config: next, baseDir: nextDir } = opts.loadConfig());
        else return { ok: false, errors: ['this node has no config file to read again'] };
        // Everything that can fail is read and built before anything changes: a bad file changes nothing.
        prepared = { routes: routesOf(next, nextDir), gateways: gatewaysOf(next, nextDir), listeners: wanted(next, nextDir) };
        new Router({ routes: prepared.routes, services: next.services });
        new Policy(next.policy);
        if (JSON.stringify(config.discovery) !== JSON.stringify(next.discovery)) {
          prepared.sources = buildSources(next, nextDir, identity, log, opts.worker);
        }
      } catch (e) {
        const err = toUgateError(e, ErrorCodes.CONFIG);
        log.warn({ code: err.code, err: err.message }, 'reload refused: the config is invalid; the running config stays');
        return {
          ok: false,
          errors: err.message
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean),
        };
      }
      const changed = (k: keyof Config) => JSON.stringify(config[k]) !== JSON.stringify(next[k]);
      const applied: string[] = [];
      const restartNeeded = RESTART_KEYS.filter((k) => changed(k));
      if (changed('routes') || changed('services')) {
        router.replace({ routes: prepared.routes, services: next.services });
        applied.push(...(['routes', 'services'] as const).filter(changed));
      }
      if (JSON.stringify(config.ssh.gateways) !== JSON.stringify(next.ssh.gateways)) {
        carrier.setGateways(prepared.gateways);
        applied.push('ssh.gateways');
      }
      if (prepared.sources) {
        await discovery.setSources(prepared.sources, running);
        applied.push('discovery');
      }
      const errors = running ? await applyListeners(prepared.listeners) : [];
      for (const k of ['ssh', 'hbone', 'hbonec', 'sni', 'socks', 'http', 'dns'] as const)
        if (changed(k) && !applied.includes(k)) applied.push(k);
      let closedStreams: string[] = [];
      if (changed('policy')) {
        policy.set(next.policy);
        closedStreams = reauthorize();
        applied.push('policy');
      }
      config = next;
      baseDir = nextDir;
      const result: ReloadResult = {
        ok: errors.length === 0,
        applied,
        restartNeeded: [...restartNeeded],
        closedStreams,
        errors: errors.length ? errors : undefined,
      };
      log.info({ ...result }, errors.length ? 'reloaded with errors' : 'reloaded');
      return result;
    },

    closeStream: (sid) => sw.closeStream(sid, new UgateError(ErrorCodes.ABORTED, 'closed by the admin API')),
    logLevel: () => log.getLevel?.() ?? config.log.level,
    setLogLevel(level) {
      if (!LEVELS.includes(level)) throw new UgateError(ErrorCodes.BAD_REQUEST, `log level must be one of ${LEVELS.join(', ')}`);
      if (!log.setLevel) throw new UgateError(ErrorCodes.UNSUPPORTED, 'this logger cannot change its level');
      log.setLevel(level as LogLevel);
      log.info({ logLevel: level }, 'log level changed');
    },
    addresses: () => Object.fromEntries([...listeners].map(([name, { listener }]) => [name, listener.addresses()])),

    view(name) {
      switch (name) {
        case 'node':
          return {
            id: identity.id,
            vip6: identity.vip6,
            names,
            workload: workload ? { id: workload.current.id, notAfter: workload.current.notAfter } : undefined,
            ready,
            pid: process.pid,
            uptimeS: Math.round((Date.now() - started) / 1000),
            node: process.version,
          };
        case 'listeners':
          return [...listeners].map(([n, { listener }]) => ({ name: n, addresses: listener.addresses() }));
        case 'carriers':
          return carrierView();
        case 'routes':
          return {
            services: router.services().map((s) => ({ ...s, origin: 'config (services)' })),
            registrations: router.registrations().map((r) => ({ ...r, origin: `registration by ${r.via}` })),
            routes: router.routes().map((r) => ({ ...r, origin: 'config (routes)' })),
            discovery: discovery.status(),
          };
        case 'streams':
          return streamView();
        case 'config':
          return redactConfig(config);
        case 'snapshot':
          return {
            time: Date.now(),
            node: { id: identity.id, names, vip6: identity.vip6 },
            carriers: carrierView(),
            streams: streamView(),
            counters: { ...sw.counters, active: sw.active },
          };
      }
    },
    state: () => ({
      id: identity.id,
      workload: workload ? { id: workload.current.id, notAfter: workload.current.notAfter } : undefined,
      vip6: identity.vip6,
      names,
      ready,
      listeners: node.addresses(),
      gateways: carrier.status(),
      peers: sshServers.flatMap((s) => s.peers()),
      registrations: router.registrations(),
      discovery: discovery.status(),
      policy: policy.counts(),
      streams: { ...sw.counters, active: sw.active },
    }),
    metricsText() {
      sw.flushMetrics();
      // Gateway state is read at scrape time rather than tracked on every change.
      for (const g of carrier.status().filter((x) => !x.onDemand)) gatewayUp.set(g.connected ? 1 : 0, { gateway: g.name });
      return metrics.registry.metrics();
    },
  };
  return node;
}
