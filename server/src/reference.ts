// The step's trusted reference (as FLTrust uses a trusted gradient): each shard a worker the operator
// does not vouch for computed is held against the sum of the vouched workers' shards of the same
// step (local workers, token holders) before the step is applied. A liar that keeps the norm check
// happy (a negated gradient, a random direction of the same norm, a gradient × 3) stands out here at
// its first lie, not at the 5% spot check that would find it ~20 shards later.
//
// A suspicion is no verdict: the shard is recomputed by a vouched worker, and only the two copies'
// verified disagreement punishes (scheduler.ts), so an honest shard with an unlucky direction costs
// one recomputation, never a ban. Pure functions: no sockets, no timers.
import { randomInt } from 'node:crypto';
import type { Conn, Membership } from './membership';
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
  /**
   * A shard whose ‖g‖/√count is over this many times the vouched shards' median is recomputed (a × 3
   * liar). Honest alexnet-tiny shards of ~11 examples reached 2.26× over 200 fp32 steps.
   */
  maxNormRatio: 2.5,
} as const;

const dot = (a: Float32Array, b: Float32Array): number => {
  let s0 = 0, s1 = 0;
  const n = a.length & ~1;
  for (let i = 0; i < n; i += 2) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; }
  if (n < a.length) s0 += a[n] * b[n];
  return s0 + s1;
};

/** What to learn from a step: each unvouched shard's cosine with the vouched sum, its norm ratio to the vouched median, and the cosine it must reach. */
export interface Measured { index: number; cosine: number; normRatio: number; threshold: number }

/** A shard of the step as the check reads it: its gradient is decoded on demand, so that at most one is held beside the sum. */
export interface LazyShard { count: number; vouched: boolean; gradient: () => Float32Array | null }

/**
 * Measures the unvouched shards of a step against its vouched ones, holding only the vouched sum
 * and one decoded gradient at a time (an AlexNet gradient is 190 MB). Empty when the step has no
 * vouched shard (nothing to hold them against: spot checks and probation are all there is then),
 * or a gradient cannot be decoded.
 */
export function measureLazy(shards: LazyShard[], measured: (s: LazyShard) => boolean = () => true): Measured[] {
  const vouched = shards.filter((s) => s.vouched);
  if (!vouched.length || !shards.some((s) => !s.vouched && measured(s))) return [];
  let ref: Float32Array | null = null;
  const stats: number[] = [];
  for (const s of vouched) {
    const g = s.gradient();
    if (!g || (ref && g.length !== ref.length)) return [];
    ref ??= new Float32Array(g.length);
    for (let i = 0; i < ref.length; i++) ref[i] += g[i];
    stats.push(Math.sqrt(sumSquares([g]) / Math.max(1, s.count)));
  }
  const refSq = sumSquares([ref!]), refNorm = Math.sqrt(refSq);
  stats.sort((a, b) => a - b);
  const median = stats[stats.length >> 1];
  // The vouched shards' agreement: each one's cosine with the sum of the others (cos(v, R − v)).
  let agreement = Infinity;
  if (vouched.length >= 2) {
    for (const v of vouched) {
      const g = v.gradient()!;
      const vr = dot(g, ref!), vv = sumSquares([g]);
      const rest = Math.sqrt(Math.max(0, refSq - 2 * vr + vv));
      if (vv > 0 && rest > 0) agreement = Math.min(agreement, (vr - vv) / (Math.sqrt(vv) * rest));
    }
  }
  const threshold = Math.min(REFERENCE.minCosine, agreement - REFERENCE.margin);
  const out: Measured[] = [];
  shards.forEach((s, index) => {
    if (s.vouched || !measured(s)) return;
    const g = s.gradient();
    if (!g || g.length !== ref!.length) return;
    const norm = Math.sqrt(sumSquares([g]));
    const cosine = norm > 0 && refNorm > 0 ? dot(g, ref!) / (norm * refNorm) : 1;
    out.push({ index, cosine, normRatio: median > 0 ? norm / Math.sqrt(Math.max(1, s.count)) / median : 1, threshold });
  });
  return out;
}

/** measureLazy over gradients in hand. */
export function measure(shards: ShardGradient[]): Measured[] {
  return measureLazy(shards.map((s) => ({ count: s.count, vouched: s.vouched, gradient: () => s.g })));
}

/** The check's record over a run: unvouched shards measured, suspected, and the extremes seen. */
export interface ReferenceStats { shards: number; suspected: number; minCosine: number; maxNormRatio: number }

/** The shards of `shards` (those `measured` admits) that are suspect, with why; `stats` records them all. */
export function suspects<T extends LazyShard>(shards: T[], measured: (s: T) => boolean, stats: ReferenceStats): [T, string][] {
  const out: [T, string][] = [];
  for (const m of measureLazy(shards, measured as (s: LazyShard) => boolean)) {
    stats.shards++;
    stats.minCosine = Math.min(stats.minCosine, m.cosine);
    stats.maxNormRatio = Math.max(stats.maxNormRatio, m.normRatio);
    const why = suspicion(m);
    if (why) { stats.suspected++; out.push([shards[m.index], why]); }
  }
  return out;
}

/**
 * How likely a newly established, unvouched worker's n-th train shard (n = shards it has done,
 * probation included) is spot-checked: every one of its first SPOT_RAMP, then SPOT_RAMP/n, never
 * below the run's --verify-shards. Over its first N shards that is about SPOT_RAMP·(1 + ln(N/SPOT_RAMP))
 * recomputations (~26 of the first 80 for 8), after which the base rate holds.
 */
export function spotCheckRate(shardsDone: number, base: number): number {
  return Math.max(base, Math.min(1, SPOT_RAMP / (shardsDone + 1)));
}

/** Shards of a newly established worker that are all spot-checked (spotCheckRate). */
export const SPOT_RAMP = 8;

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

/** Two compressed copies of a train shard compared decoded (codedDisagreement), each decoded once. */
export class DecodedCopies<C extends object> {
  private readonly cache = new WeakMap<C, Float32Array | null>();
  constructor(private readonly decode: (c: C) => Float32Array | null) {}

  disagreement(a: C, b: C): string | null {
    const [ga, gb] = [a, b].map((c) => {
      if (!this.cache.has(c)) this.cache.set(c, this.decode(c));
      return this.cache.get(c)!;
    });
    return ga && gb ? codedDisagreement(ga, gb) : null;
  }
}

/**
 * Whether `conn`'s next train shard is spot-checked as a newly established worker (spotCheckRate):
 * never the operator's workers, nor where nobody else established could check it.
 */
export function rampedSpotCheck(conn: Conn, members: Membership, base: number, probation: number): boolean {
  // --verify-shards 0 asks for no second copies at all (a benchmark's): the ramp honours it.
  if (conn.vouched || conn.local || probation === 0 || base <= 0 || !members.established(conn, 'train')) return false;
  if (!members.workers().some((c) => c !== conn && members.established(c, 'train'))) return false;
  const rate = spotCheckRate(conn.shardsDone, base);
  return rate >= 1 || randomInt(1_000_000) < rate * 1_000_000;
}
