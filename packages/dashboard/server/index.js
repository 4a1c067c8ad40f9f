// Serves the built dashboard (dist/) to the admin endpoint: GET / → index.html,
// GET /assets/<file> → the hashed assets Vite wrote. Everything else → undefined.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.txt': 'text/plain; charset=utf-8',
};

/** The content type of a file name, by its extension. */
export function contentType(name) {
  return TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream';
}

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));

/**
 * The dashboard's files, read once from `dir` (default: this package's dist/). The lookup
 * only knows the files found there — `/`, `/index.html` and `/assets/<name>` — so a request
 * path is never joined onto the file system.
 */
export function dashboardFiles(dir = DIST) {
  const files = new Map();
  const add = (path, file) => {
    try {
      if (statSync(file).isFile()) files.set(path, { type: contentType(file), body: readFileSync(file) });
    } catch {
      // not built (yet): no such file
    }
  };
  add('/', join(dir, 'index.html'));
  if (files.has('/')) files.set('/index.html', files.get('/'));
  let assets = [];
  try {
    assets = readdirSync(join(dir, 'assets'));
  } catch {
    // no assets directory
  }
  for (const name of assets) add(`/assets/${name}`, join(dir, 'assets', name));
  return (path) => files.get(path);
}
