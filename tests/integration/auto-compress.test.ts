// --compress auto (server/src/autopilot.ts) through the real system: a real coordinator and real
// WorkerCores on the in-memory wire (helpers/in-process.ts), with emulated link rates given to the
// cost model (the memory wire times nothing). As the links slow down and speed up again the run
// goes fp32 → powersgd → fp32; every switch keeps every replica bit-equal to the coordinator's
// weights: the assigns carry the replica hash at every version in compressed modes (verifyEvery 1),
// and at the end each worker's whole weights are compared with the coordinator's.
import { describe, expect, it } from 'vitest';
import { replicaHash } from '@tabtrain/shared';
import { STREAK } from '../../server/src/autopilot';
import { SYNTHETIC, startInProcess, type InProcessRun } from '../helpers/in-process';

const MODEL = 'alexnet-small';
/** A synthetic V100-like worker here: 1 ms an example, so compute is priced and links matter. */
const WORKER = { ...SYNTHETIC, syntheticMsPerExample: 1 };
const FAST = { worker: 1e12, coordinator: 1e12 };
/** 2 MB/s: alexnet-small's fp32 weights (1.3 MB) each way take about a second a worker, its rank-4 factors (76 KB) 40 ms. */
const SLOW = { worker: 2e6, coordinator: 2e6 };

/** The mode each step ran in, from the coordinator's 'step' events and its Step. */
function modes(run: InProcessRun): string[] {
  const seen: string[] = [];
  run.coord.events.on('step', () => seen.push(run.coord.auto!.pilot.current.mode));
  return seen;
}

/** Each worker that holds the coordinator's version holds its weights, bit for bit (fp32 and coded modes keep a whole replica). */
function replicasEqual(run: InProcessRun): number {
  const hash = replicaHash(run.coord.weights);
  let equal = 0;
  for (const w of run.workers) {
    const core = w.core as unknown as { version: number; replica: Float32Array | null };
    if (core.version !== run.coord.version || !core.replica) continue;
    expect(replicaHash(core.replica)).toBe(hash);
    equal++;
  }
  return equal;
}

describe('--compress auto', () => {
  it('goes fp32 → powersgd → fp32 as the links slow down and recover, replicas bit-equal throughout', async () => {
    let links = FAST;
    const run = await startInProcess({ model: MODEL, batch: 32, maxSteps: 26, seed: 5, minWorkers: 3, autoRank: 4, verifyEvery: 1, links: () => links });
    const seen = modes(run);
    run.coord.events.on('step', (r: { step: number }) => { links = r.step >= 14 ? FAST : r.step >= 5 ? SLOW : FAST; });
    try {
      await run.add(3, WORKER);
      const summary = await run.coord.train();
      expect(summary.steps).toBe(26);
      const choices = run.lines.filter((l) => l.startsWith('compression '));
      console.log(choices.join('\n'));
      console.log(seen.join(' '));
      // fp32 first (fast links), powersgd while slow, fp32 again once fast: two switches, no flapping.
      const runs = seen.filter((m, i) => i === 0 || seen[i - 1] !== m);
      expect(runs).toEqual(['none', 'powersgd', 'none']);
      expect(choices.filter((l) => l.includes('Switched'))).toHaveLength(2);
      // What each switch cost in steps: from the links' change to the step run in the new mode.
      const into = seen.indexOf('powersgd'), back = seen.lastIndexOf('powersgd') + 1;
      console.log(`switch costs: powersgd from step ${into + 1} (links slow from step 6), fp32 from step ${back + 1} (links fast from step 15)`);
      // In: the slow links' first step is priced at once, and the gain must hold at STREAK boundaries.
      expect(into).toBeLessThanOrEqual(5 + STREAK + 1);
      // Back: powersgd's price also carries its measured overhead, the median of its last steady steps.
      expect(back).toBeLessThanOrEqual(14 + STREAK + 5);
      // Every hash check passed; nobody resynced or was dropped.
      expect(run.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      expect(run.coord.status().workers.map((w) => w.resyncs)).toEqual([0, 0, 0]);
      expect(run.coord.status().workers.filter((w) => w.state === 'lost')).toEqual([]);
      expect(replicasEqual(run)).toBeGreaterThan(0);
    } finally {
      await run.close();
    }
  }, 120_000);
});
