import type { Duplex } from 'node:stream';
import type { AbortLike } from './cancel.js';
import type { Target } from './target.js';

/** Who is on the other side of the hop that delivered a stream. */
export interface PeerIdentity {
  /** How the peer proved itself. `local` = a process on this node (egress ports, library calls). */
  readonly kind: 'local' | 'ssh-key' | 'ssh-cert' | 'spiffe' | 'password' | 'anonymous';
  /** Node ID (base32 SHA-256 of the SPKI) when the peer presented a key. */
  readonly id?: string;
  /** Names the peer is known by: certificate principals, user name, configured names. */
  readonly principals: readonly string[];
}

export interface StreamRequest {
  /** Short stream id for logs. */
  readonly sid: string;
  readonly target: Target;
  /** The accepting protocol: socks5, http-connect, http-forward, ssh-direct, ssh-reverse, api. */
  readonly protocol: string;
  readonly source: { readonly address: string; readonly port: number };
  readonly peer: PeerIdentity;
  readonly labels?: Readonly<Record<string, string>>;
  /** Aborted when the requester goes away before the stream is open (a `Cancel`, or an AbortSignal). */
  readonly signal?: AbortLike;
}

/** Where the router sends a stream. */
export interface Upstream {
  /** Carrier name: `direct`, `ssh`, `reverse`, `local`, `reject`. */
  readonly carrier: string;
  /** Address to dial instead of the target (direct) or to reach (carrier). */
  readonly address?: Target;
  /** Carrier-specific selector, e.g. the gateway name for `ssh`. */
  readonly via?: string;
  /** Identity the far end must prove (a SPIFFE URI for `hbone`). */
  readonly identity?: string;
  /**
   * Reach the far end through this gateway first (double HBONE: an outer CONNECT to the
   * gateway, then the end-to-end session inside it).
   */
  readonly gateway?: { readonly address: Target; readonly identity?: string };
  /** Carrier-specific options from the route (e.g. hbone `mode: post`, `token`). */
  readonly options?: Readonly<Record<string, string>>;
  /** Ask the far end for this name instead of the requested one (e.g. an IP mapped to its FQDN). */
  readonly target?: Target;
  /** Why this upstream: which rule, registration or discovery source answered. */
  readonly reason: string;
}

/**
 * Turns a target into the upstreams to try, best first. The switch dials them in order and
 * moves to the next only when a dial fails (nothing has been sent yet at that point).
 */
export interface Resolver {
  /** Throws NO_ROUTE (or the `reject` route's error). */
  resolve(target: Target, signal?: AbortLike): Promise<Upstream[]>;
  /**
   * The answer when it needs no waiting (e.g. the static table has it), else undefined; throws
   * as `resolve` does. Lets the switch skip a turn of the event loop on the usual stream.
   */
  resolveNow?(target: Target): Upstream[] | undefined;
  /** Dial outcome, for health: a failed endpoint is skipped for a back-off period. */
  report?(upstream: Upstream, ok: boolean): void;
}

/** Opens byte streams over one carrier. */
export interface Dialer {
  readonly carrier: string;
  dial(req: StreamRequest, upstream: Upstream): Promise<Duplex>;
}

/** Something that accepts streams and hands them to the node. */
export interface Listener {
  readonly name: string;
  /** Resolves once accepting. */
  listen(): Promise<void>;
  /** Stop accepting new streams; live streams keep running. */
  close(): Promise<void>;
  /** Bound addresses, for tests and logs. */
  addresses(): string[];
}

export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

/** pino-compatible logger contract. */
export interface Logger {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  /** False when lines of `level` are dropped (pino has it); lets callers skip building them. */
  isLevelEnabled?(level: 'error' | 'warn' | 'info' | 'debug'): boolean;
}

const noop: LogFn = () => {};
export const silentLogger: Logger = {
  error: noop,
  warn: noop,
  info: noop,
  debug: noop,
  child: () => silentLogger,
};

export type Labels = Readonly<Record<string, string>>;

export interface Counter {
  inc(labels?: Labels, value?: number): void;
}
export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, value?: number): void;
  dec(labels?: Labels, value?: number): void;
}
export interface Histogram {
  observe(value: number, labels?: Labels): void;
}

/**
 * Metrics contract (prom-client shaped). Names follow `ugate_<component>_<noun>_<unit|total>`;
 * label values come from bounded sets only (protocols, carriers, error codes).
 */
export interface Metrics {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  histogram(name: string, help: string, labelNames?: readonly string[], buckets?: readonly number[]): Histogram;
}

const noopCounter: Counter & Gauge & Histogram = { inc() {}, set() {}, dec() {}, observe() {} };
export const noopMetrics: Metrics = { counter: () => noopCounter, gauge: () => noopCounter, histogram: () => noopCounter };
