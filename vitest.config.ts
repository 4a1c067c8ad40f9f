import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (p: string) => fileURLToPath(new URL(`./${p}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      '@ugate/core': src('packages/core'),
      '@ugate/proto-ssh': src('packages/proto-ssh'),
      '@ugate/proto-socks': src('packages/proto-socks'),
      '@ugate/proto-http': src('packages/proto-http'),
      '@ugate/proto-hbone': src('packages/proto-hbone'),
      '@ugate/discovery': src('packages/discovery'),
      ugate: src('apps/ugate'),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
