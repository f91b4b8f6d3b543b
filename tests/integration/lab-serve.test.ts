// bench/lab-serve.ts (LINK=RATE bench/accuracy.sh): `tabtrain serve` with its coordinator and two
// workers each in a network namespace behind shaped links. The workers reach the coordinator over
// the lab's links (not loopback), the summary says which compression ran at which steps, and the
// namespaces are gone after a normal exit and after SIGINT. Needs root and iproute2; skipped, saying so, without.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { whyNoNamespaces } from '../../server/src/bench/netns';
import { ROOT, tsArgs } from '../../server/src/bench/linked';
import type { Summary } from '../../server/src/coordinator';

const skip = whyNoNamespaces();
if (skip) console.warn(`lab-serve.test.ts skipped: ${skip}`);

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);
const dir = mkdtempSync(join(tmpdir(), 'lab-serve-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts lab-serve; `output` has everything it and its children printed so far. */
function labServe(args: string[]) {
  const p = spawn(process.execPath, tsArgs('server/src/bench/lab-serve.ts', args), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { text: '' };
  p.stdout!.on('data', (d: Buffer) => { out.text += d.toString(); });
  p.stderr!.on('data', (d: Buffer) => { out.text += d.toString(); });
  const exited = new Promise<number>((r) => p.once('exit', (c, sig) => r(c ?? (sig ? -1 : -2))));
  const lab = () => /^lab-serve: (tt-\d+-\d+):/m.exec(out.text)?.[1] ?? null;
  return { p, out, exited, lab };
}

const SERVE = ['--model', 'alexnet-tiny', '--batch', '16', '--epochs', '1', '--seed', '7', '--balance', 'equal', '--min-workers', '2', '--eval-examples', '500'];

describe.skipIf(skip !== null)(`lab-serve${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('runs serve with two workers behind 100 Mbit/s links, writes the summary with its modes, and removes the lab', async () => {
    const summaryFile = join(dir, 'summary.json');
    const run = labServe(['--link', '100mbit', '--', ...SERVE, '--compress', 'none', '--max-steps', '4', '--summary', summaryFile]);
    const code = await run.exited;
    expect(code, run.out.text).toBe(0);
    // Both joined from their namespaces' addresses (10.77.0.10, .11), not from loopback.
    expect(run.out.text.match(/joined: node\/wasm from 10\.77\.0\.1[01] /g)).toHaveLength(2);
    const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as Summary;
    expect(summary.steps).toBe(4);
    expect(summary.config.auto).toBe(false);
    expect(summary.modes).toEqual([{ mode: 'none', firstStep: 1, lastStep: 4, steps: 4 }]);
    const prefix = run.lab();
    expect(prefix).not.toBeNull();
    expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);
  }, 120_000);

  it('stopped by SIGINT mid-run, it removes its namespaces and exits 130; a bad serve option is refused before any lab is made', async () => {
    const run = labServe(['--link', '100mbit', '--', ...SERVE, '--compress', 'none']);
    // Until both workers have joined: the run is under way, every namespace in use.
    for (let i = 0; i < 600 && (run.out.text.match(/ joined: /g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const prefix = run.lab();
    expect(prefix, run.out.text).not.toBeNull();
    expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toHaveLength(4);
    run.p.kill('SIGINT');
    expect(await run.exited).toBe(130);
    expect(namespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([]);

    const bad = labServe(['--link', '100mbit', '--', ...SERVE, '--port', '9000']);
    expect(await bad.exited).toBe(2);
    expect(bad.out.text).toMatch(/--port is set by lab-serve/);
    expect(bad.lab()).toBeNull();
  }, 120_000);
});
