/**
 * A read-only Kubernetes API server for tests: HTTPS on 127.0.0.1, bearer-token and client-certificate
 * authentication, the discovery documents kubectl reads (/version, /api, /apis, /api/v1,
 * /apis/discovery.k8s.io/v1), GET and paginated LIST (`limit`, `continue`, label and field selectors)
 * of services, pods and endpointslices, and `Status` objects for every failure — the shapes a real
 * API server sends. Objects come from the recorded JSON in test/fixtures/k8s.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';

export type KubeObject = Record<string, unknown> & { metadata?: Record<string, unknown> };

export const FIXTURE_OBJECTS_DIR = fileURLToPath(new URL('../fixtures/k8s/', import.meta.url));

/** Every object recorded under test/fixtures/k8s (fresh copies). */
export function fixtureObjects(): KubeObject[] {
  return ['services.json', 'endpointslices.json', 'pods.json'].flatMap(
    (f) => JSON.parse(readFileSync(join(FIXTURE_OBJECTS_DIR, f), 'utf8')) as KubeObject[],
  );
}

// ---- certificates ----------------------------------------------------------------------------

export interface FixtureCerts {
  /** The CA that signed the server certificate (trust this). */
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  /** The CA the server accepts client certificates from. */
  readonly clientCaFile: string;
  /** A client certificate for user `alice` (group system:masters). */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** A CA that signed nothing here: trusting it must fail. */
  readonly otherCaFile: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function selfSigned(dir: string, name: string, cn: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${cn}`]);
}

function issue(dir: string, ca: string, name: string, subject: string, ext: string): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-set_serial',
    String(Date.now()),
    '-days',
    '2',
    '-out',
    `${name}.crt`,
    '-extfile',
    `${name}.ext`,
  ]);
}

/** CA, server certificate for 127.0.0.1, client CA and client certificate, and an unrelated CA (openssl). */
export function makeCerts(dir: string): FixtureCerts {
  selfSigned(dir, 'ca', 'fixture kubernetes CA');
  issue(
    dir,
    'ca',
    'server',
    '/CN=kube-apiserver',
    'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  selfSigned(dir, 'client-ca', 'fixture client CA');
  issue(dir, 'client-ca', 'client', '/O=system:masters/CN=alice', 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n');
  selfSigned(dir, 'other-ca', 'unrelated CA');
  const f = (n: string) => join(dir, n);
  return {
    caFile: f('ca.crt'),
    serverCertFile: f('server.crt'),
    serverKeyFile: f('server.key'),
    clientCaFile: f('client-ca.crt'),
    clientCertFile: f('client.crt'),
    clientKeyFile: f('client.key'),
    otherCaFile: f('other-ca.crt'),
  };
}

// ---- API model -------------------------------------------------------------------------------

interface Resource {
  readonly name: string;
  readonly singularName: string;
  readonly kind: string;
  readonly group: string;
  readonly version: string;
  readonly shortNames?: string[];
  /** Fields `fieldSelector` may use besides metadata.name / metadata.namespace. */
  readonly fields?: Record<string, (o: KubeObject) => unknown>;
}

const RESOURCES: readonly Resource[] = [
  { name: 'services', singularName: 'service', kind: 'Service', group: '', version: 'v1', shortNames: ['svc'] },
  {
    name: 'pods',
    singularName: 'pod',
    kind: 'Pod',
    group: '',
    version: 'v1',
    shortNames: ['po'],
    fields: {
      'status.podIP': (o) => (o.status as { podIP?: string } | undefined)?.podIP,
      'spec.nodeName': (o) => (o.spec as { nodeName?: string } | undefined)?.nodeName,
    },
  },
  { name: 'endpointslices', singularName: 'endpointslice', kind: 'EndpointSlice', group: 'discovery.k8s.io', version: 'v1' },
];

const groupVersion = (r: Resource) => (r.group ? `${r.group}/${r.version}` : r.version);
const byKind = (kind: unknown) => RESOURCES.find((r) => r.kind === kind);

/** One request as the fixture saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  /** The authenticated user, if any. */
  readonly user?: string;
  readonly userAgent?: string;
}

/** What `intercept` may answer instead of the API: a reply, or `'hang'` (accept and never answer). */
export type Interception = { status: number; body: string | object; contentType?: string } | 'hang';

export interface FixtureUser {
  readonly name: string;
  /** Resources this user may get/list; undefined = all. */
  readonly allow?: readonly string[];
}

export class K8sFixture {
  readonly certs: FixtureCerts;
  /** Every request, in order. */
  readonly requests: SeenRequest[] = [];
  /** Bearer tokens the server accepts. */
  readonly tokens = new Map<string, FixtureUser>();
  /** Inspect a request before the API does; return a reply to short-circuit it. */
  intercept: ((r: SeenRequest) => Interception | undefined) | undefined;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Connections of requests that were never answered (`'hang'`), while open. */
  readonly #hung = new Set<Socket>();
  readonly #objects = new Map<string, KubeObject>();
  #rv = 48_300;
  /** Continue tokens from before the last `expireContinueTokens()` answer 410. */
  #epoch = 0;
  #port = 0;

  constructor(certs: FixtureCerts) {
    this.certs = certs;
    this.#server = createServer(
      {
        cert: readFileSync(certs.serverCertFile),
        key: readFileSync(certs.serverKeyFile),
        ca: readFileSync(certs.clientCaFile),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => this.#handle(req, res),
    );
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    this.#server.on('tlsClientError', () => {});
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = this.#server.address();
    this.#port = typeof a === 'object' && a ? a.port : 0;
    return this;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  /** TCP connections currently open to the server. */
  get openConnections(): number {
    return this.#sockets.size;
  }

  /** Connections still open whose request was left hanging: the client must close them. */
  get hangingConnections(): number {
    return this.#hung.size;
  }

  /** Requests whose path starts with `prefix`. */
  count(prefix = '/'): number {
    return this.requests.filter((r) => r.path.startsWith(prefix)).length;
  }

  /** Create or replace an object (by kind, namespace, name); bumps its resourceVersion. */
  put(o: KubeObject): void {
    const r = byKind(o.kind);
    if (!r) throw new Error(`fixture does not serve kind ${String(o.kind)}`);
    const copy = structuredClone(o);
    const meta = copy.metadata ?? {};
    copy.metadata = meta;
    meta.resourceVersion = String(++this.#rv);
    this.#objects.set(key(r, String(meta.namespace), String(meta.name)), copy);
  }

  remove(kind: string, namespace: string, name: string): void {
    const r = byKind(kind);
    if (r) this.#objects.delete(key(r, namespace, name));
    this.#rv++;
  }

  get(kind: string, namespace: string, name: string): KubeObject | undefined {
    const r = byKind(kind);
    const o = r && this.#objects.get(key(r, namespace, name));
    return o && structuredClone(o);
  }

  /** Make every continue token handed out so far expire (as after an etcd compaction). */
  expireContinueTokens(): void {
    this.#epoch++;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // ---- request handling ----------------------------------------------------------------------

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'https://fixture');
    const user = this.#authenticate(req);
    const seen: SeenRequest = {
      method: req.method ?? '',
      path: url.pathname,
      query: url.searchParams,
      user: user?.name,
      userAgent: req.headers['user-agent'],
    };
    this.requests.push(seen);
    const hook = this.intercept?.(seen);
    if (hook === 'hang') {
      const s = req.socket;
      this.#hung.add(s);
      s.once('close', () => this.#hung.delete(s));
      return;
    }
    if (hook) return send(res, hook.status, hook.body, hook.contentType);

    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (path === '/version' || path === '/healthz' || path === '/readyz') {
      return path === '/version' ? send(res, 200, VERSION) : send(res, 200, 'ok', 'text/plain; charset=utf-8');
    }
    if (!user) return send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    if (req.method !== 'GET') {
      return send(res, 405, status(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
    }
    const doc = this.#discovery(path);
    if (doc) return send(res, 200, doc);

    const m = /^\/(?:api\/v1|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    const r = m && RESOURCES.find((x) => x.name === m[4] && x.group === (m[1] ?? '') && (m[1] ? x.version === m[2] : true));
    if (!m || !r || (m[5] && !m[3])) return send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const namespace = m[3];
    const name = m[5];
    const verb = name ? 'get' : 'list';
    if (user.allow && !user.allow.includes(r.name)) {
      const what = name ? `${r.name}${r.group ? `.${r.group}` : ''} "${name}"` : `${r.name}${r.group ? `.${r.group}` : ''}`;
      const where = namespace ? ` in the namespace "${namespace}"` : ' at the cluster scope';
      const msg = `${what} is forbidden: User "${user.name}" cannot ${verb} resource "${r.name}" in API group "${r.group}"${where}`;
      return send(res, 403, status(403, 'Forbidden', msg, { name, group: r.group, kind: r.name }));
    }
    if (name) {
      const o = this.#objects.get(key(r, namespace!, name));
      if (!o) return send(res, 404, status(404, 'NotFound', `${r.name} "${name}" not found`, { name, group: r.group, kind: r.name }));
      return send(res, 200, o);
    }
    this.#list(res, r, namespace, url.searchParams);
  }

  #authenticate(req: IncomingMessage): FixtureUser | undefined {
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ')) return this.tokens.get(auth.slice(7).trim());
    const tls = req.socket as TLSSocket;
    if (tls.authorized) {
      const cn = tls.getPeerCertificate().subject?.CN;
      if (typeof cn === 'string') return { name: cn };
    }
    return undefined;
  }

  #list(res: ServerResponse, r: Resource, namespace: string | undefined, q: URLSearchParams): void {
    let match: (o: KubeObject) => boolean;
    try {
      const labels = parseLabelSelector(q.get('labelSelector') ?? '');
      const fields = parseFieldSelector(q.get('fieldSelector') ?? '', r);
      match = (o) => labels(o) && fields(o);
    } catch (e) {
      return send(res, 400, status(400, 'BadRequest', (e as Error).message));
    }
    const prefix = namespace ? `${r.name}/${namespace}/` : `${r.name}/`;
    const all = [...this.#objects].filter(([k, o]) => k.startsWith(prefix) && match(o)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

    let start = 0;
    let rv = this.#rv;
    const cont = q.get('continue');
    if (cont) {
      const token = decodeContinue(cont);
      if (!token) return send(res, 400, status(400, 'BadRequest', 'continue key is not valid: illegal base64 data'));
      if (token.epoch !== this.#epoch) {
        const msg =
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.';
        return send(res, 410, status(410, 'Expired', msg));
      }
      start = all.findIndex(([k]) => k > token.start);
      if (start < 0) start = all.length;
      rv = token.rv;
    }
    const limit = Number(q.get('limit') ?? 0);
    const end = limit > 0 ? Math.min(all.length, start + limit) : all.length;
    const page = all.slice(start, end);
    const metadata: Record<string, unknown> = { resourceVersion: String(rv) };
    if (end < all.length) {
      metadata.continue = encodeContinue({ rv, start: page[page.length - 1]![0], epoch: this.#epoch });
      if (!q.get('labelSelector') && !q.get('fieldSelector')) metadata.remainingItemCount = all.length - end;
    }
    const items = page.map(([, o]) => {
      const { kind: _k, apiVersion: _a, ...rest } = o;
      return rest;
    });
    send(res, 200, { kind: `${r.kind}List`, apiVersion: groupVersion(r), metadata, items });
  }

  #discovery(path: string): object | undefined {
    if (path === '/api') {
      return {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.#port}` }],
      };
    }
    if (path === '/apis') {
      const groups = [...new Set(RESOURCES.filter((r) => r.group).map((r) => r.group))].map((g) => {
        const versions = [...new Set(RESOURCES.filter((r) => r.group === g).map((r) => r.version))].map((v) => ({
          groupVersion: `${g}/${v}`,
          version: v,
        }));
        return { name: g, versions, preferredVersion: versions[0] };
      });
      return { kind: 'APIGroupList', apiVersion: 'v1', groups };
    }
    const gv = path === '/api/v1' ? 'v1' : /^\/apis\/([^/]+\/[^/]+)$/.exec(path)?.[1];
    const rs = gv ? RESOURCES.filter((r) => groupVersion(r) === gv) : [];
    if (rs.length === 0) return undefined;
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: gv,
      resources: rs.map((r) => ({
        name: r.name,
        singularName: r.singularName,
        namespaced: true,
        kind: r.kind,
        verbs: ['get', 'list'],
        ...(r.shortNames ? { shortNames: r.shortNames } : {}),
      })),
    };
  }
}

/** Generate certificates in `dir`, start the server, and load the recorded objects. */
export async function startK8sFixture(dir: string, objects: KubeObject[] = fixtureObjects()): Promise<K8sFixture> {
  const f = await new K8sFixture(makeCerts(dir)).listen();
  for (const o of objects) f.put(o);
  return f;
}

const VERSION = {
  major: '1',
  minor: '30',
  gitVersion: 'v1.30.2',
  gitCommit: '39683505b630ff2121012f3c5b16215a1449d5ed',
  gitTreeState: 'clean',
  buildDate: '2024-06-11T20:21:00Z',
  goVersion: 'go1.22.4',
  compiler: 'gc',
  platform: 'linux/amd64',
};

const key = (r: Resource, namespace: string, name: string) => `${r.name}/${namespace}/${name}`;

function status(code: number, reason: string, message: string, details?: Record<string, unknown>): object {
  const d = details && Object.fromEntries(Object.entries(details).filter(([, v]) => v !== undefined && v !== ''));
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(d ? { details: d } : {}), code };
}

function send(res: ServerResponse, code: number, body: string | object, contentType = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-cache, private',
    'audit-id': randomUUID(),
  });
  res.end(text);
}

interface ContinueToken {
  rv: number;
  start: string;
  epoch: number;
}

function encodeContinue(t: ContinueToken): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: t.rv, start: t.start, epoch: t.epoch })).toString('base64url');
}

function decodeContinue(text: string): ContinueToken | undefined {
  try {
    const t = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Partial<ContinueToken> & { v?: string };
    if (t.v !== 'meta.k8s.io/v1' || typeof t.rv !== 'number' || typeof t.start !== 'string' || typeof t.epoch !== 'number')
      return undefined;
    return { rv: t.rv, start: t.start, epoch: t.epoch };
  } catch {
    return undefined;
  }
}

/** Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (AND). */
function parseLabelSelector(text: string): (o: KubeObject) => boolean {
  const tests = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((term): ((l: Record<string, string>) => boolean) => {
      let m = /^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$/.exec(term);
      if (m) {
        const [, k, op, v] = m as unknown as [string, string, string, string];
        return op === '!=' ? (l) => l[k] !== v : (l) => l[k] === v;
      }
      m = /^(!?)([\w./-]+)$/.exec(term);
      if (m) {
        const [, not, k] = m as unknown as [string, string, string];
        return not ? (l) => !(k in l) : (l) => k in l;
      }
      throw new Error(`unable to parse requirement: ${JSON.stringify(term)}`);
    });
  return (o) => {
    const labels = (o.metadata?.labels ?? {}) as Record<string, string>;
    return tests.every((t) => t(labels));
  };
}

function parseFieldSelector(text: string, r: Resource): (o: KubeObject) => boolean {
  const getters: Record<string, (o: KubeObject) => unknown> = {
    'metadata.name': (o) => o.metadata?.name,
    'metadata.namespace': (o) => o.metadata?.namespace,
    ...r.fields,
  };
  const tests = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((term) => {
      const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
      if (!m) throw new Error(`invalid field selector: ${JSON.stringify(term)}`);
      const [, field, op, value] = m as unknown as [string, string, string, string];
      const get = getters[field];
      if (!get) throw new Error(`field label not supported: ${field}`);
      return (o: KubeObject) => (String(get(o) ?? '') === value) === (op !== '!=');
    });
  return (o) => tests.every((t) => t(o));
}
