// Golden runs: fixed configurations whose final weights are pinned by SHA-256 (tests/integration/golden.test.ts).
//
// Portability: the workers here never use the wasm backend. XNNPACK may pick other SIMD kernels
// on another CPU, so its fp32 results need not be bit-identical across machines. tfjs's pure-JS
// `cpu` backend is plain IEEE-754 JavaScript, and synthetic workers (shared/src/synthetic.ts)
// fill a deterministic pseudo-gradient without any tfjs; both give the same bits on any x86_64.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { Coordinator, DEFAULTS, type Summary } from '../../server/src/coordinator';
import type { Dataset } from '../../server/src/data';
import { kill, workers, type TestRunOptions } from './run';

/** Real gradients on tfjs's pure-JS backend: bit-identical across CPUs. */
export const CPU_WORKER = ['--backend', 'cpu'];
/** No tfjs at all: a deterministic pseudo-gradient of the model's size, no sleeping. */
export const SYNTHETIC_WORKER = ['--synthetic-ms-per-example', '0'];

/** GOLDEN_PRINT=1: print every run's hash (to record the pins) instead of asserting it. */
export const PRINT = process.env.GOLDEN_PRINT === '1';

const BIN = fileURLToPath(new URL('../../bin/tabtrain', import.meta.url));

/**
 * trainWith (helpers/run.ts) on a given dataset instead of the full one: the same coordinator
 * defaults, so an epoch (and its test evaluation) fits in a test.
 */
export async function trainOn(d: Dataset, n: number, opts: TestRunOptions, workerArgs: string[]): Promise<{ summary: Summary; lines: string[] }> {
  const lines: string[] = [];
  const coord = new Coordinator({
    epochs: 1, batch: 16, seed: 7, balance: 'equal', port: 0, host: '127.0.0.1', minWorkers: n, evalExamples: 1000,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {}, ...opts,
  }, d);
  const port = await coord.listen();
  const procs = workers(`ws://127.0.0.1:${port}/ws`, n, workerArgs);
  try {
    return { summary: await coord.train(), lines };
  } finally {
    await coord.close();
    kill(procs);
  }
}

/**
 * `tabtrain serve ARGS` to its end; rejects with the log if it exits non-zero. `stateDir` keeps
 * what serve stores between runs (its TLS certificate) out of the user's ~/.tabtrain.
 */
export function serveCli(args: string[], stateDir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, TABTRAIN_STATE_DIR: stateDir };
    const p = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let log = '';
    p.stdout.on('data', (d) => { log += d; });
    p.stderr.on('data', (d) => { log += d; });
    p.on('error', reject);
    p.on('exit', (code, signal) => (code === 0 ? resolve(log) : reject(new Error(`tabtrain serve ${args.join(' ')} exited ${code ?? signal}:\n${log}`))));
  });
}

/**
 * Asserts that a golden run's value is still its pinned one (or prints it with GOLDEN_PRINT=1).
 * The message names the run and says why it matters.
 */
export function expectGolden(run: string, what: string, actual: string | number, pinned: string | number): void {
  if (PRINT) {
    console.log(`GOLDEN ${JSON.stringify(run)} ${what} ${actual}`);
    return;
  }
  expect(actual, `golden run "${run}": ${what} changed (now ${actual}, pinned ${pinned}). ` +
    'These runs must stay bit-identical through refactors of the coordinator; a change here means behaviour changed. ' +
    'Update the pinned constant in tests/integration/golden.test.ts only for an intended change, and give the reason in the commit message.').toBe(pinned);
}
