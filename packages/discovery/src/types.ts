import type { Logger, PolicyRuleInit, Target } from '@ugate/core';

/**
 * One place a name can be reached. Sources produce these; the resolver turns the chosen one into
 * an `Upstream` for the carrier.
 *
 * - `direct`: dial `address` over plain TCP (no identity can be checked).
 * - `ssh`: open an SSH connection to `address` (a ugate node or sshd, default port 15022), pin
 *   its host key to `identity` (a node ID), then `direct-tcpip` to the requested name:port.
 * - `hbone`: HTTP/2 CONNECT over mTLS to `address` (default port 15008); the peer must prove
 *   `identity` (a SPIFFE URI, or a node ID = SHA-256 of its key, as DANE `TLSA 3 1 1` gives it).
 * - `hbonec`: the same over h2c (trusted networks only).
 */
export interface Endpoint {
  readonly carrier: 'direct' | 'ssh' | 'hbone' | 'hbonec';
  readonly address: Target;
  /** What the far end must prove: `spiffe://…` or a 52-character node ID. */
  readonly identity?: string;
  /** Reach `address` through this gateway (double HBONE / network gateway). */
  readonly gateway?: { readonly address: Target; readonly identity?: string };
  /** Ask the far end for this instead of the requested name (the HBONE `:authority`: ambient pods want podIP:targetPort). */
  readonly target?: Target;
  /** Free-form labels (zone, network, source-specific ids): shown by `explain`, not used to route. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Relative share within a priority level. Default 1; 0 = only when nothing else is left. */
  readonly weight?: number;
  /** Lower is preferred; higher levels are used when every endpoint of the lower ones is unhealthy. Default 0. */
  readonly priority?: number;
}

/** What a source knows about one name. */
export interface Answer {
  readonly endpoints: readonly Endpoint[];
  /** How long the answer may be cached, ms. Push sources: ignored (valid until removed). */
  readonly ttlMs: number;
  /** One line on where this came from (record names, resource names): shown by `explain`. */
  readonly detail: string;
}

/**
 * A pull source is asked on demand (DNS, Kubernetes): `lookup` is called on a cache miss.
 * `undefined` = "no record for this name" (cached for `negativeTtlMs`);
 * a thrown error = the source failed (logged, not cached; the next source is asked).
 */
export interface PullSource {
  readonly name: string;
  /** Names this source is asked about (`*.svc.cluster.local`, `*`): cheap filter before `lookup`. */
  handles(target: Target): boolean;
  lookup(target: Target, signal: AbortSignal): Promise<Answer | undefined>;
  /** Map an IP address to an FQDN (DNS PTR), for streams that arrive with only an IP. */
  reverse?(ip: string, signal: AbortSignal): Promise<string | undefined>;
  close?(): Promise<void> | void;
}

/** One change from a push source. `endpoints: null` removes the record. */
export interface Update {
  /** Host name (lower-case FQDN). */
  readonly host: string;
  /** Only this port; omitted = every port of the host (the requested port is kept). */
  readonly port?: number;
  readonly endpoints: readonly Endpoint[] | null;
  readonly detail: string;
}

/** Callbacks a push source gets when started. */
export interface PushSink {
  update(u: Update): void;
  /** Drop every record this source pushed (e.g. a full state replace); then `update` the new set. */
  reset(): void;
  /**
   * Replace this source's policy rules (Istio authorizations). They join the configured rules
   * (any matching DENY wins; with an ALLOW, some ALLOW must match) and judge streams from peers
   * only, not this node's own egress.
   */
  policy?(rules: readonly PolicyRuleInit[]): void;
}

/** A push source keeps its records current itself (xDS, local multicast). */
export interface PushSource {
  readonly name: string;
  start(sink: PushSink, logger: Logger): Promise<void> | void;
  close(): Promise<void> | void;
  /** Source-specific state for the admin API (connection, versions, peers…). */
  status?(): object;
}

export type Source = PullSource | PushSource;
export const isPush = (s: Source): s is PushSource => 'start' in s;
