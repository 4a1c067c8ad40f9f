import { isIP } from 'node:net';
import { ErrorCodes, type Logger, makeTarget, silentLogger, type Target, toUgateError, UgateError } from '@ugate/core';
import { KubeApi, KubeApiError, type KubeObject } from './kubernetes-api.js';
import { type CredentialsInit, loadCredentials } from './kubernetes-config.js';
import type { Answer, Endpoint, PullSource } from './types.js';

export type { CredentialsInit } from './kubernetes-config.js';

export interface KubernetesSourceInit extends CredentialsInit {
  /** The cluster's DNS domain. Default `cluster.local`. */
  clusterDomain?: string;
  /** The mesh trust domain for SPIFFE ids of ambient pods. Default `cluster.local`. */
  trustDomain?: string;
  /** How long fetched objects (services, endpoint slices, pods) are reused. Default 30 s. */
  ttlMs?: number;
  /** Per API request. Default 5 s. */
  timeoutMs?: number;
  /** Items per page when listing endpoint slices. Default 500 (as kubectl). */
  pageSize?: number;
  logger?: Logger;
}

/** The port ztunnel accepts HBONE on. */
const HBONE_PORT = 15008;
/** Set on pods whose traffic the Istio CNI redirects to ztunnel (ambient mode). */
const AMBIENT_ANNOTATION = 'ambient.istio.io/redirection';
/** After this many cached objects, expired ones are dropped. */
const CACHE_TRIM = 5_000;

type Name = { kind: 'service'; service: string; namespace: string } | { kind: 'pod'; ip: string; namespace: string };

interface Entry {
  readonly value: Promise<KubeObject | undefined>;
  /** Infinity while the request is under way. */
  expires: number;
}

/** A value plus when the oldest object it was made from expires. */
interface Fetched<T> {
  readonly value: T;
  readonly expires: number;
}

/**
 * Read-only Kubernetes discovery: `<svc>.<ns>.svc[.<clusterDomain>]` resolves to the ready endpoints of
 * the service's EndpointSlices (pods in Istio ambient mode as HBONE endpoints), and
 * `<a-b-c-d>.<ns>.pod.<clusterDomain>` to that pod. Objects are cached for `ttlMs`.
 */
export function kubernetesSource(init: KubernetesSourceInit = {}): PullSource {
  const domain = (init.clusterDomain ?? 'cluster.local').toLowerCase().replace(/\.$/, '');
  const trustDomain = init.trustDomain ?? 'cluster.local';
  const ttlMs = init.ttlMs ?? 30_000;
  const pageSize = init.pageSize ?? 500;
  const log = (init.logger ?? silentLogger).child({ source: 'kubernetes' });
  const api = new KubeApi(loadCredentials(init), init.timeoutMs ?? 5_000);
  const cache = new Map<string, Entry>();
  log.info({ server: api.origin, clusterDomain: domain }, 'kubernetes source ready');

  /** One object (or list) by cache key; concurrent askers share one request; failures are not kept. */
  const cached = async (key: string, load: () => Promise<KubeObject | undefined>): Promise<Fetched<KubeObject | undefined>> => {
    const now = Date.now();
    let entry = cache.get(key);
    if (!entry || entry.expires <= now) {
      if (cache.size >= CACHE_TRIM) for (const [k, e] of cache) if (e.expires <= now) cache.delete(k);
      const e: Entry = { value: load(), expires: Number.POSITIVE_INFINITY };
      cache.set(key, e);
      e.value.then(
        () => {
          e.expires = Date.now() + ttlMs;
        },
        (err: unknown) => {
          if (cache.get(key) === e) cache.delete(key);
          const u = toUgateError(err);
          log.debug({ code: u.code, key, err: u.message }, 'kubernetes api request failed');
        },
      );
      entry = e;
    }
    const value = await entry.value;
    return { value, expires: entry.expires };
  };

  const service = (ns: string, name: string) =>
    cached(`services/${ns}/${name}`, () => api.get(`/api/v1/namespaces/${ns}/services/${name}`));

  const pod = (ns: string, name: string) => cached(`pods/${ns}/${name}`, () => api.get(`/api/v1/namespaces/${ns}/pods/${name}`));

  const slices = (ns: string, svc: string) =>
    cached(`endpointslices/${ns}/${svc}`, async () => ({
      items: await listAll(api, `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, `kubernetes.io/service-name=${svc}`, pageSize),
    }));

  const podsByIp = (ns: string, ip: string) =>
    cached(`pods/${ns}/ip=${ip}`, async () => ({
      items: await listAll(api, `/api/v1/namespaces/${ns}/pods`, undefined, pageSize, `status.podIP=${ip}`),
    }));

  /** Ambient pods are reached over HBONE at podIP:15008, proving the pod's service account. */
  const endpointFor = (ns: string, address: string, port: number, p: KubeObject | undefined, labels: Record<string, string>): Endpoint => {
    if (p && str(obj(obj(p.metadata).annotations)[AMBIENT_ANNOTATION]) === 'enabled') {
      const sa = str(obj(p.spec).serviceAccountName) ?? 'default';
      return {
        carrier: 'hbone',
        address: makeTarget(address, HBONE_PORT),
        identity: `spiffe://${trustDomain}/ns/${ns}/sa/${sa}`,
        // ztunnel expects the pod's own address and port as the CONNECT authority.
        target: makeTarget(address, port),
        labels: { ...labels, targetPort: String(port) },
      };
    }
    return { carrier: 'direct', address: makeTarget(address, port), labels };
  };

  const resolveService = async (ns: string, name: string, port: number): Promise<Answer | undefined> => {
    const svc = await service(ns, name);
    if (!svc.value) return undefined;
    let expires = svc.expires;
    const left = () => Math.max(0, expires - Date.now());
    const spec = obj(svc.value.spec);
    const id = `service ${ns}/${name}`;

    if (spec.type === 'ExternalName') {
      const external = str(spec.externalName);
      if (!external) return { endpoints: [], ttlMs: left(), detail: `${id} is ExternalName without externalName` };
      return {
        endpoints: [{ carrier: 'direct', address: makeTarget(external, port), labels: { externalName: external } }],
        ttlMs: left(),
        detail: `${id} is ExternalName ${external}`,
      };
    }

    const ports = arr(spec.ports).map(obj);
    const sp = ports.find((p) => p.port === port && (p.protocol ?? 'TCP') === 'TCP');
    if (!sp) {
      const have = ports.map((p) => `${p.port}/${str(p.protocol) ?? 'TCP'}${str(p.name) ? ` (${p.name})` : ''}`).join(', ');
      return { endpoints: [], ttlMs: left(), detail: `${id} has no TCP port ${port} (ports: ${have || 'none'})` };
    }
    const portName = str(sp.name) ?? '';

    const list = await slices(ns, name);
    expires = Math.min(expires, list.expires);
    const found: { address: string; port: number; pod?: string; labels: Record<string, string> }[] = [];
    const seen = new Set<string>();
    const sliceNames: string[] = [];
    let notReady = 0;
    for (const slice of arr(list.value?.items).map(obj)) {
      const sliceName = str(obj(slice.metadata).name) ?? '?';
      const slicePort = arr(slice.ports)
        .map(obj)
        .find((p) => (str(p.name) ?? '') === portName && (p.protocol ?? 'TCP') === 'TCP');
      if (typeof slicePort?.port !== 'number') continue;
      sliceNames.push(sliceName);
      for (const ep of arr(slice.endpoints).map(obj)) {
        if (obj(ep.conditions).ready === false) {
          notReady++;
          continue;
        }
        const address = str(arr(ep.addresses)[0]);
        if (!address || !isIP(address) || seen.has(`${address}:${slicePort.port}`)) continue;
        seen.add(`${address}:${slicePort.port}`);
        const ref = obj(ep.targetRef);
        const podName = ref.kind === 'Pod' && (str(ref.namespace) ?? ns) === ns ? str(ref.name) : undefined;
        const labels = defined({ zone: str(ep.zone), nodeName: str(ep.nodeName), pod: podName });
        found.push({ address, port: slicePort.port, pod: podName, labels });
      }
    }

    const endpoints = await Promise.all(
      found.map(async (f) => {
        if (!f.pod) return endpointFor(ns, f.address, f.port, undefined, f.labels);
        const p = await pod(ns, f.pod);
        expires = Math.min(expires, p.expires);
        return endpointFor(ns, f.address, f.port, p.value, f.labels);
      }),
    );
    const hbone = endpoints.filter((e) => e.carrier === 'hbone').length;
    const detail =
      `${id} port ${port}${portName ? ` (${portName})` : ''}: ${endpoints.length} ready endpoint(s)` +
      `${hbone ? `, ${hbone} ambient (hbone)` : ''}${notReady ? `, ${notReady} not ready` : ''}` +
      ` from endpointslice(s) ${sliceNames.join(', ') || 'none'}`;
    return { endpoints, ttlMs: left(), detail };
  };

  const resolvePod = async (ns: string, ip: string, port: number): Promise<Answer | undefined> => {
    const list = await podsByIp(ns, ip);
    // Finished pods keep their old IP in status; it may belong to a new pod by now.
    const p = arr(list.value?.items)
      .map(obj)
      .find((x) => !['Succeeded', 'Failed'].includes(String(obj(x.status).phase)));
    if (!p) return undefined;
    const name = str(obj(p.metadata).name) ?? '?';
    const ep = endpointFor(ns, ip, port, p, defined({ pod: name, nodeName: str(obj(p.spec).nodeName) }));
    return { endpoints: [ep], ttlMs: Math.max(0, list.expires - Date.now()), detail: `pod ${ns}/${name} (${ip})` };
  };

  return {
    name: 'kubernetes',
    handles: (target: Target) => parseName(target.host, domain) !== undefined,
    async lookup(target: Target, signal: AbortSignal): Promise<Answer | undefined> {
      const n = parseName(target.host, domain);
      if (!n) return undefined;
      const work = n.kind === 'service' ? resolveService(n.namespace, n.service, target.port) : resolvePod(n.namespace, n.ip, target.port);
      return raceAbort(work, signal);
    },
    close() {
      api.close();
      cache.clear();
    },
  };
}

/** List every item of a collection, following `continue`; an expired token (410) restarts the list once. */
async function listAll(api: KubeApi, path: string, labelSelector: string | undefined, limit: number, fieldSelector?: string) {
  const items: KubeObject[] = [];
  let token: string | undefined;
  let restarted = false;
  for (;;) {
    const q = new URLSearchParams();
    if (labelSelector) q.set('labelSelector', labelSelector);
    if (fieldSelector) q.set('fieldSelector', fieldSelector);
    q.set('limit', String(limit));
    if (token) q.set('continue', token);
    let page: KubeObject | undefined;
    try {
      page = await api.get(`${path}?${q}`);
    } catch (e) {
      if (!token || restarted || !(e instanceof KubeApiError && e.status === 410)) throw e;
      restarted = true;
      token = undefined;
      items.length = 0;
      continue;
    }
    if (!page) throw new UgateError(ErrorCodes.UNREACHABLE, `GET ${path}: not served by this API server (HTTP 404)`);
    items.push(...arr(page.items).map(obj));
    token = str(obj(page.metadata).continue);
    if (!token) return items;
  }
}

/** `<svc>.<ns>.svc[.<domain>]` or `<a-b-c-d>.<ns>.pod.<domain>`. */
function parseName(host: string, domain: string): Name | undefined {
  const full = host.endsWith(`.${domain}`) ? host.slice(0, -domain.length - 1) : undefined;
  const labels = (full ?? host).split('.');
  if (labels.length !== 3) return undefined;
  const [first, namespace, kind] = labels as [string, string, string];
  if (!isDnsLabel(first) || !isDnsLabel(namespace)) return undefined;
  if (kind === 'svc') return { kind: 'service', service: first, namespace };
  if (kind === 'pod' && full !== undefined) {
    const ip = podIp(first);
    return ip ? { kind: 'pod', ip, namespace } : undefined;
  }
  return undefined;
}

/** `10-1-2-3` → `10.1.2.3`; `fd00--1` → `fd00::1`. */
function podIp(label: string): string | undefined {
  const v4 = label.replace(/-/g, '.');
  if (isIP(v4) === 4) return v4;
  const v6 = label.replace(/-/g, ':');
  return isIP(v6) === 6 ? v6 : undefined;
}

/** RFC 1123 labels, as Kubernetes names services and namespaces. */
const isDnsLabel = (s: string) => /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(s);

const obj = (v: unknown): KubeObject => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as KubeObject) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Labels without the missing ones. */
function defined(labels: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter((e): e is [string, string] => e[1] !== undefined));
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  const aborted = () => new UgateError(ErrorCodes.ABORTED, 'kubernetes lookup abandoned by the requester');
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(aborted());
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(aborted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
