import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentType, dashboardFiles } from '../server/index.js';

describe('dashboardFiles', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ugate-dashboard-'));
    mkdirSync(join(dir, 'assets'));
    mkdirSync(join(dir, 'assets', 'nested'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
    writeFileSync(join(dir, 'assets', 'index-abc123.js'), 'console.log(1)');
    writeFileSync(join(dir, 'assets', 'index-abc123.css'), 'body{}');
    writeFileSync(join(dir, 'assets', 'logo-xyz.svg'), '<svg/>');
    writeFileSync(join(dir, 'assets', 'font-1.woff2'), Buffer.from([0x77, 0x4f, 0x46, 0x32]));
    writeFileSync(join(dir, 'assets', 'nested', 'deep.js'), 'deep');
    writeFileSync(join(dir, 'secret.txt'), 'not served');
    writeFileSync(join(dir, 'package.json'), '{}');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('serves index.html for / and the assets with their content types', () => {
    const files = dashboardFiles(dir);
    expect(files('/')).toEqual({ type: 'text/html; charset=utf-8', body: Buffer.from('<!doctype html><title>t</title>') });
    expect(files('/index.html')?.body.toString()).toBe('<!doctype html><title>t</title>');
    expect(files('/assets/index-abc123.js')).toEqual({ type: 'text/javascript; charset=utf-8', body: Buffer.from('console.log(1)') });
    expect(files('/assets/index-abc123.css')?.type).toBe('text/css; charset=utf-8');
    expect(files('/assets/logo-xyz.svg')?.type).toBe('image/svg+xml');
    expect(files('/assets/font-1.woff2')?.type).toBe('font/woff2');
  });

  it('returns undefined for anything else, traversal included', () => {
    const files = dashboardFiles(dir);
    for (const path of [
      '/../package.json',
      '/package.json',
      '/secret.txt',
      '/assets/../secret.txt',
      '/assets/..%2fsecret.txt',
      '/assets/%2e%2e/secret.txt',
      '/assets/nested/deep.js',
      '/assets/',
      '/assets',
      '/assets/missing.js',
      '//etc/passwd',
      '/api/node',
      '',
      'index.html',
    ]) {
      expect(files(path), path).toBeUndefined();
    }
  });

  it('has nothing to serve when the directory is not built', () => {
    const files = dashboardFiles(join(dir, 'nope'));
    expect(files('/')).toBeUndefined();
    expect(files('/index.html')).toBeUndefined();
  });

  it('knows the content types by extension', () => {
    expect(contentType('a.html')).toBe('text/html; charset=utf-8');
    expect(contentType('a.JS')).toBe('text/javascript; charset=utf-8');
    expect(contentType('a.json')).toBe('application/json');
    expect(contentType('a.png')).toBe('image/png');
    expect(contentType('a.unknown')).toBe('application/octet-stream');
  });

  it('serves the built page: index.html and every asset it links', () => {
    const dist = fileURLToPath(new URL('../dist/', import.meta.url));
    const files = dashboardFiles();
    const index = files('/');
    expect(index, 'packages/dashboard/dist is built (pnpm build)').toBeDefined();
    expect(index!.body).toEqual(readFileSync(join(dist, 'index.html')));
    const html = index!.body.toString();
    expect(html).toContain('data-testid="mesh"');
    const linked = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    expect(linked.some((p) => p.endsWith('.js'))).toBe(true);
    expect(linked.some((p) => p.endsWith('.css'))).toBe(true);
    for (const path of linked) {
      const file = files(path);
      expect(file, path).toBeDefined();
      expect(file!.type).toBe(path.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'text/css; charset=utf-8');
    }
    expect(files('/../package.json')).toBeUndefined();
    expect(files('/src/main.ts')).toBeUndefined();
  });
});
