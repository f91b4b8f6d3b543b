// Builds the worker page (index.html) and, once it exists, the dashboard (dashboard.html) into
// client/dist, which the coordinator serves on its own port. `npm run build:client`.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));
const input: Record<string, string> = { index: resolve(root, 'index.html') };
if (existsSync(resolve(root, 'dashboard.html'))) input.dashboard = resolve(root, 'dashboard.html');

export default defineConfig({
  root,
  // Relative asset URLs: the page works wherever it is mounted (behind a proxy path, too).
  base: './',
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: resolve(root, 'dist'),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    // Not minified: tfjs-backend-wasm starts its threads by stringifying its Emscripten factory
    // into a worker, and any rewrite of that module (mangling or compressing its _scriptDir)
    // breaks the worker: "ReferenceError: e is not defined", and tf.setBackend('wasm') never
    // settles. ~3.8 MB of JS instead of ~1.3 MB, fetched once per tab on the LAN.
    minify: false,
    // TensorFlow.js is big; the page is one app, not a site, so the size warning is noise.
    chunkSizeWarningLimit: 8192,
    // The wasm binaries are fetched by URL, never inlined.
    assetsInlineLimit: 0,
    rolldownOptions: { input },
  },
});
