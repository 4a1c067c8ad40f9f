import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, type Logger, UgateError } from '@ugate/core';
import { CERT_FILES } from './ca.js';
import { certIdentity, type SpiffeId } from './spiffe.js';

/** Where Istio mounts workload credentials, in the order they are tried. */
export const ISTIO_CERT_DIRS = ['/var/run/secrets/workload-spiffe-credentials', '/etc/certs'] as const;

export interface Credentials {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly id: SpiffeId;
  readonly notAfter: Date;
}

/** Load `tls.crt`, `tls.key`, `ca.crt` from a folder and read the SPIFFE identity of the leaf. */
export function loadCredentials(dir: string): Credentials {
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), 'utf8');
    } catch (e) {
      throw new UgateError(ErrorCodes.CONFIG, `workload credentials: cannot read ${join(dir, f)}`, { cause: e });
    }
  };
  const cert = read(CERT_FILES.cert);
  const x = new X509Certificate(cert);
  return { cert, key: read(CERT_FILES.key), ca: read(CERT_FILES.ca), id: certIdentity(x.subjectAltName), notAfter: new Date(x.validTo) };
}

/** The first Istio mount folder that holds credentials, if any. */
export function findIstioCredentials(): string | undefined {
  return ISTIO_CERT_DIRS.find((d) => existsSync(join(d, CERT_FILES.cert)));
}

/**
 * Credentials that follow their files: a rotation (the files replaced, as a
 * Kubernetes secret mount does) is picked up within `pollMs`; handshakes from
 * then on use the new certificate, live connections are untouched.
 */
export class WorkloadCredentials {
  #current: Credentials;
  readonly #dir: string;
  readonly #listeners = new Set<(c: Credentials) => void>();
  readonly #log: Logger | undefined;
  #watching = false;

  constructor(dir: string, log?: Logger) {
    this.#dir = dir;
    this.#log = log;
    this.#current = loadCredentials(dir);
  }

  get current(): Credentials {
    return this.#current;
  }

  onChange(fn: (c: Credentials) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Start polling the files (stat, not inotify: secret mounts swap symlinks). */
  watch(pollMs = 1000): void {
    if (this.#watching) return;
    this.#watching = true;
    for (const f of Object.values(CERT_FILES)) watchFile(join(this.#dir, f), { interval: pollMs, persistent: false }, () => this.reload());
  }

  stop(): void {
    for (const f of Object.values(CERT_FILES)) unwatchFile(join(this.#dir, f));
    this.#watching = false;
  }

  /** Re-read the files; keeps the old credentials when the new ones are incomplete or invalid. */
  reload(): void {
    let next: Credentials;
    try {
      next = loadCredentials(this.#dir);
    } catch (e) {
      this.#log?.warn(
        { code: ErrorCodes.CONFIG, err: (e as Error).message },
        'workload credentials changed but cannot be loaded; keeping the old ones',
      );
      return;
    }
    if (next.cert === this.#current.cert && next.key === this.#current.key && next.ca === this.#current.ca) return;
    this.#current = next;
    this.#log?.info({ notAfter: next.notAfter.toISOString() }, 'workload credentials reloaded');
    for (const fn of this.#listeners) fn(next);
  }
}
