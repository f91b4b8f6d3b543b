// Every --compress mode trains for real: a real coordinator, 2 real wasm workers, real
// Fashion-MNIST, the same model, seed, data order and steps. Kept short for CI (400 steps of
// alexnet-small, ~1/5 epoch, where accuracy still moves a lot from step to step, hence the
// 5-point margin); the within-1-point comparison over whole epochs is in docs/BENCHMARKS.md.
import { describe, expect, it } from 'vitest';
import { paramLayout, getModel } from '@tabtrain/shared';
import { COMPRESS_MODES, parseCompression, planBytes, planSegments } from '@tabtrain/shared/compress';
import { kill, startCoordinator, workers } from '../helpers/run';

const STEPS = 400;
const MODEL = 'alexnet-small';

async function trainAndTest(mode: string): Promise<{ acc: number; loss: number; uploadPerWorkerStep: number }> {
  const { coord, url } = await startCoordinator({ model: MODEL, batch: 32, maxSteps: STEPS, seed: 42, minWorkers: 2, evalExamples: 2000, compress: parseCompression(mode) });
  const procs = workers(url, 2);
  try {
    const summary = await coord.train();
    const acc = await coord.evaluate();
    const up = coord.status().workers.reduce((a, w) => a + w.bytesIn, 0);
    return { acc, loss: summary.epochs[0].loss, uploadPerWorkerStep: up / STEPS / 2 };
  } finally {
    await coord.close();
    kill(procs);
  }
}

describe('gradient compression on real workers', () => {
  it(`none, fp16, int8 and powersgd reach the same test accuracy within 5 points after ${STEPS} steps; uploads match the plan`, async () => {
    const { params, total } = paramLayout(getModel(MODEL));
    const results: Record<string, { acc: number; loss: number; uploadPerWorkerStep: number }> = {};
    for (const mode of COMPRESS_MODES) {
      results[mode] = await trainAndTest(mode);
      const r = results[mode];
      const plan = planBytes(planSegments(params, total, parseCompression(mode)), total);
      console.log(`${mode}: test acc ${r.acc.toFixed(4)} (2,000 images), train loss ${r.loss.toFixed(3)}, upload ${r.uploadPerWorkerStep.toFixed(0)} bytes/worker/step (plan: ${plan} + result and status)`);
      // Gradient frames per the plan, plus the small result and status messages (< 300 bytes).
      expect(r.uploadPerWorkerStep).toBeGreaterThanOrEqual(plan);
      expect(r.uploadPerWorkerStep).toBeLessThan(plan + 300);
    }
    expect(results.none.acc).toBeGreaterThan(0.5); // it learned: chance is 0.1
    for (const mode of COMPRESS_MODES) expect(Math.abs(results[mode].acc - results.none.acc)).toBeLessThan(0.05);
    expect(results.int8.uploadPerWorkerStep / results.none.uploadPerWorkerStep).toBeLessThan(0.26);
    expect(results.powersgd.uploadPerWorkerStep).toBeLessThan(results.int8.uploadPerWorkerStep);
  }, 600_000);
});
