import { ErrorCodes, parseTarget, UgateError } from '@ugate/core';
import type { Endpoint, PushSink, PushSource } from './types.js';

/** An endpoint as written in the config. */
export interface StaticEndpointInit {
  carrier: Endpoint['carrier'];
  /** `host:port`; the port defaults to the carrier's (ssh 15022, hbone 15008, hbonec 15009). */
  address: string;
  identity?: string;
  gateway?: { address: string; identity?: string };
  weight?: number;
  priority?: number;
  labels?: Record<string, string>;
}

/** `name` or `name:port` → endpoints. */
export interface StaticRecordInit {
  name: string;
  endpoints: StaticEndpointInit[];
}

const DEFAULT_PORT: Record<string, number | undefined> = { ssh: 15022, hbone: 15008, hbonec: 15009 };

function endpointAddress(name: string, e: StaticEndpointInit) {
  const port = DEFAULT_PORT[e.carrier];
  const t = parseTarget(e.address, port ?? 1);
  if (port === undefined && !/:\d+$/.test(e.address)) {
    throw new UgateError(ErrorCodes.CONFIG, `discovery.static ${name}: a ${e.carrier} endpoint needs host:port (${e.address})`);
  }
  return t;
}

/** Endpoints from the config, answering like any other source (weights, priorities, health). */
export function staticSource(records: StaticRecordInit[]): PushSource {
  const parsed = records.map((r) => {
    const i = r.name.lastIndexOf(':');
    const named = i > 0 && /^\d+$/.test(r.name.slice(i + 1)) ? parseTarget(r.name) : undefined;
    return {
      host: (named?.host ?? r.name).toLowerCase(),
      port: named?.port,
      endpoints: r.endpoints.map(
        (e): Endpoint => ({
          carrier: e.carrier,
          address: endpointAddress(r.name, e),
          identity: e.identity,
          gateway: e.gateway && { address: parseTarget(e.gateway.address, 15008), identity: e.gateway.identity },
          weight: e.weight,
          priority: e.priority,
          labels: e.labels,
        }),
      ),
    };
  });
  return {
    name: 'static',
    start(sink: PushSink) {
      for (const r of parsed)
        sink.update({ host: r.host, port: r.port, endpoints: r.endpoints, detail: `config discovery.static ${r.host}` });
    },
    close() {},
  };
}
