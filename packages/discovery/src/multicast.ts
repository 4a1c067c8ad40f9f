/**
 * LAN discovery by signed multicast announcements (the `local` source).
 *
 * Every node sends a small signed datagram to an organization-local IPv4 group; receivers check the
 * signature against the key in the packet, the key against the announced node ID, the timestamp and
 * the sequence number, then publish `<id>.m` and the announced names with endpoints pinned to that
 * ID at the packet's source address. The wire format is in README.md (LAN multicast).
 */
import { createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIP, isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import {
  type ErrorCode,
  ErrorCodes,
  isValidHost,
  type Logger,
  makeTarget,
  meshName,
  type NodeIdentity,
  nodeIdFromSpki,
  silentLogger,
  toUgateError,
  UgateError,
} from '@ugate/core';
import type { Endpoint, PushSink, PushSource } from './types.js';

/** Organization-local scope (RFC 2365, 239.255.0.0/16): never routed off the site. */
export const MULTICAST_GROUP = '239.255.150.22';
/** Next to the DNS port (15053); unused by any other ugate listener. */
export const MULTICAST_PORT = 15054;
/** `U` `G` `M`, then the format version. */
export const ANNOUNCE_MAGIC = Buffer.from('UGM', 'latin1');
export const ANNOUNCE_VERSION = 1;
/** Whole datagram, signature included: fits one packet on any link without fragmentation. */
export const MAX_ANNOUNCEMENT = 1200;
const HEADER = ANNOUNCE_MAGIC.length + 1;
/** ECDSA P-256 in IEEE P1363 form: r ‖ s, 32 bytes each. */
const SIG_LEN = 64;
const MIN_INTERVAL = 100;
const MAX_INTERVAL = 3_600_000;
const BURST = 3;
const BURST_GAP_MS = 200;

export type MulticastCarrier = { readonly carrier: 'ssh' | 'hbone'; readonly port: number };
const CARRIERS: readonly MulticastCarrier['carrier'][] = ['ssh', 'hbone'];

/** The signed content of one announcement. */
export interface Announcement {
  readonly id: string;
  /** SubjectPublicKeyInfo DER of the node key. */
  readonly spki: Buffer;
  readonly names: readonly string[];
  readonly carriers: readonly MulticastCarrier[];
  /** The sender's announcement interval: receivers expire its records after 3 × this. */
  readonly intervalMs: number;
  /** Sender clock, ms since the epoch. */
  readonly ts: number;
  /** Grows with every packet a node sends (starts at the sender's clock, so restarts keep growing). */
  readonly seq: number;
}

export type DropReason = 'size' | 'malformed' | 'version' | 'id-mismatch' | 'signature' | 'stale' | 'duplicate' | 'replay' | 'peer-limit';

export type Decoded =
  | { readonly ok: true; readonly announcement: Announcement }
  | { readonly ok: false; readonly reason: DropReason; readonly code: ErrorCode; readonly detail: string };

const ID_RE = /^[a-z2-7]{52}$/;
/** Names under `.m` are derived from keys; nobody may announce one. */
const RESERVED = /(^|\.)m$|^[a-z2-7]{52}\.m\./;

/** A name a node may announce: a lower-case DNS name, not an IP literal, not under `.m`. */
export function isAnnounceableName(name: string): boolean {
  return name === name.toLowerCase() && !name.endsWith('.') && !isIP(name) && isValidHost(name) && !RESERVED.test(name);
}

/** Header ‖ JSON body ‖ signature over both (see README.md (LAN multicast)). */
export function encodeAnnouncement(a: Announcement, key: KeyObject): Buffer {
  const body = {
    id: a.id,
    key: a.spki.toString('base64'),
    names: a.names,
    carriers: Object.fromEntries(a.carriers.map((c) => [c.carrier, c.port])),
    interval: a.intervalMs,
    ts: a.ts,
    seq: a.seq,
  };
  const signed = Buffer.concat([ANNOUNCE_MAGIC, Buffer.from([ANNOUNCE_VERSION]), Buffer.from(JSON.stringify(body), 'utf8')]);
  return Buffer.concat([signed, sign('sha256', signed, { key, dsaEncoding: 'ieee-p1363' })]);
}

const bad = (reason: DropReason, detail: string): Decoded => ({
  ok: false,
  reason,
  code: reason === 'size' || reason === 'malformed' || reason === 'version' ? ErrorCodes.BAD_REQUEST : ErrorCodes.AUTH,
  detail,
});

const isInt = (v: unknown, min: number, max: number): v is number =>
  Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;

/**
 * Parse one datagram and check everything that needs no receiver state: size, format, names,
 * ID = SHA-256 of the key, signature. Freshness and replay are the receiver's checks.
 */
export function decodeAnnouncement(packet: Buffer): Decoded {
  if (packet.length > MAX_ANNOUNCEMENT) return bad('size', `${packet.length} bytes`);
  if (packet.length < HEADER + SIG_LEN + 2) return bad('size', `${packet.length} bytes`);
  if (!packet.subarray(0, ANNOUNCE_MAGIC.length).equals(ANNOUNCE_MAGIC)) return bad('malformed', 'no magic');
  if (packet[ANNOUNCE_MAGIC.length] !== ANNOUNCE_VERSION) return bad('version', `version ${packet[ANNOUNCE_MAGIC.length]}`);
  const signed = packet.subarray(0, packet.length - SIG_LEN);
  let body: unknown;
  try {
    body = JSON.parse(signed.subarray(HEADER).toString('utf8'));
  } catch {
    return bad('malformed', 'body is not JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('malformed', 'body is not an object');
  const b = body as Record<string, unknown>;
  if (typeof b.id !== 'string' || !ID_RE.test(b.id)) return bad('malformed', 'bad id');
  if (typeof b.key !== 'string' || b.key.length > 256) return bad('malformed', 'bad key');
  if (!Array.isArray(b.names) || !b.names.every((n): n is string => typeof n === 'string' && isAnnounceableName(n))) {
    return bad('malformed', 'bad names');
  }
  if (typeof b.carriers !== 'object' || b.carriers === null || Array.isArray(b.carriers)) return bad('malformed', 'bad carriers');
  const carriers: MulticastCarrier[] = [];
  for (const [carrier, port] of Object.entries(b.carriers)) {
    if (!isInt(port, 1, 65535)) return bad('malformed', `bad port for ${carrier}`);
    // Carriers this version does not know are skipped: a newer peer may offer more.
    if ((CARRIERS as string[]).includes(carrier)) carriers.push({ carrier: carrier as MulticastCarrier['carrier'], port });
  }
  if (carriers.length === 0) return bad('malformed', 'no known carrier');
  if (!isInt(b.interval, MIN_INTERVAL, MAX_INTERVAL)) return bad('malformed', 'bad interval');
  if (!isInt(b.ts, 0, Number.MAX_SAFE_INTEGER) || !isInt(b.seq, 0, Number.MAX_SAFE_INTEGER)) return bad('malformed', 'bad ts/seq');
  const spki = Buffer.from(b.key, 'base64');
  if (nodeIdFromSpki(spki) !== b.id) return bad('id-mismatch', `key does not hash to ${b.id}`);
  let pub: KeyObject;
  try {
    pub = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    return bad('malformed', 'key is not SPKI DER');
  }
  if (pub.asymmetricKeyType !== 'ec' || pub.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return bad('malformed', 'key is not P-256');
  let valid = false;
  try {
    valid = verify('sha256', signed, { key: pub, dsaEncoding: 'ieee-p1363' }, packet.subarray(packet.length - SIG_LEN));
  } catch {
    valid = false;
  }
  if (!valid) return bad('signature', `bad signature for ${b.id}`);
  return {
    ok: true,
    announcement: { id: b.id, spki, names: [...new Set(b.names)], carriers, intervalMs: b.interval, ts: b.ts, seq: b.seq },
  };
}

export interface MulticastInit {
  identity: NodeIdentity;
  /** Names to announce besides `<id>.m` (lower-case DNS names, not under `.m`). */
  names: string[];
  /** Where this node accepts mesh connections; receivers dial `<packet source address>:<port>`. */
  carriers: { carrier: 'ssh' | 'hbone'; port: number }[];
  /** IPv4 multicast group. Default 239.255.150.22. */
  group?: string;
  /** UDP port, the same for sending and receiving. Default 15054. */
  port?: number;
  /** Announcement interval (±10 % jitter). Default 10 s. */
  intervalMs?: number;
  /** IPv4 addresses of the interfaces to join and send on. Default: every non-internal IPv4 address, re-read each round. */
  interfaces?: string[];
  /** Multicast TTL. Default 1: this link only. */
  ttl?: number;
  /** Deliver our own packets to sockets on this host (several nodes on one host). Default false. */
  loopback?: boolean;
  /** Accept timestamps within this distance of the local clock. Default 60 s. */
  maxAgeMs?: number;
  /** Peers kept at once; announcements from further IDs are dropped. Default 1024. */
  maxPeers?: number;
}

export interface MulticastPeerStatus {
  readonly id: string;
  readonly names: readonly string[];
  readonly address: string;
  readonly carriers: readonly MulticastCarrier[];
  readonly seq: number;
  /** Since the last accepted announcement. */
  readonly ageMs: number;
}

export interface MulticastStatus {
  readonly group: string;
  readonly port: number;
  readonly interfaces: readonly string[];
  readonly sent: number;
  readonly received: number;
  readonly accepted: number;
  /** Our own announcements coming back (loopback, or a second path). */
  readonly own: number;
  readonly dropped: Readonly<Partial<Record<DropReason, number>>>;
  readonly peers: readonly MulticastPeerStatus[];
}

interface Peer {
  readonly id: string;
  readonly names: readonly string[];
  readonly address: string;
  readonly carriers: readonly MulticastCarrier[];
  readonly seq: number;
  readonly seenAt: number;
  readonly endpoints: readonly Endpoint[];
  readonly timer: NodeJS.Timeout;
}

/** Announce this node on the LAN and publish the nodes it hears. Source name: `local`. */
export function multicastSource(init: MulticastInit): MulticastSource {
  return new MulticastSource(init);
}

export class MulticastSource implements PushSource {
  readonly name = 'local';
  readonly #identity: NodeIdentity;
  readonly #names: readonly string[];
  readonly #carriers: readonly MulticastCarrier[];
  readonly #group: string;
  readonly #port: number;
  readonly #interval: number;
  readonly #ttl: number;
  readonly #loopback: boolean;
  readonly #maxAge: number;
  readonly #maxPeers: number;
  readonly #fixedInterfaces: readonly string[] | undefined;
  readonly #peers = new Map<string, Peer>();
  /** Last accepted sequence per ID, kept past expiry so an old packet cannot revive a peer. */
  readonly #lastSeq = new Map<string, { seq: number; at: number }>();
  readonly #joined = new Set<string>();
  readonly #dropped: Partial<Record<DropReason, number>> = {};
  readonly #failing = new Set<string>();
  #sink: PushSink | undefined;
  #log: Logger = silentLogger;
  #socket: Socket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sending: Promise<void> = Promise.resolve();
  #seq = 0;
  #burst = BURST;
  #closed = false;
  #counts = { sent: 0, received: 0, accepted: 0, own: 0 };

  constructor(init: MulticastInit) {
    const cfg = (msg: string) => new UgateError(ErrorCodes.CONFIG, `discovery.local: ${msg}`);
    this.#identity = init.identity;
    this.#group = init.group ?? MULTICAST_GROUP;
    this.#port = init.port ?? MULTICAST_PORT;
    this.#interval = init.intervalMs ?? 10_000;
    this.#ttl = init.ttl ?? 1;
    this.#loopback = init.loopback ?? false;
    this.#maxAge = init.maxAgeMs ?? 60_000;
    this.#maxPeers = init.maxPeers ?? 1024;
    this.#fixedInterfaces = init.interfaces;
    const first = Number(this.#group.split('.')[0]);
    if (!isIPv4(this.#group) || first < 224 || first > 239) throw cfg(`group ${this.#group} is not an IPv4 multicast address`);
    if (!isInt(this.#port, 1, 65535)) throw cfg(`invalid port ${this.#port}`);
    if (!isInt(this.#interval, MIN_INTERVAL, MAX_INTERVAL)) throw cfg(`intervalMs must be ${MIN_INTERVAL}..${MAX_INTERVAL}`);
    if (!isInt(this.#ttl, 1, 255)) throw cfg(`invalid ttl ${this.#ttl}`);
    if (!isInt(this.#maxAge, 1, Number.MAX_SAFE_INTEGER) || !isInt(this.#maxPeers, 1, Number.MAX_SAFE_INTEGER)) {
      throw cfg('maxAgeMs and maxPeers must be positive integers');
    }
    for (const a of init.interfaces ?? []) if (!isIPv4(a)) throw cfg(`interface ${a} is not an IPv4 address`);
    this.#names = [...new Set(init.names.map((n) => n.toLowerCase().replace(/\.$/, '')))];
    for (const n of this.#names) if (!isAnnounceableName(n)) throw cfg(`cannot announce name ${JSON.stringify(n)}`);
    if (init.carriers.length === 0) throw cfg('announce at least one carrier');
    for (const c of init.carriers) {
      if (!CARRIERS.includes(c.carrier) || !isInt(c.port, 1, 65535)) throw cfg(`invalid carrier ${c.carrier}:${c.port}`);
      if (init.carriers.filter((x) => x.carrier === c.carrier).length > 1) throw cfg(`carrier ${c.carrier} listed twice`);
    }
    this.#carriers = init.carriers.map((c) => ({ carrier: c.carrier, port: c.port }));
    // The largest packet this node can send: the biggest timestamp and sequence the format allows.
    const size = this.#packet(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).length;
    if (size > MAX_ANNOUNCEMENT) throw cfg(`${this.#names.length} names need ${size} bytes; an announcement holds ${MAX_ANNOUNCEMENT}`);
  }

  async start(sink: PushSink, logger: Logger): Promise<void> {
    if (this.#socket || this.#closed) throw new UgateError(ErrorCodes.CLOSED, 'multicast source already started or closed');
    this.#sink = sink;
    this.#log = logger;
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    this.#socket = socket;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(this.#port, () => {
          socket.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      this.#socket = undefined;
      socket.close();
      const err = toUgateError(e);
      throw new UgateError(err.code, `multicast bind :${this.#port}: ${err.message}`, { cause: e });
    }
    socket.on('message', (msg, rinfo) => this.#onMessage(msg, rinfo));
    socket.on('error', (e) => {
      const err = toUgateError(e);
      this.#log.warn({ code: err.code, err: err.message }, 'multicast socket error');
    });
    socket.unref();
    socket.setMulticastTTL(this.#ttl);
    socket.setMulticastLoopback(this.#loopback);
    this.#seq = Date.now();
    this.#round();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const p of this.#peers.values()) clearTimeout(p.timer);
    this.#peers.clear();
    const socket = this.#socket;
    if (!socket) return;
    await this.#sending;
    for (const addr of this.#joined) {
      try {
        socket.dropMembership(this.#group, addr);
      } catch {
        // The interface may be gone already; closing the socket leaves the group anyway.
      }
    }
    this.#joined.clear();
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  status(): MulticastStatus {
    const now = Date.now();
    return {
      group: this.#group,
      port: this.#port,
      interfaces: [...this.#joined],
      ...this.#counts,
      dropped: { ...this.#dropped },
      peers: [...this.#peers.values()].map((p) => ({
        id: p.id,
        names: p.names,
        address: p.address,
        carriers: p.carriers,
        seq: p.seq,
        ageMs: now - p.seenAt,
      })),
    };
  }

  #packet(ts: number, seq: number): Buffer {
    const id = this.#identity;
    return encodeAnnouncement(
      { id: id.id, spki: id.spki, names: this.#names, carriers: this.#carriers, intervalMs: this.#interval, ts, seq },
      id.privateKey,
    );
  }

  /** Join new interfaces, send one announcement, schedule the next round. */
  #round(): void {
    if (this.#closed) return;
    const wanted = this.#interfaces();
    this.#join(wanted);
    this.#pruneSeq();
    const packet = this.#packet(Date.now(), this.#seq++);
    this.#sending = this.#sending.then(() => this.#send(packet, wanted));
    const delay = this.#burst-- > 1 ? BURST_GAP_MS : this.#interval * (0.9 + 0.2 * Math.random());
    this.#timer = setTimeout(() => this.#round(), delay);
    this.#timer.unref();
  }

  #interfaces(): string[] {
    if (this.#fixedInterfaces) return [...this.#fixedInterfaces];
    return Object.values(networkInterfaces())
      .flatMap((list) => list ?? [])
      .filter((a) => a.family === 'IPv4' && !a.internal)
      .map((a) => a.address);
  }

  #join(wanted: readonly string[]): void {
    const socket = this.#socket;
    if (!socket) return;
    for (const addr of wanted) {
      if (this.#joined.has(addr)) continue;
      try {
        socket.addMembership(this.#group, addr);
        this.#joined.add(addr);
        this.#log.debug({ group: this.#group, interface: addr }, 'multicast group joined');
      } catch (e) {
        this.#warnOnce(addr, e, 'multicast join failed');
      }
    }
    for (const addr of this.#joined) {
      if (wanted.includes(addr)) continue;
      this.#joined.delete(addr);
      try {
        socket.dropMembership(this.#group, addr);
      } catch {
        // The address is gone with its interface, and the membership with it.
      }
    }
  }

  /** One interface at a time: the outgoing interface is a socket option, read when the packet leaves. */
  async #send(packet: Buffer, interfaces: readonly string[]): Promise<void> {
    const socket = this.#socket;
    for (const addr of interfaces) {
      if (!socket || this.#closed) return;
      try {
        socket.setMulticastInterface(addr);
        await new Promise<void>((resolve, reject) => socket.send(packet, this.#port, this.#group, (e) => (e ? reject(e) : resolve())));
        this.#counts.sent++;
        this.#failing.delete(addr);
      } catch (e) {
        this.#warnOnce(addr, e, 'multicast send failed');
      }
    }
  }

  /** One warning per interface until it works again: a missing route must not flood the log. */
  #warnOnce(addr: string, e: unknown, msg: string): void {
    if (this.#failing.has(addr)) return;
    this.#failing.add(addr);
    const err = toUgateError(e, ErrorCodes.UNREACHABLE);
    this.#log.warn({ code: err.code, interface: addr, group: this.#group, err: err.message }, msg);
  }

  #pruneSeq(): void {
    const oldest = Date.now() - 2 * this.#maxAge;
    for (const [id, s] of this.#lastSeq) if (s.at < oldest && !this.#peers.has(id)) this.#lastSeq.delete(id);
  }

  #drop(reason: DropReason, code: ErrorCode, from: RemoteInfo, detail: string): void {
    this.#dropped[reason] = (this.#dropped[reason] ?? 0) + 1;
    this.#log.debug({ code, reason, from: `${from.address}:${from.port}`, err: detail }, 'multicast announcement dropped');
  }

  #onMessage(msg: Buffer, from: RemoteInfo): void {
    try {
      this.#counts.received++;
      const d = decodeAnnouncement(msg);
      if (!d.ok) return this.#drop(d.reason, d.code, from, d.detail);
      const a = d.announcement;
      if (a.id === this.#identity.id) {
        this.#counts.own++;
        return;
      }
      const now = Date.now();
      if (Math.abs(now - a.ts) > this.#maxAge) return this.#drop('stale', ErrorCodes.AUTH, from, `timestamp ${now - a.ts} ms off`);
      const last = this.#lastSeq.get(a.id);
      // Equal: the newest packet again (a second path to us, or a replay that changes nothing).
      if (last && a.seq === last.seq) return this.#drop('duplicate', ErrorCodes.AUTH, from, `seq ${a.seq} already accepted`);
      if (last && a.seq < last.seq) return this.#drop('replay', ErrorCodes.AUTH, from, `seq ${a.seq} < ${last.seq}`);
      if (!this.#peers.has(a.id) && this.#peers.size >= this.#maxPeers) {
        return this.#drop('peer-limit', ErrorCodes.POLICY_DENIED, from, `${this.#maxPeers} peers already`);
      }
      this.#lastSeq.set(a.id, { seq: a.seq, at: now });
      this.#counts.accepted++;
      this.#accept(a, from.address, now);
    } catch (e) {
      const err = toUgateError(e);
      this.#log.debug({ code: err.code, from: `${from.address}:${from.port}`, err: err.message }, 'multicast announcement failed');
    }
  }

  #accept(a: Announcement, address: string, now: number): void {
    const prev = this.#peers.get(a.id);
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => this.#expire(a.id), 3 * a.intervalMs);
    timer.unref();
    const endpoints = a.carriers.map(
      (c): Endpoint => ({
        carrier: c.carrier,
        address: makeTarget(address, c.port),
        identity: a.id,
        labels: { source: 'multicast' },
      }),
    );
    const peer: Peer = { id: a.id, names: a.names, address, carriers: a.carriers, seq: a.seq, seenAt: now, endpoints, timer };
    this.#peers.set(a.id, peer);
    const same =
      prev !== undefined &&
      prev.address === address &&
      JSON.stringify([prev.names, prev.carriers]) === JSON.stringify([peer.names, peer.carriers]);
    if (same) return;
    if (!prev) this.#log.info({ peer: a.id, address, names: a.names }, 'multicast peer seen');
    this.#publish(new Set([...hostsOf(prev), ...hostsOf(peer)]));
  }

  #expire(id: string): void {
    const peer = this.#peers.get(id);
    if (!peer || this.#closed) return;
    this.#peers.delete(id);
    this.#log.info({ peer: id, address: peer.address }, 'multicast peer expired');
    try {
      this.#publish(new Set(hostsOf(peer)));
    } catch (e) {
      const err = toUgateError(e);
      this.#log.warn({ code: err.code, peer: id, err: err.message }, 'multicast expiry update failed');
    }
  }

  /** A name may be announced by several nodes: its record is every announcer's endpoints. */
  #publish(hosts: ReadonlySet<string>): void {
    const peers = [...this.#peers.values()].sort((x, y) => (x.id < y.id ? -1 : 1));
    for (const host of hosts) {
      const by = peers.filter((p) => hostsOf(p).includes(host));
      this.#sink?.update({
        host,
        endpoints: by.length ? by.flatMap((p) => p.endpoints) : null,
        detail: by.length ? `multicast ${by.map((p) => `${p.id} at ${p.address}`).join(', ')}` : 'multicast: expired',
      });
    }
  }
}

function hostsOf(p: Peer | undefined): string[] {
  return p ? [meshName(p.id), ...p.names] : [];
}
