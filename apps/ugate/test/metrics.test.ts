import * as prom from 'prom-client';
import { describe, expect, it } from 'vitest';
import { promMetrics } from '../src/metrics.js';

/** Sample lines of a text exposition with each line's labels in sorted order (HELP/TYPE kept). */
function normalize(text: string, prefix: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.replace(/^# (HELP|TYPE) /, '').startsWith(prefix))
    .map((l) => {
      const m = /^([^{ ]+)(?:\{(.*)\})? (.*)$/.exec(l);
      if (!m || l.startsWith('#')) return l;
      const labels = (m[2] ?? '').split(',').filter(Boolean).sort().join(',');
      return `${m[1]}{${labels}} ${m[3]}`;
    })
    .sort();
}

/** The same updates on prom-client's own metrics, for reference. */
function reference() {
  const registry = new prom.Registry();
  const c = new prom.Counter({ name: 't_streams_total', help: 'streams', labelNames: ['proto', 'result'], registers: [registry] });
  const g = new prom.Gauge({ name: 't_active', help: 'active', registers: [registry] });
  const gl = new prom.Gauge({ name: 't_sessions', help: 'sessions', labelNames: ['peer'], registers: [registry] });
  const h = new prom.Histogram({
    name: 't_open_seconds',
    help: 'open',
    labelNames: ['carrier'],
    buckets: [0.001, 0.01, 0.1],
    registers: [registry],
  });
  return {
    registry,
    counter: { inc: (l?: prom.LabelValues<string>, v = 1) => c.inc(l ?? {}, v) },
    active: g,
    sessions: gl,
    histogram: h,
  };
}

describe('promMetrics', () => {
  it('exposes exactly what prom-client would for the same updates', async () => {
    const ours = promMetrics();
    const c = ours.counter('t_streams_total', 'streams', ['proto', 'result']);
    const g = ours.gauge('t_active', 'active');
    const gl = ours.gauge('t_sessions', 'sessions', ['peer']);
    const h = ours.histogram('t_open_seconds', 'open', ['carrier'], [0.001, 0.01, 0.1]);
    const ref = reference();

    const empty = normalize(await ours.registry.metrics(), 't_');
    expect(empty).toEqual(normalize(await ref.registry.metrics(), 't_'));

    for (const [l, v] of [
      [{ proto: 'hbone', result: 'ok' }, 1],
      [{ proto: 'hbone', result: 'ok' }, 2],
      [{ proto: 'socks5', result: 'UGATE_ERR_REFUSED' }, 1],
      [{ proto: 'socks5' }, 5],
    ] as const) {
      c.inc(l, v);
      ref.counter.inc(l, v);
    }
    g.inc();
    g.inc();
    g.dec();
    ref.active.inc();
    ref.active.inc();
    ref.active.dec();
    gl.set(3, { peer: 'a' });
    gl.inc({ peer: 'b' }, 2);
    ref.sessions.set({ peer: 'a' }, 3);
    ref.sessions.inc({ peer: 'b' }, 2);
    // On a bound, between bounds, beyond the last one, and zero.
    for (const [v, carrier] of [
      [0.001, 'direct'],
      [0.004, 'direct'],
      [0.5, 'direct'],
      [0, 'hbone'],
      [0.05, 'hbone'],
    ] as const) {
      h.observe(v, { carrier });
      ref.histogram.observe({ carrier }, v);
    }
    const text = await ours.registry.metrics();
    expect(normalize(text, 't_')).toEqual(normalize(await ref.registry.metrics(), 't_'));
    expect(text).toContain('t_open_seconds_bucket{le="+Inf",carrier="direct"} 3');
    expect(text).toContain('t_streams_total{proto="hbone",result="ok"} 3');

    // Later updates add to what was read (the counter's pending amounts moved into prom-client once).
    c.inc({ proto: 'hbone', result: 'ok' });
    ref.counter.inc({ proto: 'hbone', result: 'ok' });
    expect(normalize(await ours.registry.metrics(), 't_')).toEqual(normalize(await ref.registry.metrics(), 't_'));

    // The JSON form too.
    const json = (await ours.registry.getMetricsAsJSON()).find((m) => m.name === 't_open_seconds');
    const refJson = (await ref.registry.getMetricsAsJSON()).find((m) => m.name === 't_open_seconds');
    const key = (v: { metricName?: string; labels: object }) => `${v.metricName} ${JSON.stringify(Object.entries(v.labels).sort())}`;
    const byKey = (vs: { metricName?: string; labels: object; value: number }[]) => Object.fromEntries(vs.map((v) => [key(v), v.value]));
    expect(byKey(json!.values as never)).toEqual(byKey(refJson!.values as never));
  });

  it('rejects what prom-client rejects: unknown labels, negative or non-finite amounts', () => {
    const m = promMetrics();
    const c = m.counter('t_c_total', 'c', ['proto']);
    expect(() => c.inc({ nope: 'x' })).toThrow(/nope/);
    expect(() => c.inc({ proto: 'a' }, -1)).toThrow(TypeError);
    expect(() => c.inc({ proto: 'a' }, Number.NaN)).toThrow(TypeError);
    const h = m.histogram('t_h', 'h', ['carrier'], [1]);
    expect(() => h.observe(1, { nope: 'x' })).toThrow(/nope/);
    expect(() => h.observe(Number.POSITIVE_INFINITY, { carrier: 'a' })).toThrow(TypeError);
    expect(() => m.histogram('t_h2', 'h', ['le'])).toThrow(/le/);
    const g = m.gauge('t_g', 'g');
    expect(() => g.set(Number.NaN)).toThrow(TypeError);
    // Two metrics of one name are refused, whatever their kind.
    expect(() => m.counter('t_h', 'again')).toThrow(/already been registered/);
  });
});
