import type { Duplex } from 'node:stream';
import { ErrorCodes, toUgateError, UgateError } from './errors.js';
import type { Policy } from './policy.js';
import { abortStream, type RelayStats, relay } from './relay.js';
import type { Router } from './router.js';
import { formatTarget } from './target.js';
import {
  type Counter,
  type Dialer,
  type Gauge,
  type Histogram,
  type Logger,
  type Metrics,
  noopMetrics,
  type Resolver,
  type StreamRequest,
  type Upstream,
} from './types.js';

export interface SwitchInit {
  router: Router;
  /** Default: the router alone (`routerResolver`). */
  resolver?: Resolver;
  policy: Policy;
  dialers: Dialer[];
  logger: Logger;
  /** Relay idle timeout. Default 1 h; 0 disables. */
  idleTimeoutMs?: number;
  metrics?: Metrics;
}

export interface Opened {
  readonly stream: Duplex;
  readonly upstream: Upstream;
}

/** A stream being relayed, as the admin API lists it. */
export interface LiveStream {
  readonly req: StreamRequest;
  readonly upstream: Upstream;
  readonly started: number;
  /** Live byte counts (in = client to upstream). */
  readonly stats: RelayStats;
}

interface Live extends LiveStream {
  readonly client: Duplex;
  /** Why we closed it (admin, policy): reported instead of the relay's view. */
  closedBy?: UgateError;
  /** Bytes already added to the byte counters (they move while the stream lives). */
  counted: { in: number; out: number };
}

export interface SwitchCounters {
  opened: number;
  failed: number;
  bytesIn: number;
  bytesOut: number;
  byCode: Record<string, number>;
}

/** A resolver that asks only the routing table. */
export function routerResolver(router: Router): Resolver {
  return { resolve: async (target) => [router.resolve(target)], resolveNow: (target) => [router.resolve(target)] };
}

let seq = 0;
/** Short, process-unique stream id for logs. */
export function newSid(): string {
  return (++seq).toString(36);
}

/**
 * The one data path: authorize → resolve → dial, then relay with an access
 * line when the stream ends. Listeners build a StreamRequest, call `open`, send
 * their protocol's success reply, then `serve`. `open` logs failures itself, so
 * each stream produces exactly one access line.
 */
/** Dial failures that say "this endpoint", not "this stream": worth trying another endpoint. */
const RETRYABLE = new Set<string>([ErrorCodes.UNREACHABLE, ErrorCodes.TIMEOUT, ErrorCodes.REFUSED, ErrorCodes.AUTH]);

export class Switch {
  readonly router: Router;
  /** Where targets are resolved: the router alone, or discovery in front of it. */
  resolver: Resolver;
  readonly policy: Policy;
  readonly #dialers = new Map<string, Dialer>();
  readonly #log: Logger;
  readonly #idle: number;
  readonly #live = new Map<Duplex, Live>();
  #drained: (() => void) | undefined;
  /**
   * Where this switch and the components built around it (listeners, carriers) report metrics.
   * Components register their own metrics here, each once per sink.
   */
  readonly metrics: Metrics;
  readonly #m: { streams: Counter; opened: Counter; bytes: Counter; active: Gauge; openSeconds: Histogram; denied: Counter };
  /** Moves live streams' bytes into the counters while streams are being relayed. */
  #bytesTimer: NodeJS.Timeout | undefined;
  readonly counters: SwitchCounters = { opened: 0, failed: 0, bytesIn: 0, bytesOut: 0, byCode: {} };

  constructor(init: SwitchInit) {
    this.router = init.router;
    this.resolver = init.resolver ?? routerResolver(init.router);
    this.policy = init.policy;
    this.#log = init.logger;
    this.#idle = init.idleTimeoutMs ?? 3_600_000;
    for (const d of init.dialers) this.addDialer(d);
    const m = init.metrics ?? noopMetrics;
    this.metrics = m;
    this.#m = {
      streams: m.counter('ugate_streams_total', 'Streams ended or refused, by accepting protocol, carrier and result code', [
        'proto',
        'carrier',
        'result',
      ]),
      opened: m.counter('ugate_streams_opened_total', 'Streams opened (authorized, routed and dialed), by protocol and carrier', [
        'proto',
        'carrier',
      ]),
      bytes: m.counter('ugate_stream_bytes_total', 'Bytes relayed (counted while streams live); in = client to upstream', ['direction']),
      active: m.gauge('ugate_streams_active', 'Streams being relayed now'),
      openSeconds: m.histogram(
        'ugate_stream_open_seconds',
        'Time to dial the upstream, by carrier',
        ['carrier'],
        [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
      ),
      denied: m.counter('ugate_policy_denied_total', 'Streams refused because the policy denies them, by protocol', ['proto']),
    };
  }

  addDialer(d: Dialer): void {
    this.#dialers.set(d.carrier, d);
  }

  get active(): number {
    return this.#live.size;
  }

  /** Authorize, route and dial. Throws a UgateError (already logged). */
  async open(req: StreamRequest): Promise<Opened> {
    let upstream: Upstream | undefined;
    try {
      this.policy.authorize(req);
      const candidates = this.resolver.resolveNow?.(req.target) ?? (await this.resolver.resolve(req.target, req.signal));
      let stream: Duplex | undefined;
      for (let i = 0; i < candidates.length; i++) {
        const up = candidates[i]!;
        upstream = up;
        const dialer = this.#dialers.get(up.carrier);
        try {
          if (!dialer) throw new UgateError(ErrorCodes.NO_ROUTE, `carrier ${up.carrier} is not enabled on this node`);
          const t0 = performance.now();
          stream = await dialer.dial(req, up);
          this.#m.openSeconds.observe((performance.now() - t0) / 1000, { carrier: up.carrier });
          this.resolver.report?.(up, true);
          break;
        } catch (e) {
          const err = toUgateError(e);
          if (dialer) this.resolver.report?.(up, false);
          // Nothing was sent yet: another endpoint of the same name may work.
          if (i === candidates.length - 1 || req.signal?.aborted || !RETRYABLE.has(err.code)) throw err;
          this.#log.debug(
            { sid: req.sid, code: err.code, err: err.message, carrier: up.carrier, via: up.via },
            'dial failed, trying the next endpoint',
          );
        }
      }
      if (!stream || !upstream) throw new UgateError(ErrorCodes.NO_ROUTE, `no route to ${formatTarget(req.target)}`);
      if (req.signal?.aborted) {
        abortStream(stream);
        throw new UgateError(ErrorCodes.ABORTED, 'requester went away');
      }
      this.counters.opened++;
      this.#m.opened.inc({ proto: req.protocol, carrier: upstream.carrier });
      return { stream, upstream };
    } catch (e) {
      const err = toUgateError(e);
      if (err.code === ErrorCodes.POLICY_DENIED) this.#m.denied.inc({ proto: req.protocol });
      this.#access(req, upstream, { bytesAtoB: 0, bytesBtoA: 0, durationMs: 0, error: err }, true);
      throw err;
    }
  }

  /** Relay an opened stream to the client side and log the access line. Never throws. */
  async serve(req: StreamRequest, client: Duplex, opened: Opened): Promise<void> {
    const live: Live = {
      req,
      upstream: opened.upstream,
      started: Date.now(),
      stats: { bytesAtoB: 0, bytesBtoA: 0, durationMs: 0 },
      client,
      counted: { in: 0, out: 0 },
    };
    this.#live.set(client, live);
    this.#m.active.inc();
    this.#bytesTimer ??= setInterval(() => this.flushMetrics(), 1000).unref();
    const stats = await relay(client, opened.stream, { idleTimeoutMs: this.#idle, stats: live.stats });
    if (live.closedBy) stats.error = live.closedBy;
    this.#live.delete(client);
    this.#m.active.dec();
    this.#m.bytes.inc({ direction: 'in' }, stats.bytesAtoB - live.counted.in);
    this.#m.bytes.inc({ direction: 'out' }, stats.bytesBtoA - live.counted.out);
    if (this.#live.size === 0) {
      clearInterval(this.#bytesTimer);
      this.#bytesTimer = undefined;
    }
    this.counters.bytesIn += stats.bytesAtoB;
    this.counters.bytesOut += stats.bytesBtoA;
    this.#access(req, opened.upstream, stats);
    if (this.#live.size === 0) this.#drained?.();
  }

  /** open + serve; on failure the client is aborted. For listeners with no reply phase. */
  async pipe(req: StreamRequest, client: Duplex): Promise<void> {
    // Nobody else listens on the client while we dial: an error (a reset) must not go uncaught.
    // serve's relay then sees the client already closed and aborts the upstream.
    const early = () => {};
    client.on('error', early);
    let opened: Opened;
    try {
      opened = await this.open(req);
    } catch {
      abortStream(client);
      return;
    } finally {
      client.off('error', early);
    }
    await this.serve(req, client, opened);
  }

  /**
   * Add the bytes live streams moved since the last call to the byte counters (also done every
   * second while streams live, and for the rest when a stream ends). Call before a scrape for
   * exact totals.
   */
  flushMetrics(): void {
    let bytesIn = 0;
    let bytesOut = 0;
    for (const l of this.#live.values()) {
      bytesIn += l.stats.bytesAtoB - l.counted.in;
      bytesOut += l.stats.bytesBtoA - l.counted.out;
      l.counted.in = l.stats.bytesAtoB;
      l.counted.out = l.stats.bytesBtoA;
    }
    if (bytesIn > 0) this.#m.bytes.inc({ direction: 'in' }, bytesIn);
    if (bytesOut > 0) this.#m.bytes.inc({ direction: 'out' }, bytesOut);
  }

  /** Streams being relayed now. */
  streams(): LiveStream[] {
    return [...this.#live.values()].map(({ req, upstream, started, stats }) => ({ req, upstream, started, stats }));
  }

  /** Abort a live stream; its access line carries `reason`. False when no such stream. */
  closeStream(sid: string, reason: UgateError): boolean {
    for (const l of this.#live.values()) {
      if (l.req.sid !== sid) continue;
      l.closedBy = reason;
      abortStream(l.client, reason);
      return true;
    }
    return false;
  }

  /** Check live streams against the current policy; close those it now denies. Returns their sids. */
  reauthorize(): string[] {
    const closed: string[] = [];
    for (const l of this.#live.values()) {
      try {
        this.policy.authorize(l.req);
      } catch (e) {
        const err = toUgateError(e);
        l.closedBy = new UgateError(err.code, `closed: the policy now denies it (${err.message})`);
        abortStream(l.client, l.closedBy);
        closed.push(l.req.sid);
      }
    }
    return closed;
  }

  /** Wait until live streams end or the deadline passes, then abort what is left. */
  async drain(deadlineMs: number): Promise<void> {
    if (this.#live.size > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, deadlineMs);
        this.#drained = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    for (const s of this.#live.keys()) abortStream(s);
    // Let the aborted relays finish, so each stream still gets its access line.
    if (this.#live.size > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        this.#drained = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  #access(
    req: StreamRequest,
    up: Upstream | undefined,
    s: { bytesAtoB: number; bytesBtoA: number; durationMs: number; error?: UgateError },
    opening = false,
  ): void {
    const result = s.error?.code ?? 'ok';
    this.#m.streams.inc({ proto: req.protocol, carrier: up?.carrier ?? 'none', result });
    if (s.error) {
      this.counters.failed++;
      this.counters.byCode[result] = (this.counters.byCode[result] ?? 0) + 1;
    }
    // The usual line, an ok stream at info: not built when info lines are dropped.
    if (!s.error && this.#log.isLevelEnabled?.('info') === false) return;
    const line = {
      sid: req.sid,
      proto: req.protocol,
      target: formatTarget(req.target),
      src: `${req.source.address}:${req.source.port}`,
      peer: req.peer.id ?? req.peer.principals[0] ?? req.peer.kind,
      carrier: up?.carrier,
      via: up?.via,
      bytesIn: s.bytesAtoB,
      bytesOut: s.bytesBtoA,
      durationMs: s.durationMs,
      result,
      code: s.error?.code,
      err: s.error?.message,
    };
    if (s.error && s.error.code !== ErrorCodes.ABORTED) this.#log.warn(line, 'stream');
    // Aborted while still dialing (the client left): floods of these must not flood the log.
    else if (s.error && opening) this.#log.debug(line, 'stream');
    else this.#log.info(line, 'stream');
  }
}
