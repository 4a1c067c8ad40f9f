import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { direct, type Listener, Policy, Router, Switch } from '@ugate/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordingLogger } from '../../../test/support/listener.js';
import { connectTcp, randomBytes, waitFor } from '../../../test/support/servers.js';
import { createCa, issueWorkloadCert, parseClientHello, sniGateway, sniTarget } from '../src/index.js';

/** A real ClientHello, as node's TLS client sends it, for the given server name. */
function captureHello(servername?: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = createServer((s: Socket) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      const c = tlsConnect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
}

/** Re-frame a ClientHello's handshake bytes into records of `size` bytes each. */
function fragment(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    out.push(Buffer.from([0x16, 3, 1, part.length >> 8, part.length & 255]), part);
  }
  return Buffer.concat(out);
}

describe('ClientHello parser', () => {
  it('reads the server name from a real ClientHello, whole, fragmented and byte by byte', async () => {
    const hello = await captureHello('web.mesh.internal');
    expect(parseClientHello(hello)).toEqual({ status: 'ok', sni: 'web.mesh.internal' });
    const frag = fragment(hello, 7);
    expect(parseClientHello(frag)).toEqual({ status: 'ok', sni: 'web.mesh.internal' });
    for (let i = 1; i < frag.length; i += 13) expect(parseClientHello(frag.subarray(0, i)).status).toBe('more');
  });

  it('reports a missing server name, and garbage or oversized input as errors', async () => {
    expect(parseClientHello(await captureHello())).toEqual({ status: 'ok', sni: undefined });
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')).status).toBe('error');
    expect(parseClientHello(Buffer.from([0x16, 3, 1, 0, 0])).status).toBe('error');
    expect(parseClientHello(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])).status).toBe('error'); // ServerHello
    expect(parseClientHello(Buffer.from([0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff])).status).toBe('error'); // 16 MiB hello
    expect(parseClientHello(randomBytes(5000)).status).not.toBe('ok');
  });

  it('maps Istio east-west names', () => {
    expect(sniTarget('outbound_.8443_._.web.mesh.internal')).toEqual({ host: 'web.mesh.internal', port: 8443 });
    expect(sniTarget('outbound_.80_.v1_.reviews.default.svc.cluster.local')).toEqual({
      host: 'reviews.default.svc.cluster.local',
      port: 80,
    });
    expect(sniTarget('web.mesh.internal')).toEqual({ host: 'web.mesh.internal', port: 443 });
  });
});

describe('SNI gateway with real TLS clients', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ugate-sni-'));
  let https: Server;
  let gw: Listener;
  let gwPort: number;
  const logger = recordingLogger();

  beforeAll(async () => {
    // A TLS server "behind the mesh", reachable only through the gateway's routing.
    const ca = await createCa({ trustDomain: 'x' });
    const leaf = await issueWorkloadCert(ca, { trustDomain: 'x', namespace: 'n', serviceAccount: 'web' });
    https = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => res.end(`tls hello ${req.headers.host}\n`));
    await new Promise<void>((r) => https.listen(0, '127.0.0.1', () => r()));
    const port = (https.address() as { port: number }).port;
    const sw = new Switch({
      router: new Router({ services: { 'web.mesh.internal:443': `127.0.0.1:${port}`, 'web.mesh.internal:8443': `127.0.0.1:${port}` } }),
      policy: new Policy(),
      dialers: [direct()],
      logger,
    });
    gw = sniGateway({ listen: '127.0.0.1:0', helloTimeoutMs: 1000 })({ switch: sw, logger });
    await gw.listen();
    gwPort = Number(gw.addresses()[0]!.split(':').pop());
  });

  afterAll(async () => {
    await gw.close();
    https.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const sh = (cmd: string, args: string[], input = '') =>
    new Promise<{ code: number; out: string; err: string }>((resolve) => {
      const p = execFile(cmd, args, { timeout: 15_000 }, (e, out, err) =>
        resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out, err }),
      );
      p.stdin?.end(input);
    });

  it('curl reaches the TLS server by SNI (TLS not terminated)', async () => {
    const r = await sh('curl', ['-sS', '-k', '--resolve', `web.mesh.internal:${gwPort}:127.0.0.1`, `https://web.mesh.internal:${gwPort}/`]);
    expect(r.err).toBe('');
    expect(r.out).toBe(`tls hello web.mesh.internal:${gwPort}\n`);
  });

  it('openssl s_client with an outbound_ SNI reaches host:port', async () => {
    const r = await sh(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${gwPort}`, '-servername', 'outbound_.8443_._.web.mesh.internal', '-quiet', '-ign_eof'],
      'GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n',
    );
    expect(r.out).toContain('tls hello web');
  });

  it('refuses unknown names with a TLS alert, garbage and truncated hellos with a clean close; stays up', async () => {
    const unknown = await sh('curl', [
      '-sS',
      '-k',
      '--resolve',
      `nobody.mesh.internal:${gwPort}:127.0.0.1`,
      `https://nobody.mesh.internal:${gwPort}/`,
    ]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.err).toMatch(/unrecognized name|alert/i);
    for (const junk of [randomBytes(3000), Buffer.from([0x16, 3, 1, 0, 50, 1, 0])]) {
      const s = await connectTcp(gwPort);
      s.on('data', () => {});
      s.end(junk);
      await new Promise((r) => s.on('close', r));
    }
    await waitFor(() => logger.lines.filter((l) => l.fields.code === 'UGATE_ERR_BAD_REQUEST').length >= 2, 3000, 'bad input logged');
    const again = await sh('curl', [
      '-sS',
      '-k',
      '--resolve',
      `web.mesh.internal:${gwPort}:127.0.0.1`,
      `https://web.mesh.internal:${gwPort}/`,
    ]);
    expect(again.out).toContain('tls hello');
  });
});
