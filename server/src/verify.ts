// Is a worker's result believable? Pure checks, no sockets or timers: the coordinator decides
// what to do with the answers (verify by recomputation, drop, mark untrusted).
//
// Two kinds of evidence:
//   plausibility   every train shard's gradient norm, per √example, against the recent honest
//                  shards' median (a liar that scales its gradient ×1000 or sends 1e30s stands out);
//   agreement      the same shard computed by two workers: dropout masks are seeded by (seed, step,
//                  position), so honest copies agree to backend precision (wasm vs cpu ~1e-5 of the
//                  largest gradient, webgpu ~2e-7), and a liar's does not.
import type { Result } from '@tabtrain/shared';
import type { Segment } from '@tabtrain/shared/compress';
import { floatNormSq, halfNormSq } from '@tabtrain/shared/simd-codecs';

/** How far two honest copies of one shard may differ: ‖a − b‖ ≤ TOL · max(‖a‖, ‖b‖) (backends differ by ~1e-5). */
export const GRADIENT_TOLERANCE = 1e-3;

/** What one copy of a shard produced: its result and, for a train shard, its gradient floats (fp32 runs). */
export interface CopyEvidence {
  result: Result;
  /** The gradient's fp32 bodies in parameter order; absent for eval shards. */
  gradient?: Float32Array[];
}

/** Σ x² over the bodies, in double precision; NaN or Infinity if any float is not finite. */
export function sumSquares(parts: Float32Array[]): number {
  let s = 0;
  for (const x of parts) s += floatNormSq(x);
  return s;
}

/** Σ (a − b)² over two copies' bodies (same segmentation: the run's plan); null if they are not cut alike. */
function distanceSquared(a: Float32Array[], b: Float32Array[]): number | null {
  if (a.length !== b.length) return null;
  let s = 0;
  for (let k = 0; k < a.length; k++) {
    const x = a[k], y = b[k];
    if (x.length !== y.length) return null;
    for (let i = 0; i < x.length; i++) { const d = x[i] - y[i]; s += d * d; }
  }
  return s;
}

/**
 * Why two copies of one shard disagree, or null when they agree within backend precision.
 * Counts may differ by a near-tie in an argmax (max(1, 2%) of the examples); loss sums by 1e-3
 * relative; gradients by GRADIENT_TOLERANCE relative in L2.
 */
export function disagreement(a: CopyEvidence, b: CopyEvidence): string | null {
  const ra = a.result, rb = b.result;
  if (ra.count !== rb.count) return `example counts ${ra.count} vs ${rb.count}`;
  const slack = Math.max(1, Math.floor(0.02 * ra.count));
  if (Math.abs(ra.correct - rb.correct) > slack) return `correct ${ra.correct} vs ${rb.correct} of ${ra.count}`;
  if (Math.abs(ra.lossSum - rb.lossSum) > 1e-3 * Math.max(ra.lossSum, rb.lossSum) + 1e-4 * ra.count) return `loss sums ${ra.lossSum.toPrecision(6)} vs ${rb.lossSum.toPrecision(6)}`;
  if (!a.gradient || !b.gradient) return null;
  const na = Math.sqrt(sumSquares(a.gradient)), nb = Math.sqrt(sumSquares(b.gradient));
  const d = distanceSquared(a.gradient, b.gradient);
  if (d === null) return 'gradients are cut differently';
  const dist = Math.sqrt(d);
  if (!(dist <= GRADIENT_TOLERANCE * Math.max(na, nb))) return `gradients differ by ${rel(dist, Math.max(na, nb))} of their norm (‖a‖ ${na.toPrecision(4)}, ‖b‖ ${nb.toPrecision(4)})`;
  return null;
}

const rel = (d: number, n: number) => (n > 0 ? `${(d / n).toPrecision(3)}×` : `${d.toPrecision(3)} (absolute)`);

/**
 * The robust yardstick for gradient norms: the median of ‖g‖/√count over the last WINDOW accepted
 * train shards. ‖g‖/√count sits between ‖mean g‖·√count (aligned examples) and the per-example
 * spread (random ones), so shards of any size compare; FACTOR leaves room for honest outliers
 * (early steps, a hard batch), and a flagged shard is recomputed rather than condemned.
 */
export class NormMonitor {
  static readonly WINDOW = 64;
  /** Flag a shard whose statistic exceeds the median by this factor. */
  static readonly FACTOR = 20;
  /** No verdicts until this many honest shards have been seen. */
  static readonly MIN_HISTORY = 8;
  private readonly recent: number[] = [];

  /** The statistic of a shard: ‖g‖ / √count. */
  static statistic(normSq: number, count: number): number {
    return Math.sqrt(normSq) / Math.sqrt(Math.max(1, count));
  }

  /** Why this shard's gradient is implausible, or null. */
  check(normSq: number, count: number): string | null {
    const s = NormMonitor.statistic(normSq, count);
    if (!Number.isFinite(s)) return 'its gradient is not finite';
    if (this.recent.length < NormMonitor.MIN_HISTORY) return null;
    const m = this.median();
    if (m > 0 && s > NormMonitor.FACTOR * m) return `its gradient norm per √example is ${(s / m).toFixed(0)}× the recent median (${s.toPrecision(3)} vs ${m.toPrecision(3)})`;
    return null;
  }

  /** Records an accepted shard. */
  accept(normSq: number, count: number): void {
    const s = NormMonitor.statistic(normSq, count);
    if (!Number.isFinite(s)) return;
    this.recent.push(s);
    if (this.recent.length > NormMonitor.WINDOW) this.recent.shift();
  }

  median(): number {
    const s = [...this.recent].sort((a, b) => a - b);
    return s.length ? s[s.length >> 1] : 0;
  }
}

/**
 * Compressed runs: after probation, nothing compares a trusted worker's frames with anyone's (two
 * honest copies differ by each worker's error feedback), so each frame is held against the recent
 * frames of the same segment (a powersgd round's matrix, an int8 segment) by NormMonitor's
 * statistic (‖frame‖/√examples, 20× the median of the last 64). It is checked before it is
 * summed: powersgd broadcasts a round's matrices as soon as they are summed (step.ts), so a later
 * check would come too late. It catches a worker that scales its frames up; one that stays within
 * 20× of its peers it cannot tell from honest.
 */
export class FrameNorms {
  private readonly monitors = new Map<string, NormMonitor>();
  /** Outliers of vouched workers seen, per frame kind: logged on the first and every 100th. */
  private readonly outliers = new Map<string, number>();

  /** `note` logs an outlier of a vouched worker (recorded, never refused). */
  constructor(private readonly note: (line: string) => void = () => {}) {}

  /**
   * Why a frame of `what` (its squared norm, or an upper bound of it) from a shard of `count`
   * examples is implausible; null records it. A vouched worker's frame (a local worker, a token
   * holder: the operator's) is never refused and always recorded: the operator trusts it, and a
   * jump in its frames is the gradient's own (a loss spike, a round-2 factor that grew), which the
   * window then follows. Unrecorded, such a jump would leave the window behind and refuse every
   * later honest frame, as a powersgd run whose two local workers were both banned at step 6,391
   * showed. Only unvouched frames are refused on the norm alone.
   */
  check(what: string, normSq: number, count: number, vouched = false): string | null {
    // A non-finite frame is the reducer's to refuse (badGradient), as in every run.
    if (!Number.isFinite(normSq)) return null;
    let m = this.monitors.get(what);
    if (!m) this.monitors.set(what, (m = new NormMonitor()));
    const why = m.check(normSq, count);
    if (why && !vouched) return why.replace('its gradient', `its ${what}`);
    if (why) {
      const n = (this.outliers.get(what) ?? 0) + 1;
      this.outliers.set(what, n);
      if (n % 100 === 1) this.note(`a vouched worker's ${what}: ${why.replace('its gradient ', '')}; summed (the operator vouches for it), the yardstick follows it${n > 1 ? ` (${n} such frames so far)` : ''}`);
    }
    m.accept(normSq, count);
    return null;
  }
}

/**
 * A compressed frame's squared norm, or an upper bound of it, without decoding it into floats;
 * null for fp32 (its norm is the whole gradient's, summed as it arrives).
 * - int8, from its scales alone: every code is at most 127 in size, so a piece of n floats with
 *   scale s is at most 127·s·√n long. A frame scaled k× has scales k× its peers'.
 * - fp16, exactly (up to the order of the f64 sum), decoded and squared in the SIMD kernels a
 *   block at a time. Without it a trusted worker could send every float as 65504, finite and summed.
 */
export function codedNormSq(s: Segment, body: Uint8Array): number | null {
  if (s.codec === 'int8') {
    const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
    let sum = 0;
    s.pieces.forEach(([, n], i) => { sum += (127 * scales[i]) ** 2 * n; });
    return sum;
  }
  return s.codec === 'fp16' ? halfNormSq(body, s.count) : null;
}
