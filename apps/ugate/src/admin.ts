import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ErrorCodes, parseListen, toUgateError } from '@ugate/core';
import type { UgateNode } from './node.js';

export interface AdminInit {
  listen: string;
  /** When set, every endpoint but /healthz/* needs `Authorization: Bearer <token>`. */
  token?: string;
  /** Serves the dashboard's files (GET / and /assets/*); undefined = no dashboard. */
  static?: (path: string) => { type: string; body: Buffer } | undefined;
}

const MAX_BODY = 64 * 1024;

/**
 * The admin endpoint (loopback by default): health, Prometheus metrics, and a JSON API to see
 * and steer the node — identity, listeners, carriers, routes, live streams (and closing one),
 * the effective config (secrets redacted), the log level, name resolution, reload.
 */
export function startAdmin(node: UgateNode, init: AdminInit): Promise<Server> {
  const bind = parseListen(init.listen);
  const token = init.token ? Buffer.from(`Bearer ${init.token}`) : undefined;
  const server: Server = createServer((req, res) => {
    handle(node, init, token, server, req, res).catch((e: unknown) => {
      const err = toUgateError(e);
      if (!res.headersSent) json(res, 500, { code: err.code, error: err.message });
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(bind.port, bind.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(`${JSON.stringify(body, null, 2)}\n`);
}

function text(res: ServerResponse, status: number, body: string, type = 'text/plain'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw Object.assign(new Error(`body larger than ${MAX_BODY} bytes`), { status: 413 });
    chunks.push(c as Buffer);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  if (!raw.trim()) return {};
  try {
    return JSON.parse(raw);
  } catch {
    throw Object.assign(new Error('body is not JSON'), { status: 400 });
  }
}

function authorized(token: Buffer | undefined, req: IncomingMessage): boolean {
  if (!token) return true;
  const got = Buffer.from(req.headers.authorization ?? '');
  return got.length === token.length && timingSafeEqual(got, token);
}

async function handle(
  node: UgateNode,
  init: AdminInit,
  token: Buffer | undefined,
  server: Server,
  req: IncomingMessage,
  res: ServerResponse,
) {
  const url = new URL(req.url ?? '/', 'http://admin');
  const path = url.pathname;
  const method = req.method ?? 'GET';

  if (path === '/healthz/live') return text(res, 200, 'live\n');
  if (path === '/healthz/ready') return node.ready ? text(res, 200, 'ready\n') : text(res, 503, 'starting\n');
  // The dashboard's files hold no secrets; a browser loading the page sends no token (the page then
  // sends it on /api/events).
  if ((method === 'GET' || method === 'HEAD') && init.static && (path === '/' || path.startsWith('/assets/'))) {
    const file = init.static(path);
    if (file) {
      res.writeHead(200, { 'content-type': file.type, 'cache-control': path === '/' ? 'no-store' : 'max-age=3600' });
      return res.end(method === 'HEAD' ? undefined : file.body);
    }
  }
  if (!authorized(token, req)) {
    res.setHeader('www-authenticate', 'Bearer realm="ugate admin"');
    return json(res, 401, { code: ErrorCodes.AUTH, error: 'admin token required (Authorization: Bearer …)' });
  }

  const get = method === 'GET' || method === 'HEAD';
  if (get && path === '/metrics') return text(res, 200, await node.metricsText(), 'text/plain; version=0.0.4');
  if (get && path === '/state') return json(res, 200, node.state());
  if (get && (path === '/resolve' || path === '/api/resolve')) {
    const target = url.searchParams.get('target');
    if (!target) return json(res, 400, { code: ErrorCodes.BAD_REQUEST, error: 'missing ?target=host:port' });
    try {
      return json(res, 200, await node.explain(target));
    } catch (e) {
      const err = toUgateError(e);
      return json(res, 400, { code: err.code, error: err.message });
    }
  }
  if (get && path === '/api/node') return json(res, 200, node.view('node'));
  if (get && path === '/api/listeners') return json(res, 200, node.view('listeners'));
  if (get && path === '/api/carriers') return json(res, 200, node.view('carriers'));
  if (get && path === '/api/routes') return json(res, 200, node.view('routes'));
  if (get && path === '/api/streams') return json(res, 200, node.view('streams'));
  if (get && path === '/api/config') return json(res, 200, node.view('config'));
  if (get && path === '/api/events') return events(node, server, req, res);

  const stream = /^\/api\/streams\/([A-Za-z0-9]+)$/.exec(path);
  if (stream && method === 'DELETE') {
    return node.closeStream(stream[1]!)
      ? json(res, 200, { closed: stream[1] })
      : json(res, 404, { code: ErrorCodes.NO_ROUTE, error: `no live stream ${stream[1]}` });
  }
  if (path === '/api/log') {
    if (get) return json(res, 200, { level: node.logLevel() });
    if (method === 'PUT' || method === 'POST') {
      const body = (await readJson(req).catch((e: Error & { status?: number }) => e)) as
        | { level?: unknown }
        | null
        | (Error & { status?: number });
      if (body instanceof Error) return json(res, body.status ?? 400, { code: ErrorCodes.BAD_REQUEST, error: body.message });
      try {
        node.setLogLevel(String(body && typeof body === 'object' ? body.level : undefined));
      } catch (e) {
        return json(res, 400, { code: ErrorCodes.BAD_REQUEST, error: (e as Error).message });
      }
      return json(res, 200, { level: node.logLevel() });
    }
  }
  if (path === '/api/reload' && method === 'POST') {
    const r = await node.reload();
    return json(res, r.ok ? 200 : 400, r);
  }
  if (path.startsWith('/api/') || path === '/metrics' || path === '/state') {
    return json(res, 405, { code: ErrorCodes.BAD_REQUEST, error: `${method} ${path} is not supported` });
  }
  text(res, 404, 'not found\n');
}

/**
 * Server-sent events: a snapshot of the node (streams, carriers, counters) every second. The
 * stream ends once the admin server is closing: `close()` waits for every connection to end,
 * and an open dashboard would otherwise hold a stopping node forever.
 */
function events(node: UgateNode, server: Server, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  let t: NodeJS.Timeout | undefined;
  const stop = () => clearInterval(t);
  const send = () => {
    if (!server.listening) {
      stop();
      res.end();
      return;
    }
    res.write(`event: snapshot\ndata: ${JSON.stringify(node.view('snapshot'))}\n\n`);
  };
  send();
  if (!res.writableEnded) t = setInterval(send, 1000);
  req.once('close', stop);
  res.once('error', stop);
}
