/**
 * The built-in DNS server (opt-in, port 15053 by convention): answers `<id>.m` names with their
 * VIP6, names under the mesh domain from a lookup callback, and relays everything else to
 * forwarders. UDP and TCP on the same port.
 */
import { randomInt } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIP, type Server, type Socket } from 'node:net';
import {
  boundAddresses,
  ErrorCodes,
  formatTarget,
  ipv6Bytes,
  isValidHost,
  type Listener,
  type Logger,
  parseListen,
  silentLogger,
  type Target,
  UgateError,
  vip6FromId,
} from '@ugate/core';
import {
  AUTHORITATIVE_ANSWER,
  type DecodedPacket,
  type Answer as DnsRecord,
  decode,
  encode,
  type Packet,
  type Question,
  RECURSION_AVAILABLE,
  RECURSION_DESIRED,
  TRUNCATED_RESPONSE,
} from 'dns-packet';
import { type DnsTransport, dnsExchange, EDNS_OPT, parseDnsServer } from './dns.js';

export interface DnsServerRecords {
  readonly aaaa?: readonly string[];
  readonly a?: readonly string[];
}

export interface DnsServerInit {
  /** `host:port` for both UDP and TCP; port 0 picks a free one. */
  listen: string;
  /** The mesh domain served authoritatively (e.g. `mesh.internal`). `m` (for `<id>.m`) is always served. */
  domain?: string;
  /** The mesh /64 VIP6 prefix. Default `fd00::`. */
  meshPrefix?: string;
  /**
   * Records for a name (lower case, no trailing dot, exactly as asked: `web.mesh.internal`, `web`).
   * `undefined` = unknown: NXDOMAIN inside our domain, forwarded outside it.
   */
  lookup: (name: string) => DnsServerRecords | undefined;
  /** Resolvers (`ip:port`) for every other name. None: REFUSED. */
  forwarders?: string[];
  logger?: Logger;
  /** TTL of our answers, seconds. Default 60. */
  ttl?: number;
  /** How long to wait for each forwarder. Default 2000 ms. */
  forwardTimeoutMs?: number;
}

const Rcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** `<52 base32>.m` or `<52 base32>.m.<domain>`. */
const SELF = /^([a-z2-7]{52})\.m(?:\.(.+))?$/;

/** A TCP client that stops reading our replies is cut off past this much unsent data. */
const MAX_TCP_BACKLOG = 1 << 20;
const TCP_IDLE_MS = 10_000;
/** Forwarded queries in flight at once; past this, SERVFAIL (each one holds a socket). */
const MAX_FORWARDS = 512;

const noop = (): void => {};

export function dnsServer(init: DnsServerInit): Listener {
  const address = parseListen(init.listen);
  const domain = init.domain?.toLowerCase().replace(/^\.|\.$/g, '');
  const prefix = init.meshPrefix ?? 'fd00::';
  if (!ipv6Bytes(prefix.split('/')[0]!)) {
    throw new UgateError(ErrorCodes.CONFIG, `dns: meshPrefix ${JSON.stringify(prefix)} is not an IPv6 address`);
  }
  if (domain !== undefined && !isValidHost(domain))
    throw new UgateError(ErrorCodes.CONFIG, `dns: invalid domain ${JSON.stringify(init.domain)}`);
  const ttl = init.ttl ?? 60;
  if (!Number.isInteger(ttl) || ttl < 0) throw new UgateError(ErrorCodes.CONFIG, 'dns: ttl must be a whole number of seconds >= 0');
  const forwardTimeoutMs = init.forwardTimeoutMs ?? 2000;
  if (!(forwardTimeoutMs > 0)) throw new UgateError(ErrorCodes.CONFIG, 'dns: forwardTimeoutMs must be > 0');
  return new DnsServer(address, {
    domain: domain || undefined,
    prefix,
    lookup: init.lookup,
    forwarders: (init.forwarders ?? []).map(parseDnsServer),
    log: (init.logger ?? silentLogger).child({ component: 'dns' }),
    ttl,
    forwardTimeoutMs,
  });
}

interface Config {
  readonly domain: string | undefined;
  readonly prefix: string;
  readonly lookup: DnsServerInit['lookup'];
  readonly forwarders: readonly Target[];
  readonly log: Logger;
  readonly ttl: number;
  readonly forwardTimeoutMs: number;
}

/** What we answer locally: rcode, records, and the zone whose SOA goes in the authority section. */
interface Local {
  readonly rcode: number;
  readonly answers: DnsRecord[];
  readonly zone?: string;
  /** Set AA: the answer is ours (a zone we serve or a name the lookup knows). */
  readonly authoritative?: boolean;
}

class DnsServer implements Listener {
  readonly name = 'dns';
  readonly #address: Target;
  readonly #cfg: Config;
  readonly #tcp: Server;
  readonly #clients = new Set<Socket>();
  #udp: UdpSocket | undefined;
  #closing = new AbortController();
  #forwarding = 0;

  constructor(address: Target, cfg: Config) {
    this.#address = address;
    this.#cfg = cfg;
    this.#tcp = createServer((sock) => this.#accept(sock));
    this.#tcp.on('error', (e) => {
      if (this.#tcp.listening) cfg.log.error({ code: ErrorCodes.INTERNAL, err: e.message }, 'dns: tcp listener error');
    });
  }

  async listen(): Promise<void> {
    const { host, port } = this.#address;
    // Port 0: TCP picks the port, UDP must get the same one; another process may hold it, so retry.
    for (let attempt = 1; ; attempt++) {
      await this.#listenTcp(host, port);
      const bound = (this.#tcp.address() as { port: number }).port;
      try {
        this.#udp = await this.#listenUdp(host, bound);
        this.#closing = new AbortController();
        return;
      } catch (e) {
        await new Promise<void>((resolve) => this.#tcp.close(() => resolve()));
        if (port !== 0 || attempt >= 5) {
          throw new UgateError(
            ErrorCodes.CONFIG,
            `dns cannot listen on udp ${formatTarget({ host, port: bound })}: ${(e as Error).message}`,
            {
              cause: e,
            },
          );
        }
      }
    }
  }

  #listenTcp(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) =>
        reject(new UgateError(ErrorCodes.CONFIG, `dns cannot listen on tcp ${formatTarget({ host, port })}: ${e.message}`, { cause: e }));
      this.#tcp.once('error', onError);
      this.#tcp.listen({ host, port }, () => {
        this.#tcp.off('error', onError);
        resolve();
      });
    });
  }

  #listenUdp(host: string, port: number): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const sock = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
      const onError = (e: Error) => {
        sock.close();
        reject(e);
      };
      sock.once('error', onError);
      sock.on('message', (msg, rinfo) => this.#udpQuery(sock, msg, rinfo));
      sock.bind({ address: host, port, exclusive: true }, () => {
        sock.off('error', onError);
        sock.on('error', (e) => this.#cfg.log.error({ code: ErrorCodes.INTERNAL, err: e.message }, 'dns: udp socket error'));
        resolve(sock);
      });
    });
  }

  async close(): Promise<void> {
    this.#closing.abort();
    const udp = this.#udp;
    this.#udp = undefined;
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
    for (const c of this.#clients) c.destroy();
    if (this.#tcp.listening) await new Promise<void>((resolve) => this.#tcp.close(() => resolve()));
  }

  addresses(): string[] {
    return boundAddresses(this.#tcp.address());
  }

  // ---- transports -------------------------------------------------------------------------

  #udpQuery(sock: UdpSocket, msg: Buffer, rinfo: { address: string; port: number }): void {
    const src = formatTarget({ host: rinfo.address, port: rinfo.port });
    this.#respond(msg, 'udp', src).then(
      (reply) => {
        if (reply && this.#udp === sock) sock.send(reply, rinfo.port, rinfo.address, noop);
      },
      (e) => this.#cfg.log.error({ code: ErrorCodes.INTERNAL, src, err: String(e) }, 'dns: query failed'),
    );
  }

  #accept(sock: Socket): void {
    const src = formatTarget({ host: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 });
    this.#clients.add(sock);
    sock.on('error', noop);
    sock.on('close', () => this.#clients.delete(sock));
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        this.#respond(msg, 'tcp', src).then(
          (reply) => {
            if (!reply) sock.destroy();
            else if (!sock.destroyed) this.#tcpWrite(sock, reply);
          },
          (e) => {
            sock.destroy();
            this.#cfg.log.error({ code: ErrorCodes.INTERNAL, src, err: String(e) }, 'dns: query failed');
          },
        );
      }
    });
  }

  #tcpWrite(sock: Socket, reply: Buffer): void {
    if (sock.writableLength > MAX_TCP_BACKLOG) {
      sock.destroy();
      return;
    }
    const len = Buffer.alloc(2);
    len.writeUInt16BE(reply.length);
    sock.write(Buffer.concat([len, reply]));
  }

  // ---- answering --------------------------------------------------------------------------

  /** The reply to send, or undefined to drop the packet (UDP) / close the connection (TCP). */
  async #respond(msg: Buffer, transport: DnsTransport, src: string): Promise<Buffer | undefined> {
    let q: DecodedPacket;
    try {
      q = decode(msg);
    } catch (e) {
      this.#cfg.log.debug({ code: ErrorCodes.BAD_REQUEST, src, transport, err: (e as Error).message }, 'dns: malformed packet dropped');
      return undefined;
    }
    if (q.flag_qr) {
      this.#cfg.log.debug({ code: ErrorCodes.BAD_REQUEST, src, transport }, 'dns: response packet dropped');
      return undefined;
    }
    const questions = q.questions ?? [];
    const question = questions[0];
    if (((q.flags ?? 0) >> 11) & 0xf) return this.#encode(q, transport, { rcode: Rcode.NOTIMP, answers: [] });
    if (questions.length !== 1 || !question) return this.#encode(q, transport, { rcode: Rcode.FORMERR, answers: [] });

    const name = question.name.toLowerCase().replace(/\.$/, '');
    let local: Local | undefined;
    try {
      local = (question.class ?? 'IN') === 'IN' ? this.#local(name, question.type, question.name) : undefined;
    } catch (e) {
      this.#cfg.log.warn({ code: ErrorCodes.INTERNAL, src, name, err: String(e) }, 'dns: lookup failed');
      return this.#encode(q, transport, { rcode: Rcode.SERVFAIL, answers: [] });
    }
    if (local) return this.#encode(q, transport, local);
    if (this.#cfg.forwarders.length === 0) return this.#encode(q, transport, { rcode: Rcode.REFUSED, answers: [] });
    return this.#forward(msg, q, question, transport, src);
  }

  /** Our answer for a name, or undefined when the name is not ours to answer. */
  #local(name: string, type: string, asked: string): Local | undefined {
    const { domain, ttl } = this.#cfg;
    const zone =
      name === 'm' || name.endsWith('.m') ? 'm' : domain && (name === domain || name.endsWith(`.${domain}`)) ? domain : undefined;
    const self = SELF.exec(name);
    let records: DnsServerRecords | undefined;
    if (self && (self[2] === undefined || self[2] === domain)) {
      const vip = vip6FromId(self[1]!, this.#cfg.prefix);
      records = vip ? { aaaa: [vip] } : undefined;
    } else {
      records = this.#cfg.lookup(name);
    }
    if (!records) {
      if (!zone) return undefined;
      if (name !== zone) return { rcode: Rcode.NXDOMAIN, answers: [], zone, authoritative: true };
      records = {};
    }
    const answers: DnsRecord[] = [];
    const add = (t: 'A' | 'AAAA', ips: readonly string[] | undefined, family: 4 | 6) => {
      for (const ip of ips ?? []) {
        if (isIP(ip) === family) answers.push({ type: t, name: asked, ttl, data: ip });
        else this.#cfg.log.debug({ code: ErrorCodes.INTERNAL, name, ip }, 'dns: lookup returned an invalid address, skipped');
      }
    };
    if (type === 'A' || type === 'ANY') add('A', records.a, 4);
    if (type === 'AAAA' || type === 'ANY') add('AAAA', records.aaaa, 6);
    if (type === 'SOA' && zone && name === zone) answers.push(soa(zone, asked, ttl));
    return zone ? { rcode: Rcode.NOERROR, answers, zone, authoritative: true } : { rcode: Rcode.NOERROR, answers, authoritative: true };
  }

  #encode(q: DecodedPacket, transport: DnsTransport, local: Local): Buffer {
    const opt = q.additionals?.find((a) => a.type === 'OPT');
    const flags =
      ((q.flags ?? 0) & RECURSION_DESIRED) |
      (local.authoritative ? AUTHORITATIVE_ANSWER : 0) |
      (this.#cfg.forwarders.length ? RECURSION_AVAILABLE : 0) |
      local.rcode;
    const packet: Packet = {
      type: 'response',
      id: q.id ?? 0,
      flags,
      questions: q.questions ?? [],
      answers: local.answers,
      // Negative answers carry the zone's SOA so resolvers know how long to cache them (RFC 2308).
      authorities: local.zone && local.answers.length === 0 ? [soa(local.zone, local.zone, this.#cfg.ttl)] : [],
      additionals: opt ? [EDNS_OPT] : [],
    };
    const out = encode(packet);
    const limit = transport === 'tcp' ? 0xffff : opt?.type === 'OPT' ? Math.max(512, Math.min(opt.udpPayloadSize, 4096)) : 512;
    if (out.length <= limit) return out;
    return encode({ ...packet, flags: flags | TRUNCATED_RESPONSE, answers: [], authorities: [] });
  }

  /** Forward a query that is not ours, within the in-flight limit. */
  async #forward(msg: Buffer, q: DecodedPacket, question: Question, transport: DnsTransport, src: string): Promise<Buffer> {
    if (this.#forwarding >= MAX_FORWARDS) {
      this.#cfg.log.debug({ code: ErrorCodes.UNREACHABLE, src, name: question.name }, 'dns: too many forwarded queries in flight');
      return this.#encode(q, transport, { rcode: Rcode.SERVFAIL, answers: [] });
    }
    this.#forwarding++;
    try {
      return await this.#relay(msg, q, question, transport, src);
    } finally {
      this.#forwarding--;
    }
  }

  /** Relay the query (with a fresh id) to the forwarders in order; reply with the client's id. */
  async #relay(msg: Buffer, q: DecodedPacket, question: Question, transport: DnsTransport, src: string): Promise<Buffer> {
    const id = randomInt(0, 0x10000);
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    const expect = { id, name: question.name, type: question.type, class: question.class ?? 'IN' };
    const failures: string[] = [];
    for (const f of this.#cfg.forwarders) {
      try {
        const r = await dnsExchange(f, out, expect, transport, this.#cfg.forwardTimeoutMs, this.#closing.signal);
        const reply = Buffer.from(r.reply);
        reply.writeUInt16BE(q.id ?? 0, 0);
        return reply;
      } catch (e) {
        failures.push(`${formatTarget(f)}: ${(e as Error).message}`);
        if (this.#closing.signal.aborted) break;
      }
    }
    this.#cfg.log.debug(
      { code: ErrorCodes.UNREACHABLE, src, name: question.name, type: question.type, err: failures.join('; ') },
      'dns: no forwarder answered',
    );
    return this.#encode(q, transport, { rcode: Rcode.SERVFAIL, answers: [] });
  }
}

function soa(zone: string, owner: string, ttl: number): DnsRecord {
  return {
    type: 'SOA',
    name: owner,
    ttl,
    data: { mname: zone, rname: `hostmaster.${zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: ttl },
  };
}
