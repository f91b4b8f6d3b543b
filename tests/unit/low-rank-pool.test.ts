// The powersgd update applied by several threads over shared memory (shared/src/low-rank-pool.ts)
// gives the bits of one thread applying it (LowRankKernel, applyPart): real worker_threads, the
// coordinator's thread starter (server/src/apply-threads.ts), a real model's plan.
import { afterAll, describe, expect, it } from 'vitest';
import { getModel, initParams, paramLayout } from '@tabtrain/shared';
import { powerSgdPlanOf } from '@tabtrain/shared/compress';
import { LowRankPool } from '@tabtrain/shared/low-rank-pool';
import { ArrivingUpdate, LowRankKernel, applyPart, applyPowerSgd } from '@tabtrain/shared/powersgd';
import { syntheticFactors } from '@tabtrain/shared/worker-costs';
import { startShareThread } from '../../server/src/apply-threads';

const spec = getModel('alexnet-small');
const { params, total } = paramLayout(spec);
const plan = powerSgdPlanOf(params, total, { mode: 'powersgd', rank: 4 })!;
const bits = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
const pools: LowRankPool[] = [];
/** Until every helper has started, a pool applies on the calling thread alone: these tests want the helpers. */
async function started(pool: LowRankPool): Promise<LowRankPool> {
  for (let i = 0; !pool.ready; i++) {
    if (i > 2000) throw new Error('helper threads did not start in 20 s');
    await new Promise((r) => setTimeout(r, 10));
  }
  return pool;
}
afterAll(() => { for (const p of pools) p.dispose(); });

/** Three steps of updates, applied by one thread with the kernel: the reference. */
function reference(steps: [Float32Array, Float32Array][]): Float32Array {
  const kernel = LowRankKernel.withWeights(plan)!;
  kernel.weights!.set(initParams(spec, 42));
  for (const [r1, r2] of steps) applyPowerSgd(plan, kernel.weights!, r1, r2, 0.01, 128, kernel);
  return kernel.weights!.slice();
}

describe('LowRankPool', () => {
  const steps = [1, 2, 3].map((s) => syntheticFactors(plan, s));
  const want = reference(steps);

  for (const helpers of [1, 2, 3]) {
    it(`${helpers} helper thread(s), started and waited for (the coordinator), or joined by the caller (the exact copy): the same bits as one thread`, async () => {
      const pool = await started(LowRankPool.create(plan, helpers, startShareThread)!);
      pools.push(pool);
      pool.weights.set(initParams(spec, 42));
      steps.forEach(([r1, r2], i) => {
        pool.round1.set(r1);
        pool.round2.set(r2);
        if (i % 2) pool.apply(0, plan.matrices.length, true, 0.01, 128);
        else { pool.start(0, plan.matrices.length, true, 0.01, 128); pool.wait(); }
      });
      expect(pool.busy).toBe(false);
      expect(bits(pool.weights).equals(bits(want))).toBe(true);
    });
  }

  it('applies an update part by part as it arrives (ArrivingUpdate), with the same bits', async () => {
    const pool = await started(LowRankPool.create(plan, 2, startShareThread)!);
    pools.push(pool);
    pool.weights.set(initParams(spec, 42));
    for (const [r1, r2] of steps) {
      pool.round1.set(r1);
      pool.round2.set(r2);
      const a = new ArrivingUpdate(plan, 1);
      for (const m of plan.matrices) {
        const part = a.due(m.qAt + plan.rank * m.cols);
        const from = plan.matrices.indexOf(part.matrices[0]);
        pool.apply(from, from + part.matrices.length, part.dense.length > 0, 0.01, 128);
      }
      expect(a.done).toBe(true);
    }
    expect(bits(pool.weights).equals(bits(want))).toBe(true);
  });

  it('a notify that comes after its job was done wakes the helpers with no new job: they do nothing (the run hung, 1 in 7)', async () => {
    // The poster moves GEN, then notifies; descheduled between the two while a helper does the
    // whole job and waits again, its late notify wakes that helper with GEN unmoved. Helpers used
    // to take that for a job: the update applied twice to their rows and LEFT at −1, so the next
    // wait never returned (tests/integration/powersgd-run.test.ts hung so). Stray notifies here.
    const pool = await started(LowRankPool.create(plan, 2, startShareThread)!);
    pools.push(pool);
    pool.weights.set(initParams(spec, 42));
    const ctl = new Int32Array(pool.weights.buffer, 0, 8); // the control words: GEN at 0, LEFT at 1
    for (const [r1, r2] of steps) {
      pool.round1.set(r1);
      pool.round2.set(r2);
      pool.start(0, plan.matrices.length, true, 0.01, 128);
      pool.wait();
      for (let i = 0; i < 3; i++) {
        Atomics.notify(ctl, 0);
        await new Promise((r) => setTimeout(r, 20)); // time for a woken helper to do a job again
      }
      expect(Atomics.load(ctl, 1)).toBe(0);
    }
    expect(bits(pool.weights).equals(bits(want))).toBe(true);
  });

  it('a wrong update gives other bits (the comparisons above can fail)', () => {
    const w = initParams(spec, 42);
    for (const [r1, r2] of steps) applyPart(plan, w, { dense: plan.dense, matrices: plan.matrices.slice(1) }, r1, r2, 0.01, 128);
    expect(bits(w).equals(bits(want))).toBe(false);
  });
});

describe('LowRankPool before its helpers start, and after dispose', () => {
  it('applies on the calling thread alone, with the same bits, and no helper takes those jobs again', async () => {
    const pool = LowRankPool.create(plan, 2, startShareThread)!;
    pool.weights.set(initParams(spec, 42));
    const steps = [1, 2, 3].map((s) => syntheticFactors(plan, s));
    expect(pool.ready).toBe(false); // a thread takes far longer to start than this
    pool.round1.set(steps[0][0]);
    pool.round2.set(steps[0][1]);
    pool.apply(0, plan.matrices.length, true, 0.01, 128);
    await started(pool);
    pool.round1.set(steps[1][0]);
    pool.round2.set(steps[1][1]);
    pool.start(0, plan.matrices.length, true, 0.01, 128);
    pool.wait();
    expect(bits(pool.weights).equals(bits(reference(steps.slice(0, 2))))).toBe(true);
  });

  it('after dispose, applies on the calling thread alone, with the same bits', async () => {
    const pool = await started(LowRankPool.create(plan, 2, startShareThread)!);
    pool.weights.set(initParams(spec, 42));
    pool.dispose();
    const steps = [1, 2, 3].map((s) => syntheticFactors(plan, s));
    steps.forEach(([r1, r2], i) => {
      pool.round1.set(r1);
      pool.round2.set(r2);
      if (i % 2) pool.apply(0, plan.matrices.length, true, 0.01, 128);
      else pool.start(0, plan.matrices.length, true, 0.01, 128);
    });
    expect(pool.busy).toBe(false);
    expect(bits(pool.weights).equals(bits(reference(steps)))).toBe(true);
  });
});
