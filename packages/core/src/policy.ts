import { BlockList, isIP } from 'node:net';
import { ErrorCodes, UgateError } from './errors.js';
import { type HostPattern, matchHost, parseHostPattern } from './pattern.js';
import { formatTarget } from './target.js';
import type { StreamRequest } from './types.js';

export interface PolicyRuleInit {
  action: 'allow' | 'deny';
  /** Destination patterns (`name`, `*.suffix`, `*`, each with optional `:port`). Empty = any. */
  to?: string[];
  /**
   * Source identities: a node ID, a principal/user name, `local` (this node's own egress),
   * or `*`. Empty = any.
   */
  from?: string[];
  /** Accepting protocols (`socks5`, `http-connect`, `ssh-direct`, …). Empty = any. */
  protocols?: string[];
  /** Source namespaces, from SPIFFE principals `td/ns/<ns>/sa/<sa>`. Empty = any. */
  namespaces?: string[];
  /** Source addresses: IPs or CIDRs (`10.0.0.0/8`, `fd00::/64`). Empty = any. */
  sources?: string[];
  /** The rule does not match these destinations / identities / namespaces / addresses (Istio's `not_*`). */
  notTo?: string[];
  notFrom?: string[];
  notNamespaces?: string[];
  notSources?: string[];
  /** true: only peers that proved an identity (a principal or key); false: only peers that did not. */
  authenticated?: boolean;
}

interface Rule {
  readonly action: 'allow' | 'deny';
  readonly to: HostPattern[];
  readonly from: readonly string[];
  readonly protocols: readonly string[];
  readonly namespaces: readonly string[];
  readonly sources: BlockList | undefined;
  readonly notTo: HostPattern[];
  readonly notFrom: readonly string[];
  readonly notNamespaces: readonly string[];
  readonly notSources: BlockList | undefined;
  readonly authenticated: boolean | undefined;
  readonly index: number;
  readonly origin: string;
  /** Istio's rules guard a workload's inbound side: they do not judge this node's own egress. */
  readonly inboundOnly: boolean;
}

function blockList(cidrs: string[] | undefined): BlockList | undefined {
  if (!cidrs?.length) return undefined;
  const b = new BlockList();
  for (const c of cidrs) {
    const [addr, bits] = c.split('/');
    const type = isIP(addr ?? '') === 6 ? 'ipv6' : 'ipv4';
    if (!isIP(addr ?? '')) throw new UgateError(ErrorCodes.CONFIG, `policy source ${JSON.stringify(c)} is not an IP or CIDR`);
    if (bits === undefined) b.addAddress(addr!, type);
    else b.addSubnet(addr!, Number(bits), type);
  }
  return b;
}

/** The namespace of a SPIFFE-style principal `td/ns/<ns>/sa/<sa>`. */
function namespaceOf(principal: string): string | undefined {
  return /^[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(principal)?.[1];
}

/**
 * Istio-style L4 authorization: a matching DENY wins; with no ALLOW rule
 * everything else is allowed; otherwise some ALLOW must match.
 */
export class Policy {
  /** Rule sets by origin: `config` (static) and one per discovery source (e.g. `xds`). */
  readonly #sets = new Map<string, Rule[]>();
  #rules: Rule[] = [];

  constructor(rules: readonly PolicyRuleInit[] = []) {
    this.set(rules);
  }

  /** Replace the configured rule set; applies to streams opened from now on. */
  set(rules: readonly PolicyRuleInit[]): void {
    this.setSource('config', rules);
  }

  /**
   * Replace the rules that came from `origin` (all sets are evaluated together, Istio style:
   * any matching DENY wins, and with any ALLOW present some ALLOW must match).
   */
  setSource(origin: string, rules: readonly PolicyRuleInit[], opts: { inboundOnly?: boolean } = {}): void {
    const parsed = rules.map((r, index) => ({
      inboundOnly: opts.inboundOnly ?? false,
      action: r.action,
      to: (r.to ?? []).map(parseHostPattern),
      from: r.from ?? [],
      protocols: r.protocols ?? [],
      namespaces: r.namespaces ?? [],
      sources: blockList(r.sources),
      notTo: (r.notTo ?? []).map(parseHostPattern),
      notFrom: r.notFrom ?? [],
      notNamespaces: r.notNamespaces ?? [],
      notSources: blockList(r.notSources),
      authenticated: r.authenticated,
      index,
      origin,
    }));
    if (parsed.length) this.#sets.set(origin, parsed);
    else this.#sets.delete(origin);
    this.#rules = [...this.#sets.values()].flat();
  }

  /** Number of rules by origin. */
  counts(): Record<string, number> {
    return Object.fromEntries([...this.#sets].map(([k, v]) => [k, v.length]));
  }

  /** Throws POLICY_DENIED with the reason. */
  authorize(req: StreamRequest): void {
    if (this.#rules.length === 0) return;
    const rules = req.peer.kind === 'local' ? this.#rules.filter((r) => !r.inboundOnly) : this.#rules;
    const matching = rules.filter((r) => matches(r, req));
    const deny = matching.find((r) => r.action === 'deny');
    if (deny) throw denied(req, label(deny));
    const hasAllow = rules.some((r) => r.action === 'allow');
    if (hasAllow && !matching.some((r) => r.action === 'allow')) throw denied(req, 'no allow rule matched');
  }
}

const label = (r: Rule) => (r.origin === 'config' ? `deny rule #${r.index}` : `${r.origin} deny rule #${r.index}`);

function denied(req: StreamRequest, why: string): UgateError {
  const who = req.peer.id ?? req.peer.principals[0] ?? req.peer.kind;
  return new UgateError(ErrorCodes.POLICY_DENIED, `${who} → ${formatTarget(req.target)} denied: ${why}`);
}

function inList(list: BlockList, address: string): boolean {
  const a = address.replace(/^::ffff:/, '');
  return isIP(a) !== 0 && list.check(a, isIP(a) === 6 ? 'ipv6' : 'ipv4');
}

function isFrom(from: readonly string[], req: StreamRequest): boolean {
  const names = new Set<string>(req.peer.principals);
  if (req.peer.id) names.add(req.peer.id);
  // `local` is a keyword for this node's own streams, never a remote peer's user or principal name.
  return from.some((f) => f === '*' || (f === 'local' ? req.peer.kind === 'local' : names.has(f)));
}

const inNamespace = (list: readonly string[], req: StreamRequest) => req.peer.principals.some((p) => list.includes(namespaceOf(p) ?? ''));

function matches(r: Rule, req: StreamRequest): boolean {
  if (r.to.length > 0 && !r.to.some((p) => matchHost(p, req.target))) return false;
  if (r.notTo.some((p) => matchHost(p, req.target))) return false;
  if (r.protocols.length > 0 && !r.protocols.includes(req.protocol)) return false;
  if (r.namespaces.length > 0 && !inNamespace(r.namespaces, req)) return false;
  if (r.notNamespaces.length > 0 && inNamespace(r.notNamespaces, req)) return false;
  if (r.sources && !inList(r.sources, req.source.address)) return false;
  if (r.notSources && inList(r.notSources, req.source.address)) return false;
  if (r.from.length > 0 && !isFrom(r.from, req)) return false;
  if (r.notFrom.length > 0 && isFrom(r.notFrom, req)) return false;
  if (r.authenticated !== undefined) {
    const proved = req.peer.principals.length > 0 || req.peer.id !== undefined;
    if (proved !== r.authenticated) return false;
  }
  return true;
}
