// Synchronous data parallelism is exact: the split of the batch over workers must not change
// the result beyond fp32 summation order, and a run is reproducible bit for bit. Arithmetic and
// scheduling only: the coordinator and its wasm workers run in this process (helpers/in-process.ts).
import { describe, expect, it } from 'vitest';
import { maxAbsDiff } from '../helpers/run';
import { WASM, trainInProcess } from '../helpers/in-process';
import { weightsSha256 } from '../../server/src/coordinator';

// Batch 20: 3 workers get uneven shards of 7, 7 and 6 examples.
// Even shards ('equal'): with speed balancing the cut points follow timing, and fp32 sums with them.
const RUN = { model: 'alexnet-tiny', batch: 20, maxSteps: 6, seed: 11, lr: 0.05, balance: 'equal' as const };
const train = (n: number, opts: typeof RUN) => trainInProcess(n, opts, WASM);

describe('equivalence across worker counts', () => {
  it('1 worker and 3 workers (batch 20, uneven shards) end within 1e-5; the same count twice is bit-identical', async () => {
    const one = await train(1, RUN);
    const three = await train(3, RUN);
    const again = await train(3, RUN);
    expect(one.summary.steps).toBe(6);
    expect(three.summary.steps).toBe(6);
    const diff = maxAbsDiff(one.weights, three.weights);
    console.log(`max |w1 - w3| after 6 steps: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-5);
    // The weights moved: the comparison is not between two copies of the initial weights.
    expect(three.summary.epochs[0].loss).toBeGreaterThan(0);
    expect(one.summary.weightsSha256).not.toBe(weightsSha256(new Float32Array(one.weights.length)));
    expect(again.summary.weightsSha256).toBe(three.summary.weightsSha256);
    expect(weightsSha256(again.weights)).toBe(three.summary.weightsSha256);
    // 3 workers really shared each step (the plan was 7/7/6), not one worker doing it all
    expect(three.lines.filter((l) => l.includes('joined')).length).toBe(3);
  });

  it('dropout is on: the same run with another seed gives other weights', async () => {
    const a = await train(1, { ...RUN, maxSteps: 2 });
    const b = await train(1, { ...RUN, maxSteps: 2, seed: 12 });
    expect(a.summary.weightsSha256).not.toBe(b.summary.weightsSha256);
  });
});
