// Golden runs: fixed configurations whose final weights are pinned by SHA-256 (tests/integration/golden.test.ts).
//
// Portability: the golden workers (in-process.ts's CPU and SYNTHETIC) never use the wasm backend.
// XNNPACK may pick other SIMD kernels on another CPU, so its fp32 results need not be bit-identical across machines. tfjs's pure-JS
// `cpu` backend is plain IEEE-754 JavaScript, and synthetic workers (shared/src/synthetic.ts)
// fill a deterministic pseudo-gradient without any tfjs; both give the same bits on any x86_64.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

/** GOLDEN_PRINT=1: print every run's hash (to record the pins) instead of asserting it. */
export const PRINT = process.env.GOLDEN_PRINT === '1';

const BIN = fileURLToPath(new URL('../../bin/tabtrain', import.meta.url));

/** How long one `tabtrain serve` of the golden test may take (a few steps of vgg11-tiny: 10-30 s, more under load). */
export const SERVE_DEADLINE_MS = 150_000;

/**
 * `tabtrain serve ARGS` to its end; rejects with the whole log if it exits non-zero, or if it has
 * not ended within `deadlineMs` (then it is killed first: a hung serve must fail with what it
 * said, not time the test out silently). `stateDir` keeps what serve stores between runs (its TLS
 * certificate) out of the user's ~/.tabtrain.
 */
export function serveCli(args: string[], stateDir: string, deadlineMs = SERVE_DEADLINE_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, TABTRAIN_STATE_DIR: stateDir };
    const p = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', '0', '--local-workers', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let log = '';
    let overdue = false;
    p.stdout.on('data', (d) => { log += d; });
    p.stderr.on('data', (d) => { log += d; });
    const deadline = setTimeout(() => {
      overdue = true;
      // SIGKILL takes its --local-workers with it (they watch their parent's IPC channel).
      p.kill('SIGKILL');
    }, deadlineMs);
    p.on('error', (e) => { clearTimeout(deadline); reject(new Error(`tabtrain serve ${args.join(' ')}: ${e.message}:\n${log}`)); });
    p.on('exit', (code, signal) => {
      clearTimeout(deadline);
      if (overdue) reject(new Error(`tabtrain serve ${args.join(' ')} had not ended after ${deadlineMs / 1000} s; killed. Its log:\n${log}`));
      else if (code === 0) resolve(log);
      else reject(new Error(`tabtrain serve ${args.join(' ')} exited ${code ?? signal}:\n${log}`));
    });
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
