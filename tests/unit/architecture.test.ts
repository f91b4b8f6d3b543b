// The layout shows the architecture: imports go client → shared and server → shared, never between
// client and server, and no package has an import cycle (madge builds the graph from the sources).
// Inside the server, the rooms keep to their jobs (docs/ARCHITECTURE.md, "never"), and no source
// file grows past 450 lines: a new behaviour gets its own module and a line of wiring.
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

/** The most lines a source file may have; generated code (a "GENERATED" first line) aside. */
const MAX_LINES = 450;
const SOURCE_DIRS = ['shared/src', 'server/src', 'client/src', 'tests', 'bench'];

/** The server files whose source imports `module` (a path relative to server/src, no extension). */
function importersOf(module: string): string[] {
  const name = module.replace(/^\.\//, '');
  return sources(join(ROOT, 'server/src')).filter((f) => {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1] ?? m[2];
      if (spec.startsWith('.') && relative(join(ROOT, 'server/src'), resolve(f, '..', spec)) === name) return true;
    }
    return false;
  }).map((f) => relative(join(ROOT, 'server/src'), f));
}

/** Whether `file` (relative to server/src) is the allowed name or matches its pattern (a `*` stands for any part of one name). */
function allows(allowed: string, file: string): boolean {
  return new RegExp(`^${allowed.replaceAll('.', '\\.').replaceAll('*', '[^/]*')}$`).test(file);
}

describe('architecture', () => {
  it(`has no source file over ${MAX_LINES} lines`, () => {
    const long = SOURCE_DIRS.flatMap((d) => sources(join(ROOT, d)))
      .map((f) => ({ f: relative(ROOT, f), text: readFileSync(f, 'utf8') }))
      .filter(({ text }) => !text.startsWith('// GENERATED'))
      .map(({ f, text }) => ({ f, lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) }))
      .filter(({ lines }) => lines > MAX_LINES)
      .map(({ f, lines }) => `${f}: ${lines} lines`);
    expect(long, 'split the file by job: a new behaviour gets its own module and a line of wiring').toEqual([]);
  });

  it('keeps the coordinator wiring: coordinator.ts at most 400 lines', () => {
    const lines = readFileSync(join(ROOT, 'server/src/coordinator.ts'), 'utf8').trimEnd().split('\n').length;
    expect(lines).toBeLessThanOrEqual(400);
  });

  // The rooms' "never" rules (docs/ARCHITECTURE.md): who may import whom inside the server.
  it.each<[string, string[], string]>([
    ['reducer', ['step.ts', 'step-*.ts'], 'the step owns its reducer (step.ts and its modes, step-*.ts)'],
    ['transport', ['coordinator.ts'], 'only the coordinator builds the socket wire; everything else sends through Wire'],
    ['sessions', ['coordinator.ts', 'training-step.ts'], 'the sessions are driven by the coordinator and the training step'],
    ['replicas', ['coordinator.ts', 'sessions.ts', 'training-step.ts'], 'who holds which version is written in replicas.ts alone'],
    ['run-state', ['coordinator.ts'], 'the coordinator is the only one that pauses, resumes and stops'],
  ])('server/src/%s.ts is imported only by %j (%s)', (module, allowed) => {
    const importers = importersOf(module).filter((f) => !f.startsWith('bench/'));
    expect(importers.filter((f) => !allowed.some((a) => allows(a, f)))).toEqual([]);
    expect(importers.length, `${module}.ts is imported at all (the rule checks something)`).toBeGreaterThan(0);
  });

  it('writes which version and basis a worker holds in replicas.ts alone', () => {
    const writers = sources(join(ROOT, 'server/src')).filter((f) => !f.endsWith('replicas.ts'))
      .filter((f) => /\b(conn|c|w|worker)\.(version|basis)\s*=[^=]/.test(readFileSync(f, 'utf8')))
      .map((f) => relative(ROOT, f));
    expect(writers).toEqual([]);
    expect(readFileSync(join(ROOT, 'server/src/replicas.ts'), 'utf8')).toMatch(/conn\.version = /);
  });

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
