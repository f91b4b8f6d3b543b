// The README stays true: its install section names every Debian package CI installs (a newcomer
// who follows it can run the tests), and every link in the README and docs/ leads to a file.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/build-client';

const read = (f: string) => readFileSync(join(ROOT, f), 'utf8');

describe('README and docs', () => {
  it('the install section lists every Debian package .ci/run installs, each with its reason', () => {
    const line = read('.ci/run').split('\n').find((l) => /apt-get install/.test(l))!;
    const packages = line.replace(/.*--no-install-recommends\s+/, '').trim().split(/\s+/);
    expect(packages.length).toBeGreaterThan(3);
    const readme = read('README.md');
    const install = readme.slice(readme.indexOf('## Install'), readme.indexOf('\n## ', readme.indexOf('## Install') + 1));
    const table = install.split('\n').filter((l) => l.startsWith('| `'));
    for (const p of packages) {
      expect(table.some((row) => row.includes(`\`${p}\``)), `${p} in the install table`).toBe(true);
      expect(install, `${p} in the install command`).toMatch(new RegExp(`apt-get install[^\\n]*\\b${p.replace(/[.+]/g, '\\$&')}\\b`));
    }
  });

  it('every relative link in README.md and docs/*.md points to a file that exists', () => {
    const files = ['README.md', 'shared/PROTOCOL.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const broken: string[] = [];
    for (const f of files) {
      for (const [, target] of read(f).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target) || target.startsWith('#')) continue;
        const path = target.split('#')[0];
        if (!existsSync(join(ROOT, dirname(f), path))) broken.push(`${f}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
