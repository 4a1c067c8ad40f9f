import type { Target } from './target.js';

/**
 * Host patterns used by routes and policy: `*` (anything), `*.suffix` (any name
 * strictly below suffix), or an exact name; each optionally followed by `:port`.
 */
export interface HostPattern {
  readonly kind: 'any' | 'suffix' | 'exact';
  /** exact name, or the suffix including its leading dot. */
  readonly host: string;
  readonly port?: number;
  readonly source: string;
}

export function parseHostPattern(text: string): HostPattern {
  const s = text.trim().toLowerCase();
  let host = s;
  let port: number | undefined;
  const m = /^(.*):(\d{1,5})$/.exec(s);
  if (m && !m[1]!.includes(':')) {
    host = m[1]!;
    port = Number(m[2]);
  } else if (m && m[1]!.startsWith('[')) {
    host = m[1]!.slice(1, -1);
    port = Number(m[2]);
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '*' || host === '') return { kind: 'any', host: '', port, source: text };
  if (host.startsWith('*.')) return { kind: 'suffix', host: host.slice(1), port, source: text };
  return { kind: 'exact', host, port, source: text };
}

export function matchHost(p: HostPattern, t: Target): boolean {
  if (p.port !== undefined && p.port !== t.port) return false;
  switch (p.kind) {
    case 'any':
      return true;
    case 'suffix':
      return t.host.endsWith(p.host);
    case 'exact':
      return t.host === p.host;
  }
}

/** Higher is more specific: exact+port > exact > longest suffix > any. */
export function specificity(p: HostPattern): number {
  const base = p.kind === 'exact' ? 2000 : p.kind === 'suffix' ? 1000 + p.host.length : 0;
  return base * 2 + (p.port === undefined ? 0 : 1);
}
