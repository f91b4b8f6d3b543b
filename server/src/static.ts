// Static files: the Vite-built worker page (client/dist) on the coordinator's own port, so a tab
// that opens http://HOST:PORT/ joins the coordinator that served it.
//
// Everything here is untrusted input: the path is percent-decoded once, any '..' segment (plain
// or encoded: %2e%2e, ..%2f, ..%5c) is refused, and the file found must still lie inside the
// root after symlinks are resolved.
import { createReadStream, existsSync, realpathSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where `npm run build:client` puts the page. */
export const DEFAULT_STATIC_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../client/dist');

export const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  // application/wasm is what WebAssembly.instantiateStreaming insists on.
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** URL paths that name a page rather than a file. `/dashboard` exists only once its page is built. */
const PAGES: Record<string, string> = { '/': 'index.html', '/index.html': 'index.html', '/dashboard': 'dashboard.html', '/dashboard/': 'dashboard.html' };

function reply(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra });
  res.end(`${text}\n`);
}

/**
 * Maps a raw request path to a file under `root`, or says why not. Exported for tests.
 * Returns { file } or { status, message }.
 */
export function resolveStaticPath(rawPath: string, root: string): { file: string } | { status: number; message: string } {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    return { status: 400, message: 'bad request: malformed percent-encoding in the path' };
  }
  if (!decoded.startsWith('/') || decoded.includes('\0') || decoded.includes('\\')) return { status: 400, message: 'bad request: invalid path' };
  // Refuse dot segments whether they came plain or encoded; also refuse hidden files (.git, .env).
  if (decoded.split('/').some((seg) => seg === '..' || seg === '.' || (seg.startsWith('.') && seg.length > 0))) {
    return { status: 400, message: 'bad request: path escapes the web root' };
  }
  const name = PAGES[decoded] ?? decoded.slice(1);
  const rootAbs = resolve(root);
  const file = resolve(rootAbs, name);
  if (file !== rootAbs && !file.startsWith(rootAbs + sep)) return { status: 400, message: 'bad request: path escapes the web root' };
  return { file };
}

/**
 * Serves GET/HEAD for static files under `root` and answers every request (404 when absent).
 * The coordinator calls it for every path it does not handle itself.
 */
export function serveStatic(req: IncomingMessage, res: ServerResponse, root: string = DEFAULT_STATIC_DIR): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    reply(res, 405, `method ${req.method} not allowed`, { allow: 'GET, HEAD' });
    return;
  }
  // The raw path, before any URL normalisation (WHATWG URL would resolve '/a/%2e%2e/' silently).
  const raw = (req.url ?? '/').split(/[?#]/, 1)[0] || '/';
  const found = resolveStaticPath(raw, root);
  if ('status' in found) {
    reply(res, found.status, found.message);
    return;
  }
  let stat;
  try {
    stat = statSync(found.file);
    // Symlinks inside the root must not lead out of it.
    const real = realpathSync(found.file);
    const realRoot = realpathSync(root);
    if (real !== realRoot && !real.startsWith(realRoot + sep)) {
      reply(res, 400, 'bad request: path escapes the web root');
      return;
    }
  } catch {
    stat = null;
  }
  if (!stat || !stat.isFile()) {
    const decoded = decodeURIComponent(raw);
    if ((decoded === '/' || decoded === '/index.html') && !existsSync(resolve(root, 'index.html'))) {
      reply(res, 404, `the worker page is not built: run \`npm run build:client\` (looked in ${root})`);
    } else {
      reply(res, 404, `not found: ${decoded.slice(0, 200)}`);
    }
    return;
  }
  const ext = extname(found.file).toLowerCase();
  const isHtml = ext === '.html';
  const headers: Record<string, string> = {
    'content-type': CONTENT_TYPES[ext] ?? 'application/octet-stream',
    'content-length': String(stat.size),
    'last-modified': stat.mtime.toUTCString(),
    'x-content-type-options': 'nosniff',
    'cross-origin-resource-policy': 'same-origin',
    // Vite names built assets by content hash: they never change under the same name.
    'cache-control': raw.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
  };
  if (isHtml && found.file.endsWith(`${sep}index.html`)) {
    // Cross-origin isolation gives the worker page SharedArrayBuffer, so the wasm fallback can
    // use threads. The page loads nothing from other origins.
    headers['cross-origin-opener-policy'] = 'same-origin';
    headers['cross-origin-embedder-policy'] = 'require-corp';
  }
  // A Web Worker started by that page (the exact copy of its weights, exact-replica-webworker.ts)
  // must itself be served with COEP, or Chromium refuses to start it there.
  if (ext === '.js') headers['cross-origin-embedder-policy'] = 'require-corp';
  const since = req.headers['if-modified-since'];
  if (since && !Number.isNaN(Date.parse(since)) && Math.floor(stat.mtimeMs / 1000) <= Math.floor(Date.parse(since) / 1000)) {
    delete headers['content-length'];
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const stream = createReadStream(found.file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}
