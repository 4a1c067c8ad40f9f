import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * TLS client options from a workload credentials folder (Istio's file names), the way ugate's
 * dialer connects: TLS 1.3, ALPN h2, no SNI. No identity check: the bench's own probes only.
 */
export function benchClientTls(certDir: string) {
  const file = (f: string) => readFileSync(join(certDir, f));
  return {
    key: file('tls.key'),
    cert: file('tls.crt'),
    ca: file('ca.crt'),
    minVersion: 'TLSv1.3' as const,
    ALPNProtocols: ['h2'],
    servername: '',
    checkServerIdentity: () => undefined,
  };
}
