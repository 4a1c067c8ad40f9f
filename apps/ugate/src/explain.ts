import { formatTarget } from '@ugate/core';
import type { Explanation } from '@ugate/discovery';

/** `ugate resolve` output: the upstreams in dial order, then every step that led there. */
export function formatExplanation(x: Explanation): string {
  const L: string[] = [x.target];
  if (x.error) L.push(`  ✗ ${x.error.code}: ${x.error.message}`);
  x.upstreams.forEach((u, i) => {
    const where = u.via
      ? `via ${u.via}`
      : u.address
        ? formatTarget(u.address)
        : u.carrier === 'ssh'
          ? 'via any connected gateway'
          : 'to the target itself';
    const pin = u.identity ? ` pin ${u.identity}` : '';
    const gw = u.gateway ? ` through ${formatTarget(u.gateway.address)}` : '';
    const as = u.target ? ` as ${formatTarget(u.target)}` : '';
    L.push(`  ${i === 0 ? '→' : ' '} ${i + 1}. ${u.carrier} ${where}${pin}${gw}${as}`.trimEnd());
  });
  if (x.answeredBy) L.push(`  answered by: ${x.answeredBy}`);
  L.push('  steps:');
  for (const s of x.steps) {
    const ttl = s.ttlMs === undefined ? '' : ` (ttl ${Math.round(s.ttlMs / 1000)} s${s.cached ? ', cached' : ''})`;
    L.push(`    ${s.source.padEnd(12)} ${s.result.padEnd(9)} ${s.detail}${ttl}`);
    for (const e of s.endpoints ?? []) {
      const extra = [
        e.identity && `id=${e.identity}`,
        e.gateway && `gateway=${e.gateway}`,
        `w=${e.weight}`,
        `p=${e.priority}`,
        e.healthy ? 'healthy' : 'backing off',
      ].filter(Boolean);
      L.push(`                 - ${e.carrier} ${e.address} ${extra.join(' ')}`);
    }
  }
  return `${L.join('\n')}\n`;
}
