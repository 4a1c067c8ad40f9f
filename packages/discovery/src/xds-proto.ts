import { ErrorCodes, formatIpv6, UgateError } from '@ugate/core';
import protobuf from 'protobufjs';

/**
 * The messages the xDS source speaks, as a protobufjs JSON descriptor. Field numbers follow the
 * published protos: envoy/service/discovery/v3/discovery.proto, envoy/config/core/v3/base.proto
 * (Node, only the fields sent), google/rpc/status.proto, google/protobuf/{any,struct,empty}.proto,
 * Istio's workloadapi/workload.proto and workloadapi/security/authorization.proto. Fields this
 * client does not read are left out: protobuf decoding skips unknown fields.
 */

export const ADDRESS_TYPE = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE = 'type.googleapis.com/istio.security.Authorization';
export const ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';

const rep = (type: string, id: number) => ({ rule: 'repeated', type, id });
const one = (type: string, id: number) => ({ type, id });

const google = {
  nested: {
    protobuf: {
      nested: {
        Any: { fields: { typeUrl: one('string', 1), value: one('bytes', 2) } },
        Empty: { fields: {} },
        Struct: { fields: { fields: { keyType: 'string', type: 'Value', id: 1 } } },
        Value: {
          oneofs: { kind: { oneof: ['nullValue', 'numberValue', 'stringValue', 'boolValue', 'structValue', 'listValue'] } },
          fields: {
            nullValue: one('NullValue', 1),
            numberValue: one('double', 2),
            stringValue: one('string', 3),
            boolValue: one('bool', 4),
            structValue: one('Struct', 5),
            listValue: one('ListValue', 6),
          },
        },
        ListValue: { fields: { values: rep('Value', 1) } },
        NullValue: { values: { NULL_VALUE: 0 } },
      },
    },
    rpc: {
      nested: {
        Status: { fields: { code: one('int32', 1), message: one('string', 2), details: rep('google.protobuf.Any', 3) } },
      },
    },
  },
};

const envoy = {
  nested: {
    config: {
      nested: {
        core: {
          nested: {
            v3: {
              nested: {
                Node: {
                  fields: {
                    id: one('string', 1),
                    cluster: one('string', 2),
                    metadata: one('google.protobuf.Struct', 3),
                    userAgentName: one('string', 6),
                    userAgentVersion: one('string', 7),
                  },
                },
              },
            },
          },
        },
      },
    },
    service: {
      nested: {
        discovery: {
          nested: {
            v3: {
              nested: {
                DeltaDiscoveryRequest: {
                  fields: {
                    node: one('envoy.config.core.v3.Node', 1),
                    typeUrl: one('string', 2),
                    resourceNamesSubscribe: rep('string', 3),
                    resourceNamesUnsubscribe: rep('string', 4),
                    initialResourceVersions: { keyType: 'string', type: 'string', id: 5 },
                    responseNonce: one('string', 6),
                    errorDetail: one('google.rpc.Status', 7),
                  },
                },
                DeltaDiscoveryResponse: {
                  fields: {
                    systemVersionInfo: one('string', 1),
                    resources: rep('Resource', 2),
                    typeUrl: one('string', 4),
                    nonce: one('string', 5),
                    removedResources: rep('string', 6),
                  },
                },
                Resource: {
                  fields: {
                    version: one('string', 1),
                    resource: one('google.protobuf.Any', 2),
                    name: one('string', 3),
                    aliases: rep('string', 4),
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

const workload = {
  nested: {
    Address: {
      oneofs: { type: { oneof: ['workload', 'service'] } },
      fields: { workload: one('Workload', 1), service: one('Service', 2) },
    },
    Service: {
      fields: {
        name: one('string', 1),
        namespace: one('string', 2),
        hostname: one('string', 3),
        addresses: rep('NetworkAddress', 4),
        ports: rep('Port', 5),
        subjectAltNames: rep('string', 6),
        waypoint: one('GatewayAddress', 7),
      },
    },
    Workload: {
      fields: {
        uid: one('string', 20),
        name: one('string', 1),
        namespace: one('string', 2),
        addresses: rep('bytes', 3),
        hostname: one('string', 21),
        network: one('string', 4),
        tunnelProtocol: one('TunnelProtocol', 5),
        trustDomain: one('string', 6),
        serviceAccount: one('string', 7),
        waypoint: one('GatewayAddress', 8),
        networkGateway: one('GatewayAddress', 19),
        node: one('string', 9),
        services: { keyType: 'string', type: 'PortList', id: 22 },
        authorizationPolicies: rep('string', 16),
        status: one('WorkloadStatus', 17),
        clusterId: one('string', 18),
      },
    },
    WorkloadStatus: { values: { HEALTHY: 0, UNHEALTHY: 1 } },
    TunnelProtocol: { values: { NONE: 0, HBONE: 1 } },
    PortList: { fields: { ports: rep('Port', 1) } },
    Port: { fields: { servicePort: one('uint32', 1), targetPort: one('uint32', 2) } },
    GatewayAddress: {
      oneofs: { destination: { oneof: ['hostname', 'address'] } },
      fields: { hostname: one('NamespacedHostname', 1), address: one('NetworkAddress', 2), hboneMtlsPort: one('uint32', 3) },
    },
    NetworkAddress: { fields: { network: one('string', 1), address: one('bytes', 2) } },
    NamespacedHostname: { fields: { namespace: one('string', 1), hostname: one('string', 2) } },
  },
};

const security = {
  nested: {
    Authorization: {
      fields: {
        name: one('string', 1),
        namespace: one('string', 2),
        scope: one('Scope', 3),
        action: one('Action', 4),
        groups: rep('Group', 5),
        dryRun: one('bool', 6),
      },
    },
    Group: { fields: { rules: rep('Rules', 1) } },
    Rules: { fields: { matches: rep('Match', 2) } },
    Match: {
      fields: {
        namespaces: rep('StringMatch', 1),
        notNamespaces: rep('StringMatch', 2),
        principals: rep('StringMatch', 3),
        notPrincipals: rep('StringMatch', 4),
        sourceIps: rep('Address', 5),
        notSourceIps: rep('Address', 6),
        destinationIps: rep('Address', 7),
        notDestinationIps: rep('Address', 8),
        destinationPorts: rep('uint32', 9),
        notDestinationPorts: rep('uint32', 10),
        serviceAccounts: rep('ServiceAccountMatch', 11),
        notServiceAccounts: rep('ServiceAccountMatch', 12),
      },
    },
    Address: { fields: { address: one('bytes', 1), length: one('uint32', 2) } },
    ServiceAccountMatch: { fields: { namespace: one('string', 1), serviceAccount: one('string', 2) } },
    StringMatch: {
      oneofs: { matchType: { oneof: ['exact', 'prefix', 'suffix', 'presence'] } },
      fields: { exact: one('string', 1), prefix: one('string', 2), suffix: one('string', 3), presence: one('google.protobuf.Empty', 4) },
    },
    Scope: { values: { GLOBAL: 0, NAMESPACE: 1, WORKLOAD_SELECTOR: 2 } },
    Action: { values: { ALLOW: 0, DENY: 1 } },
  },
};

const root = protobuf.Root.fromJSON({ nested: { google, envoy, istio: { nested: { workload, security } } } });

const types = {
  request: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
  response: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  address: root.lookupType('istio.workload.Address'),
  authorization: root.lookupType('istio.security.Authorization'),
};

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: true, arrays: true, objects: true, oneofs: true };

export const TunnelProtocol = { NONE: 0, HBONE: 1 } as const;
export const WorkloadStatus = { HEALTHY: 0, UNHEALTHY: 1 } as const;
export const Scope = { GLOBAL: 0, NAMESPACE: 1, WORKLOAD_SELECTOR: 2 } as const;
export const Action = { ALLOW: 0, DENY: 1 } as const;

// Shapes of decoded messages (protobufjs `toObject` with defaults: every scalar, list and map is present).

export interface AnyMsg {
  typeUrl: string;
  value: Uint8Array;
}
export interface ResourceMsg {
  version: string;
  resource: AnyMsg | null;
  name: string;
  aliases: string[];
}
export interface DeltaResponse {
  systemVersionInfo: string;
  resources: ResourceMsg[];
  typeUrl: string;
  nonce: string;
  removedResources: string[];
}
export interface DeltaRequest {
  node?: { id: string; cluster?: string; metadata?: { fields: Record<string, { stringValue: string }> }; userAgentName?: string };
  typeUrl: string;
  resourceNamesSubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
  errorDetail?: { code: number; message: string };
}

export interface NetworkAddressMsg {
  network: string;
  address: Uint8Array;
}
export interface NamespacedHostnameMsg {
  namespace: string;
  hostname: string;
}
export interface GatewayAddressMsg {
  destination?: 'hostname' | 'address';
  hostname?: NamespacedHostnameMsg;
  address?: NetworkAddressMsg;
  hboneMtlsPort: number;
}
export interface PortMsg {
  servicePort: number;
  targetPort: number;
}
export interface WorkloadMsg {
  uid: string;
  name: string;
  namespace: string;
  addresses: Uint8Array[];
  hostname: string;
  network: string;
  tunnelProtocol: number;
  trustDomain: string;
  serviceAccount: string;
  waypoint: GatewayAddressMsg | null;
  networkGateway: GatewayAddressMsg | null;
  node: string;
  services: Record<string, { ports: PortMsg[] }>;
  authorizationPolicies: string[];
  status: number;
  clusterId: string;
}
export interface ServiceMsg {
  name: string;
  namespace: string;
  hostname: string;
  addresses: NetworkAddressMsg[];
  ports: PortMsg[];
  subjectAltNames: string[];
  waypoint: GatewayAddressMsg | null;
}
export type AddressMsg = { type: 'workload'; workload: WorkloadMsg } | { type: 'service'; service: ServiceMsg };

export interface StringMatchMsg {
  matchType?: 'exact' | 'prefix' | 'suffix' | 'presence';
  exact?: string;
  prefix?: string;
  suffix?: string;
}
export interface IpBlockMsg {
  address: Uint8Array;
  length: number;
}
export interface ServiceAccountMatchMsg {
  namespace: string;
  serviceAccount: string;
}
export interface MatchMsg {
  namespaces: StringMatchMsg[];
  notNamespaces: StringMatchMsg[];
  principals: StringMatchMsg[];
  notPrincipals: StringMatchMsg[];
  sourceIps: IpBlockMsg[];
  notSourceIps: IpBlockMsg[];
  destinationIps: IpBlockMsg[];
  notDestinationIps: IpBlockMsg[];
  destinationPorts: number[];
  notDestinationPorts: number[];
  serviceAccounts: ServiceAccountMatchMsg[];
  notServiceAccounts: ServiceAccountMatchMsg[];
}
export interface AuthorizationMsg {
  name: string;
  namespace: string;
  scope: number;
  action: number;
  groups: { rules: { matches: MatchMsg[] }[] }[];
  dryRun: boolean;
}

function decode<T>(type: protobuf.Type, bytes: Uint8Array, what: string): T {
  try {
    return type.toObject(type.decode(bytes), TO_OBJECT) as T;
  } catch (e) {
    throw new UgateError(ErrorCodes.CONFIG, `${what}: cannot decode: ${(e as Error).message}`, { cause: e });
  }
}

export function encodeRequest(req: DeltaRequest): Buffer {
  const t = types.request;
  return Buffer.from(t.encode(t.fromObject(req)).finish());
}

export const decodeResponse = (bytes: Uint8Array): DeltaResponse => decode(types.response, bytes, 'DeltaDiscoveryResponse');
export const decodeAddress = (bytes: Uint8Array, name: string): AddressMsg => decode(types.address, bytes, `Address ${name}`);
export const decodeAuthorization = (bytes: Uint8Array, name: string): AuthorizationMsg =>
  decode(types.authorization, bytes, `Authorization ${name}`);

/** An IPv4/IPv6 address from its 4 or 16 network-order bytes; undefined for any other length. */
export function ipFromBytes(b: Uint8Array): string | undefined {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length !== 16) return undefined;
  return formatIpv6(b);
}
