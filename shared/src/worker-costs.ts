// A synthetic worker machine's CPU work (synthetic-machine.ts blocks for it): each piece of
// per-worker CPU work of one run configuration (copying the weights into the replica, encoding the
// gradient, decoding and applying an update, hashing the replica), timed once on this machine with
// the same functions WorkerCore calls. `synthetic.ts measure` prints it for the benchmark.
import { CHUNK_FLOATS, paramLayout, replicaHash, type ModelSpec } from '@tabtrain/shared';
import { GradientEncoder, checkBody, decodeInto, gradientFrame, planSegments, powerSgdPlanOf, type Compression } from '@tabtrain/shared/compress';
import { LowRankKernel, applyPart, applyPowerSgd, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { nextQ } from '@tabtrain/shared/powersgd-basis';
import { UpdateArena } from '@tabtrain/shared/simd';
import { fillGradient } from '@tabtrain/shared/synthetic-net';

/** Per-worker CPU work of one run configuration (model + compression), measured once on this machine, in ms. */
export interface WorkerCosts {
  model: string;
  compress: Compression;
  /** Copying received weights into the replica, per float. */
  weightsMsPerFloat: number;
  /** Encoding each gradient segment, in plan order. */
  encodeMs: number[];
  /** Checking and decoding each segment of a compressed update, in plan order. */
  decodeMs: number[];
  /** SGD applying a decoded update to the replica (UpdateArena: SIMD where it exists, as workers do). */
  applyMs: number;
  /** powersgd: the update's parts applied one by one as they arrive (the fp32 tensors, then each matrix in plan order). */
  applyPartMs: number[];
  /** replicaHash of the replica (assigns of compressed runs carry a hash every --verify-every steps). */
  hashMs: number;
  /** powersgd: making the next step's Q from the round-2 broadcast (nextQ), on the worker's CPU. */
  warmStartMs: number;
}

/**
 * Times, on this machine, the CPU work a worker does per step for `spec` under `compress`: the
 * same functions WorkerCore calls, on a gradient like SyntheticNet's. Each runs once to warm up the
 * JIT and the allocator, then 3 times, and the fastest is kept. AlexNet with PowerSGD takes several
 * seconds; needs about 5 model-sized vectors of memory.
 */
export function measureWorkerCosts(spec: ModelSpec, compress: Compression, seed = 42): WorkerCosts {
  const { params, total } = paramLayout(spec);
  const replica = new Float32Array(total);
  const incoming = new Float32Array(total).fill(1e-3);
  // Best of 3 after one warm-up run (JIT, allocator): on a shared machine the fastest is the work's own cost.
  const time = (f: () => void) => { f(); let best = Infinity; for (let i = 0; i < 3; i++) { const t0 = performance.now(); f(); best = Math.min(best, performance.now() - t0); } return best; };
  const copyMs = time(() => { for (let o = 0; o < total; o += CHUNK_FLOATS) replica.set(incoming.subarray(o, Math.min(total, o + CHUNK_FLOATS)), o); });
  const psgd = powerSgdPlanOf(params, total, compress);
  if (psgd) {
    // The factors are made on the worker's GPU (slept: POWERSGD_PASSES, synthetic-machine.ts); its CPU applies the update and makes the next Q.
    const [round1, round2] = syntheticFactors(psgd, seed);
    // As a worker keeps it (powersgd-rounds.ts): the replica in the kernel's memory, updated in place.
    const kernel = LowRankKernel.withWeights(psgd);
    const w = kernel?.weights ?? replica;
    const applyMs = time(() => applyPowerSgd(psgd, w, round1, round2, spec.lr, 128, kernel));
    const parts = [{ dense: psgd.dense, matrices: [] }, ...psgd.matrices.map((m) => ({ dense: [], matrices: [m] }))];
    const applyPartMs = parts.map((part) => time(() => applyPart(psgd, w, part, round1, round2, spec.lr, 128, kernel)));
    const warmStartMs = time(() => { nextQ(psgd, round2, seed, 1); });
    const hashMs = time(() => { replicaHash(replica); });
    return { model: spec.name, compress, weightsMsPerFloat: copyMs / total, encodeMs: [], decodeMs: [], applyMs, applyPartMs, hashMs, warmStartMs };
  }
  const plan = planSegments(params, total, compress);
  const grad = new Float32Array(total);
  fillGradient(grad, seed);
  const encoder = new GradientEncoder(plan, total);
  const bodies = plan.map((s) => gradientFrame(s, 1, 0, total).body);
  const encodeMs = plan.map((s) => time(() => encoder.encode(s, grad, bodies[s.index])));
  const compressed = compress.mode !== 'none';
  // As a worker keeps them (core.ts): the replica and the decoded update side by side, SIMD SGD.
  const updates = new UpdateArena(total);
  const decodeMs = compressed ? plan.map((s) => time(() => { if (checkBody(s, bodies[s.index]) || !decodeInto(s, bodies[s.index], updates.update)) throw new Error(`segment ${s.index} does not decode`); })) : plan.map(() => 0);
  const applyMs = compressed ? time(() => updates.apply(spec.lr, 128)) : 0;
  const hashMs = compressed ? time(() => { replicaHash(replica); }) : 0;
  return { model: spec.name, compress, weightsMsPerFloat: copyMs / total, encodeMs, decodeMs, applyMs, applyPartMs: [], hashMs, warmStartMs: 0 };
}

/**
 * A synthetic machine's factor vectors of both rounds: gradient-like values, as its gradient is.
 * Their values change no cost: the coordinator sums and orthonormalises whatever comes.
 */
export function syntheticFactors(plan: PowerSgdPlan, seed: number): [Float32Array, Float32Array] {
  const r1 = new Float32Array(plan.round1Floats), r2 = new Float32Array(plan.round2Floats);
  fillGradient(r1, seed);
  fillGradient(r2, seed + 1);
  return [r1, r2];
}
