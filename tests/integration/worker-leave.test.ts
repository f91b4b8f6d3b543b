// A person's Ctrl-C on `tabtrain worker` tells the coordinator it leaves (close 1001 with the
// reason), which logs "left" and hands its shard on; a stopped run tells its workers "run
// stopped", not "run finished". Real coordinator on a socket, real worker processes (the signal
// and the process's exit are the point), real Fashion-MNIST.
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN } from '../../server/src/spawn-worker';
import { startCoordinator } from '../helpers/run';

const TOKEN = 'leave-test-token';

/** `tabtrain worker` as a person starts it: no local key (it joins with the token), its output kept. */
function person(url: string): { p: ChildProcess; out: () => string; exit: Promise<number | null> } {
  const env = { ...process.env };
  delete env.TABTRAIN_LOCAL_KEY;
  const p = spawn(BIN, ['worker', '--url', url, '--token', TOKEN, '--backend', 'cpu'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  p.stdout!.on('data', (d) => { out += d; });
  p.stderr!.on('data', (d) => { out += d; });
  return { p, out: () => out, exit: new Promise((r) => p.on('exit', (code) => r(code))) };
}

async function until(what: string, ok: () => boolean, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const procs: ChildProcess[] = [];
afterEach(() => { for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL'); });

describe('leaving and stopping', () => {
  it('Ctrl-C: the worker says it leaves, the coordinator logs why and goes on; stop: the other worker hears "run stopped"', async () => {
    const { coord, url, lines } = await startCoordinator({ model: 'vgg11-tiny', batch: 8, minWorkers: 2, maxSteps: 100_000, token: TOKEN });
    const a = person(url);
    const b = person(url);
    procs.push(a.p, b.p);
    const run = coord.train();
    try {
      await until('two steps with both workers', () => coord.step >= 2);
      a.p.kill('SIGINT');
      expect(await a.exit, a.out()).toBe(0);
      expect(a.out()).toContain('leaving the run (SIGINT)');
      expect(a.out()).toContain('left the run');
      await until('the coordinator to log the leave', () => lines.some((l) => /worker #\d+ left \(leaving: stopped by its operator \(SIGINT\)\)/.test(l)));
      // The run goes on with the worker that stayed.
      const after = coord.step;
      await until('two more steps without the worker that left', () => coord.step >= after + 2);
      coord.stop('the test is over');
      const summary = await run;
      expect(summary.stoppedBy).toBe('stop');
    } finally {
      await coord.close();
    }
    expect(await b.exit, b.out()).toBe(0);
    expect(b.out()).toContain('run stopped: the test is over');
    expect(b.out()).not.toContain('run finished');
  }, 240_000);
});
