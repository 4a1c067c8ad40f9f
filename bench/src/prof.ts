import { readFileSync } from 'node:fs';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
}

export interface HotSpot {
  /** Share of all samples, 0..100. */
  selfPct: number;
  fn: string;
  where: string;
}

/** Functions with the most self time in a `.cpuprofile` (from `node --cpu-prof`). */
export function hotSpots(file: string, top = 15): HotSpot[] {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const hits = new Map<number, number>();
  if (p.samples && p.samples.length > 0) {
    for (const s of p.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
  } else {
    for (const n of p.nodes) hits.set(n.id, n.hitCount ?? 0);
  }
  const agg = new Map<string, { fn: string; where: string; n: number }>();
  let total = 0;
  for (const [id, n] of hits) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const fn = functionName || '(anonymous)';
    if (fn === '(idle)') continue;
    total += n;
    const where = url ? `${shorten(url)}:${lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const a = agg.get(key) ?? { fn, where, n: 0 };
    a.n += n;
    agg.set(key, a);
  }
  return [...agg.values()]
    .sort((a, b) => b.n - a.n)
    .slice(0, top)
    .map((a) => ({ selfPct: total ? (100 * a.n) / total : 0, fn: a.fn, where: a.where }));
}

function shorten(url: string): string {
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length).replace(/^\.pnpm\/[^/]+\/node_modules\//, '');
  const pk = u.search(/\/(packages|apps)\//);
  return pk >= 0 ? u.slice(pk + 1) : u;
}
