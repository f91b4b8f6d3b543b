// The layout shows the architecture: imports go client → shared and server → shared, never between
// client and server, and no package has an import cycle (madge builds the graph from the sources).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import madge from 'madge';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const PACKAGES = ['shared', 'server', 'client'] as const;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The packages a source file imports, by workspace name or by a relative path that leaves its package. */
function packagesImported(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = new Set<string>();
  for (const m of text.matchAll(/(?:^|\s)(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2];
    const ws = /^@tabtrain\/(\w+)/.exec(spec);
    if (ws) found.add(ws[1]);
    else if (spec.startsWith('.')) found.add(relative(ROOT, resolve(file, '..', spec)).split('/')[0]);
  }
  return [...found];
}

describe('architecture', () => {
  it.each(PACKAGES)('%s imports no other package but shared', (pkg) => {
    const offending = sources(join(ROOT, pkg, 'src')).flatMap((f) =>
      packagesImported(f).filter((p) => p !== pkg && p !== 'shared' && (PACKAGES as readonly string[]).includes(p)).map((p) => `${relative(ROOT, f)} → ${p}`));
    expect(offending).toEqual([]);
  });

  it('has no import cycle in any package (type-only imports included)', async () => {
    const graph = await madge(PACKAGES.map((p) => join(ROOT, p, 'src')), {
      fileExtensions: ['ts'], tsConfig: join(ROOT, 'tsconfig.base.json'), detectiveOptions: { ts: { skipTypeImports: false } },
    });
    expect(graph.circular()).toEqual([]);
    // The graph really was built: the coordinator's own imports were seen.
    expect(Object.keys(graph.obj()).length).toBeGreaterThan(30);
  });
});
