import { Duplex } from 'node:stream';
import {
  type Dialer,
  ErrorCodes,
  makeTarget,
  Policy,
  parseTarget,
  Router,
  type StreamRequest,
  Switch,
  silentLogger,
  type Target,
  UgateError,
  type Upstream,
} from '@ugate/core';
import { describe, expect, it } from 'vitest';
import {
  type Answer,
  Discovery,
  type Endpoint,
  type PullSource,
  type PushSink,
  type PushSource,
  pickOrder,
  pinnedId,
} from '../src/index.js';

const ID_A = 'a'.repeat(52);
const ID_B = 'b'.repeat(52);
const t = (s: string) => parseTarget(s);

/** A pull source answering from a table, counting lookups. */
function table(
  name: string,
  records: Record<string, Endpoint[]>,
  opts: { ttlMs?: number; handles?: string; ptr?: Record<string, string> } = {},
) {
  const src: PullSource & { lookups: string[] } = {
    name,
    lookups: [],
    handles: (x: Target) => !opts.handles || x.host.endsWith(opts.handles),
    async lookup(x: Target): Promise<Answer | undefined> {
      src.lookups.push(`${x.host}:${x.port}`);
      const eps = records[x.host];
      return eps ? { endpoints: eps, ttlMs: opts.ttlMs ?? 60_000, detail: `${name} record ${x.host}` } : undefined;
    },
    reverse: opts.ptr ? async (ip: string) => opts.ptr?.[ip] : undefined,
  };
  return src;
}

function push(name: string) {
  let sink: PushSink | undefined;
  const src: PushSource & { sink: () => PushSink } = {
    name,
    start: (s) => {
      sink = s;
    },
    close: () => {},
    sink: () => sink!,
  };
  return src;
}

const ep = (carrier: Endpoint['carrier'], addr: string, extra: Partial<Endpoint> = {}): Endpoint => ({
  carrier,
  address: t(addr),
  ...extra,
});

describe('Discovery precedence', () => {
  it('services, registrations and named routes override sources; catch-all routes come after them', async () => {
    const router = new Router({
      services: { 'svc.mesh:80': '127.0.0.1:8080' },
      routes: [
        { match: 'pinned.example', carrier: 'direct', address: '10.0.0.9:1' },
        { match: '*', carrier: 'direct' },
      ],
    });
    router.register('reg.mesh', 'ssh-reverse', 'peer1');
    const dns = table('dns', {
      'svc.mesh': [ep('direct', '10.0.0.1:80')],
      'reg.mesh': [ep('direct', '10.0.0.2:80')],
      'pinned.example': [ep('direct', '10.0.0.3:80')],
      'found.example': [ep('direct', '10.0.0.4:80')],
    });
    const d = new Discovery({ router, sources: [dns] });
    expect((await d.resolve(t('svc.mesh:80')))[0]!.address).toEqual(t('127.0.0.1:8080'));
    expect((await d.resolve(t('reg.mesh:80')))[0]).toMatchObject({ carrier: 'ssh-reverse', via: 'peer1' });
    expect((await d.resolve(t('pinned.example:80')))[0]!.address).toEqual(t('10.0.0.9:1'));
    expect((await d.resolve(t('found.example:80')))[0]).toMatchObject({ carrier: 'direct', address: t('10.0.0.4:80') });
    const other = await d.explain(t('nowhere.example:80'));
    expect(other.answeredBy).toBe('default');
    expect(other.upstreams[0]).toMatchObject({ carrier: 'direct', reason: 'route *' });
    // the table answered the first three without asking DNS
    expect(dns.lookups).toEqual(['found.example:80', 'nowhere.example:80']);
  });

  it('the first source with endpoints answers, in the configured order; explain lists every step', async () => {
    const xds = push('xds');
    const k8s = table(
      'kubernetes',
      { 'a.ns.svc.cluster.local': [ep('hbone', '10.1.0.1:15008', { identity: 'spiffe://cluster.local/ns/ns/sa/a' })] },
      { handles: '.svc.cluster.local' },
    );
    const dns = table('dns', { 'a.ns.svc.cluster.local': [ep('direct', '10.9.9.9:80')], 'b.example': [ep('direct', '10.2.0.1:443')] });
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [xds, k8s, dns] });
    await d.start();
    const x = await d.explain(t('a.ns.svc.cluster.local:80'));
    expect(x.answeredBy).toBe('kubernetes');
    expect(x.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'xds:no record', 'kubernetes:answer']);
    expect(x.steps[2]!.endpoints).toEqual([
      {
        carrier: 'hbone',
        address: '10.1.0.1:15008',
        identity: 'spiffe://cluster.local/ns/ns/sa/a',
        weight: 1,
        priority: 0,
        healthy: true,
        labels: undefined,
        gateway: undefined,
      },
    ]);
    expect(x.upstreams[0]).toMatchObject({
      carrier: 'hbone',
      identity: 'spiffe://cluster.local/ns/ns/sa/a',
      reason: 'kubernetes: kubernetes record a.ns.svc.cluster.local',
    });

    // xds now knows the name for port 80 only: it wins for :80, not for :81
    xds.sink().update({ host: 'A.ns.svc.cluster.local.', port: 80, endpoints: [ep('hbone', '10.3.0.1:15008')], detail: 'xds service a' });
    expect((await d.resolve(t('a.ns.svc.cluster.local:80')))[0]!.address).toEqual(t('10.3.0.1:15008'));
    expect((await d.resolve(t('a.ns.svc.cluster.local:81')))[0]!.address).toEqual(t('10.1.0.1:15008'));
    // a removal falls back to the next source
    xds.sink().update({ host: 'a.ns.svc.cluster.local', port: 80, endpoints: null, detail: '' });
    expect((await d.resolve(t('a.ns.svc.cluster.local:80')))[0]!.address).toEqual(t('10.1.0.1:15008'));

    const b = await d.explain(t('b.example:443'));
    expect(b.steps.map((s) => `${s.source}:${s.result}`)).toEqual([
      'config:no record',
      'xds:no record',
      'kubernetes:not asked',
      'dns:answer',
    ]);
  });

  it('no route at all is NO_ROUTE with the name; a reject route still rejects after discovery', async () => {
    const d = new Discovery({ router: new Router({ routes: [{ match: '*.blocked', carrier: 'reject' }] }), sources: [table('dns', {})] });
    await expect(d.resolve(t('x.example:1'))).rejects.toMatchObject({ code: ErrorCodes.NO_ROUTE, message: 'no route to x.example:1' });
    await expect(d.resolve(t('a.blocked:1'))).rejects.toMatchObject({ code: ErrorCodes.NO_ROUTE, message: /rejects a.blocked:1/ });
  });
});

describe('Discovery caching', () => {
  it('caches answers for their TTL and "no record" for the negative TTL; concurrent lookups share one query', async () => {
    const dns = table('dns', { 'a.example': [ep('direct', '10.0.0.1:80')] }, { ttlMs: 150 });
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [dns], negativeTtlMs: 150 });
    await Promise.all([d.resolve(t('a.example:80')), d.resolve(t('a.example:80')), d.resolve(t('a.example:80'))]);
    expect(dns.lookups).toEqual(['a.example:80']);
    const x = await d.explain(t('a.example:80'));
    expect(x.steps[1]).toMatchObject({ source: 'dns', result: 'answer', cached: true });
    await expect(d.resolve(t('b.example:80'))).rejects.toThrow(/no route/);
    await expect(d.resolve(t('b.example:80'))).rejects.toThrow(/no route/);
    expect(dns.lookups).toEqual(['a.example:80', 'b.example:80']);
    await new Promise((r) => setTimeout(r, 200));
    await d.resolve(t('a.example:80'));
    await expect(d.resolve(t('b.example:80'))).rejects.toThrow(/no route/);
    expect(dns.lookups).toEqual(['a.example:80', 'b.example:80', 'a.example:80', 'b.example:80']);
  });

  it('a failing or hanging source is logged as an error step and the next source answers', async () => {
    const broken: PullSource = {
      name: 'kubernetes',
      handles: () => true,
      lookup: async () => {
        throw new UgateError(ErrorCodes.AUTH, 'API server said 401 Unauthorized');
      },
    };
    const hanging: PullSource = { name: 'xds-ish', handles: () => true, lookup: () => new Promise(() => {}) };
    const dns = table('dns', { 'a.example': [ep('direct', '10.0.0.1:80')] });
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [broken, hanging, dns], lookupTimeoutMs: 100 });
    const x = await d.explain(t('a.example:80'));
    expect(x.answeredBy).toBe('dns');
    expect(x.steps[1]).toMatchObject({ source: 'kubernetes', result: 'error', detail: 'UGATE_ERR_AUTH: API server said 401 Unauthorized' });
    expect(x.steps[2]).toMatchObject({ source: 'xds-ish', result: 'error', detail: /UGATE_ERR_TIMEOUT: .*timed out after 100 ms/ });
  });
});

describe('Discovery endpoint choice', () => {
  it('orders by priority, then by weight (weighted random), weight 0 last', () => {
    const eps = [
      { n: 'backup', priority: 1, weight: 5 },
      { n: 'heavy', priority: 0, weight: 9 },
      { n: 'light', priority: 0, weight: 1 },
      { n: 'zero', priority: 0, weight: 0 },
    ];
    let heavyFirst = 0;
    for (let i = 0; i < 1000; i++) {
      const o = pickOrder(eps).map((e) => e.n);
      expect(o.slice(2)).toEqual(['zero', 'backup']);
      if (o[0] === 'heavy') heavyFirst++;
    }
    // P(heavy first) = 0.9: 1000 draws land in (850, 950) with overwhelming probability
    expect(heavyFirst).toBeGreaterThan(850);
    expect(heavyFirst).toBeLessThan(950);
  });

  it('a failed endpoint sits out its back-off; when all are down they are all tried again', async () => {
    const dns = table('dns', { 'a.example': [ep('direct', '10.0.0.1:80', { priority: 0 }), ep('direct', '10.0.0.2:80', { priority: 1 })] });
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [dns], health: { initialMs: 150 } });
    const first = await d.resolve(t('a.example:80'));
    expect(first.map((u) => u.address!.host)).toEqual(['10.0.0.1', '10.0.0.2']);
    d.report(first[0]!, false);
    expect((await d.resolve(t('a.example:80'))).map((u) => u.address!.host)).toEqual(['10.0.0.2']);
    const x = await d.explain(t('a.example:80'));
    expect(x.steps[1]!.endpoints!.map((e) => e.healthy)).toEqual([false, true]);
    d.report(first[1]!, false);
    expect((await d.resolve(t('a.example:80'))).map((u) => u.address!.host)).toEqual(['10.0.0.1', '10.0.0.2']);
    await new Promise((r) => setTimeout(r, 200));
    d.report(first[1]!, true);
    expect((await d.resolve(t('a.example:80'))).map((u) => u.address!.host)).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('<id>.m pins the key: endpoints with another key or none (direct) are skipped, the rest get the pin', async () => {
    const name = `${ID_A}.m`;
    const dns = table('dns', {
      [name]: [
        ep('direct', '10.0.0.1:80'),
        ep('ssh', '10.0.0.2:15022', { identity: ID_B }),
        ep('ssh', '10.0.0.3:15022'),
        ep('hbone', '10.0.0.4:15008', { identity: ID_A }),
      ],
    });
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [dns], maxAttempts: 5 });
    const ups = await d.resolve(makeTarget(name, 80));
    expect(ups.map((u) => [u.carrier, u.via ?? u.address!.host, u.identity]).sort()).toEqual([
      ['hbone', '10.0.0.4', ID_A],
      ['ssh', '10.0.0.3:15022', ID_A],
    ]);
    const x = await d.explain(makeTarget(name, 80));
    expect(x.steps.filter((s) => s.result === 'skipped').map((s) => s.detail)).toEqual([
      `direct 10.0.0.1:80: ${name} pins key ${ID_A}`,
      `ssh 10.0.0.2:15022: ${name} pins key ${ID_A}`,
    ]);
  });

  it('a fallback (the SSH gateways for <id>.m) answers after the sources and before catch-all routes', async () => {
    const d = new Discovery({
      router: new Router({ routes: [{ match: '*', carrier: 'direct' }] }),
      sources: [table('dns', {})],
      fallback: (x) => (pinnedId(x.host) ? { carrier: 'ssh', reason: 'gateway' } : undefined),
    });
    const x = await d.explain(makeTarget(`${ID_A}.m`, 22));
    expect(x.answeredBy).toBe('gateway');
    expect(x.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'dns:no record', 'gateway:answer']);
    expect((await d.explain(t('plain.example:22'))).answeredBy).toBe('default');
    expect(pinnedId(`${ID_A}.m.mesh.internal`)).toBe(ID_A);
    expect(pinnedId(`x${ID_A}.m`)).toBeUndefined();
  });

  it('an IP target with no record is mapped to its name by PTR and resolved by name; the far end is asked for the name', async () => {
    const dns = table(
      'dns',
      { 'web.example': [ep('ssh', '10.0.0.7:15022', { identity: ID_A })] },
      { ptr: { '192.0.2.10': 'web.example' } },
    );
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [dns] });
    const x = await d.explain(t('192.0.2.10:443'));
    expect(x.upstreams[0]).toMatchObject({ carrier: 'ssh', via: '10.0.0.7:15022', identity: ID_A, target: t('web.example:443') });
    expect(x.steps.map((s) => `${s.source}:${s.result}`)).toEqual(['config:no record', 'dns:no record', 'dns:answer', 'dns:answer']);
  });

  it('push sources can set policy rules next to the configured ones', async () => {
    const policy = new Policy([{ action: 'deny', to: ['evil.example'] }]);
    const xds = push('xds');
    const d = new Discovery({ router: new Router({ routes: [] }), sources: [xds], policy });
    await d.start();
    const req = (to: string, principal: string): StreamRequest => ({
      sid: '1',
      target: t(to),
      protocol: 'hbone',
      source: { address: '10.0.0.1', port: 1 },
      peer: { kind: 'spiffe', principals: [principal] },
    });
    expect(() => policy.authorize(req('ok.example:80', 'td/ns/a/sa/x'))).not.toThrow();
    xds.sink().policy!([{ action: 'allow', from: ['td/ns/a/sa/x'] }]);
    expect(() => policy.authorize(req('ok.example:80', 'td/ns/a/sa/x'))).not.toThrow();
    expect(() => policy.authorize(req('ok.example:80', 'td/ns/b/sa/y'))).toThrow(/no allow rule matched/);
    expect(() => policy.authorize(req('evil.example:80', 'td/ns/a/sa/x'))).toThrow(/deny rule #0/);
    expect(policy.counts()).toEqual({ config: 1, xds: 1 });
    // the mesh's rules judge what peers send us, not this node's own egress
    const local: StreamRequest = { ...req('ok.example:80', 'x'), peer: { kind: 'local', principals: [] } };
    expect(() => policy.authorize(local)).not.toThrow();
    expect(() => policy.authorize({ ...local, target: t('evil.example:80') })).toThrow(/deny rule #0/);
    xds.sink().policy!([]);
    expect(() => policy.authorize(req('ok.example:80', 'td/ns/b/sa/y'))).not.toThrow();
  });
});

describe('Switch with discovery', () => {
  it('a dial that fails moves to the next endpoint and marks the failed one; a far-end refusal of the stream itself is final', async () => {
    const dns = table('dns', {
      'a.example': [ep('direct', '10.0.0.1:80', { priority: 0 }), ep('direct', '10.0.0.2:80', { priority: 1 })],
      'b.example': [ep('direct', '10.0.0.1:81', { priority: 0 }), ep('direct', '10.0.0.2:81', { priority: 1 })],
    });
    const router = new Router({ routes: [] });
    const d = new Discovery({ router, sources: [dns] });
    const dialed: string[] = [];
    const dialer: Dialer = {
      carrier: 'direct',
      async dial(_req, up: Upstream) {
        const a = `${up.address!.host}:${up.address!.port}`;
        dialed.push(a);
        if (a === '10.0.0.1:80') throw new UgateError(ErrorCodes.UNREACHABLE, 'connect ECONNREFUSED');
        if (a === '10.0.0.1:81') throw new UgateError(ErrorCodes.BAD_REQUEST, 'far end refused the request');
        return new Duplex({ read() {}, write: (_c, _e, cb) => cb() });
      },
    };
    const sw = new Switch({ router, resolver: d, policy: new Policy(), dialers: [dialer], logger: silentLogger });
    const req = (to: string): StreamRequest => ({
      sid: 'x',
      target: t(to),
      protocol: 'api',
      source: { address: '127.0.0.1', port: 0 },
      peer: { kind: 'local', principals: [] },
    });
    const opened = await sw.open(req('a.example:80'));
    expect(opened.upstream.address).toEqual(t('10.0.0.2:80'));
    opened.stream.destroy();
    expect(dialed).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
    // the failed endpoint sits out: the next stream goes straight to the other one
    (await sw.open(req('a.example:80'))).stream.destroy();
    expect(dialed).toEqual(['10.0.0.1:80', '10.0.0.2:80', '10.0.0.2:80']);
    await expect(sw.open(req('b.example:81'))).rejects.toMatchObject({ code: ErrorCodes.BAD_REQUEST });
    expect(dialed.slice(3)).toEqual(['10.0.0.1:81']);
  });
});
