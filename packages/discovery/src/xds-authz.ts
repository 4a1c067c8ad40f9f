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
 * becomes one rule.
 *
 * What a rule cannot say (`not_*` fields, prefix/suffix/presence string matches, destination
 * CIDRs) is approximated towards the safe side: a DENY matches more (the constraint is dropped),
 * an ALLOW matches less (the value, or the whole match, is dropped). Each approximation is
 * reported in `notes` so the caller can log it.
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

/** One conjunction. `undefined` = any value; an empty list = matches nothing. */
interface Clause {
  principals?: string[];
  namespaces?: string[];
  sources?: Cidr[];
  dstIps?: string[];
  ports?: number[];
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
  const negated = (
    [
      ['not_namespaces', m.notNamespaces.length],
      ['not_principals', m.notPrincipals.length],
      ['not_service_accounts', m.notServiceAccounts.length],
      ['not_source_ips', m.notSourceIps.length],
      ['not_destination_ips', m.notDestinationIps.length],
      ['not_destination_ports', m.notDestinationPorts.length],
    ] as const
  ).filter(([, n]) => n > 0);
  for (const [field] of negated)
    notes.push(deny ? `${field} ignored (deny widened)` : `${field} cannot be expressed (match dropped, allow narrowed)`);
  if (!deny && negated.length > 0) return null;

  const c: Clause = {};
  const principals = strings(m.principals, 'principals', deny, notes, stripScheme);
  const accounts = m.serviceAccounts.length > 0 ? m.serviceAccounts.map((s) => principalOf(s, ctx)) : undefined;
  c.principals = both(principals, accounts, (x, y) => x.filter((p) => y.includes(p)));
  c.namespaces = strings(m.namespaces, 'namespaces', deny, notes);
  if (m.sourceIps.length > 0) c.sources = m.sourceIps.map(cidr);
  if (m.destinationIps.length > 0) {
    const blocks = m.destinationIps.map(cidr);
    const hosts = blocks.filter((b) => b.bits === fullBits(b.ip)).map((b) => b.ip);
    if (hosts.length < blocks.length) {
      notes.push(deny ? 'destination CIDR ignored (deny widened)' : 'destination CIDR dropped (allow narrowed)');
      c.dstIps = deny ? undefined : hosts;
    } else c.dstIps = hosts;
  }
  if (m.destinationPorts.length > 0) c.ports = [...m.destinationPorts];
  return isEmpty(c) ? null : c;
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

function intersect(a: Clause, b: Clause): Clause {
  return {
    principals: both(a.principals, b.principals, common),
    namespaces: both(a.namespaces, b.namespaces, common),
    dstIps: both(a.dstIps, b.dstIps, common),
    ports: both(a.ports, b.ports, common),
    sources: both(a.sources, b.sources, (x, y) => x.flatMap((p) => y.flatMap((q) => overlap(p, q)))),
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

const isEmpty = (c: Clause) => [c.principals, c.namespaces, c.sources, c.dstIps, c.ports].some((v) => v !== undefined && v.length === 0);

function toRule(action: 'allow' | 'deny', c: Clause): PolicyRuleInit {
  const r: PolicyRuleInit = { action };
  if (c.principals) r.from = c.principals;
  if (c.namespaces) r.namespaces = c.namespaces;
  if (c.sources) r.sources = c.sources.map((s) => (s.bits === fullBits(s.ip) ? s.ip : `${s.ip}/${s.bits}`));
  const hostPart = (ip: string) => (isIP(ip) === 6 ? `[${ip}]` : ip);
  if (c.dstIps && c.ports) r.to = c.dstIps.flatMap((ip) => c.ports!.map((p) => `${hostPart(ip)}:${p}`));
  else if (c.dstIps) r.to = c.dstIps;
  else if (c.ports) r.to = c.ports.map((p) => `*:${p}`);
  return r;
}
