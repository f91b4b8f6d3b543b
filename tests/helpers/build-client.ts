// Builds the worker page (client/dist) when it is missing or older than its sources. Registered
// as a vitest globalSetup: it builds only when the run includes the browser tests, so unit and
// integration runs never pay for it. The browser tests call ensureClientBuilt() again (a no-op
// when fresh) so that they also work under a config without this setup.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
export const DIST = join(ROOT, 'client/dist');

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

/** Whether client/dist must be rebuilt, and why (for the log). */
export function clientStaleness(): string | null {
  const built = join(DIST, 'index.html');
  if (!existsSync(built)) return 'client/dist/index.html is missing';
  const builtAt = statSync(built).mtimeMs;
  for (const s of SOURCES) {
    const n = newest(join(ROOT, s));
    if (n.mtime > builtAt) return `${n.file.slice(ROOT.length + 1)} is newer than client/dist`;
  }
  return null;
}

export function ensureClientBuilt(): void {
  const why = clientStaleness();
  if (!why) return;
  console.log(`[build-client] ${why}: running vite build`);
  execFileSync(process.execPath, [join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'client/vite.config.ts'], { cwd: ROOT, stdio: 'inherit' });
}

/** True when this vitest invocation includes tests/browser (no file filter, or one naming it). */
function runIncludesBrowserTests(argv = process.argv.slice(2)): boolean {
  const positional = argv.filter((a, i) => !a.startsWith('-') && !(i > 0 && /^--(config|project|reporter|root|dir|t|testNamePattern)$/.test(argv[i - 1])));
  const filters = positional.filter((a) => !['run', 'watch', 'dev', 'related', 'bench'].includes(a));
  return filters.length === 0 || filters.some((f) => f.includes('browser'));
}

export default function setup(): void {
  if (runIncludesBrowserTests()) ensureClientBuilt();
}
