// A vitest reporter that prints the ten slowest test files at the end of a run, so that the next
// slow test is seen the day it lands (the suite must stay under 12 minutes on 2 cores).
import { relative } from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

export default class SlowestFiles implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const rows = modules
      .map((m) => {
        const d = m.diagnostic();
        return { file: relative(process.cwd(), m.moduleId), ms: d.collectDuration + d.duration };
      })
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 10);
    if (!rows.length) return;
    const total = modules.reduce((s, m) => s + m.diagnostic().collectDuration + m.diagnostic().duration, 0);
    const lines = rows.map((r) => `  ${(r.ms / 1000).toFixed(1).padStart(7)} s  ${r.file}`);
    process.stdout.write(`\nThe ten slowest test files (import + tests; ${(total / 1000).toFixed(0)} s over ${modules.length} files):\n${lines.join('\n')}\n`);
  }
}
