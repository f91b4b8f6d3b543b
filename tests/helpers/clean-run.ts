// The clean runs that tests hold a faulted or attacked run's weights against. Their workers only
// have to be there, so they are one `tabtrain worker --instances N` process (N worker sessions,
// each its own connection and identity) instead of N processes: one process start instead of N.
// An fp32 run with equal shards is bit-reproducible whoever computes each shard, so the weights
// are those of N separate workers.
import type { ChildProcess } from 'node:child_process';
import type { StepRecord, Summary } from '../../server/src/coordinator';
import { spawnWorker } from '../../server/src/spawn-worker';
import { kill, startCoordinator, type TestRunOptions } from './run';

/** `n` local workers in one process. */
export function workerInstances(url: string, n: number, args: string[] = ['--backend', 'wasm']): ChildProcess {
  return spawnWorker(url, [...args, '--instances', String(n), '--quiet'], 'pipe');
}

/** Trains to the end with `n` workers in one process; the summary, a copy of the weights, the log and the steps. */
export async function cleanRun(n: number, opts: TestRunOptions, workerArgs?: string[]): Promise<{ summary: Summary; weights: Float32Array; lines: string[]; steps: StepRecord[] }> {
  const { coord, url, lines } = await startCoordinator({ minWorkers: n, ...opts });
  const steps: StepRecord[] = [];
  coord.events.on('step', (s: StepRecord) => steps.push(s));
  const proc = workerInstances(url, n, workerArgs);
  try {
    const summary = await coord.train();
    return { summary, weights: coord.weights.slice(), lines, steps };
  } finally {
    await coord.close();
    kill([proc]);
  }
}
