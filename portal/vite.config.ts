// Vite build of the portal: portal/src → portal/dist, served by `rebound serve` at `/`
// (src/api/portal.ts). No inline scripts or styles in the output, so the server's CSP can forbid them.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  root: new URL('.', import.meta.url).pathname,
  base: '/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
    modulePreload: { polyfill: false },
  },
});
