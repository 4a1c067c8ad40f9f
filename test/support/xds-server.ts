/**
 * A delta ADS server for tests: a real grpc-js server on 127.0.0.1 serving
 * `envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`, with messages
 * encoded from the .proto files under test/fixtures/xds (parsed by protobufjs, independent of the
 * client's own descriptors). It records every request, tracks what the client ACKed per type
 * (so a test can compare `initial_resource_versions` after a reconnect), and can drop streams.
 */
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import type * as Grpc from '@grpc/grpc-js';
import type * as Protobuf from 'protobufjs';

// The e2e package has no grpc/protobufjs dependency of its own: load @ugate/discovery's copies.
const load = createRequire(new URL('../../packages/discovery/package.json', import.meta.url));
const grpc = load('@grpc/grpc-js') as typeof Grpc;
const protobuf = load('protobufjs') as typeof Protobuf;

const FIXTURES = fileURLToPath(new URL('../fixtures/xds/', import.meta.url));
export const ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization';

function loadRoot(): Protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : FIXTURES + target);
  return root.loadSync(['envoy/service/discovery/v3/ads.proto', 'istio/workload/workload.proto', 'istio/security/authorization.proto'], {
    keepCase: false,
  });
}

const root = loadRoot();
const T = {
  request: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
  response: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  address: root.lookupType('istio.workload.Address'),
  authorization: root.lookupType('istio.security.Authorization'),
};
const ads = root.lookupService('envoy.service.discovery.v3.AggregatedDiscoveryService');
const method = ads.methods.DeltaAggregatedResources!;
/** `/package.Service/Method`, from the parsed service. */
const PATH = `/${ads.fullName.replace(/^\./, '')}/${method.name}`;

/** Network-order bytes of an IP literal. */
export function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  const [head = '', tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return b;
}

function credentials(tls?: { ca: string; cert: string; key: string }): Grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    Buffer.from(tls.ca),
    [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
    true,
  );
}

export interface Received {
  /** 1-based stream number. */
  stream: number;
  typeUrl: string;
  responseNonce: string;
  resourceNamesSubscribe: string[];
  initialResourceVersions: Record<string, string>;
  errorDetail: { code: number; message: string } | null;
  node: { id: string; metadata: { fields: Record<string, { stringValue?: string }> } | null } | null;
}

/** One resource to send: `body` is an Address (`{ workload }` / `{ service }`) or an Authorization object; `raw` sends bytes as they are. */
export interface Res {
  name: string;
  version: string;
  body?: Record<string, unknown>;
  raw?: Uint8Array;
}

interface Pending {
  typeUrl: string;
  set: Map<string, string>;
  removed: string[];
}

export class XdsTestServer {
  readonly requests: Received[] = [];
  /** Call metadata of each stream (lower-case header → first value). */
  readonly headers: Record<string, string>[] = [];
  readonly address: string;
  readonly #server: Grpc.Server;
  readonly #acked = new Map<string, Map<string, string>>();
  readonly #pending = new Map<string, Pending>();
  #call: Grpc.ServerDuplexStream<Received, Buffer> | undefined;
  #nonce = 0;

  private constructor(server: Grpc.Server, port: number) {
    this.#server = server;
    this.address = `127.0.0.1:${port}`;
  }

  /** With `tls`, serve TLS with that key pair and require a client certificate signed by `ca`. */
  static async start(tls?: { ca: string; cert: string; key: string }): Promise<XdsTestServer> {
    const server = new grpc.Server();
    let self: XdsTestServer | undefined;
    const definition: Grpc.ServiceDefinition = {
      DeltaAggregatedResources: {
        path: PATH,
        requestStream: true,
        responseStream: true,
        requestSerialize: (r: Received) => Buffer.from(T.request.encode(T.request.fromObject(r)).finish()),
        requestDeserialize: (b: Buffer) =>
          T.request.toObject(T.request.decode(b), { defaults: true, arrays: true, objects: true, longs: Number }) as Received,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    };
    server.addService(definition, {
      DeltaAggregatedResources: (call: Grpc.ServerDuplexStream<Received, Buffer>) => self!.#serve(call),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', credentials(tls), (e, p) => (e ? reject(e) : resolve(p))),
    );
    self = new XdsTestServer(server, port);
    return self;
  }

  /** Streams opened so far. */
  get streams(): number {
    return this.headers.length;
  }

  #serve(call: Grpc.ServerDuplexStream<Received, Buffer>): void {
    this.#call = call;
    const md = call.metadata.getMap();
    this.headers.push(Object.fromEntries(Object.entries(md).map(([k, v]) => [k, String(v)])));
    const stream = this.headers.length;
    call.on('data', (r: Received) => {
      this.requests.push({ ...r, stream });
      if (!r.responseNonce) return;
      const p = this.#pending.get(r.responseNonce);
      this.#pending.delete(r.responseNonce);
      if (!p || r.errorDetail) return;
      const acked = this.acked(p.typeUrl);
      for (const [k, v] of p.set) acked.set(k, v);
      for (const k of p.removed) acked.delete(k);
    });
    call.on('end', () => call.end());
    call.on('error', () => {});
  }

  /** What the client ACKed, per resource name → version. */
  acked(typeUrl: string): Map<string, string> {
    let m = this.#acked.get(typeUrl);
    if (!m) {
      m = new Map();
      this.#acked.set(typeUrl, m);
    }
    return m;
  }

  /** Send one DeltaDiscoveryResponse on the current stream; returns its nonce. */
  push(typeUrl: string, resources: Res[], removed: string[] = []): string {
    if (!this.#call) throw new Error('no stream');
    const nonce = `n${++this.#nonce}`;
    const type = typeUrl === ADDRESS ? T.address : T.authorization;
    const encoded = resources.map((r) => ({
      name: r.name,
      version: r.version,
      // protobufjs's built-in google/protobuf/any.proto keeps the snake_case field name.
      resource: { type_url: typeUrl, value: r.raw ?? type.encode(type.fromObject(r.body ?? {})).finish() },
    }));
    const msg = T.response.fromObject({
      systemVersionInfo: `v${this.#nonce}`,
      typeUrl,
      nonce,
      resources: encoded,
      removedResources: removed,
    });
    this.#pending.set(nonce, { typeUrl, set: new Map(resources.map((r) => [r.name, r.version])), removed });
    this.#call.write(Buffer.from(T.response.encode(msg).finish()));
    return nonce;
  }

  /** Send bytes that are not a DeltaDiscoveryResponse at all. */
  pushGarbage(bytes: Uint8Array): void {
    this.#call?.write(Buffer.from(bytes));
  }

  /** Fail the current stream with UNAVAILABLE, as a restarting istiod does. */
  drop(): void {
    const call = this.#call;
    this.#call = undefined;
    call?.emit('error', { code: grpc.status.UNAVAILABLE, details: 'test server dropped the stream' });
  }

  /** Requests of one stream and type, in order. */
  of(stream: number, typeUrl: string): Received[] {
    return this.requests.filter((r) => r.stream === stream && r.typeUrl === typeUrl);
  }

  async close(): Promise<void> {
    this.#server.forceShutdown();
  }
}
