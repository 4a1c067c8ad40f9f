import { describe, expect, it } from 'vitest';
import { AddressBook, validateAddress } from '../src/xds-addresses.js';
import type { AddressMsg, ServiceMsg, WorkloadMsg } from '../src/xds-proto.js';

const ip = (s: string) => Uint8Array.from(s.split('.').map(Number));

function svc(s: Partial<ServiceMsg>): AddressMsg {
  return {
    type: 'service',
    service: { name: '', namespace: 'apps', hostname: '', addresses: [], ports: [], subjectAltNames: [], waypoint: null, ...s },
  };
}
function wl(w: Partial<WorkloadMsg>): AddressMsg {
  return {
    type: 'workload',
    workload: {
      uid: 'u',
      name: '',
      namespace: 'apps',
      addresses: [],
      hostname: '',
      network: '',
      tunnelProtocol: 0,
      trustDomain: '',
      serviceAccount: '',
      waypoint: null,
      networkGateway: null,
      node: '',
      services: {},
      authorizationPolicies: [],
      status: 0,
      clusterId: '',
      ...w,
    },
  };
}

describe('AddressBook', () => {
  it('skips a workload whose target port is unresolved (named port, no per-workload number)', () => {
    const book = new AddressBook({ trustDomain: 'cluster.local', network: 'default' });
    book.put('apps/a', svc({ hostname: 'a.test', ports: [{ servicePort: 80, targetPort: 0 }] }));
    book.put(
      'w1',
      wl({ uid: 'w1', addresses: [ip('10.0.0.1')], services: { 'apps/a.test': { ports: [{ servicePort: 80, targetPort: 8080 }] } } }),
    );
    book.put('w2', wl({ uid: 'w2', addresses: [ip('10.0.0.2')], services: { 'apps/a.test': { ports: [] } } }));
    expect(
      book
        .records()
        .get('a.test|80')
        ?.endpoints.map((e) => e.address),
    ).toEqual([{ host: '10.0.0.1', port: 8080 }]);
  });

  it('dials a workload known only by host name at that name', () => {
    const book = new AddressBook({ trustDomain: 'cluster.local', network: 'default' });
    book.put('apps/ext', svc({ hostname: 'ext.test', ports: [{ servicePort: 443, targetPort: 443 }] }));
    book.put('w', wl({ uid: 'w', hostname: 'Backend.Example.COM', services: { 'apps/ext.test': { ports: [] } } }));
    expect(book.records().get('ext.test|443')?.endpoints).toEqual([
      {
        carrier: 'direct',
        address: { host: 'backend.example.com', port: 443 },
        labels: { uid: 'w', targetPort: '443', network: 'default' },
      },
    ]);
  });

  it('gives a host name claimed by two namespaces to ours', () => {
    const book = new AddressBook({ trustDomain: 'cluster.local', network: 'default', myNamespace: 'zz' });
    book.put('aa/x', svc({ namespace: 'aa', hostname: 'shared.test', ports: [{ servicePort: 80, targetPort: 1 }] }));
    book.put('zz/x', svc({ namespace: 'zz', hostname: 'shared.test', ports: [{ servicePort: 80, targetPort: 2 }] }));
    expect(book.records().get('shared.test|80')?.detail).toContain('zz/shared.test');
  });

  it('a resource name that changes kind replaces the old one', () => {
    const book = new AddressBook({ trustDomain: 'cluster.local', network: 'default' });
    book.put('n', svc({ hostname: 'a.test' }));
    book.put('n', wl({ uid: 'n', addresses: [ip('10.0.0.1')] }));
    expect([book.services, book.workloads]).toEqual([0, 1]);
    expect(book.remove('n')).toBe(true);
    expect(book.remove('n')).toBe(false);
  });
});

describe('validateAddress', () => {
  it('rejects what the mapping cannot use', () => {
    expect(() => validateAddress(wl({ uid: '' }), 'x')).toThrow(/without uid/);
    expect(() => validateAddress(wl({ uid: 'w' }), 'x')).toThrow(/no address/);
    expect(() => validateAddress(wl({ uid: 'w', addresses: [Uint8Array.from([1, 2, 3])] }), 'x')).toThrow(/3 bytes/);
    expect(() => validateAddress(wl({ uid: 'w', addresses: [ip('10.0.0.1')], services: { nokey: { ports: [] } } }), 'x')).toThrow(
      /namespace\/hostname/,
    );
    expect(() => validateAddress(svc({ hostname: '' }), 'x')).toThrow(/without hostname/);
    expect(() => validateAddress(svc({ hostname: 'a.test', ports: [{ servicePort: 70000, targetPort: 1 }] }), 'x')).toThrow(/out of range/);
    expect(() => validateAddress({ type: undefined } as unknown as AddressMsg, 'x')).toThrow(/neither/);
    expect(() => validateAddress(svc({ hostname: 'a.test', waypoint: { hboneMtlsPort: 15008 } }), 'x')).toThrow(/waypoint/);
  });
});
