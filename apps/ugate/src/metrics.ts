import type { Counter, Gauge, Histogram, Labels, Metrics } from '@ugate/core';
import * as prom from 'prom-client';

/**
 * The series of one metric, found by label values with one map level per label name: an
 * update costs a few map lookups, no strings and no objects. prom-client builds a label hash
 * string, a closure and a label/value pair and validates the labels on every call, which cost
 * ~12 µs of a ~400 µs HBONE stream open (docs/BENCHMARKS-hbone.md). Labels are validated once,
 * by prom-client, when a series is first seen (`create`); values are passed to prom-client when
 * the registry is read (its `collect` hook), so a scrape sees every update made before it.
 */
class Series<S> {
  readonly all: S[] = [];
  #root: unknown;

  constructor(
    readonly names: readonly string[],
    readonly create: (labels: Labels) => S,
  ) {}

  get(l: Labels | undefined): S {
    const names = this.names;
    const last = names.length - 1;
    if (last < 0) {
      if (this.#root === undefined) this.#root = this.#add(l);
      return this.#root as S;
    }
    if (this.#root === undefined) this.#root = new Map();
    let level = this.#root as Map<string | undefined, unknown>;
    for (let i = 0; i < last; i++) {
      const v = l?.[names[i]!];
      let next = level.get(v) as Map<string | undefined, unknown> | undefined;
      if (!next) {
        next = new Map();
        level.set(v, next);
      }
      level = next;
    }
    const v = l?.[names[last]!];
    let s = level.get(v) as S | undefined;
    if (!s) {
      s = this.#add(l);
      level.set(v, s);
    }
    return s;
  }

  #add(l: Labels | undefined): S {
    const s = this.create({ ...l });
    this.all.push(s);
    return s;
  }
}

const lab = (l: Labels) => l as prom.LabelValues<string>;

function checkAmount(v: number, what: string): void {
  if (!(v >= 0 && v < Number.POSITIVE_INFINITY)) throw new TypeError(`${what}: ${v} is not a finite, non-negative number`);
}

interface Pending {
  readonly labels: Labels;
  n: number;
}

interface Level {
  readonly labels: Labels;
  v: number;
}

interface Buckets {
  readonly labels: Labels;
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  readonly counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram kept in `Buckets` and shown through prom-client's registry, which asks a metric
 * for its values (`get`, `getForPromString`) in the shape its own Histogram answers.
 */
class FastHistogram implements Histogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #bounds: number[];
  readonly #series: Series<Buckets>;

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly string[],
    bounds: readonly number[],
  ) {
    this.#bounds = [...bounds].sort((a, b) => a - b);
    for (const n of labelNames) if (n === 'le') throw new Error('le is a reserved label keyword');
    const names = new Set(labelNames);
    this.#series = new Series(labelNames, (labels) => {
      for (const k of Object.keys(labels))
        if (!names.has(k)) throw new Error(`Added label "${k}" is not included in initial labelset: ${JSON.stringify(labelNames)}`);
      return { labels, counts: new Array<number>(this.#bounds.length + 1).fill(0), sum: 0, count: 0 };
    });
  }

  observe(value: number, labels?: Labels): void {
    if (!Number.isFinite(value)) throw new TypeError(`${this.name}: value ${value} is not a finite number`);
    const s = this.#series.get(labels);
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  reset(): void {
    for (const s of this.#series.all) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }

  /** prom-client's shape for the text format: per-series labels as `sharedLabels`. */
  async getForPromString() {
    const name = this.name;
    const values: { labels: Record<string, string | number>; sharedLabels: Labels; value: number; metricName: string }[] = [];
    for (const s of this.#series.all) {
      let acc = 0;
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += s.counts[i]!;
        values.push({ labels: { le: this.#bounds[i]! }, sharedLabels: s.labels, value: acc, metricName: `${name}_bucket` });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: `${name}_bucket` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${name}_sum` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${name}_count` });
    }
    return { name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** prom-client's shape for JSON: labels merged. */
  async get() {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ labels, sharedLabels, ...v }) => ({ ...v, labels: { ...labels, ...sharedLabels } })),
    };
  }
}

/** The core Metrics contract on a prom-client registry (plus Node process metrics). */
export function promMetrics(): Metrics & { registry: prom.Registry } {
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry, prefix: 'ugate_' });
  const names = (l?: readonly string[]) => (l ? [...l] : []);
  return {
    registry,
    counter(name, help, labelNames): Counter {
      const series: Series<Pending> = new Series(names(labelNames), (labels) => {
        c.inc(lab(labels), 0);
        return { labels, n: 0 };
      });
      const c: prom.Counter = new prom.Counter({
        name,
        help,
        labelNames: names(labelNames),
        registers: [registry],
        collect() {
          for (const s of series.all) {
            if (s.n === 0) continue;
            c.inc(lab(s.labels), s.n);
            s.n = 0;
          }
        },
      });
      return {
        inc(l, v = 1) {
          checkAmount(v, name);
          series.get(l).n += v;
        },
      };
    },
    gauge(name, help, labelNames): Gauge {
      const series: Series<Level> = new Series(names(labelNames), (labels) => {
        g.set(lab(labels), 0);
        return { labels, v: 0 };
      });
      const g: prom.Gauge = new prom.Gauge({
        name,
        help,
        labelNames: names(labelNames),
        registers: [registry],
        collect() {
          for (const s of series.all) g.set(lab(s.labels), s.v);
        },
      });
      const finite = (v: number) => {
        if (!Number.isFinite(v)) throw new TypeError(`${name}: ${v} is not a finite number`);
        return v;
      };
      return {
        set: (v, l) => {
          series.get(l).v = finite(v);
        },
        inc: (l, v = 1) => {
          series.get(l).v += finite(v);
        },
        dec: (l, v = 1) => {
          series.get(l).v -= finite(v);
        },
      };
    },
    histogram(name, help, labelNames, buckets): Histogram {
      const h = new FastHistogram(name, help, names(labelNames), buckets ?? DEFAULT_BUCKETS);
      registry.registerMetric(h as unknown as prom.Metric);
      return h;
    },
  };
}

/** prom-client's default buckets. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
