// The step's trusted reference (as FLTrust uses a trusted gradient): each shard a worker the operator
// does not vouch for computed is held against the sum of the vouched workers' shards of the same
// step (local workers, token holders) before the step is applied. A liar that keeps the norm check
// happy (a negated gradient, a random direction of the same norm, a gradient × 3) stands out here at
// its first lie, not at the 5% spot check that would find it ~20 shards later.
//
// A suspicion is no verdict: the shard is recomputed by a vouched worker, and only the two copies'
// verified disagreement punishes (scheduler.ts), so an honest shard with an unlucky direction costs
// one recomputation, never a ban. Pure functions: no sockets, no timers.
import { sumSquares } from './verify';

/** One shard's gradient of the step, decoded to floats. */
export interface ShardGradient {
  count: number;
  /** Its worker is vouched for by the operator: its shard is part of the reference. */
  vouched: boolean;
  g: Float32Array;
}

export const REFERENCE = {
  /**
   * A shard whose cosine with the vouched sum is below this is recomputed. Honest shards of a step
   * share the batch's descent direction once training is under way: a negated gradient then sits
   * well below 0, a random one near 0.
   */
  minCosine: 0.02,
  /**
   * ...or below the vouched shards' own agreement less this margin, whichever is lower. Early in
   * training the shards of one batch point apart (the batch's labels are drawn without replacement,
   * so one shard's surplus of a class is the others' shortfall, and the output layer's gradient is
   * most of the norm): measured on alexnet-tiny, honest shards' cosine with the vouched sum sat
   * between −0.22 and 0 for the first ~30 steps. A vouched shard's cosine with the other vouched
   * shards shows that regime, so honest shards in it are not recomputed wholesale; a lie there is
   * left to the spot checks.
   */
  margin: 0.1,
  /** A shard whose ‖g‖/√count is over this many times the vouched shards' median is recomputed (a × 3 liar). */
  maxNormRatio: 2,
} as const;

const dot = (a: Float32Array, b: Float32Array): number => {
  let s0 = 0, s1 = 0;
  const n = a.length & ~1;
  for (let i = 0; i < n; i += 2) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; }
  if (n < a.length) s0 += a[n] * b[n];
  return s0 + s1;
};

/** What to learn from a step: each unvouched shard's cosine with the vouched sum, and its norm ratio to the vouched median. */
export interface Measured { index: number; cosine: number; normRatio: number; threshold: number }

/**
 * Measures the unvouched shards of a step against its vouched ones. Empty when the step has no
 * vouched shard (nothing to hold them against: spot checks and probation are all there is then).
 */
export function measure(shards: ShardGradient[]): Measured[] {
  const vouched = shards.filter((s) => s.vouched);
  if (!vouched.length || vouched.length === shards.length) return [];
  const ref = new Float32Array(vouched[0].g.length);
  for (const s of vouched) for (let i = 0; i < ref.length; i++) ref[i] += s.g[i];
  const refNorm = Math.sqrt(sumSquares([ref]));
  const stats = vouched.map((s) => Math.sqrt(sumSquares([s.g]) / Math.max(1, s.count))).sort((a, b) => a - b);
  const median = stats[stats.length >> 1];
  // The vouched shards' agreement: each one's cosine with the sum of the others (cos(v, R − v)).
  const refSq = refNorm * refNorm;
  let agreement = Infinity;
  if (vouched.length >= 2) {
    for (const v of vouched) {
      const vr = dot(v.g, ref), vv = sumSquares([v.g]);
      const rest = Math.sqrt(Math.max(0, refSq - 2 * vr + vv));
      if (vv > 0 && rest > 0) agreement = Math.min(agreement, (vr - vv) / (Math.sqrt(vv) * rest));
    }
  }
  const threshold = Math.min(REFERENCE.minCosine, agreement - REFERENCE.margin);
  const out: Measured[] = [];
  shards.forEach((s, index) => {
    if (s.vouched || s.g.length !== ref.length) return;
    const norm = Math.sqrt(sumSquares([s.g]));
    const cosine = norm > 0 && refNorm > 0 ? dot(s.g, ref) / (norm * refNorm) : 1;
    out.push({ index, cosine, normRatio: median > 0 ? norm / Math.sqrt(Math.max(1, s.count)) / median : 1, threshold });
  });
  return out;
}

/** Why a measured shard is suspect, or null. */
export function suspicion(m: Measured): string | null {
  if (!Number.isFinite(m.cosine) || !Number.isFinite(m.normRatio)) return 'its gradient is not finite';
  if (m.cosine < m.threshold) return `its gradient's cosine with the vouched workers' sum of the step is ${m.cosine.toFixed(3)}`;
  if (m.normRatio > REFERENCE.maxNormRatio) return `its gradient norm per √example is ${m.normRatio.toFixed(2)}× the vouched workers' median of the step`;
  return null;
}

/**
 * Compressed runs: why two copies of one train shard, decoded, disagree, or null. They cannot agree
 * float by float (each worker's error feedback differs), but both are the shard's gradient plus a
 * small residual: honest copies point the same way (cosine ≳ 0.9 for int8, ~1 for fp16) at the
 * same length. A negated, random or rescaled copy does not.
 */
export function codedDisagreement(a: Float32Array, b: Float32Array): string | null {
  if (a.length !== b.length) return 'gradients are cut differently';
  const na = Math.sqrt(sumSquares([a])), nb = Math.sqrt(sumSquares([b]));
  if (!Number.isFinite(na) || !Number.isFinite(nb)) return 'a gradient is not finite';
  if (na === 0 || nb === 0) return na === nb ? null : `norms ${na.toPrecision(4)} vs ${nb.toPrecision(4)}`;
  const cos = dot(a, b) / (na * nb);
  if (cos < 0.5) return `decoded gradients' cosine is ${cos.toFixed(3)}`;
  const ratio = Math.max(na / nb, nb / na);
  if (ratio > 1.5) return `decoded gradients' norms differ ${ratio.toFixed(2)}× (${na.toPrecision(4)} vs ${nb.toPrecision(4)})`;
  return null;
}
