/**
 * DNS discovery: a small stub-resolver client (UDP with TCP fallback, on `dns-packet`) and a pull
 * source that reads ugate's records (SRV, TXT, DANE TLSA) and plain A/AAAA. The record set is
 * described in README.md (DNS).
 */
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, isIP } from 'node:net';
import {
  base32,
  ErrorCodes,
  formatTarget,
  ipv6Bytes,
  isValidHost,
  nodeIdDigest,
  parseTarget,
  type Target,
  toUgateError,
  UgateError,
} from '@ugate/core';
import {
  AUTHENTIC_DATA,
  type DecodedPacket,
  type Answer as DnsRecord,
  decode,
  encode,
  type OptAnswer,
  type Packet,
  RECURSION_DESIRED,
  type RecordType,
  type SrvAnswer,
  type StringAnswer,
  type TlsaAnswer,
  type TxtAnswer,
} from 'dns-packet';
import type { Answer, Endpoint, PullSource } from './types.js';

export type { DnsRecord };

// ---- wire ----------------------------------------------------------------------------------

export type DnsTransport = 'udp' | 'tcp';

/** What a reply must echo to count as the answer to a query: its id and its one question. */
export interface DnsExpect {
  readonly id: number;
  readonly name: string;
  readonly type: string;
  readonly class: string;
}

export interface DnsExchangeResult {
  /** The reply as received. */
  readonly reply: Buffer;
  readonly packet: DecodedPacket;
}

/** EDNS(0) with the 1232-byte UDP payload size the DNS flag day 2020 settled on. */
export const EDNS_OPT: OptAnswer = {
  type: 'OPT',
  name: '.',
  udpPayloadSize: 1232,
  extendedRcode: 0,
  ednsVersion: 0,
  flags: 0,
  flag_do: false,
  options: [],
};

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

function rcodeName(packet: { flags?: number | undefined }): string {
  const n = (packet.flags ?? 0) & 0xf;
  return RCODES[n] ?? `RCODE${n}`;
}

/** Decode `buf` and check it is a response to `expect`; undefined for anything else (never throws). */
function matchReply(buf: Buffer, expect: DnsExpect): DecodedPacket | undefined {
  let p: DecodedPacket;
  try {
    p = decode(buf);
  } catch {
    return undefined;
  }
  const q = p.questions?.[0];
  if (!p.flag_qr || p.id !== expect.id || p.questions?.length !== 1 || !q) return undefined;
  if (q.name.toLowerCase() !== expect.name.toLowerCase() || q.type !== expect.type || (q.class ?? 'IN') !== expect.class) {
    return undefined;
  }
  return p;
}

/**
 * Send one query to one server and wait for the reply that matches `expect`. UDP replies that do
 * not match (another id, another question, garbage) are ignored; over TCP they fail the exchange.
 * Rejects with TIMEOUT, UNREACHABLE (socket errors) or ABORTED; the socket is closed on every path.
 */
export function dnsExchange(
  server: Target,
  query: Buffer,
  expect: DnsExpect,
  transport: DnsTransport,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<DnsExchangeResult> {
  return transport === 'udp'
    ? udpExchange(server, query, expect, timeoutMs, signal)
    : tcpExchange(server, query, expect, timeoutMs, signal);
}

const aborted = () => new UgateError(ErrorCodes.ABORTED, 'DNS query aborted');
const timedOut = (ms: number) => new UgateError(ErrorCodes.TIMEOUT, `no reply within ${ms} ms`);

/** Settle-once plumbing shared by both transports: timer, abort signal, cleanup. */
function settleOnce(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  cleanup: () => void,
  resolve: (r: DnsExchangeResult) => void,
  reject: (e: Error) => void,
): (err: Error | undefined, r?: DnsExchangeResult) => void {
  let settled = false;
  const finish = (err: Error | undefined, r?: DnsExchangeResult) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    cleanup();
    if (err || !r) reject(err ?? new UgateError(ErrorCodes.INTERNAL, 'DNS exchange ended without a reply'));
    else resolve(r);
  };
  const onAbort = () => finish(aborted());
  const timer = setTimeout(() => finish(timedOut(timeoutMs)), timeoutMs);
  signal?.addEventListener('abort', onAbort, { once: true });
  return finish;
}

function udpExchange(
  server: Target,
  query: Buffer,
  expect: DnsExpect,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<DnsExchangeResult> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted());
    const sock = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const finish = settleOnce(
      timeoutMs,
      signal,
      () => {
        try {
          sock.close();
        } catch {
          // already closed
        }
      },
      resolve,
      reject,
    );
    sock.on('error', (e) => finish(toUgateError(e, ErrorCodes.UNREACHABLE)));
    // A connected socket only receives from the server and reports ICMP "port unreachable" as an error.
    sock.on('message', (msg) => {
      const packet = matchReply(msg, expect);
      if (packet) finish(undefined, { reply: msg, packet });
    });
    sock.connect(server.port, server.host, (err?: Error) => {
      if (err) return finish(toUgateError(err, ErrorCodes.UNREACHABLE));
      try {
        sock.send(query, (e) => {
          if (e) finish(toUgateError(e, ErrorCodes.UNREACHABLE));
        });
      } catch (e) {
        // Closed meanwhile (timeout or abort): already settled.
        finish(toUgateError(e, ErrorCodes.UNREACHABLE));
      }
    });
  });
}

function tcpExchange(
  server: Target,
  query: Buffer,
  expect: DnsExpect,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<DnsExchangeResult> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted());
    const sock = connect({ host: server.host, port: server.port });
    const finish = settleOnce(timeoutMs, signal, () => sock.destroy(), resolve, reject);
    let buf = Buffer.alloc(0);
    sock.on('error', (e) => finish(toUgateError(e, ErrorCodes.UNREACHABLE)));
    sock.on('close', () => finish(new UgateError(ErrorCodes.UNREACHABLE, 'connection closed before the reply')));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      sock.write(Buffer.concat([len, query]));
    });
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
      const packet = matchReply(msg, expect);
      if (packet) finish(undefined, { reply: msg, packet });
      else finish(new UgateError(ErrorCodes.UNREACHABLE, 'the reply does not answer the query'));
    });
  });
}

// ---- client --------------------------------------------------------------------------------

export interface DnsQueryOptions {
  /** How long to wait for each server (and for the TCP retry after a truncated reply). Default 1000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Ask over TCP from the start. */
  tcp?: boolean;
}

export interface DnsResponse {
  /** NXDOMAIN and NODATA (NOERROR without answers) are answers; every other rcode is a failure. */
  readonly rcode: 'NOERROR' | 'NXDOMAIN';
  readonly answers: readonly DnsRecord[];
  readonly authorities: readonly DnsRecord[];
  /** The AD bit: the server says it validated the answer with DNSSEC. */
  readonly authentic: boolean;
  /** The server that answered, `host:port`. */
  readonly server: string;
  readonly transport: DnsTransport;
}

/** A DNS server address: an IP literal with an optional port (default 53). */
export function parseDnsServer(text: string): Target {
  let t: Target;
  try {
    t = parseTarget(text, 53);
  } catch (e) {
    throw new UgateError(ErrorCodes.CONFIG, `DNS server ${JSON.stringify(text)}: ${(e as Error).message}`, { cause: e });
  }
  if (!isIP(t.host)) throw new UgateError(ErrorCodes.CONFIG, `DNS server ${JSON.stringify(text)} must be an IP address`);
  return t;
}

/**
 * Ask `servers` in order for `name`/`type`: UDP first (random id, EDNS 1232), TCP when the reply is
 * truncated. A server that times out, fails, or answers SERVFAIL/REFUSED/other errors is skipped;
 * when none answers the query fails with UNREACHABLE naming each server's failure.
 */
export async function dnsQuery(
  servers: readonly string[],
  name: string,
  type: RecordType,
  opts: DnsQueryOptions = {},
): Promise<DnsResponse> {
  return query(servers.map(parseDnsServer), name, type, opts);
}

async function query(servers: readonly Target[], name: string, type: RecordType, opts: DnsQueryOptions): Promise<DnsResponse> {
  const qname = name.toLowerCase().replace(/\.$/, '');
  if (!isValidHost(qname)) throw new UgateError(ErrorCodes.BAD_REQUEST, `invalid DNS name ${JSON.stringify(name)}`);
  if (servers.length === 0) throw new UgateError(ErrorCodes.CONFIG, 'no DNS servers configured');
  const timeoutMs = opts.timeoutMs ?? 1000;
  const failures: string[] = [];
  for (const server of servers) {
    let transport: DnsTransport = opts.tcp ? 'tcp' : 'udp';
    try {
      let r = await ask(server, qname, type, transport, timeoutMs, opts.signal);
      if (r.flag_tc && transport === 'udp') {
        transport = 'tcp';
        r = await ask(server, qname, type, transport, timeoutMs, opts.signal);
      }
      const rcode = rcodeName(r);
      if (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN') {
        failures.push(`${formatTarget(server)} answered ${rcode}`);
        continue;
      }
      return {
        rcode,
        answers: r.answers ?? [],
        authorities: r.authorities ?? [],
        authentic: r.flag_ad,
        server: formatTarget(server),
        transport,
      };
    } catch (e) {
      if (opts.signal?.aborted) throw aborted();
      failures.push(`${formatTarget(server)} over ${transport}: ${(e as Error).message}`);
    }
  }
  throw new UgateError(ErrorCodes.UNREACHABLE, `DNS ${type} ${qname}: no server answered (${failures.join('; ')})`);
}

async function ask(
  server: Target,
  name: string,
  type: RecordType,
  transport: DnsTransport,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<DecodedPacket> {
  const id = randomInt(0, 0x10000);
  const packet: Packet = {
    type: 'query',
    id,
    // AD in a query asks a validating resolver to report whether it validated (RFC 6840 §5.7).
    flags: RECURSION_DESIRED | AUTHENTIC_DATA,
    questions: [{ name, type, class: 'IN' }],
    additionals: [EDNS_OPT],
  };
  const r = await dnsExchange(server, encode(packet), { id, name, type, class: 'IN' }, transport, timeoutMs, signal);
  return r.packet;
}

// ---- helpers -------------------------------------------------------------------------------

/** The PTR owner name for an IP address (`in-addr.arpa` / `ip6.arpa`); IPv4-mapped IPv6 uses the IPv4 name. */
export function reverseName(ip: string): string | undefined {
  if (isIP(ip) === 4) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const b = ipv6Bytes(ip);
  if (!b) return undefined;
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return reverseName([...b.subarray(12)].join('.'));
  const nibbles = [...b.toString('hex')].reverse();
  return `${nibbles.join('.')}.ip6.arpa`;
}

// ---- source --------------------------------------------------------------------------------

export interface DnsSourceInit {
  /** Resolvers asked in order, `ip:port` (port 53 by default). Point them at a validating resolver for DANE. */
  servers: string[];
  /** Name suffixes this source is asked about (`mesh.test` covers `a.mesh.test` and itself). Default: every name. */
  domains?: string[];
  /** Per-server query timeout. Default 1000 ms. */
  timeoutMs?: number;
  /** Cache time of "the name exists but nothing usable is published". Default 5 s. NXDOMAIN is `undefined`. */
  negativeTtlMs?: number;
  /** Record TTLs are clamped to [minTtlMs, maxTtlMs]. Defaults 1 s and 5 min. */
  minTtlMs?: number;
  maxTtlMs?: number;
  /** Use identities (TLSA, TXT `id=`) only from answers with the AD bit; endpoints that would rest on unvalidated ones are dropped. */
  requireAd?: boolean;
  /** Source name shown by `explain`. Default `dns`. */
  name?: string;
}

type Carrier = 'ssh' | 'hbone' | 'hbonec';

/** `_ugate.H TXT "v=ugate1 id=… carriers=ssh:15022,hbone:15008"`, parsed. */
export interface UgateTxt {
  readonly id?: string;
  readonly carriers: readonly { readonly carrier: Carrier; readonly port: number }[];
}

/**
 * Parse one `v=ugate1` TXT string strictly: space-separated `key=value` tokens after the version;
 * `carriers=` is required, `id=` must be a canonical node ID; unknown keys are ignored (later
 * versions may add keys). Returns the reason when the text is not a valid record.
 */
export function parseUgateTxt(text: string): UgateTxt | string {
  const tokens = text.trim().split(/\s+/);
  if (tokens[0] !== 'v=ugate1') return 'does not start with v=ugate1';
  const seen = new Set<string>();
  let id: string | undefined;
  let carriers: { carrier: Carrier; port: number }[] | undefined;
  for (const token of tokens.slice(1)) {
    const m = /^([a-z][a-z0-9-]*)=(.+)$/.exec(token);
    if (!m) return `bad token ${JSON.stringify(token)}`;
    const [, key = '', value = ''] = m;
    if (seen.has(key)) return `${key}= given twice`;
    seen.add(key);
    if (key === 'id') {
      if (!nodeIdDigest(value)) return `id= is not a node ID: ${JSON.stringify(value)}`;
      id = value;
    } else if (key === 'carriers') {
      carriers = [];
      for (const item of value.split(',')) {
        const c = /^(ssh|hbone|hbonec):(\d{1,5})$/.exec(item);
        const port = Number(c?.[2]);
        if (!c || port < 1 || port > 65535) return `bad carrier ${JSON.stringify(item)} (want ssh|hbone|hbonec:port)`;
        if (carriers.some((x) => x.carrier === c[1])) return `carrier ${c[1]} given twice`;
        carriers.push({ carrier: c[1] as Carrier, port });
      }
    }
  }
  if (!carriers) return 'no carriers=';
  return id ? { id, carriers } : { carriers };
}

/** Records with data and a TTL (everything but the EDNS OPT pseudo-record). */
type DataRecord = Exclude<DnsRecord, OptAnswer>;

/** One RRset as a lookup saw it: the records of one type at a name, after following CNAMEs. */
interface RRset<T extends DataRecord> {
  readonly name: string;
  readonly type: RecordType;
  readonly records: readonly T[];
  /** Smallest TTL (seconds) of the records and the CNAMEs leading to them; Infinity when empty. */
  readonly ttl: number;
  readonly authentic: boolean;
  readonly nxdomain: boolean;
  /** The canonical name, when CNAMEs led elsewhere. */
  readonly via?: string;
}

/** Where a carrier listens: from an SRV record or from the TXT record. */
interface Plan {
  readonly carrier: Carrier;
  readonly host: string;
  readonly port: number;
  readonly priority: number;
  readonly weight: number;
}

const txtText = (r: TxtAnswer): string => {
  const parts = Array.isArray(r.data) ? r.data : [r.data];
  return parts.map((p) => (typeof p === 'string' ? p : p.toString('utf8'))).join('');
};

const short = (id: string) => `${id.slice(0, 12)}…`;

/** What one lookup read: the RRsets its answer rests on (for the TTL and `detail`) and why anything was skipped. */
class Findings {
  readonly #used: RRset<DataRecord>[] = [];
  readonly #notes: string[] = [];

  use(set: RRset<DataRecord>): void {
    if (set.records.length) this.#used.push(set);
  }

  note(text: string): void {
    if (!this.#notes.includes(text)) this.#notes.push(text);
  }

  /** The smallest TTL of the records used, seconds. */
  ttl(): number {
    return Math.min(...this.#used.map((u) => u.ttl));
  }

  detail(host: string): string {
    const names = [...new Set(this.#used.map((u) => `${u.name} ${u.type}${u.via ? ` (CNAME ${u.via})` : ''}`))];
    return [names.length ? names.join(', ') : `nothing usable at ${host}`, ...this.#notes].join('; ');
  }
}

/** Run queries together; the first failure aborts the others. */
async function together<T extends readonly unknown[]>(ac: AbortController, ps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  try {
    return (await Promise.all(ps)) as T;
  } catch (e) {
    ac.abort();
    throw e;
  }
}

/**
 * A pull source over DNS. For a host H it reads, in one round: `_ugate-ssh._tcp.H` and
 * `_ugate-hbone._tcp.H` SRV, `_ugate.H` TXT, and H's A/AAAA; then, when carriers are published,
 * the SRV targets' addresses and `_<port>._tcp.<host>` TLSA for each carrier endpoint.
 * See README.md (DNS) for the record set.
 */
export function dnsSource(init: DnsSourceInit): PullSource {
  return new DnsSource(init);
}

class DnsSource implements PullSource {
  readonly name: string;
  readonly #servers: readonly Target[];
  readonly #domains: readonly string[];
  readonly #timeoutMs: number;
  readonly #negTtl: number;
  readonly #minTtl: number;
  readonly #maxTtl: number;
  readonly #requireAd: boolean;

  constructor(init: DnsSourceInit) {
    this.name = init.name ?? 'dns';
    this.#servers = init.servers.map(parseDnsServer);
    if (this.#servers.length === 0) throw new UgateError(ErrorCodes.CONFIG, 'dns source: servers must not be empty');
    this.#domains = (init.domains ?? []).map((d) =>
      d
        .toLowerCase()
        .replace(/^\*?\./, '')
        .replace(/\.$/, ''),
    );
    for (const d of this.#domains) {
      if (!isValidHost(d)) throw new UgateError(ErrorCodes.CONFIG, `dns source: invalid domain ${JSON.stringify(d)}`);
    }
    this.#timeoutMs = init.timeoutMs ?? 1000;
    this.#negTtl = init.negativeTtlMs ?? 5000;
    this.#minTtl = init.minTtlMs ?? 1000;
    this.#maxTtl = init.maxTtlMs ?? 300_000;
    if (!(this.#timeoutMs > 0) || !(this.#negTtl >= 0) || !(this.#minTtl >= 0) || !(this.#maxTtl >= this.#minTtl)) {
      throw new UgateError(ErrorCodes.CONFIG, 'dns source: need timeoutMs > 0, negativeTtlMs >= 0 and 0 <= minTtlMs <= maxTtlMs');
    }
    this.#requireAd = init.requireAd ?? false;
  }

  handles(target: Target): boolean {
    const h = target.host;
    return !isIP(h) && (this.#domains.length === 0 || this.#domains.some((d) => h === d || h.endsWith(`.${d}`)));
  }

  async lookup(target: Target, outer: AbortSignal): Promise<Answer | undefined> {
    const h = target.host;
    const ac = new AbortController();
    const signal = AbortSignal.any([outer, ac.signal]);
    const [ssh, hbone, txt, a, aaaa] = await together(ac, [
      this.#rrset<SrvAnswer>(`_ugate-ssh._tcp.${h}`, 'SRV', signal),
      this.#rrset<SrvAnswer>(`_ugate-hbone._tcp.${h}`, 'SRV', signal),
      this.#rrset<TxtAnswer>(`_ugate.${h}`, 'TXT', signal),
      this.#rrset<StringAnswer>(h, 'A', signal),
      this.#rrset<StringAnswer>(h, 'AAAA', signal),
    ] as const);
    const found = new Findings();
    const info = pickTxt(txt, found);
    const answer = (endpoints: Endpoint[]): Answer => ({
      endpoints,
      ttlMs: endpoints.length ? Math.min(this.#maxTtl, Math.max(this.#minTtl, found.ttl() * 1000)) : this.#negTtl,
      detail: found.detail(h),
    });

    // Carriers: SRV records if any, else the TXT record's list.
    let plans = [...srvPlans(ssh, 'ssh', found), ...srvPlans(hbone, 'hbone', found)];
    if (plans.length === 0 && info) {
      found.use(txt);
      plans = info.carriers.map((c) => ({ carrier: c.carrier, host: h, port: c.port, priority: 0, weight: 1 }));
    }
    if (plans.length === 0) {
      const ips = [...a.records, ...aaaa.records];
      if (ips.length === 0) return a.nxdomain && aaaa.nxdomain && !txt.records.length ? undefined : answer([]);
      found.use(a);
      found.use(aaaa);
      return answer(ips.map((r) => ({ carrier: 'direct', address: { host: r.data, port: target.port } })));
    }

    // Second round: the carrier hosts' addresses and each carrier endpoint's TLSA.
    const hosts = [...new Set(plans.map((p) => p.host))];
    const owners = [...new Set(plans.map(tlsaOwner))];
    const [addrSets, tlsaSets] = await together(ac, [
      Promise.all(
        hosts.map((host) =>
          host === h || isIP(host)
            ? [a, aaaa]
            : together(ac, [this.#rrset<StringAnswer>(host, 'A', signal), this.#rrset<StringAnswer>(host, 'AAAA', signal)]),
        ),
      ),
      Promise.all(owners.map((owner) => this.#rrset<TlsaAnswer>(owner, 'TLSA', signal))),
    ] as const);
    const addresses = new Map(hosts.map((host, i) => [host, addrSets[i]!]));
    const tlsa = new Map(owners.map((owner, i) => [owner, tlsaSets[i]!]));

    const endpoints: Endpoint[] = [];
    for (const plan of plans) {
      const sets = addresses.get(plan.host) ?? [];
      const ips = isIP(plan.host) ? [plan.host] : sets.flatMap((s) => s.records.map((r) => r.data));
      if (ips.length === 0) {
        found.note(`${plan.host} has no A/AAAA record`);
        continue;
      }
      if (!isIP(plan.host)) for (const s of sets) found.use(s);
      for (const identity of this.#identities(tlsa.get(tlsaOwner(plan))!, txt, info, found)) {
        for (const ip of ips) {
          const ep: Endpoint = {
            carrier: plan.carrier,
            address: { host: ip, port: plan.port },
            weight: plan.weight,
            priority: plan.priority,
          };
          endpoints.push(identity === undefined ? ep : { ...ep, identity });
        }
      }
    }
    return answer(endpoints);
  }

  async reverse(ip: string, signal: AbortSignal): Promise<string | undefined> {
    const name = reverseName(ip);
    if (!name) return undefined;
    const set = await this.#rrset<StringAnswer>(name, 'PTR', signal);
    return set.records[0]?.data.toLowerCase().replace(/\.$/, '') || undefined;
  }

  /**
   * Who must answer at an endpoint: each TLSA `3 1 1` key (several during a key rollover), else the
   * TXT `id=`, else nobody in particular (`[undefined]`). `[]` drops the endpoint (requireAd).
   */
  #identities(set: RRset<TlsaAnswer>, txt: RRset<TxtAnswer>, info: UgateTxt | undefined, found: Findings): (string | undefined)[] {
    const dane = daneIds(set, found);
    if (dane.length) {
      if (this.#requireAd && !set.authentic) {
        found.note(`${set.name} TLSA not DNSSEC-validated (AD bit clear): its endpoints are dropped`);
        return [];
      }
      found.use(set);
      if (info?.id && !dane.includes(info.id)) {
        found.note(`${set.name} TLSA (${dane.map(short).join(', ')}) disagrees with TXT id ${short(info.id)}: using the TLSA`);
      }
      return dane;
    }
    if (!info?.id) return [undefined];
    if (this.#requireAd && !txt.authentic) {
      found.note(`${txt.name} TXT not DNSSEC-validated (AD bit clear): endpoints that would use its id are dropped`);
      return [];
    }
    found.use(txt);
    return [info.id];
  }

  async #rrset<T extends DataRecord>(name: string, type: RecordType, signal: AbortSignal): Promise<RRset<T>> {
    // `_ugate-hbone._tcp.<a very long name>` can be too long to exist at all.
    if (!isValidHost(name)) return { name, type, records: [], ttl: Number.POSITIVE_INFINITY, authentic: false, nxdomain: true };
    const r = await query(this.#servers, name, type, { timeoutMs: this.#timeoutMs, signal });
    // Follow CNAMEs from the asked name: records of other owners are not ours to use.
    const owners = [name];
    let ttl = Number.POSITIVE_INFINITY;
    for (let i = 0; i < owners.length; i++) {
      const cname = r.answers.find((x) => x.type === 'CNAME' && x.name.toLowerCase() === owners[i]);
      if (cname?.type !== 'CNAME' || owners.includes(cname.data.toLowerCase())) continue;
      owners.push(cname.data.toLowerCase());
      ttl = Math.min(ttl, cname.ttl ?? 0);
    }
    const records = r.answers.filter((x) => x.type === type && owners.includes(x.name.toLowerCase())) as T[];
    for (const x of records) ttl = Math.min(ttl, x.ttl ?? 0);
    const set: RRset<T> = {
      name,
      type,
      records,
      ttl: records.length ? ttl : Number.POSITIVE_INFINITY,
      authentic: r.authentic,
      nxdomain: r.rcode === 'NXDOMAIN',
    };
    return owners.length > 1 ? { ...set, via: owners.at(-1) } : set;
  }
}

const tlsaOwner = (p: Plan) => `_${p.port}._tcp.${p.host}`;

/** One plan per SRV record; target "." means "decidedly not available here" (RFC 2782). */
function srvPlans(set: RRset<SrvAnswer>, carrier: Carrier, found: Findings): Plan[] {
  const plans: Plan[] = [];
  for (const r of set.records) {
    const host = r.data.target.toLowerCase().replace(/\.$/, '');
    if (host === '' || host === '.' || r.data.port === 0) {
      found.note(`${set.name} SRV to ${r.data.target}:${r.data.port} means "not available", skipped`);
      continue;
    }
    plans.push({ carrier, host, port: r.data.port, priority: r.data.priority ?? 0, weight: r.data.weight ?? 0 });
  }
  found.use(set);
  return plans;
}

/** The node IDs of the `3 1 1` records in a TLSA RRset, sorted; other usages/selectors/matching types are noted and ignored. */
function daneIds(set: RRset<TlsaAnswer>, found: Findings): string[] {
  const ids = new Set<string>();
  let ignored = 0;
  for (const r of set.records) {
    const d = r.data;
    if (d.usage === 3 && d.selector === 1 && d.matchingType === 1 && d.certificate.length === 32) ids.add(base32(d.certificate));
    else ignored++;
  }
  if (ignored) found.note(`${set.name}: ${ignored} TLSA record(s) other than 3 1 1 ignored`);
  return [...ids].sort();
}

/** The one valid `v=ugate1` record at `_ugate.H`, noting why others were ignored. */
function pickTxt(set: RRset<TxtAnswer>, found: Findings): UgateTxt | undefined {
  const valid: UgateTxt[] = [];
  for (const r of set.records) {
    const text = txtText(r);
    const parsed = parseUgateTxt(text);
    if (typeof parsed === 'string') found.note(`${set.name} TXT ${JSON.stringify(text.slice(0, 80))} ignored: ${parsed}`);
    else valid.push(parsed);
  }
  if (valid.length > 1) {
    found.note(`${set.name}: ${valid.length} v=ugate1 TXT records, all ignored (publish exactly one)`);
    return undefined;
  }
  return valid[0];
}
