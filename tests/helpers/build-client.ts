// Builds the worker page (client/dist) when it is missing or older than its sources. Registered
// as a vitest globalSetup: it builds only when the run includes the browser tests, so unit and
// integration runs never pay for it. The browser tests call ensureClientBuilt() again (a no-op
// when fresh) so that they also work under a config without this setup. The build itself is the
// one `serve` runs (server/src/page-build.ts).
import { buildPageSync, pageStaleness, PAGE_DIST, ROOT } from '../../server/src/page-build';

export { ROOT };
export const DIST = PAGE_DIST;

/** Whether client/dist must be rebuilt, and why (for the log). */
export const clientStaleness = pageStaleness;

export function ensureClientBuilt(): void {
  const why = pageStaleness();
  if (!why) return;
  console.log(`[build-client] ${why}: running vite build`);
  buildPageSync();
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
