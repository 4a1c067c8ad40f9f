import { defineConfig } from 'vite';

/** `pnpm dev` proxies the API to a running node's admin endpoint (UGATE_ADMIN, default the quickstart gateway). */
const admin = process.env.UGATE_ADMIN ?? 'http://127.0.0.1:15000';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    target: 'es2022',
  },
  server: {
    proxy: { '/api': { target: admin, changeOrigin: true } },
  },
});
