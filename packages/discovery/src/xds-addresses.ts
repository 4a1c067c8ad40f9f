import { ErrorCodes, type Target, UgateError } from '@ugate/core';
import type { Endpoint, Update } from './types.js';
import {
  type AddressMsg,
  type GatewayAddressMsg,
  ipFromBytes,
  type PortMsg,
  type ServiceMsg,
  TunnelProtocol,
  type WorkloadMsg,
  WorkloadStatus,
} from './xds-proto.js';

/** Istio's HBONE port, used when a gateway address leaves `hbone_mtls_port` at 0. */
export const HBONE_PORT = 15008;

export interface AddressBookInit {
  /** Trust domain for workloads that elide theirs. */
  trustDomain: string;
  /** Our network: workloads elsewhere are reached through their network gateway. */
  network: string;
  /** Preferred when two services claim the same host name. */
  myNamespace?: string;
}

/** Reject what the mapping cannot use, so a bad response is NACKed instead of half applied. */
export function validateAddress(a: AddressMsg, name: string): void {
  const bad = (why: string) => new UgateError(ErrorCodes.CONFIG, `Address ${name}: ${why}`);
  const port = (p: number, what: string) => {
    if (p > 65535) throw bad(`${what} ${p} out of range`);
  };
  const gateway = (g: GatewayAddressMsg | null, what: string) => {
    if (!g) return;
    if (g.destination === 'address' && ipFromBytes(g.address?.address ?? new Uint8Array()) === undefined)
      throw bad(`${what} has no valid IP`);
    if (g.destination === 'hostname' && !g.hostname?.hostname) throw bad(`${what} has no host name`);
    if (!g.destination) throw bad(`${what} has neither address nor host name`);
    port(g.hboneMtlsPort, `${what} port`);
  };
  if (a.type === 'workload') {
    const w = a.workload;
    if (!w.uid) throw bad('workload without uid');
    if (w.addresses.length === 0 && !w.hostname && !w.networkGateway) throw bad(`workload ${w.uid} has no address`);
    for (const b of w.addresses) if (ipFromBytes(b) === undefined) throw bad(`workload ${w.uid} address of ${b.length} bytes`);
    for (const [key, list] of Object.entries(w.services)) {
      if (!key.includes('/')) throw bad(`workload ${w.uid} service key ${JSON.stringify(key)} is not namespace/hostname`);
      for (const p of list.ports) port(p.targetPort, 'target port');
    }
    gateway(w.waypoint, 'waypoint');
    gateway(w.networkGateway, 'network gateway');
  } else if (a.type === 'service') {
    const s = a.service;
    if (!s.hostname || !s.namespace) throw bad('service without hostname or namespace');
    for (const p of s.ports) {
      if (p.servicePort < 1) throw bad(`service ${s.hostname} port 0`);
      port(p.servicePort, 'service port');
      port(p.targetPort, 'target port');
    }
    for (const n of s.addresses)
      if (ipFromBytes(n.address) === undefined) throw bad(`service ${s.hostname} address of ${n.address.length} bytes`);
    gateway(s.waypoint, 'waypoint');
  } else {
    throw bad('neither workload nor service');
  }
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>` of a workload, with Istio's defaults for elided parts. */
export function spiffeOf(w: WorkloadMsg, trustDomain: string): string {
  return `spiffe://${w.trustDomain || trustDomain}/ns/${w.namespace || 'default'}/sa/${w.serviceAccount || 'default'}`;
}

const byUid = (a: WorkloadMsg, b: WorkloadMsg) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0);

/**
 * The Address resources (workloads and services) and the records they make: one per
 * (service host name or VIP, service port). `records()` recomputes every record; the caller
 * diffs against what it pushed, so only changed records reach the sink.
 */
export class AddressBook {
  readonly #workloads = new Map<string, WorkloadMsg>();
  readonly #services = new Map<string, ServiceMsg>();
  readonly #init: AddressBookInit;

  constructor(init: AddressBookInit) {
    this.#init = init;
  }

  get workloads(): number {
    return this.#workloads.size;
  }
  get services(): number {
    return this.#services.size;
  }

  put(name: string, a: AddressMsg): void {
    this.remove(name);
    if (a.type === 'workload') this.#workloads.set(name, a.workload);
    else this.#services.set(name, a.service);
  }

  remove(name: string): boolean {
    return this.#workloads.delete(name) || this.#services.delete(name);
  }

  /** Workloads running as this namespace and service account (our own pods). */
  workloadsOf(namespace: string, serviceAccount: string): WorkloadMsg[] {
    return [...this.#workloads.values()].filter((w) => w.namespace === namespace && (w.serviceAccount || 'default') === serviceAccount);
  }

  /** Every record, keyed `host|port`. */
  records(): Map<string, Update> {
    const members = new Map<string, WorkloadMsg[]>();
    const byIp = new Map<string, WorkloadMsg>();
    for (const w of this.#workloads.values()) {
      for (const key of Object.keys(w.services)) {
        const list = members.get(key) ?? [];
        list.push(w);
        members.set(key, list);
      }
      for (const b of w.addresses) byIp.set(`${this.#network(w.network)}/${ipFromBytes(b)}`, w);
    }
    for (const list of members.values()) list.sort(byUid);
    const services = new Map<string, ServiceMsg>();
    for (const s of this.#services.values()) services.set(`${s.namespace}/${s.hostname}`, s);

    const ctx: Ctx = { members, byIp, services };
    const out = new Map<string, Update>();
    // Our namespace first, then by key: the first service to claim a host name keeps it.
    const ordered = [...services.entries()].sort(([ka, a], [kb, b]) => this.#rank(a) - this.#rank(b) || (ka < kb ? -1 : ka > kb ? 1 : 0));
    for (const [key, svc] of ordered) {
      const hosts = [svc.hostname.toLowerCase()];
      for (const a of svc.addresses) if (this.#local(a.network)) hosts.push(ipFromBytes(a.address)!);
      for (const port of svc.ports) {
        const endpoints = svc.waypoint ? this.#viaWaypoint(svc.waypoint, ctx) : this.#members(key, svc, port, ctx);
        const via = svc.waypoint ? ' via waypoint' : '';
        const detail = `xds service ${key} port ${port.servicePort}${via}: ${endpoints.length} endpoint(s)`;
        for (const host of hosts) {
          const id = `${host}|${port.servicePort}`;
          if (!out.has(id)) out.set(id, { host, port: port.servicePort, endpoints, detail });
        }
      }
    }
    return out;
  }

  #rank(s: ServiceMsg): number {
    return s.namespace === this.#init.myNamespace ? 0 : 1;
  }

  #network(n: string): string {
    return n || this.#init.network;
  }

  /** An elided network is the default one, which is ours. */
  #local(n: string): boolean {
    return !n || n === this.#init.network;
  }

  #members(key: string, svc: ServiceMsg, port: PortMsg, ctx: Ctx): Endpoint[] {
    const out: Endpoint[] = [];
    for (const w of ctx.members.get(key) ?? []) {
      if (w.status === WorkloadStatus.UNHEALTHY) continue;
      // The workload's own port list wins (named target ports resolve per pod), then the service's.
      const own = w.services[key]?.ports.find((p) => p.servicePort === port.servicePort)?.targetPort;
      const targetPort = own || port.targetPort;
      if (!targetPort) continue;
      const ep = this.#endpoint(w, svc, port.servicePort, targetPort, ctx);
      if (ep) out.push(ep);
    }
    return out;
  }

  #endpoint(w: WorkloadMsg, svc: ServiceMsg, servicePort: number, targetPort: number, ctx: Ctx): Endpoint | undefined {
    const ip = w.addresses[0] ? ipFromBytes(w.addresses[0]) : undefined;
    const labels: Record<string, string> = { uid: w.uid, targetPort: String(targetPort), network: this.#network(w.network) };
    if (w.node) labels.node = w.node;
    const identity = spiffeOf(w, this.#init.trustDomain);
    if (!this.#local(w.network)) {
      if (!w.networkGateway) return undefined;
      const gw = this.#gateway(w.networkGateway, ctx);
      if (!gw) return undefined;
      // Double HBONE: the gateway forwards the inner session; the address is informational when unknown.
      const address: Target = ip ? { host: ip, port: HBONE_PORT } : { host: svc.hostname.toLowerCase(), port: servicePort };
      return { carrier: 'hbone', address, identity, gateway: gw, target: ip ? { host: ip, port: targetPort } : undefined, labels };
    }
    const host = ip ?? w.hostname.toLowerCase();
    if (!host) return undefined;
    // ztunnel expects the workload's own address and target port as the CONNECT authority.
    if (w.tunnelProtocol === TunnelProtocol.HBONE) {
      return { carrier: 'hbone', address: { host, port: HBONE_PORT }, identity, target: { host, port: targetPort }, labels };
    }
    return { carrier: 'direct', address: { host, port: targetPort }, labels };
  }

  /** A gateway's HBONE address, with the identity of the workload behind it when known. */
  #gateway(g: GatewayAddressMsg, ctx: Ctx): { address: Target; identity?: string } | undefined {
    const port = g.hboneMtlsPort || HBONE_PORT;
    if (g.address) {
      const ip = ipFromBytes(g.address.address)!;
      const w = ctx.byIp.get(`${this.#network(g.address.network)}/${ip}`);
      return w ? { address: { host: ip, port }, identity: spiffeOf(w, this.#init.trustDomain) } : { address: { host: ip, port } };
    }
    if (g.hostname) return { address: { host: g.hostname.hostname.toLowerCase(), port } };
    return undefined;
  }

  /**
   * A waypoint by IP is one endpoint; a waypoint by service name is that service's workloads
   * (none until the service and its workloads are known).
   */
  #viaWaypoint(g: GatewayAddressMsg, ctx: Ctx): Endpoint[] {
    const port = g.hboneMtlsPort || HBONE_PORT;
    const labels = (w?: WorkloadMsg): Record<string, string> => (w ? { waypoint: 'true', uid: w.uid } : { waypoint: 'true' });
    if (g.address) {
      const ip = ipFromBytes(g.address.address)!;
      const w = ctx.byIp.get(`${this.#network(g.address.network)}/${ip}`);
      const ep: Endpoint = { carrier: 'hbone', address: { host: ip, port }, labels: labels(w) };
      return [w ? { ...ep, identity: spiffeOf(w, this.#init.trustDomain) } : ep];
    }
    const key = `${g.hostname?.namespace}/${g.hostname?.hostname}`;
    if (!ctx.services.has(key)) return [];
    const out: Endpoint[] = [];
    for (const w of ctx.members.get(key) ?? []) {
      const ip = w.addresses[0] ? ipFromBytes(w.addresses[0]) : undefined;
      if (!ip || w.status === WorkloadStatus.UNHEALTHY || !this.#local(w.network)) continue;
      out.push({ carrier: 'hbone', address: { host: ip, port }, identity: spiffeOf(w, this.#init.trustDomain), labels: labels(w) });
    }
    return out;
  }
}

interface Ctx {
  /** Workloads by the service key (`namespace/hostname`) they serve, sorted by uid. */
  readonly members: Map<string, WorkloadMsg[]>;
  /** Workloads by `network/ip`. */
  readonly byIp: Map<string, WorkloadMsg>;
  /** Services by `namespace/hostname`. */
  readonly services: Map<string, ServiceMsg>;
}
