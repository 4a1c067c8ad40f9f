import { ErrorCodes, matchHost, parseHostPattern, parseTarget, Router, specificity, type UgateError, type Upstream } from '@ugate/core';
import { describe, expect, it } from 'vitest';

const t = (text: string) => parseTarget(text);

function resolveCode(r: Router, target: string): string {
  try {
    r.resolve(t(target));
  } catch (e) {
    return (e as UgateError).code;
  }
  return 'resolved';
}

/** The fields that decide where a stream goes (reason is for logs). */
const where = (u: Upstream) => ({ carrier: u.carrier, address: u.address, via: u.via });

describe('host patterns', () => {
  it('parses any, suffix and exact, with optional port', () => {
    expect(parseHostPattern('*')).toMatchObject({ kind: 'any', host: '', port: undefined });
    expect(parseHostPattern('*:443')).toMatchObject({ kind: 'any', port: 443 });
    expect(parseHostPattern('*.Example.com')).toMatchObject({ kind: 'suffix', host: '.example.com', port: undefined });
    expect(parseHostPattern('*.example.com:22')).toMatchObject({ kind: 'suffix', host: '.example.com', port: 22 });
    expect(parseHostPattern(' WWW.example.com:80 ')).toMatchObject({ kind: 'exact', host: 'www.example.com', port: 80 });
    expect(parseHostPattern('[fd00::1]:80')).toMatchObject({ kind: 'exact', host: 'fd00::1', port: 80 });
    expect(parseHostPattern('fd00::1')).toMatchObject({ kind: 'exact', host: 'fd00::1', port: undefined });
    // Brackets without a port are stripped too (targets never carry brackets).
    expect(parseHostPattern('[FD00::1]')).toMatchObject({ kind: 'exact', host: 'fd00::1', port: undefined });
    expect(parseHostPattern('*.example.com').source).toBe('*.example.com');
  });

  it('suffix matches names strictly below the suffix only', () => {
    const p = parseHostPattern('*.example.com');
    expect(matchHost(p, t('a.example.com:1'))).toBe(true);
    expect(matchHost(p, t('a.b.example.com:1'))).toBe(true);
    expect(matchHost(p, t('example.com:1'))).toBe(false);
    expect(matchHost(p, t('badexample.com:1'))).toBe(false);
    expect(matchHost(p, t('example.com.evil:1'))).toBe(false);
  });

  it('exact, any and port restrictions', () => {
    expect(matchHost(parseHostPattern('a.example'), t('a.example:9'))).toBe(true);
    expect(matchHost(parseHostPattern('a.example'), t('b.a.example:9'))).toBe(false);
    expect(matchHost(parseHostPattern('a.example:9'), t('a.example:10'))).toBe(false);
    expect(matchHost(parseHostPattern('*'), t('[::1]:1'))).toBe(true);
    expect(matchHost(parseHostPattern('*:443'), t('x:443'))).toBe(true);
    expect(matchHost(parseHostPattern('*:443'), t('x:80'))).toBe(false);
    expect(matchHost(parseHostPattern('[::1]:80'), t('[::1]:80'))).toBe(true);
    expect(matchHost(parseHostPattern('[::1]'), t('[::1]:80'))).toBe(true);
  });

  it('specificity: exact+port > exact > longer suffix > shorter suffix > any+port > any', () => {
    const order = ['a.b.example.com:1', 'a.b.example.com', '*.b.example.com', '*.example.com:1', '*.example.com', '*:1', '*'];
    const scores = order.map((p) => specificity(parseHostPattern(p)));
    expect([...scores].sort((x, y) => y - x)).toEqual(scores);
    expect(new Set(scores).size).toBe(scores.length);
  });
});

describe('Router precedence', () => {
  it('service > registration > exact route > longest suffix > default', () => {
    const r = new Router({
      routes: [
        { match: '*', carrier: 'direct' },
        { match: '*.com', carrier: 'ssh', via: 'com-gw' },
        { match: '*.example.com', carrier: 'ssh', via: 'example-gw' },
        { match: 'api.example.com', carrier: 'hbone', address: '10.0.0.7:15008' },
      ],
      services: { 'api.example.com:80': '127.0.0.1:8080' },
    });
    const undo = r.register('api.example.com', 'reverse', 'peer-1');

    expect(where(r.resolve(t('api.example.com:80')))).toEqual({
      carrier: 'direct',
      address: { host: '127.0.0.1', port: 8080 },
      via: undefined,
    });
    expect(where(r.resolve(t('api.example.com:81')))).toEqual({ carrier: 'reverse', address: undefined, via: 'peer-1' });
    undo();
    expect(where(r.resolve(t('api.example.com:81')))).toEqual({
      carrier: 'hbone',
      address: { host: '10.0.0.7', port: 15008 },
      via: undefined,
    });
    expect(where(r.resolve(t('www.example.com:81')))).toEqual({ carrier: 'ssh', address: undefined, via: 'example-gw' });
    expect(where(r.resolve(t('example.com:81')))).toEqual({ carrier: 'ssh', address: undefined, via: 'com-gw' });
    expect(where(r.resolve(t('example.org:81')))).toEqual({ carrier: 'direct', address: undefined, via: undefined });
    // Services are exact host:port; the service name on another port falls through.
    expect(r.resolve(t('api.example.com:80')).reason).toBe('service api.example.com:80');
  });

  it('registrations: newest wins, unregistering restores the older one', () => {
    const r = new Router({ routes: [{ match: 'svc.mesh', carrier: 'direct' }] });
    const first = r.register('svc.mesh', 'ssh', 'gw-1');
    expect(where(r.resolve(t('svc.mesh:1')))).toEqual({ carrier: 'ssh', address: undefined, via: 'gw-1' });
    const second = r.register('SVC.mesh', 'hbone', 'gw-2');
    expect(where(r.resolve(t('svc.mesh:1')))).toEqual({ carrier: 'hbone', address: undefined, via: 'gw-2' });
    expect(r.resolve(t('svc.mesh:1')).reason).toBe('registration svc.mesh');
    second();
    expect(where(r.resolve(t('svc.mesh:1')))).toEqual({ carrier: 'ssh', address: undefined, via: 'gw-1' });
    second(); // idempotent: must not remove anything else
    expect(where(r.resolve(t('svc.mesh:1')))).toEqual({ carrier: 'ssh', address: undefined, via: 'gw-1' });
    first();
    expect(where(r.resolve(t('svc.mesh:1')))).toEqual({ carrier: 'direct', address: undefined, via: undefined });
    expect(r.registrations()).toEqual([]);
  });

  it('unregistering the older registration keeps the newer one', () => {
    const r = new Router();
    const older = r.register('svc.mesh', 'ssh', 'gw-1');
    r.register('svc.mesh', 'ssh', 'gw-2');
    older();
    expect(r.resolve(t('svc.mesh:1')).via).toBe('gw-2');
    expect(r.registrations()).toEqual([{ host: 'svc.mesh', carrier: 'ssh', via: 'gw-2' }]);
  });

  it('registrations are per host, any port, and never match other names', () => {
    const r = new Router();
    r.register('a.mesh', 'ssh', 'gw');
    expect(r.resolve(t('a.mesh:1')).carrier).toBe('ssh');
    expect(r.resolve(t('a.mesh:65535')).carrier).toBe('ssh');
    expect(resolveCode(r, 'b.a.mesh:1')).toBe(ErrorCodes.NO_ROUTE);
  });

  it('exact beats suffix regardless of config order; port-specific beats portless', () => {
    const r = new Router({
      routes: [
        { match: '*.example.com', carrier: 'suffix' },
        { match: 'www.example.com', carrier: 'exact' },
        { match: 'www.example.com:443', carrier: 'exact-443' },
      ],
    });
    expect(r.resolve(t('www.example.com:80')).carrier).toBe('exact');
    expect(r.resolve(t('www.example.com:443')).carrier).toBe('exact-443');
    expect(r.resolve(t('mail.example.com:443')).carrier).toBe('suffix');
    expect(r.resolve(t('mail.example.com:443')).reason).toBe('route *.example.com');
  });

  it('longest suffix wins regardless of config order; equal patterns keep config order', () => {
    const r = new Router({
      routes: [
        { match: '*.com', carrier: 'c1' },
        { match: '*.deep.example.com', carrier: 'c3' },
        { match: '*.example.com', carrier: 'c2' },
        { match: '*.example.com', carrier: 'c2-second' },
      ],
    });
    expect(r.resolve(t('x.deep.example.com:1')).carrier).toBe('c3');
    expect(r.resolve(t('deep.example.com:1')).carrier).toBe('c2');
    expect(r.resolve(t('x.example.com:1')).carrier).toBe('c2');
    expect(r.resolve(t('example.com:1')).carrier).toBe('c1');
    // Routes added later are merged into the same order.
    r.addRoute({ match: '*.x.example.com', carrier: 'c4' });
    expect(r.resolve(t('a.x.example.com:1')).carrier).toBe('c4');
  });

  it('`*` is the default even when listed first', () => {
    const r = new Router({
      routes: [
        { match: '*', carrier: 'default' },
        { match: '*.a', carrier: 'a' },
      ],
    });
    expect(r.resolve(t('x.a:1')).carrier).toBe('a');
    expect(r.resolve(t('x.b:1')).carrier).toBe('default');
    expect(r.resolve(t('[::1]:1')).carrier).toBe('default');
  });

  it('a `reject` route yields NO_ROUTE, and more specific routes still win over it', () => {
    const r = new Router({
      routes: [
        { match: '*', carrier: 'direct' },
        { match: '*.blocked.test', carrier: 'reject' },
        { match: 'ok.blocked.test', carrier: 'direct' },
      ],
    });
    expect(resolveCode(r, 'x.blocked.test:80')).toBe(ErrorCodes.NO_ROUTE);
    expect(resolveCode(r, 'ok.blocked.test:80')).toBe('resolved');
    expect(resolveCode(r, 'elsewhere.test:80')).toBe('resolved');
  });

  it('a registration beats a reject route', () => {
    const r = new Router({ routes: [{ match: '*', carrier: 'reject' }] });
    expect(resolveCode(r, 'n.mesh:1')).toBe(ErrorCodes.NO_ROUTE);
    r.register('n.mesh', 'ssh', 'gw');
    expect(r.resolve(t('n.mesh:1')).carrier).toBe('ssh');
  });

  it('no matching route yields NO_ROUTE', () => {
    expect(resolveCode(new Router(), 'a.b:1')).toBe(ErrorCodes.NO_ROUTE);
    const r = new Router({ routes: [{ match: '*.internal', carrier: 'direct' }] });
    expect(resolveCode(r, 'internal:1')).toBe(ErrorCodes.NO_ROUTE);
    expect(resolveCode(r, 'a.internal:1')).toBe('resolved');
  });

  it('services and service hosts', () => {
    const r = new Router({ services: { 'Web.Mesh:80': '127.0.0.1:8080', 'web.mesh:443': '127.0.0.1:8443', '[fd00::5]:22': '[::1]:2222' } });
    expect(r.serviceHosts().sort()).toEqual(['fd00::5', 'web.mesh']);
    expect(r.resolve(t('web.mesh:443')).address).toEqual({ host: '127.0.0.1', port: 8443 });
    expect(r.resolve(t('[fd00::5]:22')).address).toEqual({ host: '::1', port: 2222 });
    expect(resolveCode(r, 'web.mesh:8080')).toBe(ErrorCodes.NO_ROUTE);
  });

  it("the node's own names reach its service on that port, unless two services share the port", () => {
    const r = new Router({
      services: { 'web.mesh:80': '127.0.0.1:8080', 'api.mesh:9000': '127.0.0.1:9001', 'b.mesh:9000': '127.0.0.1:9002' },
    });
    r.addSelfName('ABC.m');
    expect(r.match(t('abc.m:80'))).toEqual({
      kind: 'service',
      upstream: { carrier: 'direct', address: { host: '127.0.0.1', port: 8080 }, reason: 'service web.mesh:80 (abc.m is this node)' },
    });
    expect(resolveCode(r, 'abc.m:9000')).toBe(ErrorCodes.NO_ROUTE);
    expect(resolveCode(r, 'abc.m:81')).toBe(ErrorCodes.NO_ROUTE);
    expect(resolveCode(r, 'other.m:80')).toBe(ErrorCodes.NO_ROUTE);
  });

  it('match() tells named routes from catch-all ones', () => {
    const r = new Router({
      routes: [
        { match: '*.corp', carrier: 'ssh' },
        { match: '*:443', carrier: 'reject' },
        { match: '*', carrier: 'direct' },
      ],
    });
    expect(r.match(t('a.corp:1'))?.kind).toBe('route');
    expect(r.match(t('a.example:443'))).toMatchObject({ kind: 'default', reject: { code: ErrorCodes.NO_ROUTE } });
    expect(r.match(t('a.example:80'))).toMatchObject({ kind: 'default', upstream: { carrier: 'direct' } });
    expect(new Router({ routes: [] }).match(t('a.example:80'))).toBeUndefined();
  });

  it('rejects a route with an invalid address', () => {
    expect(() => new Router({ routes: [{ match: '*', carrier: 'direct', address: 'no-port' }] })).toThrow(
      expect.objectContaining({ code: ErrorCodes.BAD_REQUEST }),
    );
  });
});
