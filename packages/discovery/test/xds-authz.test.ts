import { ErrorCodes, type PeerIdentity, Policy, type PolicyRuleInit, parseTarget, type UgateError } from '@ugate/core';
import { describe, expect, it } from 'vitest';
import { mapAuthorization, NO_PROTOCOL, validateAuthorization } from '../src/xds-authz.js';
import { Action, type AuthorizationMsg, ipFromBytes, type MatchMsg, Scope } from '../src/xds-proto.js';

const ctx = { trustDomain: 'cluster.local' };

function match(m: Partial<MatchMsg>): MatchMsg {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    ...m,
  };
}

/** One group whose rule lists are AND-ed; each inner array is one rule list of OR-ed matches. */
function authz(action: 'allow' | 'deny', ...ruleLists: Partial<MatchMsg>[][]): AuthorizationMsg {
  return {
    name: 'p',
    namespace: 'apps',
    scope: Scope.GLOBAL,
    action: action === 'deny' ? Action.DENY : Action.ALLOW,
    groups: [{ rules: ruleLists.map((ms) => ({ matches: ms.map(match) })) }],
    dryRun: false,
  };
}

const exact = (s: string) => ({ matchType: 'exact' as const, exact: s });
const v4 = (ip: string, length = 32) => ({ address: Uint8Array.from(ip.split('.').map(Number)), length });

function decide(rules: PolicyRuleInit[], o: { principal?: string; target: string; source?: string }): 'allow' | 'deny' {
  const peer: PeerIdentity = { kind: o.principal ? 'spiffe' : 'anonymous', principals: o.principal ? [o.principal] : [] };
  try {
    new Policy(rules).authorize({
      sid: 't',
      target: parseTarget(o.target),
      protocol: 'hbone',
      source: { address: o.source ?? '10.0.0.1', port: 1 },
      peer,
    });
    return 'allow';
  } catch (e) {
    expect((e as UgateError).code).toBe(ErrorCodes.POLICY_DENIED);
    return 'deny';
  }
}

describe('mapAuthorization', () => {
  it('maps exact principals, namespaces, source CIDRs and ports onto one rule', () => {
    const { rules, notes } = mapAuthorization(
      authz(
        'allow',
        [{ principals: [exact('cluster.local/ns/a/sa/x'), exact('spiffe://cluster.local/ns/a/sa/y')], sourceIps: [v4('10.1.0.0', 16)] }],
        [{ destinationPorts: [80] }],
      ),
      ctx,
    );
    expect(notes).toEqual([]);
    expect(rules).toEqual([
      { action: 'allow', from: ['cluster.local/ns/a/sa/x', 'cluster.local/ns/a/sa/y'], sources: ['10.1.0.0/16'], to: ['*:80'] },
    ]);
    expect(decide(rules, { principal: 'cluster.local/ns/a/sa/y', target: '10.0.0.5:80', source: '10.1.2.3' })).toBe('allow');
    expect(decide(rules, { principal: 'cluster.local/ns/a/sa/y', target: '10.0.0.5:80', source: '10.2.2.3' })).toBe('deny');
  });

  it('expands OR inside AND into one rule per combination, intersecting repeated fields', () => {
    const { rules } = mapAuthorization(
      authz(
        'deny',
        [{ namespaces: [exact('a')] }, { namespaces: [exact('b')] }],
        [{ destinationPorts: [22, 23] }],
        [{ namespaces: [exact('b'), exact('c')], sourceIps: [v4('10.0.0.0', 8)] }],
        [{ sourceIps: [v4('10.9.0.0', 16), v4('192.168.0.0', 16)] }],
      ),
      ctx,
    );
    // Namespace a cannot satisfy the third list; b can. The CIDRs intersect to 10.9/16.
    expect(rules).toEqual([{ action: 'deny', namespaces: ['b'], sources: ['10.9.0.0/16'], to: ['*:22', '*:23'] }]);
  });

  it('maps service accounts to principals of our trust domain', () => {
    const { rules } = mapAuthorization(authz('allow', [{ serviceAccounts: [{ namespace: 'apps', serviceAccount: 'web' }] }]), ctx);
    expect(rules).toEqual([{ action: 'allow', from: ['cluster.local/ns/apps/sa/web'] }]);
  });

  it('keeps exact destination IPs with their ports (IPv6 bracketed)', () => {
    const v6 = { address: new Uint8Array(16).fill(0).map((_, i) => (i === 0 ? 0xfd : i === 15 ? 1 : 0)), length: 128 };
    const { rules } = mapAuthorization(authz('allow', [{ destinationIps: [v4('10.0.0.5'), v6], destinationPorts: [443] }]), ctx);
    expect(rules).toEqual([{ action: 'allow', to: ['10.0.0.5:443', '[fd00::1]:443'] }]);
  });

  it('an ALLOW without groups allows nothing; a group without rule lists matches everything', () => {
    const none = mapAuthorization({ ...authz('allow'), groups: [] }, ctx).rules;
    expect(none).toEqual([{ action: 'allow', protocols: [NO_PROTOCOL] }]);
    expect(decide(none, { principal: 'cluster.local/ns/a/sa/x', target: 'x.test:1' })).toBe('deny');
    expect(mapAuthorization(authz('allow'), ctx).rules).toEqual([{ action: 'allow' }]);
    expect(mapAuthorization({ ...authz('deny'), groups: [] }, ctx).rules).toEqual([]);
  });

  describe('approximations lean to the safe side', () => {
    it("Istio's STRICT policy (DENY peers without a principal) is exact: authenticated peers pass", () => {
      const { rules, notes } = mapAuthorization(
        authz('deny', [{ notPrincipals: [{ matchType: 'presence' }], destinationPorts: [8080] }]),
        ctx,
      );
      expect(rules).toEqual([{ action: 'deny', to: ['*:8080'], authenticated: false }]);
      expect(notes).toEqual([]);
      expect(decide(rules, { principal: 'cluster.local/ns/a/sa/x', target: 'x.test:8080' })).toBe('allow');
      expect(decide(rules, { target: 'x.test:8080' })).toBe('deny');
      expect(decide(rules, { target: 'x.test:9090' })).toBe('allow');
    });

    it('not_* fields exclude exactly, in ALLOW and DENY', () => {
      const allow = mapAuthorization(authz('allow', [{ notNamespaces: [exact('bad')], notDestinationPorts: [22] }]), ctx);
      expect(allow.rules).toEqual([{ action: 'allow', notNamespaces: ['bad'], notTo: ['*:22'] }]);
      expect(allow.notes).toEqual([]);
      expect(decide(allow.rules, { principal: 'cluster.local/ns/good/sa/x', target: 'x.test:1' })).toBe('allow');
      expect(decide(allow.rules, { principal: 'cluster.local/ns/bad/sa/x', target: 'x.test:1' })).toBe('deny');
      expect(decide(allow.rules, { principal: 'cluster.local/ns/good/sa/x', target: 'x.test:22' })).toBe('deny');
      const deny = mapAuthorization(
        authz('deny', [{ notPrincipals: [exact('spiffe://cluster.local/ns/a/sa/admin')], notSourceIps: [v4('10.9.0.0', 16)] }]),
        ctx,
      );
      expect(deny.rules).toEqual([{ action: 'deny', notFrom: ['cluster.local/ns/a/sa/admin'], notSources: ['10.9.0.0/16'] }]);
      expect(decide(deny.rules, { principal: 'cluster.local/ns/a/sa/admin', target: 'x.test:1' })).toBe('allow');
      expect(decide(deny.rules, { principal: 'cluster.local/ns/a/sa/x', target: 'x.test:1', source: '10.9.1.1' })).toBe('allow');
      expect(decide(deny.rules, { principal: 'cluster.local/ns/a/sa/x', target: 'x.test:1' })).toBe('deny');
    });

    it('a not_* prefix match cannot be expressed: a DENY ignores it (denies more), an ALLOW drops the match (allows less)', () => {
      const m = { notPrincipals: [{ matchType: 'prefix' as const, prefix: 'cluster.local/ns/ops/' }], destinationPorts: [22] };
      const deny = mapAuthorization(authz('deny', [m]), ctx);
      expect(deny.rules).toEqual([{ action: 'deny', to: ['*:22'] }]);
      expect(deny.notes).toEqual(['not_principals prefix/suffix match ignored (deny widened)']);
      const allow = mapAuthorization(authz('allow', [m]), ctx);
      expect(allow.rules).toEqual([{ action: 'allow', protocols: [NO_PROTOCOL] }]);
    });

    it('prefix, suffix and presence matches widen a DENY and narrow an ALLOW', () => {
      const values = [exact('cluster.local/ns/a/sa/x'), { matchType: 'prefix' as const, prefix: 'cluster.local/ns/b/' }];
      const deny = mapAuthorization(authz('deny', [{ principals: values, destinationPorts: [22] }]), ctx);
      expect(deny.rules).toEqual([{ action: 'deny', to: ['*:22'] }]);
      const allow = mapAuthorization(authz('allow', [{ principals: values, destinationPorts: [22] }]), ctx);
      expect(allow.rules).toEqual([{ action: 'allow', from: ['cluster.local/ns/a/sa/x'], to: ['*:22'] }]);
      expect(allow.notes).toEqual(['principals prefix match dropped (allow narrowed)']);
    });

    it('destination CIDRs: ignored by a DENY, dropped from an ALLOW', () => {
      const m = { destinationIps: [v4('10.0.0.0', 8)], destinationPorts: [80] };
      expect(mapAuthorization(authz('deny', [m]), ctx).rules).toEqual([{ action: 'deny', to: ['*:80'] }]);
      expect(mapAuthorization(authz('allow', [m]), ctx).rules).toEqual([{ action: 'allow', protocols: [NO_PROTOCOL] }]);
    });
  });

  it('validation rejects unknown actions and malformed address blocks', () => {
    expect(() => validateAuthorization({ ...authz('allow'), action: 7 }, 'x')).toThrow(/unknown action/);
    expect(() => validateAuthorization(authz('allow', [{ sourceIps: [v4('10.0.0.0', 33)] }]), 'x')).toThrow(/bad address block/);
    expect(() => validateAuthorization({ ...authz('allow'), name: '' }, 'x')).toThrow(/no name/);
  });
});

describe('ipFromBytes', () => {
  it('formats IPv4 and canonical IPv6, and rejects other lengths', () => {
    expect(ipFromBytes(Uint8Array.from([10, 0, 1, 2]))).toBe('10.0.1.2');
    const v6 = Buffer.alloc(16);
    v6.writeUInt16BE(0x2001, 0);
    v6.writeUInt16BE(0xdb8, 2);
    v6.writeUInt16BE(1, 14);
    expect(ipFromBytes(v6)).toBe('2001:db8::1');
    expect(ipFromBytes(Buffer.alloc(16))).toBe('::');
    expect(ipFromBytes(Uint8Array.from([1, 2, 3]))).toBeUndefined();
  });
});
