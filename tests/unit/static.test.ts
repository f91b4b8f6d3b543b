// Static serving of the built page: content types, 404s, and no way out of the web root.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveStaticPath, serveStatic } from '../../server/src/static';

let root: string;
let outside: string;
let server: Server;
let port: number;

/** A raw request: the path goes out byte for byte (fetch and URL would normalise '..'). */
function get(path: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  const base = mkdtempSync(join(tmpdir(), 'tabtrain-static-'));
  root = join(base, 'dist');
  outside = join(base, 'secret.txt');
  mkdirSync(join(root, 'assets'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>page</title>');
  writeFileSync(join(root, 'assets', 'app-abc123.js'), 'console.log(1)');
  writeFileSync(join(root, 'assets', 'tfjs-backend-wasm-x.wasm'), new Uint8Array([0, 97, 115, 109]));
  writeFileSync(join(root, 'assets', 'style.css'), 'body{}');
  writeFileSync(join(root, '.env'), 'TOKEN=hidden');
  writeFileSync(outside, 'do not serve');
  symlinkSync(outside, join(root, 'assets', 'link.txt'));
  server = createServer((req, res) => serveStatic(req, res, root));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(join(root, '..'), { recursive: true, force: true });
});

describe('static files', () => {
  it('serves / as index.html with the isolation headers the wasm threads need', async () => {
    const r = await get('/');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(r.body).toContain('<title>page</title>');
    expect(r.headers['cross-origin-opener-policy']).toBe('same-origin');
    expect(r.headers['cross-origin-embedder-policy']).toBe('require-corp');
    expect(r.headers['cache-control']).toBe('no-cache');
    expect((await get('/index.html?x=1')).status).toBe(200);
  });

  it('gives each file its content type; hashed assets are cached for good', async () => {
    const js = await get('/assets/app-abc123.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.headers['cache-control']).toContain('immutable');
    expect(js.headers['x-content-type-options']).toBe('nosniff');
    expect((await get('/assets/tfjs-backend-wasm-x.wasm')).headers['content-type']).toBe('application/wasm');
    expect((await get('/assets/style.css')).headers['content-type']).toBe('text/css; charset=utf-8');
  });

  it('answers HEAD without a body, 304 when unchanged, 405 to other methods', async () => {
    const h = await get('/assets/app-abc123.js', 'HEAD');
    expect(h.status).toBe(200);
    expect(h.body).toBe('');
    expect(h.headers['content-length']).toBe('14');
    const since = (await get('/')).headers['last-modified'] as string;
    expect((await get('/', 'GET', { 'if-modified-since': since })).status).toBe(304);
    const post = await get('/', 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('404s what is not there, including /dashboard before its page is built', async () => {
    expect((await get('/nope.js')).status).toBe(404);
    expect((await get('/assets')).status).toBe(404);
    expect((await get('/dashboard')).status).toBe(404);
  });

  it('refuses every way out of the root: .., encoded .., backslashes, NUL, hidden files, symlinks', async () => {
    const attempts = [
      '/../secret.txt', '/assets/../../secret.txt', '/..%2fsecret.txt', '/..%2Fsecret.txt', '/%2e%2e/secret.txt',
      '/%2E%2E%2Fsecret.txt', '/assets/..%2f..%2fsecret.txt', '/..%5csecret.txt', '/assets%2f..%2f..%2fsecret.txt',
      '/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/index.html%00.js', '/.env', '/assets/link.txt', '/%zz',
    ];
    for (const path of attempts) {
      const r = await get(path);
      expect(r.status, path).toBeGreaterThanOrEqual(400);
      expect(r.body, path).not.toContain('do not serve');
      expect(r.body, path).not.toContain('TOKEN');
    }
    expect(resolveStaticPath('/..%2fsecret.txt', root)).toEqual({ status: 400, message: expect.stringContaining('escapes') });
    expect(resolveStaticPath('/', root)).toEqual({ file: join(root, 'index.html') });
  });

  it('says how to build the page when client/dist is missing', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'tabtrain-nodist-'));
    const s = createServer((req, res) => serveStatic(req, res, join(empty, 'dist')));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const p = (s.address() as { port: number }).port;
    const body = await new Promise<{ status: number; body: string }>((resolve) => {
      request({ host: '127.0.0.1', port: p, path: '/' }, (res) => {
        let b = '';
        res.on('data', (c) => (b += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: b }));
      }).end();
    });
    await new Promise<void>((r) => s.close(() => r()));
    rmSync(empty, { recursive: true, force: true });
    expect(body.status).toBe(404);
    expect(body.body).toContain('npm run build:client');
  });
});
