import { isIP } from 'node:net';
import {
  type AbortLike,
  ErrorCodes,
  formatTarget,
  type Logger,
  makeTarget,
  type Policy,
  type Resolver,
  type Router,
  silentLogger,
  type Target,
  toAbortSignal,
  toUgateError,
  UgateError,
  type Upstream,
} from '@ugate/core';
import { type Answer, type Endpoint, isPush, type PullSource, type PushSource, type Source, type Update } from './types.js';

export interface DiscoveryInit {
  /** The static table: services, registrations, routes. Named routes override discovery; `*` routes come after it. */
  router: Router;
  /** Sources in precedence order: the first one with endpoints for a name answers. */
  sources?: Source[];
  /** Discovery sources' policy rules (e.g. Istio authorizations) go here, next to the configured ones. */
  policy?: Policy;
  /**
   * Asked after the sources, before catch-all routes: e.g. "`<id>.m` through a connected SSH
   * gateway", where the owner of the key registered the name.
   */
  fallback?: (target: Target) => Upstream | undefined;
  /** Called after a source changed the policy (e.g. to re-check live streams). */
  onPolicyChange?: () => void;
  logger?: Logger;
  /** Per pull-source lookup timeout. Default 3 s. */
  lookupTimeoutMs?: number;
  /** How long "no record" from a pull source is cached. Default 5 s. */
  negativeTtlMs?: number;
  /** A failed endpoint is skipped for `initialMs`, doubling per failure up to `maxMs`. Default 1 s → 30 s. */
  health?: { initialMs?: number; maxMs?: number };
  /** Endpoints tried per stream (the switch moves on when a dial fails). Default 3. */
  maxAttempts?: number;
}

/** One step of a resolution, as `explain` reports it. */
export interface Step {
  readonly source: string;
  readonly result: 'answer' | 'no record' | 'not asked' | 'error' | 'skipped';
  readonly detail: string;
  readonly cached?: boolean;
  readonly ttlMs?: number;
  readonly endpoints?: readonly EndpointView[];
}

export interface EndpointView {
  readonly carrier: string;
  readonly address: string;
  readonly identity?: string;
  readonly gateway?: string;
  readonly weight: number;
  readonly priority: number;
  readonly healthy: boolean;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface Explanation {
  readonly target: string;
  /** The upstreams the switch would try, in order (empty when there is no route). */
  readonly upstreams: readonly Upstream[];
  /** Which step answered: `service`, `registration`, `route`, `default`, or a source name. */
  readonly answeredBy?: string;
  readonly steps: readonly Step[];
  readonly error?: { code: string; message: string };
}

/** `<52 base32 chars>.m` (optionally `.m.<domain>`): the name itself is the key to pin. */
const SELF_NAME = /^([a-z2-7]{52})\.m(?:\.|$)/;

/** The node ID a self-assigned name pins, if `host` is one. */
export function pinnedId(host: string): string | undefined {
  return SELF_NAME.exec(host)?.[1];
}

interface Cached {
  answer: Answer | undefined;
  expires: number;
}

interface Health {
  failures: number;
  downUntil: number;
}

interface Found {
  readonly source: string;
  readonly endpoints: readonly Endpoint[];
  readonly detail: string;
  /** Ask the far end for this name (an IP that was mapped to its FQDN). */
  readonly target?: Target;
  /** The table answered for the mapped name. */
  readonly upstream?: Upstream;
}

/**
 * The node's resolver: the static table first, then each discovery source in precedence
 * order, then catch-all routes. Picks endpoints by priority, weight and health, and explains
 * every answer.
 */
export class Discovery implements Resolver {
  readonly #router: Router;
  #sources: Source[];
  readonly #policy: Policy | undefined;
  readonly #onPolicy: (() => void) | undefined;
  readonly #fallback: DiscoveryInit['fallback'];
  readonly #log: Logger;
  readonly #timeout: number;
  readonly #negTtl: number;
  readonly #healthInit: number;
  readonly #healthMax: number;
  readonly #maxAttempts: number;
  /** Pull answers: `source|host:port`. */
  readonly #cache = new Map<string, Cached>();
  readonly #inflight = new Map<string, Promise<Answer | undefined>>();
  /** Push records: source → host → port (0 = any) → update. */
  readonly #pushed = new Map<string, Map<string, Map<number, Update>>>();
  readonly #health = new Map<string, Health>();

  constructor(init: DiscoveryInit) {
    this.#router = init.router;
    this.#sources = init.sources ?? [];
    this.#policy = init.policy;
    this.#onPolicy = init.onPolicyChange;
    this.#fallback = init.fallback;
    this.#log = (init.logger ?? silentLogger).child({ component: 'discovery' });
    this.#timeout = init.lookupTimeoutMs ?? 3000;
    this.#negTtl = init.negativeTtlMs ?? 5000;
    this.#healthInit = init.health?.initialMs ?? 1000;
    this.#healthMax = init.health?.maxMs ?? 30_000;
    this.#maxAttempts = init.maxAttempts ?? 3;
    const names = new Set<string>();
    for (const s of this.#sources) {
      if (names.has(s.name)) throw new UgateError(ErrorCodes.CONFIG, `discovery source ${s.name} is configured twice`);
      names.add(s.name);
    }
  }

  get sources(): readonly Source[] {
    return this.#sources;
  }

  /** Start the push sources. A source that fails to start is logged and retried by itself, never fatal. */
  async start(): Promise<void> {
    for (const s of this.#sources.filter(isPush)) {
      try {
        await s.start(this.#sink(s), this.#log.child({ source: s.name }));
      } catch (e) {
        const err = toUgateError(e);
        this.#log.warn({ code: err.code, source: s.name, err: err.message }, 'discovery source failed to start');
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#sources.map(async (s) => s.close?.()));
  }

  /** Swap the sources (a reload): the old ones are closed with their records and policy, the new ones started. */
  async setSources(sources: Source[], started: boolean): Promise<void> {
    const old = this.#sources;
    this.#sources = sources;
    await Promise.all(old.map(async (s) => s.close?.()));
    for (const s of old) {
      this.#pushed.delete(s.name);
      if (isPush(s) && !sources.some((n) => n.name === s.name)) this.#policy?.setSource(s.name, []);
    }
    this.#cache.clear();
    if (started) await this.start();
  }

  async resolve(target: Target, signal?: AbortLike): Promise<Upstream[]> {
    const now = this.resolveNow(target);
    if (now) return now;
    const x = await this.#explain(target, signal, false);
    if (x.error) throw new UgateError(x.error.code as typeof ErrorCodes.NO_ROUTE, x.error.message);
    return [...x.upstreams];
  }

  /** The table alone answers (no sources to ask, or a service/registration/named route): no steps to record. */
  resolveNow(target: Target): Upstream[] | undefined {
    const m = this.#router.match(target);
    if (!m || (m.kind === 'default' && (this.#sources.length > 0 || this.#fallback?.(target)))) return undefined;
    if (m.reject) throw m.reject;
    return [m.upstream!];
  }

  /** Resolve and say why: every source asked, what it said, and the order the endpoints would be tried in. */
  explain(target: Target, signal?: AbortLike): Promise<Explanation> {
    return this.#explain(target, signal, true);
  }

  report(up: Upstream, ok: boolean): void {
    // The usual report, a success with nothing marked down: no key to build.
    if (ok && this.#health.size === 0) return;
    const key = healthKey(up);
    if (ok) {
      this.#health.delete(key);
      return;
    }
    const h = this.#health.get(key) ?? { failures: 0, downUntil: 0 };
    h.failures++;
    h.downUntil = Date.now() + Math.min(this.#healthMax, this.#healthInit * 2 ** (h.failures - 1));
    this.#health.set(key, h);
  }

  /** Endpoints the push sources hold for `host` (any port), e.g. for the built-in DNS server. */
  known(host: string): Endpoint[] {
    const h = host.toLowerCase().replace(/\.$/, '');
    return [...this.#pushed.values()].flatMap((t) => [...(t.get(h)?.values() ?? [])].flatMap((u) => u.endpoints ?? []));
  }

  /** Everything the push sources hold, and the pull cache, for the admin API. */
  status(): object {
    const now = Date.now();
    return {
      sources: this.#sources.map((s) => ({
        name: s.name,
        kind: isPush(s) ? 'push' : 'pull',
        records: isPush(s) ? [...(this.#pushed.get(s.name)?.values() ?? [])].reduce((n, m) => n + m.size, 0) : undefined,
        status: isPush(s) ? s.status?.() : undefined,
      })),
      cache: [...this.#cache].map(([k, c]) => ({ key: k, endpoints: c.answer?.endpoints.length ?? 0, expiresInMs: c.expires - now })),
      unhealthy: [...this.#health]
        .filter(([, h]) => h.downUntil > now)
        .map(([k, h]) => ({ endpoint: k, failures: h.failures, forMs: h.downUntil - now })),
    };
  }

  // ---- resolution -------------------------------------------------------------------------

  async #explain(target: Target, signal: AbortLike | undefined, verbose: boolean): Promise<Explanation> {
    const steps: Step[] = [];
    const name = formatTarget(target);
    const done = (answeredBy: string | undefined, upstreams: Upstream[], error?: UgateError): Explanation => ({
      target: name,
      upstreams,
      answeredBy,
      steps,
      error: error && { code: error.code, message: error.message },
    });

    const m = this.#router.match(target);
    if (m && m.kind !== 'default') {
      steps.push({ source: m.kind, result: 'answer', detail: m.reject?.message ?? m.upstream!.reason });
      return m.reject ? done(m.kind, [], m.reject) : done(m.kind, [m.upstream!]);
    }
    steps.push({ source: 'config', result: 'no record', detail: 'no service, registration or named route' });

    let found = await this.#ask(target, steps, signal, verbose);
    if (!found && isIP(target.host)) found = await this.#reverse(target, steps, signal, verbose);
    if (found?.upstream) return done(found.source, [found.upstream]);
    if (found) {
      const ups = this.#order(target, found, steps, verbose);
      if (ups.length) return done(found.source, ups);
    }

    const fb = this.#fallback?.(target);
    if (fb) {
      steps.push({ source: 'gateway', result: 'answer', detail: fb.reason });
      return done('gateway', [fb]);
    }
    if (m) {
      steps.push({ source: 'default', result: 'answer', detail: m.reject?.message ?? m.upstream!.reason });
      return m.reject ? done('default', [], m.reject) : done('default', [m.upstream!]);
    }
    return done(undefined, [], new UgateError(ErrorCodes.NO_ROUTE, `no route to ${name}`));
  }

  /** Ask the sources in order; the first with endpoints answers. */
  async #ask(target: Target, steps: Step[], signal: AbortLike | undefined, verbose: boolean): Promise<Found | undefined> {
    for (const s of this.#sources) {
      if (isPush(s)) {
        const u = this.#pushedFor(s.name, target);
        if (u?.endpoints?.length) {
          steps.push({ source: s.name, result: 'answer', detail: u.detail });
          return { source: s.name, endpoints: u.endpoints, detail: u.detail };
        }
        steps.push({ source: s.name, result: 'no record', detail: 'no record pushed for this name' });
        continue;
      }
      if (!s.handles(target)) {
        if (verbose) steps.push({ source: s.name, result: 'not asked', detail: 'outside the names this source serves' });
        continue;
      }
      try {
        const { answer, cached, ttlMs } = await this.#pull(s, target, signal);
        if (answer?.endpoints.length) {
          steps.push({ source: s.name, result: 'answer', detail: answer.detail, cached, ttlMs });
          return { source: s.name, endpoints: answer.endpoints, detail: answer.detail };
        }
        steps.push({ source: s.name, result: 'no record', detail: answer?.detail ?? 'no record', cached, ttlMs });
      } catch (e) {
        const err = toUgateError(e);
        if (signal?.aborted) throw err;
        this.#log.warn({ code: err.code, source: s.name, target: formatTarget(target), err: err.message }, 'discovery lookup failed');
        steps.push({ source: s.name, result: 'error', detail: `${err.code}: ${err.message}` });
      }
    }
    return undefined;
  }

  /** An IP with no record of its own: map it to a name (PTR) and resolve that name instead. */
  async #reverse(target: Target, steps: Step[], signal: AbortLike | undefined, verbose: boolean): Promise<Found | undefined> {
    for (const s of this.#sources) {
      if (isPush(s) || !s.reverse) continue;
      let host: string | undefined;
      try {
        host = await withTimeout(s.reverse(target.host, timeoutSignal(this.#timeout, signal)), this.#timeout, `${s.name} reverse lookup`);
      } catch (e) {
        const err = toUgateError(e);
        steps.push({ source: s.name, result: 'error', detail: `reverse ${target.host}: ${err.code}: ${err.message}` });
        continue;
      }
      if (!host) {
        steps.push({ source: s.name, result: 'no record', detail: `no PTR for ${target.host}` });
        continue;
      }
      steps.push({ source: s.name, result: 'answer', detail: `${target.host} is ${host}` });
      const named = makeTarget(host.toLowerCase().replace(/\.$/, ''), target.port);
      const m = this.#router.match(named);
      if (m?.upstream && m.kind !== 'default') {
        steps.push({ source: m.kind, result: 'answer', detail: `${host}: ${m.upstream.reason}` });
        return { source: m.kind, endpoints: [], detail: m.upstream.reason, upstream: { ...m.upstream, target: named } };
      }
      const found = await this.#ask(named, steps, signal, verbose);
      if (found) return { ...found, target: named };
    }
    return undefined;
  }

  async #pull(s: PullSource, target: Target, signal?: AbortLike): Promise<{ answer: Answer | undefined; cached: boolean; ttlMs: number }> {
    const key = `${s.name}|${formatTarget(target)}`;
    const now = Date.now();
    const hit = this.#cache.get(key);
    if (hit && hit.expires > now) return { answer: hit.answer, cached: true, ttlMs: hit.expires - now };
    let p = this.#inflight.get(key);
    if (!p) {
      // Shared by concurrent askers, so not bound to one requester's signal.
      p = withTimeout(s.lookup(target, timeoutSignal(this.#timeout)), this.#timeout, `${s.name} lookup of ${formatTarget(target)}`);
      this.#inflight.set(key, p);
      p.then(
        (answer) => {
          const ttl = answer?.endpoints.length ? answer.ttlMs : Math.min(answer?.ttlMs ?? this.#negTtl, this.#negTtl);
          if (ttl > 0) this.#cache.set(key, { answer, expires: Date.now() + ttl });
          this.#trimCache();
        },
        () => {},
      ).finally(() => this.#inflight.delete(key));
    }
    const answer = await (signal ? raceAbort(p, signal) : p);
    return { answer, cached: false, ttlMs: answer?.ttlMs ?? this.#negTtl };
  }

  #trimCache(): void {
    if (this.#cache.size < 10_000) return;
    const now = Date.now();
    for (const [k, c] of this.#cache) if (c.expires <= now) this.#cache.delete(k);
  }

  #pushedFor(source: string, target: Target): Update | undefined {
    const ports = this.#pushed.get(source)?.get(target.host);
    return ports?.get(target.port) ?? ports?.get(0);
  }

  #sink(s: PushSource) {
    const table = new Map<string, Map<number, Update>>();
    this.#pushed.set(s.name, table);
    return {
      update: (u: Update) => {
        const host = u.host.toLowerCase().replace(/\.$/, '');
        const port = u.port ?? 0;
        let ports = table.get(host);
        if (u.endpoints === null) {
          ports?.delete(port);
          if (ports?.size === 0) table.delete(host);
          return;
        }
        if (!ports) {
          ports = new Map();
          table.set(host, ports);
        }
        ports.set(port, { ...u, host });
      },
      reset: () => table.clear(),
      policy: (rules: Parameters<Policy['setSource']>[1]) => {
        if (!this.#policy) return;
        try {
          // Sources speak for the mesh (Istio authorizations): rules for streams peers send us.
          this.#policy.setSource(s.name, rules, { inboundOnly: true });
          this.#onPolicy?.();
        } catch (e) {
          const err = toUgateError(e);
          this.#log.warn({ code: err.code, source: s.name, err: err.message }, 'discovery policy rejected, previous rules kept');
        }
      },
    };
  }

  /** Endpoints → upstreams: pin `.m` names, drop unhealthy ones (unless nothing else is left), order by priority then weight. */
  #order(target: Target, found: Found, steps: Step[], verbose: boolean): Upstream[] {
    const pin = pinnedId(target.host);
    const now = Date.now();
    const usable: Endpoint[] = [];
    for (const ep of found.endpoints) {
      if (pin && (ep.carrier === 'direct' || (ep.identity !== undefined && ep.identity !== pin))) {
        steps.push({ source: found.source, result: 'skipped', detail: `${describe(ep)}: ${target.host} pins key ${pin}` });
        continue;
      }
      usable.push(pin && !ep.identity ? { ...ep, identity: pin } : ep);
    }
    const healthy = (ep: Endpoint) => (this.#health.get(healthKey(toUpstream(ep, '', found.target)))?.downUntil ?? 0) <= now;
    const up = usable.filter(healthy);
    const pool = up.length ? up : usable;
    const ordered = pickOrder(pool).slice(0, this.#maxAttempts);
    if (verbose) {
      const i = steps.map((st) => st.source === found.source && st.result === 'answer').lastIndexOf(true);
      if (i >= 0) {
        steps[i] = {
          ...steps[i]!,
          endpoints: found.endpoints.map((ep) => ({
            carrier: ep.carrier,
            address: formatTarget(ep.address),
            identity: ep.identity,
            gateway: ep.gateway && formatTarget(ep.gateway.address),
            weight: ep.weight ?? 1,
            priority: ep.priority ?? 0,
            healthy: healthy(ep),
            labels: ep.labels,
          })),
        };
      }
    }
    return ordered.map((ep) => toUpstream(ep, `${found.source}: ${found.detail}`, found.target));
  }
}

function describe(ep: Endpoint): string {
  return `${ep.carrier} ${formatTarget(ep.address)}`;
}

/** The upstream the carriers understand for an endpoint. */
export function toUpstream(ep: Endpoint, reason: string, target?: Target): Upstream {
  switch (ep.carrier) {
    case 'direct':
      return { carrier: 'direct', address: ep.address, reason };
    case 'ssh':
      // `via` names the SSH server to go through; the far end is asked for the name itself.
      return { carrier: 'ssh', via: formatTarget(ep.address), identity: ep.identity, target: ep.target ?? target, reason };
    default:
      return { carrier: ep.carrier, address: ep.address, identity: ep.identity, gateway: ep.gateway, target: ep.target ?? target, reason };
  }
}

function healthKey(up: Upstream): string {
  return `${up.carrier}|${up.via ?? ''}|${up.address ? formatTarget(up.address) : ''}`;
}

/**
 * Lowest priority first; within a priority, a weighted random order (each endpoint's key is
 * u^(1/w) for a uniform u: sorting by it draws without replacement in proportion to weight).
 * Weight 0 endpoints go last within their priority.
 */
export function pickOrder<T extends { priority?: number; weight?: number }>(eps: readonly T[], random = Math.random): T[] {
  const keyed = eps.map((ep) => {
    const w = ep.weight ?? 1;
    return { ep, p: ep.priority ?? 0, k: w > 0 ? random() ** (1 / w) : -1 };
  });
  keyed.sort((a, b) => a.p - b.p || b.k - a.k);
  return keyed.map((x) => x.ep);
}

function timeoutSignal(ms: number, parent?: AbortLike): AbortSignal {
  const t = AbortSignal.timeout(ms);
  return parent ? AbortSignal.any([t, toAbortSignal(parent)]) : t;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new UgateError(ErrorCodes.TIMEOUT, `${what} timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

function raceAbort<T>(p: Promise<T>, signal: AbortLike): Promise<T> {
  if (signal.aborted) return Promise.reject(new UgateError(ErrorCodes.ABORTED, 'requester went away'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new UgateError(ErrorCodes.ABORTED, 'requester went away'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
