import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  direct,
  type Listener,
  type Logger,
  loadOrCreateIdentity,
  meshName,
  type NodeIdentity,
  newSid,
  Policy,
  parseTarget,
  Router,
  Switch,
  silentLogger,
  type Target,
} from '@ugate/core';
import { Discovery, type Explanation, type Source } from '@ugate/discovery';
import { findIstioCredentials, h2rNode, hboneDialer, hboneServer, sniGateway, WorkloadCredentials } from '@ugate/proto-hbone';
import { httpProxy } from '@ugate/proto-http';
import { socks } from '@ugate/proto-socks';
import { type SshCarrier, type SshServer, sshCarrier, sshServer } from '@ugate/proto-ssh';
import { startAdmin } from './admin.js';
import { type Config, type ConfigInput, parseConfig, resolvePath } from './config.js';
import { promMetrics } from './metrics.js';

export interface NodeOptions {
  /** Folder that relative paths in the config resolve against. Default: cwd. */
  baseDir?: string;
  logger?: Logger;
}

export interface UgateNode {
  readonly identity: NodeIdentity;
  readonly config: Config;
  readonly switch: Switch;
  readonly ready: boolean;
  /** All names this node answers to. */
  readonly names: string[];
  start(): Promise<void>;
  /** Stop accepting, drain live streams until the deadline, close carriers. */
  stop(drainMs?: number): Promise<void>;
  /** Open a stream to `host:port` through the mesh, as a local app would. */
  dial(target: string): Promise<Duplex>;
  /** How `host:port` resolves now: each source asked, what it said, the upstreams in order. */
  explain(target: string | Target): Promise<Explanation>;
  readonly discovery: Discovery;
  /** Bound listener addresses by listener name. */
  addresses(): Record<string, string[]>;
  state(): object;
  metricsText(): Promise<string>;
}

function readText(baseDir: string, p: string | undefined): string | undefined {
  return p === undefined ? undefined : readFileSync(resolvePath(baseDir, p), 'utf8');
}

/** Build a node from a config object. Nothing listens until `start()`. */
export function createNode(input: ConfigInput | Config, opts: NodeOptions = {}): UgateNode {
  const config = parseConfig(input);
  const baseDir = opts.baseDir ?? process.cwd();
  const log = opts.logger ?? silentLogger;
  const identity = loadOrCreateIdentity(resolvePath(baseDir, config.dataDir), config.meshPrefix);
  // A route's `tokenFile` option is read once here; the dialer sees `token`.
  const routes = config.routes.map((r) =>
    r.options?.tokenFile ? { ...r, options: { ...r.options, token: (readText(baseDir, r.options.tokenFile) ?? '').trim() } } : r,
  );
  const router = new Router({ routes, services: config.services });
  const policy = new Policy(config.policy);
  const metrics = promMetrics();
  const sources: Source[] = [];
  const discovery = new Discovery({
    router,
    sources,
    policy,
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

  const listeners: Listener[] = [];
  let sshSrv: SshServer | undefined;
  if (config.ssh.listen) {
    sshSrv = sshServer({
      listen: config.ssh.listen,
      authorizedKeys: readText(baseDir, config.ssh.authorizedKeys),
      peers: config.ssh.peers,
      keepaliveIntervalMs: config.ssh.keepaliveIntervalMs,
    })(components);
    listeners.push(sshSrv);
  }
  // Also without gateways: SSH endpoints found by discovery are reached on demand.
  const carrier: SshCarrier = sshCarrier({
    gateways: config.ssh.gateways.map((g) => ({ ...g, knownHosts: readText(baseDir, g.knownHosts) })),
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
    if (config.hbone) {
      const accept = config.hbone.accept;
      const ok = (list: string[] | undefined, ours: string, theirs: string) =>
        list ? list.includes('*') || list.includes(theirs) : theirs === ours;
      listeners.push(
        hboneServer({
          listen: config.hbone.listen,
          credentials: workload,
          h2r: config.hbone.h2r && { allowed: config.hbone.h2r },
          post: config.hbone.post && {
            issuer: config.hbone.post.issuer,
            audience: config.hbone.post.audience,
            jwks: JSON.parse(readText(baseDir, config.hbone.post.jwksFile) ?? '{}'),
          },
          acceptPeer: (peer, ours) =>
            ok(accept?.trustDomains, ours.trustDomain, peer.trustDomain) && ok(accept?.namespaces, ours.namespace, peer.namespace),
        })(components),
      );
    }
  } else if (input && (input as { hbone?: unknown }).hbone) {
    log.warn({ code: 'UGATE_ERR_CONFIG' }, 'hbone is configured but there are no workload credentials (workload.certDir); HBONE is off');
  }
  const h2r =
    workload && config.h2r
      ? h2rNode({
          gateway: { address: parseTarget(config.h2r.gateway.address), identity: config.h2r.gateway.identity },
          names,
          credentials: workload,
        })(components)
      : undefined;
  if (config.h2r && !workload) log.warn({ code: 'UGATE_ERR_CONFIG' }, 'h2r needs workload credentials (workload.certDir); H2R is off');
  const hc = hboneDialer({ connectTimeoutMs: config.limits.connectTimeoutMs })(components);
  sw.addDialer(hc);
  closers.push(() => hc.close());
  if (config.hbonec) listeners.push(hboneServer({ listen: config.hbonec.listen })(components));
  if (config.sni) listeners.push(sniGateway({ listen: config.sni.listen })(components));
  if (config.socks) listeners.push(socks({ listen: config.socks.listen, users: config.socks.users })(components));
  if (config.http) listeners.push(httpProxy({ listen: config.http.listen, users: config.http.users })(components));

  let admin: Server | undefined;
  let ready = false;

  const node: UgateNode = {
    identity,
    config,
    switch: sw,
    names,
    get ready() {
      return ready;
    },
    discovery,
    async start() {
      carrier.start();
      await discovery.start();
      workload?.watch();
      h2r?.start();
      try {
        for (const l of listeners) await l.listen();
        if (config.admin) admin = await startAdmin(node, config.admin.listen);
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
      await Promise.all(listeners.map((l) => l.close().catch(() => {})));
      await sw.drain(drainMs);
      await sshSrv?.disconnect();
      await carrier.stop();
      await discovery.close();
      workload?.stop();
      await h2r?.stop();
      for (const close of closers) close();
      await new Promise<void>((resolve) => (admin ? admin.close(() => resolve()) : resolve()));
      admin?.closeAllConnections();
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
    addresses: () => Object.fromEntries(listeners.map((l) => [l.name, l.addresses()])),
    state: () => ({
      id: identity.id,
      workload: workload ? { id: workload.current.id, notAfter: workload.current.notAfter } : undefined,
      vip6: identity.vip6,
      names,
      ready,
      listeners: node.addresses(),
      gateways: carrier.status(),
      peers: sshSrv?.peers() ?? [],
      registrations: router.registrations(),
      discovery: discovery.status(),
      policy: policy.counts(),
      streams: { ...sw.counters, active: sw.active },
    }),
    metricsText() {
      // Gateway state is read at scrape time rather than tracked on every change.
      for (const g of carrier.status().filter((x) => !x.onDemand)) gatewayUp.set(g.connected ? 1 : 0, { gateway: g.name });
      return metrics.registry.metrics();
    },
  };
  return node;
}
