import { describe, expect, it } from 'vitest';
import { applyEnv, parseConfig } from '../src/config.js';

describe('config', () => {
  it('fills defaults: loopback egress and admin, SSH on all interfaces, direct default route', () => {
    const c = parseConfig({});
    expect(c.socks).toEqual({ listen: '127.0.0.1:15080' });
    expect(c.http).toEqual({ listen: '127.0.0.1:15081' });
    expect(c.admin).toEqual({ listen: '127.0.0.1:15000' });
    expect(c.ssh.listen).toBe('0.0.0.0:15022');
    expect(c.routes).toEqual([{ match: '*', carrier: 'direct' }]);
  });

  it('rejects unknown keys and bad values with the key path', () => {
    expect(() => parseConfig({ sock: {} })).toThrow(/\(root\): Unrecognized key: "sock"/);
    expect(() => parseConfig({ socks: { listen: 'nope' } })).toThrow(/socks\.listen: expected host:port/);
    expect(() => parseConfig({ routes: [{ match: '*', carrier: 'teleport' }] })).toThrow(/routes\.0\.carrier/);
    expect(() => parseConfig({ ssh: { gateways: [{ address: '127.0.0.1:1', id: 'short' }] } })).toThrow(/ssh\.gateways\.0\.id/);
  });

  it('applies UGATE_ environment overrides case-insensitively, values as YAML', () => {
    const c = parseConfig(
      { socks: { listen: '127.0.0.1:1' } },
      {
        UGATE_SOCKS__LISTEN: '127.0.0.1:2',
        UGATE_HTTP: 'null',
        UGATE_LOG__LEVEL: 'debug',
        UGATE_DATADIR: '/tmp/x',
        UGATE_SSH__KEEPALIVEINTERVALMS: '2500',
        UGATE_NAMES: '[a.mesh.internal, b.mesh.internal]',
      },
    );
    expect(c.socks?.listen).toBe('127.0.0.1:2');
    expect(c.http).toBeNull();
    expect(c.log.level).toBe('debug');
    expect(c.dataDir).toBe('/tmp/x');
    expect(c.ssh.keepaliveIntervalMs).toBe(2500);
    expect(c.names).toEqual(['a.mesh.internal', 'b.mesh.internal']);
  });

  it('ignores unrelated environment variables', () => {
    expect(applyEnv({}, { PATH: '/bin', UGATE_: 'x' })).toEqual({});
  });
});
