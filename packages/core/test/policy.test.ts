import { ErrorCodes, type PeerIdentity, Policy, type PolicyRuleInit, parseTarget, type StreamRequest, type UgateError } from '@ugate/core';
import { describe, expect, it } from 'vitest';

const NODE_A = 'a'.repeat(52);
const NODE_B = 'b'.repeat(52);

const peers = {
  local: { kind: 'local', principals: [] },
  nodeA: { kind: 'ssh-key', id: NODE_A, principals: [] },
  alice: { kind: 'ssh-cert', id: NODE_B, principals: ['alice', 'ops'] },
  anon: { kind: 'anonymous', principals: [] },
} satisfies Record<string, PeerIdentity>;

function req(target: string, peer: PeerIdentity = peers.local, protocol = 'socks5'): StreamRequest {
  return { sid: 't', target: parseTarget(target), protocol, source: { address: '127.0.0.1', port: 1 }, peer };
}

/** 'allow' or the error code. */
function decide(rules: PolicyRuleInit[] | Policy, r: StreamRequest): string {
  const p = rules instanceof Policy ? rules : new Policy(rules);
  try {
    p.authorize(r);
    return 'allow';
  } catch (e) {
    return (e as UgateError).code;
  }
}

const DENIED = ErrorCodes.POLICY_DENIED;

describe('Policy', () => {
  it('allows everything with no rules', () => {
    expect(decide([], req('anything.example:1', peers.anon))).toBe('allow');
    expect(decide(new Policy(), req('[::1]:22'))).toBe('allow');
  });

  it('with only deny rules, denies matches and allows the rest', () => {
    const rules: PolicyRuleInit[] = [{ action: 'deny', to: ['*.secret.test'] }];
    expect(decide(rules, req('db.secret.test:5432'))).toBe(DENIED);
    expect(decide(rules, req('secret.test:5432'))).toBe('allow');
    expect(decide(rules, req('public.test:80'))).toBe('allow');
  });

  it('with allow rules, something must match', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', to: ['*.internal:443', 'db.internal:5432'] }];
    expect(decide(rules, req('web.internal:443'))).toBe('allow');
    expect(decide(rules, req('db.internal:5432'))).toBe('allow');
    expect(decide(rules, req('web.internal:80'))).toBe(DENIED);
    expect(decide(rules, req('example.com:443'))).toBe(DENIED);
  });

  it('a deny rule only blocks what it matches, even with allow rules present', () => {
    const rules: PolicyRuleInit[] = [
      { action: 'allow', to: ['*'] },
      { action: 'deny', to: ['*:25'] },
    ];
    expect(decide(rules, req('mail.example:25'))).toBe(DENIED);
    expect(decide(rules, req('mail.example:587'))).toBe('allow');
  });

  it('deny wins over a more specific allow listed first', () => {
    const rules: PolicyRuleInit[] = [
      { action: 'allow', to: ['admin.internal:22'], from: ['alice'] },
      { action: 'deny', to: ['*.internal'] },
    ];
    expect(decide(rules, req('admin.internal:22', peers.alice))).toBe(DENIED);
  });

  it('from matches the node id', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', from: [NODE_A] }];
    expect(decide(rules, req('x.test:1', peers.nodeA))).toBe('allow');
    expect(decide(rules, req('x.test:1', peers.alice))).toBe(DENIED);
    expect(decide(rules, req('x.test:1', peers.local))).toBe(DENIED);
  });

  it('from matches any principal', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', from: ['ops'] }];
    expect(decide(rules, req('x.test:1', peers.alice))).toBe('allow');
    expect(decide(rules, req('x.test:1', peers.nodeA))).toBe(DENIED);
    expect(decide(rules, req('x.test:1', { kind: 'password', principals: ['bob'] }))).toBe(DENIED);
  });

  it('from `local` matches only this node’s own streams', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', from: ['local'] }];
    expect(decide(rules, req('x.test:1', peers.local))).toBe('allow');
    expect(decide(rules, req('x.test:1', peers.nodeA))).toBe(DENIED);
    expect(decide(rules, req('x.test:1', peers.anon))).toBe(DENIED);
    // A remote peer whose user or principal name is "local" is not this node.
    expect(decide(rules, req('x.test:1', { kind: 'password', principals: ['local'] }))).toBe(DENIED);
    expect(decide(rules, req('x.test:1', { kind: 'ssh-key', id: NODE_A, principals: ['local'] }))).toBe(DENIED);
  });

  it('from `*` matches every peer, anonymous included', () => {
    const rules: PolicyRuleInit[] = [{ action: 'deny', from: ['*'], to: ['blocked.test'] }];
    for (const p of Object.values(peers)) {
      expect(decide(rules, req('blocked.test:1', p))).toBe(DENIED);
      expect(decide(rules, req('open.test:1', p))).toBe('allow');
    }
  });

  it('filters by protocol', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', to: ['*.internal'], protocols: ['ssh-direct', 'http-connect'] }];
    expect(decide(rules, req('a.internal:1', peers.nodeA, 'ssh-direct'))).toBe('allow');
    expect(decide(rules, req('a.internal:1', peers.nodeA, 'http-connect'))).toBe('allow');
    expect(decide(rules, req('a.internal:1', peers.nodeA, 'socks5'))).toBe(DENIED);
    const deny: PolicyRuleInit[] = [{ action: 'deny', protocols: ['socks5'] }];
    expect(decide(deny, req('a:1', peers.local, 'socks5'))).toBe(DENIED);
    expect(decide(deny, req('a:1', peers.local, 'api'))).toBe('allow');
  });

  it('all conditions of a rule must hold together', () => {
    const rules: PolicyRuleInit[] = [{ action: 'allow', to: ['db.internal:5432'], from: ['ops'], protocols: ['ssh-direct'] }];
    expect(decide(rules, req('db.internal:5432', peers.alice, 'ssh-direct'))).toBe('allow');
    expect(decide(rules, req('db.internal:5433', peers.alice, 'ssh-direct'))).toBe(DENIED);
    expect(decide(rules, req('db.internal:5432', peers.nodeA, 'ssh-direct'))).toBe(DENIED);
    expect(decide(rules, req('db.internal:5432', peers.alice, 'socks5'))).toBe(DENIED);
  });

  it('set() replaces the rules', () => {
    const p = new Policy([{ action: 'deny', to: ['*'] }]);
    expect(decide(p, req('a.test:1'))).toBe(DENIED);
    p.set([{ action: 'allow', to: ['a.test'] }]);
    expect(decide(p, req('a.test:1'))).toBe('allow');
    expect(decide(p, req('b.test:1'))).toBe(DENIED);
    p.set([]);
    expect(decide(p, req('b.test:1'))).toBe('allow');
  });

  it('the denial message names the peer, the target and the rule', () => {
    const p = new Policy([
      { action: 'allow', to: ['x.test'] },
      { action: 'deny', to: ['*.bad'] },
    ]);
    expect(() => p.authorize(req('a.bad:9', peers.nodeA))).toThrow(`${NODE_A} → a.bad:9 denied: deny rule #1`);
    expect(() => p.authorize(req('y.test:9', peers.alice))).toThrow(`${NODE_B} → y.test:9 denied: no allow rule matched`);
    expect(() => p.authorize(req('y.test:9', peers.local))).toThrow('local → y.test:9 denied');
  });
});

describe('policy: namespaces and source addresses (Istio-style)', () => {
  const req = (principals: string[], address: string) => ({
    sid: 's',
    target: { host: 'svc.mesh', port: 8080 },
    protocol: 'hbone',
    source: { address, port: 1 },
    peer: { kind: 'spiffe' as const, principals },
  });
  it('denies by source namespace and allows others', () => {
    const p = new Policy([{ action: 'deny', namespaces: ['untrusted'] }]);
    expect(() => p.authorize(req(['cluster.local/ns/untrusted/sa/x'], '10.0.0.1'))).toThrow(/deny rule #0/);
    p.authorize(req(['cluster.local/ns/prod/sa/x'], '10.0.0.1'));
  });
  it('allows only listed CIDRs (IPv4, IPv6, v4-mapped) on a destination port', () => {
    const p = new Policy([{ action: 'allow', sources: ['127.0.0.0/8', 'fd00::/64'], to: ['*:8080'] }]);
    p.authorize(req([], '127.0.0.9'));
    p.authorize(req([], '::ffff:127.0.0.1'));
    p.authorize(req([], 'fd00::1'));
    expect(() => p.authorize(req([], '192.0.2.1'))).toThrow(/no allow rule matched/);
    expect(() => p.authorize({ ...req([], '127.0.0.1'), target: { host: 'svc.mesh', port: 9090 } })).toThrow(/no allow rule matched/);
  });
  it('rejects a malformed CIDR at construction', () => {
    expect(() => new Policy([{ action: 'allow', sources: ['nope/8'] }])).toThrow(/not an IP or CIDR/);
  });
});
