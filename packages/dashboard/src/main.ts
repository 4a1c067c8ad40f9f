import { type ConnState, subscribe } from './events.js';
import {
  formatAge,
  formatBytes,
  formatRate,
  type Neighbor,
  type Picture,
  picture,
  RateMeter,
  type Snapshot,
  type Stream,
  shortId,
} from './model.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const W = 900;
const H = 560;
const CX = W / 2;
const CY = H / 2 - 10;

const $ = <T extends Element>(sel: string) => document.querySelector<T>(sel)!;

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// --- token: `#token=…` once, then kept for the tab's life -------------------------------------

const TOKEN_KEY = 'ugate-admin-token';
function takeTokenFromHash(): boolean {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return false;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]!));
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}
takeTokenFromHash();

// --- the picture ------------------------------------------------------------------------------

const svg = $<SVGSVGElement>('svg[data-testid="mesh"]');
const edgeLayer = el('g', { class: 'edges' });
const nodeLayer = el('g', { class: 'nodes' });
svg.append(edgeLayer, nodeLayer);

interface NodeEl {
  g: SVGGElement;
  title: SVGTitleElement;
  kind: SVGTextElement;
  label: SVGTextElement;
  names: SVGTextElement;
}
interface EdgeEl {
  g: SVGGElement;
  wire: SVGLineElement;
  flow: SVGLineElement;
  tag: SVGGElement;
  box: SVGRectElement;
  text: SVGTextElement;
}
const nodes = new Map<string, NodeEl>();
const edges = new Map<string, EdgeEl>();

function makeNode(testid: string, r: number): NodeEl {
  const g = el('g', { 'data-testid': testid });
  const title = el('title');
  const circle = el('circle', { r });
  const kind = el('text', { class: 'kind', y: 4 });
  const label = el('text', { class: 'label', y: r + 18 });
  const names = el('text', { class: 'names', y: r + 34 });
  g.append(title, circle, kind, label, names);
  nodeLayer.append(g);
  return { g, title, kind, label, names };
}

function setNames(t: SVGTextElement, names: string[], extra: string | undefined): void {
  t.replaceChildren();
  const lines = names.slice(0, 3);
  if (names.length > 3) lines.push(`+${names.length - 3} more`);
  if (extra) lines.push(extra);
  lines.forEach((line, i) => {
    const span = el('tspan', { x: 0, dy: i === 0 ? 0 : 15 });
    span.textContent = line;
    t.append(span);
  });
}

interface NodeText {
  kind: string;
  label: string;
  names: string[];
  detail: string;
  /** Put before each name shown under the label. */
  mark?: string;
}

function updateNode(n: NodeEl, x: number, y: number, cls: string, t: NodeText): void {
  n.g.setAttribute('class', cls);
  n.g.setAttribute('transform', `translate(${x.toFixed(1)},${y.toFixed(1)})`);
  n.g.dataset.names = t.names.join(' ');
  const rest = t.names.filter((name) => name !== t.label).map((name) => `${t.mark ?? ''}${name}`);
  n.title.textContent = [t.label, ...rest, t.detail].join('\n');
  n.kind.textContent = t.kind;
  n.label.textContent = t.label;
  setNames(n.names, rest, t.detail);
}

function makeEdge(testid: string): EdgeEl {
  const g = el('g', { 'data-testid': `edge-${testid}` });
  const wire = el('line', { class: 'wire' });
  const flow = el('line', { class: 'flow' });
  const tag = el('g', { class: 'tag' });
  const box = el('rect', { rx: 9, height: 20, y: -11 });
  const text = el('text', { y: 4 });
  tag.append(box, text);
  g.append(wire, flow, tag);
  edgeLayer.append(g);
  return { g, wire, flow, tag, box, text };
}

function updateEdge(e: EdgeEl, n: Neighbor, x: number, y: number): void {
  for (const line of [e.wire, e.flow]) {
    line.setAttribute('x1', String(CX));
    line.setAttribute('y1', String(CY));
    line.setAttribute('x2', x.toFixed(1));
    line.setAttribute('y2', y.toFixed(1));
  }
  const active = n.streams > 0;
  e.g.setAttribute('class', `edge ${n.up ? 'up' : 'down'}${active ? ' active' : ''}`);
  e.g.dataset.streams = String(n.streams);
  if (n.rate === undefined) delete e.g.dataset.rate;
  else e.g.dataset.rate = String(Math.round(n.rate));
  const text = n.up ? `${n.streams} stream${n.streams === 1 ? '' : 's'} · ${formatRate(n.rate)}` : 'disconnected';
  if (e.text.textContent !== text) {
    e.text.textContent = text;
    const width = textWidth(e.text, text);
    e.box.setAttribute('width', String(width + 18));
    e.box.setAttribute('x', String(-(width + 18) / 2));
  }
  e.tag.setAttribute('transform', `translate(${((CX + x) / 2).toFixed(1)},${((CY + y) / 2).toFixed(1)})`);
}

function textWidth(t: SVGTextElement, text: string): number {
  try {
    const w = t.getComputedTextLength();
    if (w > 0) return w;
  } catch {
    // not rendered yet
  }
  return text.length * 6.5;
}

/** Neighbours on an ellipse around this node; one or two sit left and right. */
function position(i: number, n: number): [number, number] {
  const start = n <= 2 ? Math.PI : -Math.PI / 2;
  const a = start + (2 * Math.PI * i) / Math.max(n, 1);
  return [CX + 320 * Math.cos(a), CY + 190 * Math.sin(a)];
}

function drawMesh(p: Picture): void {
  const seen = new Set<string>([p.self.testid]);
  let self = nodes.get(p.self.testid);
  if (!self) {
    for (const [k, n] of nodes) {
      if (!n.g.classList.contains('self')) continue;
      n.g.remove();
      nodes.delete(k);
    }
    self = makeNode(p.self.testid, 40);
    nodes.set(p.self.testid, self);
  }
  updateNode(self, CX, CY, 'node self up', { kind: 'this node', label: p.self.label, names: p.self.names, detail: shortId(p.self.id) });

  const box = { left: CX, right: CX, top: CY, bottom: CY };
  p.neighbors.forEach((n, i) => {
    const [x, y] = position(i, p.neighbors.length);
    box.left = Math.min(box.left, x);
    box.right = Math.max(box.right, x);
    box.top = Math.min(box.top, y);
    box.bottom = Math.max(box.bottom, y);
    seen.add(n.testid);
    let ne = nodes.get(n.testid);
    if (!ne) {
      ne = makeNode(n.testid, 30);
      nodes.set(n.testid, ne);
    }
    // A gateway's names are the ones this node registered there.
    updateNode(ne, x, y, `node ${n.kind} ${n.up ? 'up' : 'down'}`, { ...n, mark: n.kind === 'gateway' ? '⇡ ' : undefined });
    let e = edges.get(n.testid);
    if (!e) {
      e = makeEdge(n.testid);
      edges.set(n.testid, e);
    }
    updateEdge(e, n, x, y);
  });
  // Around what is drawn (room for the labels under the nodes), never narrower than W: same scale for any picture.
  const width = Math.max(W, box.right - box.left + 340);
  const x0 = (box.left + box.right) / 2 - width / 2;
  svg.setAttribute('viewBox', [x0, box.top - 60, width, box.bottom - box.top + 170].map(Math.round).join(' '));
  for (const [k, n] of nodes) {
    if (seen.has(k)) continue;
    n.g.remove();
    nodes.delete(k);
  }
  for (const [k, e] of edges) {
    if (seen.has(k)) continue;
    e.g.remove();
    edges.delete(k);
  }
}

// --- the streams table ------------------------------------------------------------------------

const tbody = $<HTMLTableSectionElement>('table[data-testid="streams"] tbody');
const rows = new Map<string, HTMLTableRowElement>();
const COLS = ['sid', 'proto', 'route', 'carrier', 'bytes', 'rate', 'age'] as const;

function cells(s: Stream, p: Picture, peerLabel: (key: string) => string): Record<(typeof COLS)[number], string> {
  const from = s.peer && s.peer !== 'local' ? ` (${peerLabel(s.peer)})` : '';
  return {
    sid: s.sid,
    proto: s.proto,
    route: `${s.src}${from} → ${s.target}`,
    carrier: `${s.carrier ?? '–'}${s.via ? ` / ${peerLabel(s.via)}` : ''}${s.upstream ? ` → ${s.upstream}` : ''}`,
    bytes: `${formatBytes(s.bytesIn)} / ${formatBytes(s.bytesOut)}`,
    rate: formatRate(p.rates.get(s.sid) ?? (p.total === undefined ? undefined : 0)),
    age: formatAge(s.ageMs),
  };
}

function drawStreams(snap: Snapshot, p: Picture): void {
  const peers = snap.carriers.ssh?.peers ?? [];
  const peerLabel = (key: string) => {
    const peer = peers.find((x) => x.key === key || x.id === key);
    const n = peer && p.neighbors.find((x) => x.testid === (peer.id ? `node-${peer.id}` : `peer-${peer.key}`));
    return n?.label ?? (key.length > 20 ? shortId(key) : key);
  };
  const streams = [...snap.streams].sort((a, b) => b.ageMs - a.ageMs || a.sid.localeCompare(b.sid));
  const live = new Set(streams.map((s) => s.sid));
  for (const [sid, tr] of rows) {
    if (live.has(sid)) continue;
    tr.remove();
    rows.delete(sid);
  }
  streams.forEach((s, i) => {
    let tr = rows.get(s.sid);
    if (!tr) {
      tr = document.createElement('tr');
      tr.setAttribute('data-testid', `stream-${s.sid}`);
      for (const c of COLS) {
        const td = document.createElement('td');
        td.dataset.col = c;
        if (c === 'bytes' || c === 'rate' || c === 'age') td.className = 'num';
        tr.append(td);
      }
      rows.set(s.sid, tr);
    }
    tr.dataset.target = s.target;
    const values = cells(s, p, peerLabel);
    COLS.forEach((c, j) => {
      const td = tr.children[j] as HTMLTableCellElement;
      if (td.textContent !== values[c]) td.textContent = values[c];
    });
    // Oldest first; a row moves only when out of place (moving it would replay its entry animation).
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null);
  });
  $('[data-testid="live-count"]').textContent = String(streams.length);
  $<HTMLElement>('[data-testid="no-streams"]').hidden = streams.length > 0;
}

// --- header -----------------------------------------------------------------------------------

function drawHeader(snap: Snapshot, p: Picture): void {
  $('[data-testid="self-label"]').textContent = `${p.self.label} · ${shortId(snap.node.id)}`;
  document.title = `ugate · ${p.self.label}`;
  $('[data-testid="count-active"]').textContent = String(snap.counters.active);
  $('[data-testid="count-opened"]').textContent = String(snap.counters.opened);
  $('[data-testid="count-failed"]').textContent = String(snap.counters.failed);
  const tp = $<HTMLElement>('[data-testid="throughput"]');
  tp.textContent = formatRate(p.total);
  // data-rate: bytes per second, once two snapshots have been seen.
  if (p.total === undefined) delete tp.dataset.rate;
  else tp.dataset.rate = String(Math.round(p.total));
}

const conn = $<HTMLElement>('[data-testid="conn-state"]');
const LABELS: Record<ConnState, string> = {
  connecting: 'connecting',
  live: 'live',
  reconnecting: 'reconnecting',
  unauthorized: 'admin token needed: open this page as /#token=…',
};
function drawState(state: ConnState, detail?: string): void {
  if (conn.dataset.state === state) return;
  conn.dataset.state = state;
  conn.querySelector('.conn-label')!.textContent = detail && state !== 'live' ? `${LABELS[state]} · ${detail}` : LABELS[state];
  document.body.classList.toggle('offline', state !== 'live');
}

// --- wiring -----------------------------------------------------------------------------------

const meter = new RateMeter();
const events = subscribe({
  url: '/api/events',
  token: () => sessionStorage.getItem(TOKEN_KEY) ?? undefined,
  onState: (state, detail) => {
    if (state !== 'live') meter.reset();
    drawState(state, detail);
  },
  onEvent: (name, data) => {
    if (name !== 'snapshot') return;
    const snap = JSON.parse(data) as Snapshot;
    const p = picture(snap, meter.update(snap));
    drawHeader(snap, p);
    drawMesh(p);
    drawStreams(snap, p);
  },
});
window.addEventListener('hashchange', () => {
  if (takeTokenFromHash()) events.retry();
});
