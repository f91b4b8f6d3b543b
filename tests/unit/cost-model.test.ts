// The step cost model and the planner (server/src/cost-model.ts): which workers a synchronous
// step should use, and how many examples each, on a star whose coordinator link is shared.
import { describe, expect, it } from 'vitest';
import { downRateWith } from '../../server/src/link-meter';
import { getModel, paramLayout } from '@tabtrain/shared';
import { NO_COMPRESSION, parseCompression, uploadBytes, type Compression } from '@tabtrain/shared/compress';
import {
  allocate, isMeasured, linkEstimate, planStep, predictStep, probeDue, probeInterval,
  type CoordinatorCost, type RunCost, type StepPlan, type WorkerCost,
} from '../../server/src/cost-model';

/** TCP payload bytes/s through a 1 Gbit/s tbf between two namespaces, measured here (DESIGN.md). */
const GBIT = 119.6e6;
/** d2l's V100: AlexNet forward + backward + SGD, examples/s. */
const V100 = 4000;

/** The run's real message sizes, from the codec's own plan. */
function run(model: string, c: Compression = NO_COMPRESSION, over: Partial<RunCost> = {}): RunCost {
  const { params, total } = paramLayout(getModel(model));
  const bytes = uploadBytes(params, total, c);
  return { batch: 128, gradientBytes: bytes, updateBytes: bytes, weightsBytes: 4 * total, exampleBytes: 785, pipelined: false, ...over };
}

/**
 * A coordinator whose CPU is that of docs/BENCHMARKS.md: folds at the fp32 aggregation rate
 * measured there (10.86 GB/s; a codec summed without decoding, like PowerSGD's reference design,
 * folds its wire bytes as fast), SGD over AlexNet's weights in 19 ms, encoding at about the copy rate.
 */
function star(up: number, down = up, cpu: Partial<CoordinatorCost> = {}): CoordinatorCost {
  return { upRate: up, downRate: down, foldRate: 10.86e9, sgdRate: 187e6 / 0.019, encodeRate: 11e9, ...cpu };
}

function worker(id: number, computeRate = V100, link = GBIT, behind = 1): WorkerCost {
  return { id, computeRate, upRate: link, downRate: link, behind };
}

const fleet = (n: number, rate = V100, link = GBIT) => Array.from({ length: n }, (_, i) => worker(i + 1, rate, link));
const countOf = (p: StepPlan, id: number) => p.shards.find((s) => s.worker === id)?.count ?? 0;

function expectValidPlan(p: StepPlan, workers: WorkerCost[], batch: number): void {
  expect(p.shards.reduce((a, s) => a + s.count, 0)).toBe(batch);
  let position = 0;
  p.shards.forEach((s, i) => {
    expect(s.id).toBe(i);
    expect(s.position).toBe(position);
    expect(Number.isInteger(s.count) && s.count >= 1).toBe(true);
    position += s.count;
  });
  // Laid out in the fixed worker order, one shard per worker at most.
  const order = workers.map((w) => w.id);
  const ranks = p.shards.map((s) => order.indexOf(s.worker));
  expect(ranks.every((r) => r >= 0)).toBe(true);
  expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
  expect(new Set(ranks).size).toBe(ranks.length);
}

describe('a star with fp32 AlexNet messages (187 MB each way per worker)', () => {
  const alex = run('alexnet');

  it('uses the message sizes the codec plans', () => {
    expect(alex.gradientBytes).toBe(187_060_360);
    // PowerSGD's two rounds of factors at rank 4, a frame per matrix: 1/305 of fp32 (tests/unit/powersgd.test.ts).
    expect(run('alexnet', parseCompression('powersgd', 4)).gradientBytes).toBe(613_920);
  });

  it('at 1 Gbit/s a second V100 does not help: one worker, the others benched by ~3.1 s', () => {
    const ws = fleet(4);
    const p = planStep(ws, alex, star(GBIT));
    expectValidPlan(p, ws, 128);
    expect(p.participants).toEqual([1]);
    expect(p.shards).toEqual([{ id: 0, worker: 1, position: 0, count: 128, probe: false }]);
    // The header's formula by hand: down + compute + up + SGD + encode (images: 128 × 785 bytes;
    // the fold, 17 ms, streams under the 1.6 s upload).
    const down = (alex.updateBytes + 128 * 785) / GBIT, up = alex.gradientBytes / GBIT;
    const hand = 1000 * (down + 128 / V100 + up + alex.weightsBytes / (187e6 / 0.019) + alex.weightsBytes / 11e9);
    expect(p.predictedMs!).toBeCloseTo(hand, 6);
    expect(p.predictedMs!).toBeGreaterThan(3100);
    // A second worker puts 187 MB more each way through the coordinator's link and saves 16 ms of compute.
    expect(p.benched.map((b) => b.worker)).toEqual([2, 3, 4]);
    for (const b of p.benched) {
      expect(b.lengthensMs).toBeGreaterThan(3000);
      expect(b.lengthensMs).toBeLessThan(3200);
    }
  });

  it('at 1 Gbit/s pipelined, still one worker; the step is compute + max(up, down), not their sum', () => {
    const seq = planStep(fleet(2), alex, star(GBIT));
    const pipe = planStep(fleet(2), { ...alex, pipelined: true }, star(GBIT));
    expect(pipe.participants).toEqual([1]);
    const bound = 1000 * (128 / V100 + Math.max(alex.updateBytes + 128 * 785, alex.gradientBytes) / GBIT);
    expect(pipe.predictedMs!).toBeCloseTo(bound, 6);
    expect(seq.predictedMs! / pipe.predictedMs!).toBeGreaterThan(1.9);
  });

  it('at 10 Gbit/s on both ends, still one: 156 ms each way per extra worker against 16 ms of compute saved', () => {
    const p = planStep(fleet(4, V100, 10 * GBIT), alex, star(10 * GBIT));
    expect(p.participants).toEqual([1]);
    expect(p.benched[0].lengthensMs).toBeGreaterThan(250);
  });

  it('10 Gbit/s workers behind a 100 Gbit/s coordinator: more workers help', () => {
    const ws = fleet(8, V100, 10 * GBIT);
    const p = planStep(ws, alex, star(100 * GBIT));
    expectValidPlan(p, ws, 128);
    expect(p.participants.length).toBeGreaterThan(1);
    const alone = predictStep([{ worker: ws[0], count: 128 }], alex, star(100 * GBIT), ws.slice(1)).stepMs;
    expect(p.predictedMs!).toBeLessThan(alone);
  });

  it('with PowerSGD bytes (1/305 of fp32) all four V100s help at 10 Gbit/s; at 1 Gbit/s two do', () => {
    const psgd = run('alexnet', parseCompression('powersgd', 4));
    const fast = planStep(fleet(4, V100, 10 * GBIT), psgd, star(10 * GBIT));
    // 0.5 ms each way per worker at 10 Gbit/s against 32 ms of compute at N = 1: every worker helps.
    expect(fast.participants).toEqual([1, 2, 3, 4]);
    expect(fast.shards.map((s) => s.count)).toEqual([32, 32, 32, 32]);
    // 5.1 ms each way per worker at 1 Gbit/s: T(n) ≈ 32/n + 2 · 5.1 · n ms is least at n = 2.
    expect(planStep(fleet(4), psgd, star(GBIT)).participants).toEqual([1, 2]);
  });

  it('powersgd applies its update while the workers compute: an apply longer than the compute it could save benches the extra workers', () => {
    // BENCHMARKS §3 on this 2-core VM: the coordinator's threads take ~45 ms to apply P̂ (ΣQ_i)ᵀ to
    // AlexNet, started once the next step's assigns are out. Every fleet's step is then at least
    // 45 ms, and N = 1's path (32 ms of compute, 0.5 ms each way) is already under it.
    const psgd = run('alexnet', parseCompression('powersgd', 4));
    const slowApply = star(10 * GBIT, 10 * GBIT, { sgdRate: psgd.weightsBytes / 0.045, encodeRate: Infinity }); // as training-step.ts prices it
    const overlapped = { ...psgd, overlappedApply: true };
    const plan = planStep(fleet(8, V100, 10 * GBIT), overlapped, slowApply);
    expect(plan.participants).toEqual([1]);
    expect(plan.predictedMs).toBeCloseTo(45, 0);
    const one = predictStep([{ worker: worker(1, V100, 10 * GBIT), count: 128 }], overlapped, slowApply);
    expect(one.limitedBy).toBe('coordinator');
    // Priced as if the apply came after the step (as before), every added worker looked worth it.
    expect(planStep(fleet(8, V100, 10 * GBIT), psgd, slowApply).participants.length).toBeGreaterThanOrEqual(4);
    // An apply shorter than the compute saved keeps the workers that shorten the step.
    const quickApply = planStep(fleet(8, V100, 10 * GBIT), overlapped, star(10 * GBIT, 10 * GBIT, { sgdRate: psgd.weightsBytes / 0.005, encodeRate: Infinity }));
    expect(quickApply.participants.length).toBeGreaterThanOrEqual(4);
  });

  it('a slow coordinator fold (a codec decoded in JavaScript) means fewer workers', () => {
    const fp16 = run('alexnet', parseCompression('fp16', 4));
    const ws = fleet(8, 1000, 10 * GBIT);
    const quick = planStep(ws, fp16, star(100 * GBIT));
    // docs/BENCHMARKS.md §3: fp16 folds at ~185 ms per AlexNet shard here; the folds of a step are in series.
    const slow = planStep(ws, fp16, star(100 * GBIT, 100 * GBIT, { foldRate: fp16.gradientBytes / 0.185 }));
    expect(quick.participants.length).toBeGreaterThan(2);
    expect(slow.participants.length).toBeLessThan(quick.participants.length);
  });
});

describe('slow workers are benched, and come back', () => {
  const small = run('alexnet-small');
  const coord = star(10 * GBIT);

  /** The best step over every split of the batch between `a` and `b`, by predictStep alone. */
  function bestPairMs(a: WorkerCost, b: WorkerCost, batch: number): number {
    let best = Infinity;
    for (let n = 1; n < batch; n++) best = Math.min(best, predictStep([{ worker: a, count: batch - n }, { worker: b, count: n }], small, coord).stepMs);
    return best;
  }

  it('two equal workers share the batch (the control: a second worker helps here)', () => {
    const p = planStep([worker(1, V100, 10 * GBIT), worker(2, V100, 10 * GBIT)], small, coord);
    expect(p.participants).toEqual([1, 2]);
    expect(p.shards.map((s) => s.count)).toEqual([64, 64]);
    expect(p.benched).toEqual([]);
  });

  it('one of two 50× slower: it gets no train shard, and its penalty is reported', () => {
    const fast = worker(1, V100, 10 * GBIT), slow = worker(2, V100 / 50, 10 * GBIT);
    const p = planStep([fast, slow], small, coord);
    expect(p.participants).toEqual([1]);
    expect(countOf(p, 2)).toBe(0);
    expect(p.benched.map((b) => b.worker)).toEqual([2]);
    // The penalty is the best two-worker step minus the one-worker step, found here by trying every split.
    const alone = predictStep([{ worker: fast, count: 128 }], small, coord, [slow]).stepMs;
    expect(p.predictedMs!).toBeCloseTo(alone, 9);
    expect(p.benched[0].lengthensMs).toBeGreaterThan(0);
    expect(p.benched[0].lengthensMs).toBeCloseTo(bestPairMs(fast, slow, 128) - alone, 9);
  });

  it('a worker behind a slow link is benched (either direction), by about its transfer time', () => {
    const fast = worker(1, V100, 10 * GBIT);
    const slowLink = worker(2, V100, 1e6); // 1 MB/s each way: 1.3 s per message
    const p = planStep([fast, slowLink], small, coord);
    expect(p.participants).toEqual([1]);
    const transfer = (1000 * 2 * small.gradientBytes) / 1e6;
    expect(p.benched[0].lengthensMs).toBeGreaterThan(transfer - 100);
    expect(p.benched[0].lengthensMs).toBeLessThan(transfer + 100);
    expect(p.benched[0].lengthensMs).toBeCloseTo(bestPairMs(fast, slowLink, 128) - p.predictedMs!, 9);
    // Only its upload is slow: benched all the same.
    const slowUp = { ...worker(2, V100, 10 * GBIT), upRate: 1e6 };
    expect(planStep([fast, slowUp], small, coord).participants).toEqual([1]);
  });

  it('when the fast workers leave, the benched one computes the whole batch', () => {
    const slow = worker(3, V100 / 50, 10 * GBIT), slowLink = worker(4, V100, 1e6);
    const before = planStep([worker(1, V100, 10 * GBIT), worker(2, V100, 10 * GBIT), slow, slowLink], small, coord);
    expect(before.benched.map((b) => b.worker)).toEqual([3, 4]);
    const after = planStep([slow, slowLink], small, coord);
    expect(after.participants.length).toBe(1);
    expect(after.shards).toEqual([{ id: 0, worker: after.participants[0], position: 0, count: 128, probe: false }]);
    expect(planStep([slowLink], small, coord).shards).toEqual([{ id: 0, worker: 4, position: 0, count: 128, probe: false }]);
  });

  it('a benched worker kept current still loads the coordinator link, so benching it saves less', () => {
    const alex = run('alexnet');
    const ws = [worker(1), worker(2, V100 / 50)];
    const apart = planStep(ws, alex, star(GBIT));
    const kept = planStep([ws[0], { ...ws[1], keptCurrent: true }], alex, star(GBIT));
    expect(kept.participants).toEqual([1]);
    // Its 187 MB go out anyway: 1.6 s more for the step, 1.6 s less that using it would add.
    expect(kept.predictedMs!).toBeGreaterThan(apart.predictedMs! + 1000);
    expect(kept.benched[0].lengthensMs).toBeLessThan(apart.benched[0].lengthensMs - 1000);
    // Of two equal workers, the one that receives the bytes anyway is the one to use.
    expect(planStep([worker(1), { ...worker(2), keptCurrent: true }], alex, star(GBIT)).participants).toEqual([2]);
  });
});

describe('unmeasured workers and re-measurement', () => {
  const small = run('alexnet-small');
  const coord = star(10 * GBIT);
  const newcomer = (id: number): WorkerCost => ({ id, computeRate: 0, upRate: 0, downRate: 0, behind: 2 });

  it('a worker with no measurement yet gets a small probe shard, not nothing', () => {
    const ws = [worker(1, V100 / 50, 10 * GBIT), newcomer(2)];
    const p = planStep(ws, small, coord);
    expectValidPlan(p, ws, 128);
    expect(p.probes).toEqual([2]);
    expect(countOf(p, 2)).toBe(8);
    expect(countOf(p, 1)).toBe(120);
    expect(p.shards.find((s) => s.worker === 2)!.probe).toBe(true);
    expect(planStep(ws, small, coord, { probeExamples: 3 }).shards.map((s) => s.count)).toEqual([125, 3]);
    // Compute known but a link never measured: still a probe.
    expect(isMeasured({ ...worker(3), upRate: 0 })).toBe(false);
    expect(planStep([worker(1, V100, 10 * GBIT), { ...worker(3), downRate: NaN }], small, coord).probes).toEqual([3]);
  });

  it('nobody measured: an even split over everyone (the run\'s first shards)', () => {
    const ws = [newcomer(5), newcomer(6), newcomer(7)];
    const p = planStep(ws, small, coord);
    expect(p.shards.map((s) => [s.worker, s.count])).toEqual([[5, 43], [6, 43], [7, 42]]);
    expect(p.predictedMs).toBeNull();
    expect(planStep(ws, { ...small, batch: 2 }, coord).shards.map((s) => s.worker)).toEqual([5, 6]);
  });

  it('probes never take the last example from the measured workers', () => {
    const ws = [worker(1, V100, 10 * GBIT), newcomer(2), newcomer(3), newcomer(4)];
    const p = planStep(ws, { ...small, batch: 3 }, coord);
    expectValidPlan(p, ws, 3);
    expect(p.shards.map((s) => [s.worker, s.count])).toEqual([[1, 1], [2, 1], [3, 1]]);
  });

  it('probeDue: every K steps one benched worker, in turn; never otherwise', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map((s) => probeDue(s, [7, 9], 3))).toEqual([7, null, null, 9, null, null, 7, null, null]);
    expect(probeDue(6, [], 3)).toBeNull();
    expect(probeDue(6, [7], 0)).toBeNull();
  });

  it('a due benched worker joins the step with its best shard, costing exactly its reported penalty', () => {
    const ws = [worker(1, V100, 10 * GBIT), worker(2, V100 / 50, 10 * GBIT)];
    const off = planStep(ws, small, coord, { step: 11, probeEvery: 10 });
    expect(off.shards.map((s) => s.worker)).toEqual([1]);
    const on = planStep(ws, small, coord, { step: 20, probeEvery: 10 });
    expectValidPlan(on, ws, 128);
    expect(on.probes).toEqual([2]);
    expect(countOf(on, 2)).toBeGreaterThanOrEqual(1);
    expect(on.participants).toEqual([1]);
    expect(on.predictedMs!).toBeCloseTo(off.predictedMs! + off.benched[0].lengthensMs, 9);
  });

  it('probeInterval keeps probes within their share of the run time', () => {
    // A 3 s penalty on 3.2 s steps at a 5% budget: one probe every 19 steps.
    expect(probeInterval(3000, 3200)).toBe(19);
    expect(probeInterval(1, 3200)).toBe(10);
    expect(probeInterval(Infinity, 3200)).toBe(1000);
    expect(probeInterval(-5, 3200)).toBe(10);
  });

  it('linkEstimate: a share of a saturated coordinator link only raises a worker\'s own-link estimate', () => {
    expect(linkEstimate(0, 50e6, { flows: 1, aggregate: 50e6, capacity: 120e6 })).toBe(50e6);
    expect(linkEstimate(100e6, 50e6, { flows: 1, aggregate: 50e6, capacity: 120e6 })).toBeCloseTo(85e6, 0);
    // Two workers splitting a full 120 MB/s link measure 60 MB/s each: their own links are at least that.
    expect(linkEstimate(110e6, 60e6, { flows: 2, aggregate: 119e6, capacity: 120e6 })).toBe(110e6);
    expect(linkEstimate(40e6, 60e6, { flows: 2, aggregate: 119e6, capacity: 120e6 })).toBe(60e6);
    expect(linkEstimate(110e6, NaN, { flows: 1, aggregate: 0, capacity: 120e6 })).toBe(110e6);
  });

  it('downRateWith: a burst that shared the coordinator\'s link only raises a worker\'s download rate', () => {
    expect(downRateWith(0, 7e6, true)).toBe(7e6); // nothing better known: taken
    expect(downRateWith(7e6, 300e6, true)).toBe(300e6);
    expect(downRateWith(300e6, 7e6, true)).toBe(300e6); // eight catching up at once: says nothing against it
    expect(downRateWith(100e6, 50e6, false)).toBeCloseTo(1 / (0.7 / 100e6 + 0.3 / 50e6), 0); // alone: averaged
    for (const bad of [0, NaN, Infinity, -1]) expect(downRateWith(100e6, bad, false)).toBe(100e6);
  });
});

describe('the plan', () => {
  function rng(seed: number) {
    let x = seed >>> 0 || 1;
    return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 4294967296; };
  }

  function randomCase(rnd: () => number, maxWorkers: number, unknown: boolean) {
    const n = 1 + Math.floor(rnd() * maxWorkers);
    const bytes = [1.3e6, 4e6, 47e6, 187e6][Math.floor(rnd() * 4)];
    const workers: WorkerCost[] = Array.from({ length: n }, (_, i) => unknown && rnd() < 0.15
      ? { id: 100 + i, computeRate: 0, upRate: 0, downRate: 0, behind: 2 }
      : { id: 100 + i, computeRate: 10 ** (1 + 3 * rnd()), upRate: 10 ** (6 + 3 * rnd()), downRate: 10 ** (6 + 3 * rnd()), behind: rnd() < 0.2 ? 2 : 1 });
    const r: RunCost = { batch: 1 + Math.floor(rnd() * 300), gradientBytes: bytes, updateBytes: rnd() < 0.5 ? bytes : bytes / 4, weightsBytes: bytes, exampleBytes: 785, pipelined: rnd() < 0.5 };
    const c: CoordinatorCost = { upRate: 10 ** (7 + 3 * rnd()), downRate: 10 ** (7 + 3 * rnd()), foldRate: 10 ** (8 + 3 * rnd()), sgdRate: 1e10, encodeRate: 1e10 };
    return { workers, r, c };
  }

  it('sums to the batch, one example at least per shard, contiguous in worker order, every worker accounted for', () => {
    const rnd = rng(7);
    for (let i = 0; i < 400; i++) {
      const { workers, r, c } = randomCase(rnd, 12, true);
      const p = planStep(workers, r, c, { step: i, probeEvery: 5 });
      expectValidPlan(p, workers, r.batch);
      const inPlan = new Set(p.shards.map((s) => s.worker));
      for (const id of p.participants) expect(inPlan.has(id)).toBe(true);
      for (const b of p.benched) expect(p.participants).not.toContain(b.worker);
      // Every measured worker is either used or benched with a penalty.
      const measured = workers.filter(isMeasured).map((w) => w.id);
      expect([...p.participants, ...p.benched.map((b) => b.worker)].sort()).toEqual(measured.sort());
      // What the planner predicts is what predictStep says of the plan it returns.
      if (p.predictedMs !== null) {
        const byId = new Map(workers.map((w) => [w.id, w]));
        const bench = workers.filter((w) => !inPlan.has(w.id));
        expect(predictStep(p.shards.map((s) => ({ worker: byId.get(s.worker)!, count: s.count })), r, c, bench).stepMs).toBeCloseTo(p.predictedMs, 6);
      }
    }
  });

  it('is deterministic: the same inputs give the same plan; ties go to the earlier worker', () => {
    const rnd = rng(11);
    for (let i = 0; i < 50; i++) {
      const { workers, r, c } = randomCase(rnd, 10, true);
      expect(planStep(workers, r, c, { step: 3, probeEvery: 3 })).toEqual(planStep(workers.map((w) => ({ ...w })), r, c, { step: 3, probeEvery: 3 }));
    }
    const small = run('alexnet-small', NO_COMPRESSION, { batch: 129 });
    const twins = [worker(9, V100, 10 * GBIT), worker(4, V100, 10 * GBIT)];
    expect(planStep(twins, small, star(10 * GBIT)).shards.map((s) => [s.worker, s.count])).toEqual([[9, 65], [4, 64]]);
    expect(planStep([...twins].reverse(), small, star(10 * GBIT)).shards.map((s) => [s.worker, s.count])).toEqual([[4, 65], [9, 64]]);
  });

  it('finds the best set of workers: never slower than the best of every subset (small fleets, all subsets tried)', () => {
    const rnd = rng(23);
    let benchedSome = 0;
    for (let i = 0; i < 300; i++) {
      const { workers, r, c } = randomCase(rnd, 6, false);
      const p = planStep(workers, r, c, { minGain: 0 });
      let best = Infinity;
      for (let m = 1; m < 1 << workers.length; m++) {
        const subset = workers.filter((_, j) => m & (1 << j));
        const q = planStep(subset, r, c, { minGain: 0 });
        // Only subsets the planner would use whole (else a smaller one is what it priced).
        if (q.participants.length === subset.length) best = Math.min(best, q.predictedMs!);
      }
      expect(p.predictedMs!).toBeLessThanOrEqual(best * (1 + 1e-9));
      if (p.benched.length) benchedSome++;
    }
    // The random fleets exercise the choice, not only the trivial everyone-in case.
    expect(benchedSome).toBeGreaterThan(50);
  });

  it('minGain: more workers only when they shorten the step by that fraction', () => {
    const alex = run('alexnet');
    const ws = fleet(8, V100, 10 * GBIT);
    const eager = planStep(ws, alex, star(100 * GBIT), { minGain: 0 });
    const strict = planStep(ws, alex, star(100 * GBIT), { minGain: 0.5 });
    expect(eager.participants.length).toBeGreaterThan(1);
    expect(strict.participants).toEqual([1]);
    expect(strict.predictedMs! <= eager.predictedMs! * 1.5).toBe(true);
  });

  it('allocate gives the integer split with the smallest max, as found by trying every split', () => {
    const rnd = rng(5);
    for (let i = 0; i < 200; i++) {
      const k = 1 + Math.floor(rnd() * 3);
      const a = Array.from({ length: k }, () => rnd() * 0.5);
      const r = Array.from({ length: k }, () => 0.001 + rnd() * 0.05);
      const total = k + Math.floor(rnd() * 25);
      const n = allocate(a, r, total)!;
      expect(n.reduce((x, y) => x + y, 0)).toBe(total);
      const cost = (m: number[]) => Math.max(...m.map((x, j) => a[j] + x * r[j]));
      let best = Infinity;
      const rec = (j: number, left: number, m: number[]) => {
        if (j === k - 1) { if (left >= 1) best = Math.min(best, cost([...m, left])); return; }
        for (let x = 1; x <= left - (k - 1 - j); x++) rec(j + 1, left - x, [...m, x]);
      };
      rec(0, total, []);
      expect(cost(n)).toBeCloseTo(best, 12);
    }
    expect(allocate([0, 0], [1, 1], 1)).toBeNull();
  });
});

describe('against the loopback scale-out table (docs/BENCHMARKS.md §2, AlexNet strong scaling)', () => {
  it('N = 1 figures predict N = 2, 4, 8 within 10%: the coordinator carries every worker\'s bytes in turn', () => {
    // N = 1 row: step 531 ms = compute 33 + upload 217 + broadcast 262 + aggregate 21 + apply 19.
    // On loopback the "link" is the coordinator's cores, shared like a NIC: each direction's N = 1
    // throughput is both a worker's rate and the coordinator's.
    const alex = run('alexnet');
    const up = alex.gradientBytes / 0.217, down = alex.updateBytes / 0.262;
    const coord: CoordinatorCost = { upRate: up, downRate: down, foldRate: Infinity, sgdRate: alex.weightsBytes / 0.019, encodeRate: alex.weightsBytes / 0.021 };
    const measured: [number, number][] = [[1, 531], [2, 981], [4, 1809], [8, 4101]];
    for (const [n, ms] of measured) {
      const ws = Array.from({ length: n }, (_, i) => ({ id: i + 1, computeRate: 128 / 0.033, upRate: up, downRate: down, behind: 1 }));
      const predicted = predictStep(ws.map((w) => ({ worker: w, count: 128 / n })), alex, coord).stepMs;
      expect(Math.abs(predicted / ms - 1)).toBeLessThan(0.1);
    }
    // And so the planner would have run that table with one worker.
    const ws = Array.from({ length: 8 }, (_, i) => ({ id: i + 1, computeRate: 128 / 0.033, upRate: up, downRate: down, behind: 1 }));
    expect(planStep(ws, alex, coord).participants).toEqual([1]);
  });
});
