import { createServer, type Server } from 'node:http';
import { parseListen } from '@ugate/core';
import type { UgateNode } from './node.js';

/** Loopback admin endpoint: readiness, JSON state, Prometheus text metrics, name resolution with reasons. */
export function startAdmin(node: UgateNode, listen: string): Promise<Server> {
  const bind = parseListen(listen);
  const server = createServer((req, res) => {
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    if (path === '/healthz/ready') return node.ready ? send(200, 'text/plain', 'ready\n') : send(503, 'text/plain', 'starting\n');
    if (path === '/state') return send(200, 'application/json', `${JSON.stringify(node.state(), null, 2)}\n`);
    if (path === '/metrics') {
      node.metricsText().then(
        (text) => send(200, 'text/plain; version=0.0.4', text),
        (e: Error) => send(500, 'text/plain', `${e.message}\n`),
      );
      return;
    }
    if (path === '/resolve') {
      const target = url.searchParams.get('target');
      if (!target) return send(400, 'application/json', `${JSON.stringify({ error: 'missing ?target=host:port' })}\n`);
      node.explain(target).then(
        (x) => send(200, 'application/json', `${JSON.stringify(x, null, 2)}\n`),
        (e: Error & { code?: string }) => send(400, 'application/json', `${JSON.stringify({ code: e.code, error: e.message })}\n`),
      );
      return;
    }
    send(404, 'text/plain', 'not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(bind.port, bind.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
