import { BlockList, isIP } from 'node:net';
import { ErrorCodes, type PolicyRuleInit, UgateError } from '@ugate/core';
import {
  Action,
  type AuthorizationMsg,
  type IpBlockMsg,
  ipFromBytes,
  type MatchMsg,
  Scope,
  type ServiceAccountMatchMsg,
  type StringMatchMsg,
} from './xds-proto.js';

/**
 * Istio authorizations → ugate policy rules.
 *
 * Istio: a policy matches when any group matches; a group when all its rule lists match; a rule
 * list when any of its matches does; a match when every field it sets matches (values within a
 * field OR, `not_*` fields negate). A PolicyRuleInit is one such match without negation, so each
 * group is expanded into the OR of the AND-combinations of its rule lists, and each combination
 * becomes one rule. `not_*` fields become the rule's `not*` lists; a `presence` principal match
 * becomes `authenticated` (so Istio's STRICT "deny peers without an identity" is exact).
 *
 * What a rule cannot say (prefix/suffix string matches, destination CIDRs) is approximated
 * towards the safe side: a DENY matches more (the constraint is dropped), an ALLOW matches less
 * (the value, or the whole match, is dropped). Each approximation is reported in `notes` so the
 * caller can log it.
 */

/** An ALLOW that matches nothing still makes "some ALLOW must match" apply: no listener has this protocol. */
export const NO_PROTOCOL = 'none';

/** More AND-combinations than this in one group: a DENY keeps the wider prefix, an ALLOW drops the group. */
const MAX_COMBINATIONS = 256;

export interface AuthzContext {
  /** Trust domain for service-account matches (peers of other trust domains are not accepted over HBONE). */
  trustDomain: string;
}

export interface Mapped {
  rules: PolicyRuleInit[];
  /** One line per approximation made. */
  notes: string[];
}

/** One conjunction. `undefined` = any value; an empty list = matches nothing. `not*` lists exclude. */
interface Clause {
  principals?: string[];
  namespaces?: string[];
  sources?: Cidr[];
  dstIps?: string[];
  ports?: number[];
  notPrincipals?: string[];
  notNamespaces?: string[];
  notSources?: Cidr[];
  notDstIps?: string[];
  notPorts?: number[];
  /** true: the peer proved an identity; false: it did not. */
  authenticated?: boolean;
  /** Contradictory conditions (e.g. authenticated and not). */
  never?: boolean;
}

interface Cidr {
  ip: string;
  bits: number;
}

export function validateAuthorization(a: AuthorizationMsg, name: string): void {
  const bad = (why: string) => new UgateError(ErrorCodes.CONFIG, `Authorization ${name}: ${why}`);
  if (!a.name) throw bad('no name');
  if (a.action !== Action.ALLOW && a.action !== Action.DENY) throw bad(`unknown action ${a.action}`);
  if (a.scope !== Scope.GLOBAL && a.scope !== Scope.NAMESPACE && a.scope !== Scope.WORKLOAD_SELECTOR) throw bad(`unknown scope ${a.scope}`);
  for (const g of a.groups)
    for (const r of g.rules)
      for (const m of r.matches) {
        for (const b of [...m.sourceIps, ...m.notSourceIps, ...m.destinationIps, ...m.notDestinationIps]) {
          const ip = ipFromBytes(b.address);
          if (ip === undefined || b.length > (isIP(ip) === 6 ? 128 : 32))
            throw bad(`bad address block (${b.address.length} bytes /${b.length})`);
        }
        for (const p of [...m.destinationPorts, ...m.notDestinationPorts]) if (p > 65535) throw bad(`port ${p} out of range`);
      }
}

export function mapAuthorization(a: AuthorizationMsg, ctx: AuthzContext): Mapped {
  const deny = a.action === Action.DENY;
  const notes: string[] = [];
  const clauses: Clause[] = [];
  for (const g of a.groups) clauses.push(...expandGroup(g.rules, deny, ctx, notes));
  const action = deny ? 'deny' : 'allow';
  const rules = clauses.map((c) => toRule(action, c));
  if (!deny && rules.length === 0) rules.push({ action: 'allow', protocols: [NO_PROTOCOL] });
  return { rules, notes: [...new Set(notes)] };
}

function expandGroup(lists: { matches: MatchMsg[] }[], deny: boolean, ctx: AuthzContext, notes: string[]): Clause[] {
  let acc: Clause[] = [{}];
  for (const list of lists) {
    const options = list.matches.map((m) => translate(m, deny, ctx, notes)).filter((c): c is Clause => c !== null);
    if (options.length === 0) return [];
    if (acc.length * options.length > MAX_COMBINATIONS) {
      notes.push(
        `more than ${MAX_COMBINATIONS} combinations: ${deny ? 'later conditions ignored (deny widened)' : 'group dropped (allow narrowed)'}`,
      );
      return deny ? acc : [];
    }
    acc = acc.flatMap((c) => options.map((o) => intersect(c, o))).filter((c) => !isEmpty(c));
  }
  return acc;
}

/** One Istio match as a clause; null = can never match (after narrowing an ALLOW). */
function translate(m: MatchMsg, deny: boolean, ctx: AuthzContext, notes: string[]): Clause | null {
  const c: Clause = {};
  // `presence` on principals = "has an identity"; on not_principals = "has none".
  const present = (l: StringMatchMsg[]) => l.some((x) => x.matchType === 'presence');
  if (present(m.principals)) c.authenticated = true;
  if (present(m.notPrincipals)) c.authenticated = c.authenticated === true ? undefined : false;
  if (present(m.principals) && present(m.notPrincipals)) c.never = true;
  const withoutPresence = (l: StringMatchMsg[]) => l.filter((x) => x.matchType !== 'presence');

  const principals = strings(withoutPresence(m.principals), 'principals', deny, notes, stripScheme);
  const accounts = m.serviceAccounts.length > 0 ? m.serviceAccounts.map((s) => principalOf(s, ctx)) : undefined;
  c.principals = both(principals, accounts, (x, y) => x.filter((p) => y.includes(p)));
  c.namespaces = strings(m.namespaces, 'namespaces', deny, notes);
  if (m.sourceIps.length > 0) c.sources = m.sourceIps.map(cidr);
  if (m.destinationIps.length > 0) c.dstIps = hostsOf(m.destinationIps, deny, notes, 'destination CIDR');
  if (m.destinationPorts.length > 0) c.ports = [...m.destinationPorts];

  // Negations: a value that cannot be excluded exactly makes a DENY match more (dropped) and an
  // ALLOW match less (the whole match dropped).
  let exact = true;
  const excluded = (l: StringMatchMsg[], field: string, norm = (x: string) => x): string[] | undefined => {
    if (l.length === 0) return undefined;
    const out = l.filter((x) => x.matchType === 'exact' && x.exact !== undefined).map((x) => norm(x.exact!));
    if (out.length < l.length) {
      exact = false;
      notes.push(`${field} prefix/suffix match ${deny ? 'ignored (deny widened)' : 'cannot be expressed (match dropped, allow narrowed)'}`);
    }
    return out.length ? out : undefined;
  };
  const notAccounts = m.notServiceAccounts.map((s) => principalOf(s, ctx));
  const notPrincipals = [...(excluded(withoutPresence(m.notPrincipals), 'not_principals', stripScheme) ?? []), ...notAccounts];
  if (notPrincipals.length) c.notPrincipals = notPrincipals;
  c.notNamespaces = excluded(m.notNamespaces, 'not_namespaces');
  if (m.notSourceIps.length > 0) c.notSources = m.notSourceIps.map(cidr);
  if (m.notDestinationIps.length > 0) {
    const hosts = m.notDestinationIps.map(cidr).filter((b) => b.bits === fullBits(b.ip));
    if (hosts.length < m.notDestinationIps.length) {
      exact = false;
      notes.push(`not_destination_ips CIDR ${deny ? 'ignored (deny widened)' : 'cannot be expressed (match dropped, allow narrowed)'}`);
    }
    if (hosts.length) c.notDstIps = hosts.map((b) => b.ip);
  }
  if (m.notDestinationPorts.length > 0) c.notPorts = [...m.notDestinationPorts];
  if (!exact && !deny) return null;
  return isEmpty(c) ? null : c;
}

/** Destination blocks as host addresses; a real CIDR widens a DENY (ignored) or narrows an ALLOW (dropped). */
function hostsOf(blocks: IpBlockMsg[], deny: boolean, notes: string[], what: string): string[] | undefined {
  const all = blocks.map(cidr);
  const hosts = all.filter((b) => b.bits === fullBits(b.ip)).map((b) => b.ip);
  if (hosts.length === all.length) return hosts;
  notes.push(deny ? `${what} ignored (deny widened)` : `${what} dropped (allow narrowed)`);
  return deny ? undefined : hosts;
}

/** Exact values pass; other kinds widen a DENY (field ignored) or narrow an ALLOW (value dropped). */
function strings(list: StringMatchMsg[], field: string, deny: boolean, notes: string[], norm = (s: string) => s): string[] | undefined {
  if (list.length === 0) return undefined;
  const out: string[] = [];
  for (const s of list) {
    if (s.matchType === 'exact' && s.exact !== undefined) {
      out.push(norm(s.exact));
      continue;
    }
    notes.push(`${field} ${s.matchType ?? 'unset'} match ${deny ? 'ignored (deny widened)' : 'dropped (allow narrowed)'}`);
    if (deny) return undefined;
  }
  return out;
}

const stripScheme = (p: string) => p.replace(/^spiffe:\/\//, '');
const principalOf = (s: ServiceAccountMatchMsg, ctx: AuthzContext) => `${ctx.trustDomain}/ns/${s.namespace}/sa/${s.serviceAccount}`;
const fullBits = (ip: string) => (isIP(ip) === 6 ? 128 : 32);
const cidr = (b: IpBlockMsg): Cidr => ({ ip: ipFromBytes(b.address)!, bits: b.length });

function both<T>(a: T[] | undefined, b: T[] | undefined, f: (x: T[], y: T[]) => T[]): T[] | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return f(a, b);
}

const common = <T>(x: T[], y: T[]) => x.filter((v) => y.includes(v));

const union = <T>(x: T[], y: T[]) => [...new Set([...x, ...y])];

function intersect(a: Clause, b: Clause): Clause {
  const auth = a.authenticated ?? b.authenticated;
  return {
    principals: both(a.principals, b.principals, common),
    namespaces: both(a.namespaces, b.namespaces, common),
    dstIps: both(a.dstIps, b.dstIps, common),
    ports: both(a.ports, b.ports, common),
    sources: both(a.sources, b.sources, (x, y) => x.flatMap((p) => y.flatMap((q) => overlap(p, q)))),
    // AND of exclusions: excluded if any side excludes it.
    notPrincipals: both(a.notPrincipals, b.notPrincipals, union),
    notNamespaces: both(a.notNamespaces, b.notNamespaces, union),
    notSources: both(a.notSources, b.notSources, union),
    notDstIps: both(a.notDstIps, b.notDstIps, union),
    notPorts: both(a.notPorts, b.notPorts, union),
    authenticated: auth,
    never: a.never || b.never || (a.authenticated !== undefined && b.authenticated !== undefined && a.authenticated !== b.authenticated),
  };
}

/** Two CIDRs are nested or disjoint: the narrower one, or nothing. */
function overlap(p: Cidr, q: Cidr): Cidr[] {
  const [wide, narrow] = p.bits <= q.bits ? [p, q] : [q, p];
  const family = isIP(wide.ip) === 6 ? 'ipv6' : 'ipv4';
  if (isIP(narrow.ip) !== isIP(wide.ip)) return [];
  const list = new BlockList();
  list.addSubnet(wide.ip, wide.bits, family);
  return list.check(narrow.ip, family) ? [narrow] : [];
}

const isEmpty = (c: Clause) =>
  c.never === true || [c.principals, c.namespaces, c.sources, c.dstIps, c.ports].some((v) => v !== undefined && v.length === 0);

function toRule(action: 'allow' | 'deny', c: Clause): PolicyRuleInit {
  const r: PolicyRuleInit = { action };
  if (c.principals) r.from = c.principals;
  if (c.namespaces) r.namespaces = c.namespaces;
  if (c.sources) r.sources = c.sources.map((s) => (s.bits === fullBits(s.ip) ? s.ip : `${s.ip}/${s.bits}`));
  const hostPart = (ip: string) => (isIP(ip) === 6 ? `[${ip}]` : ip);
  if (c.dstIps && c.ports) r.to = c.dstIps.flatMap((ip) => c.ports!.map((p) => `${hostPart(ip)}:${p}`));
  else if (c.dstIps) r.to = c.dstIps;
  else if (c.ports) r.to = c.ports.map((p) => `*:${p}`);
  if (c.notPrincipals) r.notFrom = c.notPrincipals;
  if (c.notNamespaces) r.notNamespaces = c.notNamespaces;
  if (c.notSources) r.notSources = c.notSources.map((s) => (s.bits === fullBits(s.ip) ? s.ip : `${s.ip}/${s.bits}`));
  const notTo = [...(c.notDstIps ?? []).map(hostPart), ...(c.notPorts ?? []).map((p) => `*:${p}`)];
  if (notTo.length) r.notTo = notTo;
  if (c.authenticated !== undefined) r.authenticated = c.authenticated;
  return r;
}
