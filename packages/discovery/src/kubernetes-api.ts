import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import { type ErrorCode, ErrorCodes, UgateError } from '@ugate/core';
import type { ApiCredentials } from './kubernetes-config.js';

/** Largest response body accepted (a page of a list). */
const MAX_BODY = 32 * 1024 * 1024;

/** TLS verification failures: the server is not who the configured CA says. */
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH)/;

export type KubeObject = Record<string, unknown>;

/** A non-2xx answer from the API server; `status` is the HTTP status. */
export class KubeApiError extends UgateError {
  readonly status: number;
  constructor(code: ErrorCode, status: number, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** A read-only Kubernetes API client: GET a path, get JSON back, or a clear UgateError. */
export class KubeApi {
  readonly #creds: ApiCredentials;
  readonly #timeoutMs: number;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 8 });
  #closed = false;

  constructor(creds: ApiCredentials, timeoutMs: number) {
    this.#creds = creds;
    this.#timeoutMs = timeoutMs;
  }

  get origin(): string {
    return `${this.#creds.server.origin} (${this.#creds.origin})`;
  }

  /** GET `path` (with its query). Resolves `undefined` for 404 NotFound; throws UgateError for any other failure. */
  async get(path: string): Promise<KubeObject | undefined> {
    if (this.#closed) throw new UgateError(ErrorCodes.CLOSED, 'kubernetes source is closed');
    return this.#send(path, await this.#creds.token());
  }

  close(): void {
    this.#closed = true;
    this.#agent.destroy();
  }

  #url(path: string): string {
    return `${this.#creds.server.origin}${this.#creds.server.pathname.replace(/\/+$/, '')}${path}`;
  }

  #send(path: string, token: string | undefined): Promise<KubeObject | undefined> {
    const c = this.#creds;
    const host = c.server.hostname.replace(/^\[(.*)\]$/, '$1');
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'ugate-discovery' };
    if (token) headers.authorization = `Bearer ${token}`;
    const what = `GET ${this.#url(path)}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: UgateError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(err);
      };
      const req = request({
        agent: this.#agent,
        host,
        port: c.server.port || 443,
        path: c.server.pathname.replace(/\/+$/, '') + path,
        method: 'GET',
        headers,
        ca: c.ca,
        cert: c.cert,
        key: c.key,
        rejectUnauthorized: !c.insecure,
        // SNI carries host names only; for an IP the certificate is checked against the IP.
        servername: c.serverName ?? (isIP(host) ? '' : host),
      });
      const timer = setTimeout(
        () => fail(new UgateError(ErrorCodes.TIMEOUT, `${what}: no complete answer within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      req.on('error', (e) => fail(networkError(what, e)));
      req.on('response', (res: IncomingMessage) => {
        const socket = res.socket;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY) fail(new UgateError(ErrorCodes.UNREACHABLE, `${what}: response larger than ${MAX_BODY} bytes`));
          else chunks.push(chunk);
        });
        res.on('error', (e) => fail(networkError(what, e)));
        res.on('aborted', () => fail(new UgateError(ErrorCodes.UNREACHABLE, `${what}: connection closed mid-response`)));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const reply = {
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type'] ?? ''),
            body: Buffer.concat(chunks),
          };
          if (reply.status === 404) return resolve(undefined);
          try {
            resolve(parseOk(what, reply));
          } catch (e) {
            // A failed exchange does not leave its connection for reuse. (Now, before the agent frees it.)
            socket.destroy();
            reject(e);
          }
        });
      });
      req.end();
    });
  }
}

interface Reply {
  readonly status: number;
  readonly contentType: string;
  readonly body: Buffer;
}

/** The JSON object of a 2xx `application/json` answer; anything else throws. */
function parseOk(what: string, res: Reply): KubeObject {
  if (res.status < 200 || res.status > 299) throw statusError(what, res.status, res.body);
  if (!/^application\/json\b/i.test(res.contentType)) {
    throw new UgateError(
      ErrorCodes.UNREACHABLE,
      `${what}: HTTP ${res.status} with content-type ${JSON.stringify(res.contentType)}, not JSON`,
    );
  }
  const body = parseJson(res.body);
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new UgateError(ErrorCodes.UNREACHABLE, `${what}: HTTP ${res.status} with a malformed JSON body`);
  }
  return body as KubeObject;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** A non-2xx answer: HTTP status plus the `Status` object's reason and message when there is one. */
function statusError(what: string, status: number, body: Buffer): KubeApiError {
  const s = parseJson(body) as { kind?: unknown; reason?: unknown; message?: unknown } | undefined;
  const isStatus = s !== null && typeof s === 'object' && s.kind === 'Status';
  const reason = isStatus && typeof s.reason === 'string' ? ` ${s.reason}` : '';
  const message = isStatus && typeof s.message === 'string' ? s.message : body.toString('utf8', 0, 200).trim();
  const text = `${what}: HTTP ${status}${reason}${message ? `: ${message}` : ''}`;
  if (status === 401) return new KubeApiError(ErrorCodes.AUTH, status, `${text} (the credentials were not accepted)`);
  if (status === 403)
    return new KubeApiError(ErrorCodes.AUTH, status, `${text} (RBAC: grant get/list on services, endpointslices and pods)`);
  if (status === 504) return new KubeApiError(ErrorCodes.TIMEOUT, status, text);
  return new KubeApiError(ErrorCodes.UNREACHABLE, status, text);
}

function networkError(what: string, e: Error): UgateError {
  if (e instanceof UgateError) return e;
  const code = (e as { code?: unknown }).code;
  const sys = typeof code === 'string' ? code : '';
  if (TLS_CODES.test(sys)) {
    return new UgateError(ErrorCodes.AUTH, `${what}: TLS: the API server's certificate was not accepted (${sys}: ${e.message})`, {
      cause: e,
    });
  }
  if (sys === 'ETIMEDOUT') return new UgateError(ErrorCodes.TIMEOUT, `${what}: ${e.message}`, { cause: e });
  const hint = sys === 'ECONNREFUSED' ? 'connection refused' : sys || 'network error';
  return new UgateError(ErrorCodes.UNREACHABLE, `${what}: ${hint}: ${e.message}`, { cause: e });
}
