// Serves a test or benchmark page (a TypeScript entry bundled by esbuild) on 127.0.0.1, a secure
// context as WebGPU requires: tests/helpers/kernel-page.ts for the kernel test and the SwiftShader
// kernel benchmark, bench/page-threads-kit.ts for the wasm threads benchmark. No vitest import.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { build } from 'esbuild';
import { ROOT } from '../../server/src/page-build';

export interface BundlePageOptions {
  /** Sends COOP/COEP, as the coordinator does for its page: SharedArrayBuffer, so tfjs's threaded wasm. */
  isolated?: boolean;
  /** Further files: URL path → file on disk (the wasm binaries). */
  files?: Record<string, string>;
}

export interface BundlePage { url: string; close(): Promise<void> }

/** Bundles `entry` (relative to the repository root) and serves it under a blank HTML page. */
export async function serveBundlePage(entry: string, opts: BundlePageOptions = {}): Promise<BundlePage> {
  const out = await build({
    entryPoints: [join(ROOT, entry)], bundle: true, write: false, format: 'esm', platform: 'browser',
    target: 'es2022', logLevel: 'warning', define: { 'process.env.NODE_ENV': '"production"' },
  });
  const js = out.outputFiles[0].contents;
  const html = '<!doctype html><meta charset="utf-8"><title>kit</title><script type="module" src="/page.js"></script>';
  const isolation: Record<string, string> = opts.isolated ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } : {};
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const file = opts.files?.[path];
    if (path === '/page.js') res.writeHead(200, { 'content-type': 'text/javascript', ...isolation }).end(js);
    else if (file) res.writeHead(200, { 'content-type': file.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream' }).end(readFileSync(file));
    else res.writeHead(200, { 'content-type': 'text/html', ...isolation }).end(html);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

export function serveKernelPage(): Promise<BundlePage> {
  return serveBundlePage('tests/helpers/kernel-page.ts');
}
