// PowerSGD's orthonormal bases: the coordinator's P̂, orthonormalised once from the summed round-1
// vector, and the Q every replica multiplies by (powersgd.ts describes the rounds).
//
// Q's warm start. Step t + 1 starts from step t's broadcast Q = ΣQ_i, orthonormalised by every
// replica with the same deterministic code (`nextQ`), so every worker multiplies by the same Q
// bits, which linearity needs. A worker's own Q_i would differ between workers and break it.
// Normalising changes no span (orth(MQ) = orth(MQR⁻¹)), but keeps P at the scale of M whatever
// the number of workers or the gradient's size, and a column that vanished (a layer with a zero
// gradient) is refilled from the seed instead of staying zero for the rest of the run.
//
// Pure code (no tfjs, no Node or DOM): the coordinator, the page and the Node worker run it.
import { checkLength, type PowerSgdPlan } from './powersgd';
import { mixSeed, rng } from './rng';

/** Seeds of the random columns: the first Q, and refills of vanished columns of P̂ and of Q. */
const SEED_Q0 = 0x9053d0, SEED_FILL_P = 0x9053d1, SEED_FILL_Q = 0x9053d2;
/**
 * A column is refilled when projecting out the columns before it leaves less than this fraction of
 * its norm: it was (numerically) a combination of them, or zero. fp32 rounding noise (~1e-7) stays:
 * normalised, it is as good a direction as any, and re-orthogonalisation keeps it orthogonal.
 */
const VANISHED = 1e-9;

/**
 * Orthonormalises, in place, the `rank` columns of a factor stored factor-major at f[at ..]
 * (column k is f[at + k·rows ..], `rows` long): modified Gram–Schmidt in double precision, each
 * column projected twice ("twice is enough": orthogonal to ~1e-16 even when nearly dependent),
 * rounded to fp32 once at the end. A column that vanishes (zero, or dependent on the columns
 * before it) is replaced by a random one drawn from `fillSeed` and orthogonalised the same way, so
 * the result always has `rank` orthonormal columns. Only +, −, ×, ÷ and √ on doubles: every
 * JavaScript engine gives the same bits. Returns how many columns were refilled.
 */
export function orthonormalise(f: Float32Array, at: number, rows: number, rank: number, fillSeed: number): number {
  const p = Float64Array.from(f.subarray(at, at + rank * rows));
  let refilled = 0;
  for (let k = 0; k < rank; k++) {
    const c = p.subarray(k * rows, (k + 1) * rows);
    const before = norm(c);
    project(p, c, k, rows);
    let after = norm(c);
    if (!(after > VANISHED * before)) {
      const next = rng(mixSeed(fillSeed, k));
      for (let i = 0; i < rows; i++) c[i] = 2 * next() - 1;
      project(p, c, k, rows);
      after = norm(c);
      refilled++;
    }
    const inv = 1 / after;
    for (let i = 0; i < rows; i++) c[i] *= inv;
  }
  f.set(p, at);
  return refilled;
}

/**
 * Removes from column c its components along columns 0..k−1 of p (already orthonormal), twice: one
 * pass of MGS leaves up to ε/VANISHED ≈ 1e-7 of non-orthogonality in a nearly dependent column, the
 * size of fp32's rounding; after the second the result's orthogonality is set by that rounding alone.
 */
function project(p: Float64Array, c: Float64Array, k: number, rows: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let l = 0; l < k; l++) {
      const o = l * rows;
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += c[i] * p[o + i];
      for (let i = 0; i < rows; i++) c[i] -= dot * p[o + i];
    }
  }
}

function norm(c: Float64Array): number {
  let s = 0;
  for (let i = 0; i < c.length; i++) s += c[i] * c[i];
  return Math.sqrt(s);
}

/**
 * The coordinator, after round 1's fold: orthonormalises every P in the summed round-1 vector, in
 * place. What remains is the round-1 broadcast (P̂ and the fp32 tensors' sums).
 */
export function orthonormaliseRound1(plan: PowerSgdPlan, sum: Float32Array, seed: number, step: number): void {
  checkLength('round-1 sum', sum, plan.round1Floats);
  plan.matrices.forEach((_, i) => orthonormaliseP(plan, sum, seed, step, i));
}

/** orthonormaliseRound1 for matrix i alone: the coordinator makes each P̂ once every shard's P of it is summed. */
export function orthonormaliseP(plan: PowerSgdPlan, sum: Float32Array, seed: number, step: number, i: number): void {
  const m = plan.matrices[i];
  orthonormalise(sum, m.pAt, m.rows, plan.rank, mixSeed(seed, SEED_FILL_P, step, i));
}

/** The Q every replica multiplies by in the run's first step: seeded by the run seed only. */
export function initialQ(plan: PowerSgdPlan, seed: number): Float32Array {
  const q = new Float32Array(plan.round2Floats);
  plan.matrices.forEach((m, i) => {
    // Uniform, not Gaussian: Box–Muller's log and cos are not the same bits in every engine.
    const next = rng(mixSeed(seed, SEED_Q0, i));
    for (let j = m.qAt; j < m.qAt + plan.rank * m.cols; j++) q[j] = 2 * next() - 1;
    orthonormalise(q, m.qAt, m.cols, plan.rank, mixSeed(seed, SEED_FILL_Q, 0, i));
  });
  return q;
}

/** The Q of step `step`, warm-started from the round-2 broadcast of step − 1 (ΣQ_i), orthonormalised. */
export function nextQ(plan: PowerSgdPlan, round2Sum: Float32Array, seed: number, step: number): Float32Array {
  checkLength('round-2 sum', round2Sum, plan.round2Floats);
  const q = round2Sum.slice();
  plan.matrices.forEach((m, i) => orthonormalise(q, m.qAt, m.cols, plan.rank, mixSeed(seed, SEED_FILL_Q, step, i)));
  return q;
}
