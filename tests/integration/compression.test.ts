// Compressed runs' broadcast in-process: the update every replica applies, hash checks, resync.
// That every mode learns on real worker processes is tests/integration/learning.test.ts.
import { describe, expect, it } from 'vitest';
import { paramLayout, getModel } from '@tabtrain/shared';
import { parseCompression } from '@tabtrain/shared/compress';
import { maxAbsDiff } from '../helpers/run';
import { WASM, startInProcess, type InProcessWorkerOptions } from '../helpers/in-process';

// Compressed runs broadcast each step's encoded update instead of the weights; every replica
// applies it with the coordinator's arithmetic, and the assigns carry a weights hash every K steps.
// 12 steps of alexnet-tiny: the worker starts would be most of it, so the coordinator and its wasm
// workers run in this process.
describe('compressed broadcast: identical updates, hash checks, resync', () => {
  const MODEL_T = 'alexnet-tiny';
  const STEPS_T = 12;
  const train = async (workers: InProcessWorkerOptions[]) => {
    const run = await startInProcess({ model: MODEL_T, batch: 16, maxSteps: STEPS_T, seed: 5, minWorkers: 2, compress: parseCompression('int8'), verifyEvery: 3 });
    const { coord, lines } = run;
    try {
      for (const w of workers) await run.add(1, { ...WASM, ...w });
      await coord.train();
      return { weights: coord.weights.slice(), lines, workers: coord.status().workers };
    } finally {
      await run.close();
    }
  };

  it('updates are int8-sized; a replica corrupted at version 6 is caught by the hash at the next assign, resynced, and the run ends bit-equal to a clean one', async () => {
    const clean = await train([{}, {}]);
    const P = paramLayout(getModel(MODEL_T)).total;
    expect(clean.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
    for (const w of clean.workers) {
      // One full fp32 copy at join, then 11 int8 updates (¼ of fp32 + scales), plus 12 assigns of 8 images.
      const updates = w.bytesOut - 4 * P - 12 * (8 * 785 + 200);
      expect(updates).toBeLessThan(11 * 0.26 * 4 * P);
      expect(updates).toBeGreaterThan(11 * 0.24 * 4 * P);
      expect(w.resyncs).toBe(0);
    }
    const faulty = await train([{}, { corruptVersion: 6 }]);
    const said = faulty.lines.filter((l) => l.includes('replica differs'));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/replica differs from version 6; resending the full weights/);
    expect(faulty.workers.map((w) => w.resyncs).sort()).toEqual([0, 1]);
    // The corrupt replica never computed a gradient: the weights equal the clean run's exactly.
    expect(maxAbsDiff(faulty.weights, clean.weights)).toBe(0);
  }, 180_000);
});
