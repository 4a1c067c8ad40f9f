// bob's local web service for the quickstart (127.0.0.1:18080):
//   GET  /             → "hello from bob"
//   GET  /bytes/N      → N deterministic pseudo-random bytes; header x-sha256 has their hash
//   POST|PUT /upload   → the sha256 hex of the request body
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 18080);
const block = createHash('sha512').update('ugate').digest();
const chunk = Buffer.alloc(1 << 16);
for (let i = 0; i < chunk.length; i += block.length) block.copy(chunk, i);

function bytes(n) {
  const h = createHash('sha256');
  for (let left = n; left > 0; left -= chunk.length) h.update(chunk.subarray(0, Math.min(left, chunk.length)));
  return h.digest('hex');
}

createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  if (req.method === 'GET' && url.pathname === '/') return res.end('hello from bob\n');
  const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
  if (req.method === 'GET' && m) {
    const n = Number(m[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n, 'x-sha256': bytes(n) });
    let left = n;
    const pump = () => {
      while (left > 0) {
        const c = chunk.subarray(0, Math.min(left, chunk.length));
        left -= c.length;
        if (!res.write(c)) return res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  if ((req.method === 'POST' || req.method === 'PUT') && url.pathname === '/upload') {
    const h = createHash('sha256');
    req.on('data', (c) => h.update(c));
    req.on('end', () => res.end(`${h.digest('hex')}\n`));
    return;
  }
  res.writeHead(404).end('not found\n');
}).listen(port, '127.0.0.1');
