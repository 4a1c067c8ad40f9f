import type { Counter, Gauge, Histogram, Labels, Metrics } from '@ugate/core';
import * as prom from 'prom-client';

/** The core Metrics contract on a prom-client registry (plus Node process metrics). */
export function promMetrics(): Metrics & { registry: prom.Registry } {
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry, prefix: 'ugate_' });
  const names = (l?: readonly string[]) => (l ? [...l] : []);
  const lab = (l?: Labels) => (l ?? {}) as prom.LabelValues<string>;
  return {
    registry,
    counter(name, help, labelNames): Counter {
      const c = new prom.Counter({ name, help, labelNames: names(labelNames), registers: [registry] });
      return { inc: (l, v = 1) => c.inc(lab(l), v) };
    },
    gauge(name, help, labelNames): Gauge {
      const g = new prom.Gauge({ name, help, labelNames: names(labelNames), registers: [registry] });
      return { set: (v, l) => g.set(lab(l), v), inc: (l, v = 1) => g.inc(lab(l), v), dec: (l, v = 1) => g.dec(lab(l), v) };
    },
    histogram(name, help, labelNames, buckets): Histogram {
      const h = new prom.Histogram({
        name,
        help,
        labelNames: names(labelNames),
        buckets: buckets ? [...buckets] : undefined,
        registers: [registry],
      });
      return { observe: (v, l) => h.observe(lab(l), v) };
    },
  };
}
