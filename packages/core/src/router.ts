import { ErrorCodes, UgateError } from './errors.js';
import { type HostPattern, matchHost, parseHostPattern, specificity } from './pattern.js';
import { formatTarget, parseTarget, type Target } from './target.js';
import type { Upstream } from './types.js';

export interface RouteInit {
  /** `name`, `*.suffix` or `*`, optionally with `:port`. */
  match: string;
  /** Carrier: `direct`, `ssh`, `reject`, … */
  carrier: string;
  /** Dial this address instead of the target (`host:port`). */
  address?: string;
  /** Carrier-specific selector (e.g. which gateway). */
  via?: string;
  /** Identity the far end must prove (e.g. `spiffe://td/ns/x/sa/y` for hbone). */
  identity?: string;
  /** Go through this gateway first (`host:port`, and the identity it must prove). */
  gateway?: { address: string; identity?: string };
  /** Carrier-specific options, passed through to the dialer. */
  options?: Record<string, string>;
}

interface Route {
  readonly pattern: HostPattern;
  readonly carrier: string;
  readonly address?: Target;
  readonly via?: string;
  readonly identity?: string;
  readonly gateway?: { readonly address: Target; readonly identity?: string };
  readonly options?: Readonly<Record<string, string>>;
  readonly order: number;
  /** What a match answers, made once (shared and frozen). */
  readonly upstream: Upstream;
}

interface Registration {
  readonly carrier: string;
  readonly via: string;
  readonly since: number;
}

/** Which part of the table answered. `default` = a catch-all route (`*` or `*:port`). */
export type RouteKind = 'service' | 'registration' | 'route' | 'default';

/** A table hit: the upstream, or a `reject` route's error. */
export interface RouteMatch {
  readonly kind: RouteKind;
  readonly upstream?: Upstream;
  readonly reject?: UgateError;
}

/**
 * FQDN-keyed routing table. Precedence, first hit wins:
 * 1. local services of this node (exact `host:port`; the node's own names are aliases of
 *    each of its services by port),
 * 2. live registrations (names whose owner is connected to this node; newest wins),
 * 3. static routes: most specific pattern, then config order.
 *
 * Discovery (`@ugate/discovery`) slots in between named routes and catch-all ones, so that
 * configuration can override it and `*` stays the last resort.
 */
export class Router {
  readonly #routes: Route[] = [];
  readonly #services = new Map<string, Target>();
  readonly #registrations = new Map<string, Registration[]>();
  readonly #selfNames = new Set<string>();
  #seq = 0;

  constructor(init: { routes?: RouteInit[]; services?: Record<string, string> } = {}) {
    for (const r of init.routes ?? []) this.addRoute(r);
    for (const [name, addr] of Object.entries(init.services ?? {})) this.addService(name, addr);
  }

  /** Replace the configured routes and services (a reload); live registrations stay. */
  replace(init: { routes?: RouteInit[]; services?: Record<string, string> }): void {
    const next = new Router(init);
    this.#routes.splice(0, this.#routes.length, ...next.#routes);
    this.#services.clear();
    for (const [k, v] of next.#services) this.#services.set(k, v);
  }

  /** The configured routes, in match order. */
  routes(): { match: string; carrier: string; address?: string; via?: string; identity?: string }[] {
    return this.#routes.map((r) => ({
      match: r.pattern.source,
      carrier: r.carrier,
      address: r.address && formatTarget(r.address),
      via: r.via,
      identity: r.identity,
    }));
  }

  services(): { name: string; address: string }[] {
    return [...this.#services].map(([name, a]) => ({ name, address: formatTarget(a) }));
  }

  addRoute(r: RouteInit): void {
    const pattern = parseHostPattern(r.match);
    const address = r.address === undefined ? undefined : parseTarget(r.address);
    const gateway = r.gateway ? { address: parseTarget(r.gateway.address), identity: r.gateway.identity } : undefined;
    const { carrier, via, identity, options } = r;
    const route: Route = {
      pattern,
      carrier,
      address,
      via,
      identity,
      gateway,
      options,
      order: this.#routes.length,
      upstream: Object.freeze({ carrier, address, via, identity, gateway, options, reason: `route ${pattern.source}` }),
    };
    this.#routes.push(route);
    this.#routes.sort((a, b) => specificity(b.pattern) - specificity(a.pattern) || a.order - b.order);
  }

  /** Expose a local address under a mesh name (`host:port`). */
  addService(name: string, address: string): void {
    this.#services.set(formatTarget(parseTarget(name)), parseTarget(address));
  }

  /**
   * Names of this node (e.g. `<id>.m`): `name:port` reaches the service of this node with
   * that port, when exactly one service has it.
   */
  addSelfName(name: string): void {
    this.#selfNames.add(name.toLowerCase());
  }

  /** Names served by this node (host parts of its services). */
  serviceHosts(): string[] {
    return [...new Set([...this.#services.keys()].map((k) => parseTarget(k).host))];
  }

  /** Register `host` as reachable through a live carrier connection. Returns the undo function. */
  register(host: string, carrier: string, via: string): () => void {
    const key = host.toLowerCase();
    const reg: Registration = { carrier, via, since: ++this.#seq };
    const list = this.#registrations.get(key) ?? [];
    list.push(reg);
    this.#registrations.set(key, list);
    return () => {
      const cur = this.#registrations.get(key);
      if (!cur) return;
      const i = cur.indexOf(reg);
      if (i >= 0) cur.splice(i, 1);
      if (cur.length === 0) this.#registrations.delete(key);
    };
  }

  registrations(): { host: string; carrier: string; via: string }[] {
    return [...this.#registrations].flatMap(([host, regs]) => regs.map((r) => ({ host, carrier: r.carrier, via: r.via })));
  }

  /** The table's answer for a target, or undefined when nothing matches. */
  match(target: Target): RouteMatch | undefined {
    const key = formatTarget(target);
    const local = this.#services.get(key);
    if (local) return { kind: 'service', upstream: { carrier: 'direct', address: local, reason: `service ${key}` } };
    const alias = this.#selfService(target);
    if (alias)
      return {
        kind: 'service',
        upstream: { carrier: 'direct', address: alias[1], reason: `service ${alias[0]} (${target.host} is this node)` },
      };
    const regs = this.#registrations.get(target.host);
    const reg = regs?.[regs.length - 1];
    if (reg) return { kind: 'registration', upstream: { carrier: reg.carrier, via: reg.via, reason: `registration ${target.host}` } };
    for (const r of this.#routes) {
      if (!matchHost(r.pattern, target)) continue;
      const kind = r.pattern.kind === 'any' ? 'default' : 'route';
      if (r.carrier === 'reject') {
        return { kind, reject: new UgateError(ErrorCodes.NO_ROUTE, `route ${r.pattern.source} rejects ${key}`) };
      }
      return { kind, upstream: r.upstream };
    }
    return undefined;
  }

  /** Resolve a target from the table alone, or throw NO_ROUTE. */
  resolve(target: Target): Upstream {
    const m = this.match(target);
    if (m?.reject) throw m.reject;
    if (m?.upstream) return m.upstream;
    throw new UgateError(ErrorCodes.NO_ROUTE, `no route to ${formatTarget(target)}`);
  }

  #selfService(target: Target): [string, Target] | undefined {
    if (!this.#selfNames.has(target.host)) return undefined;
    let found: [string, Target] | undefined;
    for (const [name, addr] of this.#services) {
      if (parseTarget(name).port !== target.port) continue;
      if (found) return undefined; // ambiguous: two services on this port
      found = [name, addr];
    }
    return found;
  }
}
