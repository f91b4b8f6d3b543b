// The worker page and the dashboard (client/dist) are built with Vite from client/. `npm ci`
// builds them (the root package's `prepare` script); `serve` builds them again when they are
// missing or older than their sources, so a fresh clone or an edited page never answers 404.
//
// A build goes to a fresh folder and then replaces client/dist with two renames, so a coordinator
// already serving the old page (another run, a test) never sees a half-written one.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const PAGE_DIST = join(ROOT, 'client/dist');
const VITE = join(ROOT, 'node_modules/vite/bin/vite.js');
const CONFIG = join(ROOT, 'client/vite.config.ts');

/** What the page is built from. */
const SOURCES = ['client/index.html', 'client/dashboard.html', 'client/vite.config.ts', 'client/src', 'shared/src', 'package-lock.json'];

function newest(path: string): { mtime: number; file: string } {
  if (!existsSync(path)) return { mtime: 0, file: path };
  const st = statSync(path);
  if (!st.isDirectory()) return { mtime: st.mtimeMs, file: path };
  let best = { mtime: st.mtimeMs, file: path };
  for (const name of readdirSync(path)) {
    const n = newest(join(path, name));
    if (n.mtime > best.mtime) best = n;
  }
  return best;
}

/** Why client/dist must be (re)built, or null when it is current. */
export function pageStaleness(): string | null {
  const built = join(PAGE_DIST, 'index.html');
  if (!existsSync(built)) return 'client/dist is missing';
  const builtAt = statSync(built).mtimeMs;
  for (const s of SOURCES) {
    const n = newest(join(ROOT, s));
    if (n.mtime > builtAt) return `${n.file.slice(ROOT.length + 1)} is newer than client/dist`;
  }
  return null;
}

const freshOut = () => join(ROOT, 'node_modules/.cache', `tabtrain-page-${process.pid}-${Date.now()}`);
const viteArgs = (out: string) => [VITE, 'build', '--config', CONFIG, '--outDir', out, '--emptyOutDir'];

/** Puts a finished build in place of client/dist (two renames), or says why not. */
function swapIn(out: string, code: number | null, output: string): void {
  if (code !== 0 || !existsSync(join(out, 'index.html'))) {
    rmSync(out, { recursive: true, force: true });
    const last = output.trim().split('\n').filter(Boolean).slice(-3).join(' | ');
    throw new Error(`vite build exited ${code}: ${last.slice(0, 400)}`);
  }
  const old = `${out}-old`;
  try {
    try { renameSync(PAGE_DIST, old); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
    renameSync(out, PAGE_DIST);
  } catch (e) {
    if (!existsSync(PAGE_DIST) && existsSync(old)) renameSync(old, PAGE_DIST);
    rmSync(out, { recursive: true, force: true });
    throw e;
  }
  rmSync(old, { recursive: true, force: true });
}

/** Runs Vite into a fresh folder and swaps it in. Rejects with Vite's last lines. */
export function buildPage(): Promise<void> {
  const out = freshOut();
  return new Promise<void>((resolvePromise, reject) => {
    const p = spawn(process.execPath, viteArgs(out), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => { output += d; });
    p.stderr.on('data', (d) => { output += d; });
    p.on('error', reject);
    p.on('exit', (code) => {
      try {
        swapIn(out, code, output);
        resolvePromise();
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/** buildPage, blocking (for test set-up). */
export function buildPageSync(): void {
  const out = freshOut();
  const r = spawnSync(process.execPath, viteArgs(out), { cwd: ROOT, encoding: 'utf8' });
  swapIn(out, r.status, `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`);
}

/**
 * Builds the page when it is missing or stale, saying so on `log`. Never throws: without a page,
 * browser tabs get a 404 that says how to build it, and Node workers can still join.
 */
export async function ensurePageBuilt(log: (line: string) => void): Promise<void> {
  const why = pageStaleness();
  if (!why) return;
  if (!existsSync(VITE)) {
    log(`the worker page is not built (${why}) and Vite is not installed: run \`npm ci\` (with dev dependencies), then \`npm run build:client\`; until then browser tabs get a 404`);
    return;
  }
  const t0 = Date.now();
  log(`building the worker page and dashboard (${why}): vite build, a few seconds…`);
  try {
    await buildPage();
    log(`built the worker page in ${((Date.now() - t0) / 1000).toFixed(1)} s (client/dist)`);
  } catch (e) {
    if (!pageStaleness()) return log('the worker page was built meanwhile by another start');
    const had = existsSync(join(PAGE_DIST, 'index.html'));
    log(`could not build the worker page: ${(e as Error).message}; ${had ? 'serving the previous build' : 'browser tabs get a 404 until `npm run build:client` succeeds'}`);
  }
}
