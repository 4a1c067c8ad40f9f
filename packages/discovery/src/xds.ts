import { hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes, type Logger, type PolicyRuleInit, toUgateError, UgateError } from '@ugate/core';
import type { PushSink, PushSource, Update } from './types.js';
import { AddressBook, validateAddress } from './xds-addresses.js';
import { mapAuthorization, validateAuthorization } from './xds-authz.js';
import {
  ADDRESS_TYPE,
  ADS_METHOD,
  type AddressMsg,
  AUTHORIZATION_TYPE,
  type AuthorizationMsg,
  type DeltaRequest,
  type DeltaResponse,
  decodeAddress,
  decodeAuthorization,
  decodeResponse,
  encodeRequest,
  Scope,
} from './xds-proto.js';

export { ADDRESS_TYPE, AUTHORIZATION_TYPE } from './xds-proto.js';

export interface XdsInit {
  /** istiod `host:port`: 15010 plaintext, 15012 TLS. */
  address: string;
  /** PEM. Without it the channel is plaintext. */
  tls?: {
    ca: string;
    cert?: string;
    key?: string;
    /** Name to verify on istiod's certificate when `address` is an IP, e.g. `istiod.istio-system.svc`. */
    serverName?: string;
  };
  /** Envoy node id `type~ip~id~domain`. Default `ztunnel~0.0.0.0~<hostname>.<ns>~<ns>.svc.cluster.local`. */
  nodeId?: string;
  /** Node metadata, sent as string values of the node's Struct. */
  metadata?: Record<string, string>;
  /** Sent as `authorization: Bearer <token>` call metadata. */
  token?: string;
  /** Trust domain for workloads that elide theirs. Default `cluster.local`. */
  trustDomain?: string;
  /** Our network; workloads on other networks are reached through their network gateway. Default `default`. */
  network?: string;
  /** Our namespace: NAMESPACE-scoped authorizations of this namespace apply. Default: from the node id's domain. */
  myNamespace?: string;
  /** Our service account: with `myNamespace`, finds our own workloads and the selector policies they list. */
  myServiceAccount?: string;
  /** Reconnect back-off: doubles from `initialMs` up to `maxMs`, with jitter. Defaults 500 ms, 30 s. */
  backoff?: { initialMs?: number; maxMs?: number };
}

export interface XdsTypeStatus {
  /** `system_version_info` of the last applied response. */
  version: string;
  /** Nonce of the last response received, and of the last one ACKed. */
  nonce: string;
  ackedNonce: string;
  resources: number;
}

export interface XdsStatus {
  address: string;
  nodeId: string;
  connected: boolean;
  /** Streams opened so far (1 + reconnects). */
  streams: number;
  lastError?: string;
  nacks: number;
  workloads: number;
  services: number;
  authorizations: number;
  policyRules: number;
  types: Record<string, XdsTypeStatus>;
}

const TYPES = [ADDRESS_TYPE, AUTHORIZATION_TYPE] as const;
const INVALID_ARGUMENT = 3;

interface TypeState {
  /** Resource name → version: sent back as `initial_resource_versions` after a reconnect. */
  readonly versions: Map<string, string>;
  version: string;
  nonce: string;
  ackedNonce: string;
}

type Call = grpc.ClientDuplexStream<Buffer, Buffer>;

/** The namespace in a node id's DNS domain (`…~<ns>.svc.cluster.local`). */
function namespaceFromNodeId(id: string): string | undefined {
  const domain = id.split('~')[3];
  return domain?.split('.')[0] || undefined;
}

/**
 * Istio xDS (delta ADS) as a push source: workloads and services become records per
 * (service host name or VIP, port); authorizations become policy rules.
 */
export function xdsSource(init: XdsInit): PushSource & { status(): XdsStatus } {
  return new XdsSource(init);
}

class XdsSource implements PushSource {
  readonly name = 'xds';
  readonly #init: XdsInit;
  readonly #nodeId: string;
  readonly #namespace: string | undefined;
  readonly #trustDomain: string;
  readonly #book: AddressBook;
  readonly #authorizations = new Map<string, AuthorizationMsg>();
  readonly #types = new Map<string, TypeState>(TYPES.map((t) => [t, { versions: new Map(), version: '', nonce: '', ackedNonce: '' }]));
  /** What the sink has now: `host|port` → endpoints JSON. */
  readonly #pushed = new Map<string, string>();
  /** Approximation notes already logged. */
  readonly #noted = new Set<string>();
  #policy: string | undefined;
  #policyRules = 0;
  #sink: PushSink | undefined;
  #log: Logger | undefined;
  #client: grpc.Client | undefined;
  #call: Call | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #connected = false;
  #streams = 0;
  #failures = 0;
  #nacks = 0;
  #lastError: string | undefined;

  constructor(init: XdsInit) {
    this.#init = init;
    const ns = init.myNamespace ?? (init.nodeId ? namespaceFromNodeId(init.nodeId) : undefined);
    this.#namespace = ns;
    this.#nodeId = init.nodeId ?? `ztunnel~0.0.0.0~${hostname()}.${ns ?? 'default'}~${ns ?? 'default'}.svc.cluster.local`;
    this.#trustDomain = init.trustDomain ?? 'cluster.local';
    this.#book = new AddressBook({ trustDomain: this.#trustDomain, network: init.network ?? 'default', myNamespace: ns });
  }

  start(sink: PushSink, logger: Logger): void {
    if (this.#sink) throw new UgateError(ErrorCodes.CONFIG, 'xds source started twice');
    this.#sink = sink;
    this.#log = logger.child({ source: 'xds', istiod: this.#init.address });
    const tls = this.#init.tls;
    const creds = tls
      ? grpc.credentials.createSsl(Buffer.from(tls.ca), tls.key ? Buffer.from(tls.key) : null, tls.cert ? Buffer.from(tls.cert) : null)
      : grpc.credentials.createInsecure();
    const options: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    };
    if (tls?.serverName) options['grpc.ssl_target_name_override'] = tls.serverName;
    this.#client = new grpc.Client(this.#init.address, creds, options);
    this.#connect();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#call?.cancel();
    this.#call = undefined;
    this.#client?.close();
    this.#connected = false;
  }

  status(): XdsStatus {
    const types: Record<string, XdsTypeStatus> = {};
    for (const [t, s] of this.#types)
      types[t] = { version: s.version, nonce: s.nonce, ackedNonce: s.ackedNonce, resources: s.versions.size };
    return {
      address: this.#init.address,
      nodeId: this.#nodeId,
      connected: this.#connected,
      streams: this.#streams,
      ...(this.#lastError !== undefined && { lastError: this.#lastError }),
      nacks: this.#nacks,
      workloads: this.#book.workloads,
      services: this.#book.services,
      authorizations: this.#authorizations.size,
      policyRules: this.#policyRules,
      types,
    };
  }

  #connect(): void {
    if (this.#closed || !this.#client) return;
    const md = new grpc.Metadata();
    if (this.#init.token) md.set('authorization', `Bearer ${this.#init.token}`);
    const call: Call = this.#client.makeBidiStreamRequest(
      ADS_METHOD,
      (b: Buffer) => b,
      (b: Buffer) => b,
      md,
    );
    this.#call = call;
    this.#streams++;
    let over = false;
    const end = (why: string) => {
      if (over) return;
      over = true;
      if (this.#call === call) this.#call = undefined;
      this.#connected = false;
      if (this.#closed) return;
      this.#lastError = why;
      this.#reconnectLater(why);
    };
    call.on('data', (b: Buffer) => this.#onResponse(call, b));
    call.on('error', (e: grpc.ServiceError) => end(`${grpc.status[e.code] ?? e.code}: ${e.details || e.message}`));
    call.on('status', (s: grpc.StatusObject) =>
      end(s.code === grpc.status.OK ? 'stream ended by server' : `${grpc.status[s.code]}: ${s.details}`),
    );
    const node: NonNullable<DeltaRequest['node']> = { id: this.#nodeId, userAgentName: 'ugate' };
    if (this.#init.metadata) {
      node.metadata = { fields: Object.fromEntries(Object.entries(this.#init.metadata).map(([k, v]) => [k, { stringValue: v }])) };
    }
    // Empty subscribe = wildcard; the versions we hold let the server send only what changed.
    for (const type of TYPES) {
      const initialResourceVersions = Object.fromEntries(this.#types.get(type)!.versions);
      this.#send(call, { node, typeUrl: type, resourceNamesSubscribe: [], initialResourceVersions });
    }
  }

  #reconnectLater(why: string): void {
    const initial = this.#init.backoff?.initialMs ?? 500;
    const max = this.#init.backoff?.maxMs ?? 30_000;
    const base = Math.min(max, initial * 2 ** Math.min(this.#failures, 30));
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.#failures++;
    this.#log?.warn({ code: ErrorCodes.UNREACHABLE, error: why, retryMs: delay }, 'xds stream lost');
    this.#timer = setTimeout(() => this.#connect(), delay);
    this.#timer.unref?.();
  }

  #send(call: Call, req: DeltaRequest): void {
    call.write(encodeRequest(req));
  }

  #onResponse(call: Call, bytes: Buffer): void {
    if (call !== this.#call) return;
    let res: DeltaResponse;
    try {
      res = decodeResponse(bytes);
    } catch (e) {
      // Without a nonce there is nothing to NACK: start a fresh stream.
      const err = toUgateError(e);
      this.#log?.warn({ code: err.code, error: err.message }, 'xds response undecodable');
      call.cancel();
      return;
    }
    if (!this.#connected) {
      this.#connected = true;
      this.#failures = 0;
      this.#log?.info({ streams: this.#streams }, 'xds connected');
    }
    const state = this.#types.get(res.typeUrl);
    if (!state) return this.#nack(call, res, new UgateError(ErrorCodes.UNSUPPORTED, `type ${res.typeUrl} was not subscribed`));
    state.nonce = res.nonce;
    try {
      if (res.typeUrl === ADDRESS_TYPE) this.#applyAddresses(res, state);
      else this.#applyAuthorizations(res, state);
    } catch (e) {
      return this.#nack(call, res, toUgateError(e));
    }
    state.version = res.systemVersionInfo;
    state.ackedNonce = res.nonce;
    this.#send(call, { typeUrl: res.typeUrl, responseNonce: res.nonce });
  }

  /** Envoy semantics: the whole response is rejected and the previous state kept. */
  #nack(call: Call, res: DeltaResponse, err: UgateError): void {
    this.#nacks++;
    this.#lastError = err.message;
    this.#log?.warn({ code: err.code, type: res.typeUrl, nonce: res.nonce, error: err.message }, 'xds response rejected');
    this.#send(call, { typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: INVALID_ARGUMENT, message: err.message } });
  }

  /** Decode every resource first: one bad resource rejects the whole response, nothing is applied. */
  #decode<T>(res: DeltaResponse, state: TypeState, decode: (b: Uint8Array, name: string) => T, check: (v: T, name: string) => void) {
    const out: { name: string; version: string; value: T | undefined }[] = [];
    for (const r of res.resources) {
      if (!r.name) throw new UgateError(ErrorCodes.CONFIG, 'resource without a name');
      if (!r.resource) {
        // A body-less resource only refreshes one we have (TTL heartbeat).
        if (!state.versions.has(r.name)) throw new UgateError(ErrorCodes.CONFIG, `resource ${r.name} has no body`);
        out.push({ name: r.name, version: r.version, value: undefined });
        continue;
      }
      if (r.resource.typeUrl !== res.typeUrl) throw new UgateError(ErrorCodes.CONFIG, `resource ${r.name} is a ${r.resource.typeUrl}`);
      const value = decode(r.resource.value, r.name);
      check(value, r.name);
      out.push({ name: r.name, version: r.version, value });
    }
    return out;
  }

  #applyAddresses(res: DeltaResponse, state: TypeState): void {
    const decoded = this.#decode<AddressMsg>(res, state, decodeAddress, validateAddress);
    for (const d of decoded) {
      if (d.value) this.#book.put(d.name, d.value);
      state.versions.set(d.name, d.version);
    }
    for (const name of res.removedResources) {
      this.#book.remove(name);
      state.versions.delete(name);
    }
    this.#pushRecords();
    // Our own workloads list the selector policies that apply to us.
    if (this.#policy !== undefined) this.#pushPolicy();
  }

  #applyAuthorizations(res: DeltaResponse, state: TypeState): void {
    const decoded = this.#decode<AuthorizationMsg>(res, state, decodeAuthorization, validateAuthorization);
    for (const d of decoded) {
      if (d.value) this.#authorizations.set(d.name, d.value);
      state.versions.set(d.name, d.version);
    }
    for (const name of res.removedResources) {
      this.#authorizations.delete(name);
      state.versions.delete(name);
    }
    this.#pushPolicy();
  }

  #pushRecords(): void {
    const sink = this.#sink!;
    const next = this.#book.records();
    const updates: Update[] = [];
    for (const [key, u] of next) {
      const json = JSON.stringify(u.endpoints);
      if (this.#pushed.get(key) === json) continue;
      this.#pushed.set(key, json);
      updates.push(u);
    }
    for (const key of [...this.#pushed.keys()]) {
      if (next.has(key)) continue;
      this.#pushed.delete(key);
      const [host, port] = key.split('|') as [string, string];
      updates.push({ host, port: Number(port), endpoints: null, detail: 'xds service removed' });
    }
    for (const u of updates) sink.update(u);
  }

  /** Selector policies named by our own workloads; undefined when we don't know which workloads are ours. */
  #selected(): Set<string> | undefined {
    const ns = this.#namespace;
    const sa = this.#init.myServiceAccount;
    if (!ns || !sa) return undefined;
    const mine = this.#book.workloadsOf(ns, sa);
    return mine.length > 0 ? new Set(mine.flatMap((w) => w.authorizationPolicies)) : undefined;
  }

  #applies(a: AuthorizationMsg, selected: Set<string> | undefined): boolean {
    if (a.dryRun) return false;
    if (a.scope === Scope.GLOBAL) return true;
    if (a.scope === Scope.NAMESPACE) return a.namespace === this.#namespace;
    return selected ? selected.has(`${a.namespace}/${a.name}`) : true;
  }

  #pushPolicy(): void {
    const selected = this.#selected();
    const rules: PolicyRuleInit[] = [];
    const keys = [...this.#authorizations.keys()].sort();
    for (const key of keys) {
      const a = this.#authorizations.get(key)!;
      if (!this.#applies(a, selected)) continue;
      const mapped = mapAuthorization(a, { trustDomain: this.#trustDomain });
      rules.push(...mapped.rules);
      for (const note of mapped.notes) this.#noteOnce(`${a.namespace}/${a.name}`, note);
    }
    const json = JSON.stringify(rules);
    if (json === this.#policy) return;
    this.#policy = json;
    this.#policyRules = rules.length;
    this.#sink!.policy?.(rules);
  }

  #noteOnce(authorization: string, note: string): void {
    const key = `${authorization}\n${note}`;
    if (this.#noted.has(key)) return;
    this.#noted.add(key);
    this.#log?.warn({ code: ErrorCodes.UNSUPPORTED, authorization, approximation: note }, 'xds authorization approximated');
  }
}
