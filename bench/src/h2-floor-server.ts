/**
 * The node:http2 floor for the HBONE benchmark: an HBONE server with nothing of ugate in it
 * (no switch, policy, discovery, metrics, logging or relay), the least any HBONE server on
 * node:http2 has to do per stream: the same mTLS (TLS 1.3, client certificate from the CA) and
 * HTTP/2 windows as ugate's, CONNECT → TCP to the authority → 200 → pipe both ways.
 * Prints `{"port":N}` once listening.
 *
 *   node h2-floor-server.js --certs DIR
 */
import { readFileSync } from 'node:fs';
import { createSecureServer, type ServerHttp2Stream } from 'node:http2';
import { connect } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { H2, h2Settings } from '@ugate/proto-hbone';

const { values: a } = parseArgs({ options: { certs: { type: 'string' } } });
if (!a.certs) {
  process.stderr.write('h2-floor-server: --certs DIR is required\n');
  process.exit(1);
}
const file = (n: string) => readFileSync(join(a.certs!, n));

const server = createSecureServer({
  key: file('tls.key'),
  cert: file('tls.crt'),
  ca: file('ca.crt'),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.3',
  ALPNProtocols: ['h2'],
  settings: h2Settings(true),
});
server.on('session', (s) => s.setLocalWindowSize(H2.connectionWindow));
server.on('stream', (stream: ServerHttp2Stream, headers) => {
  stream.on('error', () => {});
  const authority = String(headers[':authority'] ?? '');
  const i = authority.lastIndexOf(':');
  const up = connect({ host: authority.slice(0, i), port: Number(authority.slice(i + 1)), allowHalfOpen: true, noDelay: true });
  up.on('error', () => (stream.headersSent ? stream.destroy() : stream.respond({ ':status': 503 }, { endStream: true })));
  up.once('connect', () => {
    stream.respond({ ':status': 200 });
    stream.pipe(up);
    up.pipe(stream);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
