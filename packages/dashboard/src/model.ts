/**
 * The snapshot a node sends on /api/events, and what the picture is made of: this node, its
 * neighbours (SSH gateways it dials, peers connected to its SSH server, outbound carriers), which
 * streams run over each link, and throughput from the difference of two snapshots.
 */

export interface Gateway {
  name: string;
  address: string;
  connected: boolean;
  registered?: string[];
  onDemand?: boolean;
  channels?: number;
  streams?: number;
  bytes?: number;
}

export interface Peer {
  key: string;
  id?: string;
  names?: string[];
}

export interface Stream {
  sid: string;
  proto: string;
  src: string;
  target: string;
  peer?: string;
  carrier?: string;
  via?: string;
  upstream?: string;
  bytesIn: number;
  bytesOut: number;
  ageMs: number;
}

export interface Snapshot {
  time: number;
  node: { id: string; names: string[]; vip6?: string };
  carriers: { ssh?: { gateways?: Gateway[]; peers?: Peer[] } };
  streams: Stream[];
  counters: { opened: number; failed: number; bytesIn: number; bytesOut: number; active: number; byCode?: Record<string, number> };
}

export type NeighborKind = 'gateway' | 'peer' | 'carrier';

export interface Neighbor {
  /** Stable and unique in a picture: used for data-testid (`<testid>`, `edge-<testid>`). */
  testid: string;
  kind: NeighborKind;
  label: string;
  /** Names reachable through it (peers), or registered there by this node (gateways). */
  names: string[];
  detail: string;
  up: boolean;
  streams: number;
  /** Bytes per second over this link, both directions; undefined before a second snapshot. */
  rate: number | undefined;
}

export interface Picture {
  self: { testid: string; label: string; names: string[]; id: string };
  neighbors: Neighbor[];
  /** Bytes per second per stream id. */
  rates: Map<string, number>;
  total: number | undefined;
}

/** `host:0` (any port) reads better as `host`. */
export const displayName = (name: string) => name.replace(/:0$/, '');

/** `<id>.m` names repeat the node id; the picture shows the others. */
const isIdName = (name: string, id?: string) => /\.m(:\d+)?$/.test(name) && (!id || displayName(name) === `${id}.m`);

export const shortId = (id: string) => (id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-4)}` : id);

function labelOf(names: string[], id: string | undefined, fallback: string): { label: string; names: string[] } {
  const shown = names.filter((n) => !isIdName(n, id)).map(displayName);
  return { label: shown[0] ?? (id ? shortId(id) : fallback), names: shown };
}

/** Which neighbours a stream runs over: the one it came from and the one it leaves through. */
export function linksOf(s: Stream, gateways: Gateway[], peers: Peer[]): string[] {
  const links = new Set<string>();
  for (const p of peers) {
    if (p.id && s.peer === p.id) links.add(peerTestid(p)); // came in over this peer's SSH connection
    if (s.via === p.key && s.carrier?.startsWith('ssh')) links.add(peerTestid(p)); // reverse tunnel to it
  }
  let out = false;
  for (const g of gateways) {
    if (s.peer === g.name) links.add(gatewayTestid(g)); // came in from the gateway (reverse tunnel)
    if (s.via === g.name) {
      links.add(gatewayTestid(g));
      out = true;
    }
  }
  // A stream on the ssh carrier with no `via` goes through the only gateway there is.
  if (!out && s.carrier === 'ssh' && !s.via && gateways.length === 1) {
    links.add(gatewayTestid(gateways[0]!));
    out = true;
  }
  const byPeer = peers.some((p) => s.via === p.key);
  if (!out && !byPeer && s.carrier && !s.carrier.startsWith('ssh')) links.add(carrierTestid(s.carrier));
  return [...links];
}

export const nodeTestid = (id: string) => `node-${id}`;
const peerTestid = (p: Peer) => (p.id ? nodeTestid(p.id) : `peer-${p.key}`);
const gatewayTestid = (g: Gateway) => `gateway-${g.name}`;
const carrierTestid = (carrier: string) => `carrier-${carrier}`;

const total = (s: Stream) => s.bytesIn + s.bytesOut;

/** Keeps the previous snapshot's byte counts to turn the next one into rates. */
export class RateMeter {
  private time: number | undefined;
  private bytes = new Map<string, number>();

  /** Bytes per second of each stream since the last snapshot (none on the first one). */
  update(snap: Snapshot): Map<string, number> | undefined {
    const rates = new Map<string, number>();
    const dt = this.time === undefined ? 0 : (snap.time - this.time) / 1000;
    for (const s of snap.streams) {
      const before = this.bytes.get(s.sid) ?? 0;
      if (dt > 0) rates.set(s.sid, Math.max(0, total(s) - before) / dt);
    }
    const first = this.time === undefined || dt <= 0;
    this.time = snap.time;
    this.bytes = new Map(snap.streams.map((s) => [s.sid, total(s)]));
    return first ? undefined : rates;
  }

  reset(): void {
    this.time = undefined;
    this.bytes.clear();
  }
}

/** The picture of one snapshot; `rates` from RateMeter.update (undefined: not known yet). */
export function picture(snap: Snapshot, rates: Map<string, number> | undefined): Picture {
  const gateways = snap.carriers.ssh?.gateways ?? [];
  const peers = snap.carriers.ssh?.peers ?? [];
  const self = labelOf(snap.node.names, snap.node.id, snap.node.id);
  const neighbors = new Map<string, Neighbor>();
  const sorted = <T>(xs: T[], key: (x: T) => string) => [...xs].sort((a, b) => key(a).localeCompare(key(b)));

  for (const g of sorted(gateways, (g) => g.name)) {
    neighbors.set(gatewayTestid(g), {
      testid: gatewayTestid(g),
      kind: 'gateway',
      label: g.name,
      names: (g.registered ?? []).filter((n) => !isIdName(n, snap.node.id)).map(displayName),
      detail: `${g.address}${g.onDemand ? ' · on demand' : ''}${g.connected ? '' : ' · disconnected'}`,
      up: g.connected,
      streams: 0,
      rate: rates && 0,
    });
  }
  for (const p of sorted(peers, (p) => labelOf(p.names ?? [], p.id, p.key).label)) {
    const { label, names } = labelOf(p.names ?? [], p.id, p.key);
    neighbors.set(peerTestid(p), {
      testid: peerTestid(p),
      kind: 'peer',
      label,
      names,
      detail: p.id ? shortId(p.id) : `connection ${p.key}`,
      up: true,
      streams: 0,
      rate: rates && 0,
    });
  }
  let sum: number | undefined = rates && 0;
  for (const s of snap.streams) {
    const r = rates?.get(s.sid);
    if (sum !== undefined) sum += r ?? 0;
    for (const t of linksOf(s, gateways, peers)) {
      let n = neighbors.get(t);
      if (!n && t.startsWith('carrier-')) {
        n = { testid: t, kind: 'carrier', label: s.carrier ?? '', names: [], detail: 'outbound', up: true, streams: 0, rate: rates && 0 };
        neighbors.set(t, n);
      }
      if (!n) continue;
      n.streams++;
      if (n.rate !== undefined) n.rate += r ?? 0;
    }
  }
  return {
    self: { testid: nodeTestid(snap.node.id), label: self.label, names: self.names, id: snap.node.id },
    neighbors: [...neighbors.values()],
    rates: rates ?? new Map(),
    total: sum,
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export const formatRate = (r: number | undefined) => (r === undefined ? '…' : r === 0 ? 'idle' : `${formatBytes(r)}/s`);

export function formatAge(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d`;
}
