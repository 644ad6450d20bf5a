// Vite builds the console into dist/, which skiff-api embeds and serves at
// /console/ (api/src/http/console.rs). JSX is compiled by Vite's own esbuild
// for Preact's automatic runtime, so no Babel plugin is needed.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/console/',
  esbuild: {
    jsx: 'automatic',
    jsxImportSource: 'preact',
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Modern browsers only: module scripts, no legacy polyfill chunk.
    target: 'es2020',
    // No inline assets (data: URLs), so the policy can stay 'self' only.
    assetsInlineLimit: 0,
    // Sources stay out of the binary.
    sourcemap: false,
    // The preload helper is injected as a module, never inline.
    modulePreload: { polyfill: false },
  },
  server: {
    // `npm run dev`: the API of the local stack (deploy/local/up.sh),
    // override with SKIFF_API.
    proxy: { '/v1': process.env.SKIFF_API ?? 'http://127.0.0.1:8080' },
  },
});
