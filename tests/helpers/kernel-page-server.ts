// Serves tests/helpers/kernel-page.ts, bundled by esbuild, on 127.0.0.1 (a secure context, as
// WebGPU requires). No vitest import: the browser test and bench/gpu/browser-layers.ts both use it.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { build } from 'esbuild';
import { ROOT } from '../../server/src/page-build';

export async function serveKernelPage(): Promise<{ url: string; close(): Promise<void> }> {
  const out = await build({
    entryPoints: [join(ROOT, 'tests/helpers/kernel-page.ts')], bundle: true, write: false, format: 'esm', platform: 'browser',
    target: 'es2022', logLevel: 'warning', define: { 'process.env.NODE_ENV': '"production"' },
  });
  const js = out.outputFiles[0].contents;
  const html = '<!doctype html><meta charset="utf-8"><title>kernels</title><script type="module" src="/kernel-page.js"></script>';
  const server = createServer((req, res) => {
    if (req.url === '/kernel-page.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else res.writeHead(200, { 'content-type': 'text/html' }).end(html);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
