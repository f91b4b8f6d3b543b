// PowerSGD's worker rounds on Float32Arrays: the reference that client/src/powersgd-ops.ts (the
// same on tfjs ops) is held to, and what the synthetic net's worker runs, its gradient being an
// array already (client/src/powersgd-rounds.ts). The rounds themselves: powersgd.ts.
//
// Pure code (no tfjs, no Node or DOM).
import { checkLength, type PowerSgdPlan } from './powersgd';
import { roundToHalf } from './scalar-codecs';

/**
 * One worker's PowerSGD state: the step's Q, its error feedback e, and the matrices M of the
 * shards it holds between the two rounds (a shard is keyed by its id).
 *
 * The error is folded into the first shard whose round 1 runs after the last round 2 (`carried`),
 * so a worker with several shards in a step sends it once. Each round 2 adds that shard's residual
 * M − P̂ Q_iᵀ (with the worker's own Q_i: the part of its M that the shared P̂ did not carry) to e.
 * A shard given round 2 without round 1 (taken over from a lost worker after P̂ was made) starts
 * from its bare gradient: the lost worker's error went with it.
 */
export class PowerSgdWorker {
  /** e, per float of the flat vector (only the matrices' floats are used). */
  readonly error: Float32Array;
  private q: Float32Array;
  /** Whether e holds error that no held M has taken in yet. */
  private carried = false;
  private readonly held = new Map<number, Float32Array>();

  constructor(readonly plan: PowerSgdPlan, q: Float32Array) {
    this.error = new Float32Array(plan.total);
    this.q = q.slice();
  }

  /** The step's Q: initialQ for the first step, nextQ of the last round-2 broadcast after. */
  setQ(q: Float32Array): void {
    checkLength('Q', q, this.plan.round2Floats);
    this.q = q.slice();
  }

  /** Round 1 of `shard`: keeps M = grad (+ e), writes Pᵀ = (M Q)ᵀ and the fp32 tensors' gradients into out. */
  round1(shard: number, grad: Float32Array, out: Float32Array): void {
    const { plan } = this;
    checkLength('gradient', grad, plan.total);
    checkLength('round-1 vector', out, plan.round1Floats);
    const M = new Float32Array(plan.total);
    for (const m of plan.matrices) {
      const { offset, rows, cols, pAt, qAt } = m;
      for (let x = offset; x < offset + rows * cols; x++) M[x] = this.carried ? grad[x] + this.error[x] : grad[x];
      for (let k = 0; k < plan.rank; k++) {
        const qk = qAt + k * cols;
        for (let i = 0; i < rows; i++) {
          const row = offset + i * cols;
          let d = 0;
          for (let j = 0; j < cols; j++) d += M[row + j] * this.q[qk + j];
          out[pAt + k * rows + i] = d;
        }
      }
    }
    for (const t of plan.dense) out.set(grad.subarray(t.offset, t.offset + t.count), t.at);
    this.carried = false;
    this.held.set(shard, M);
  }

  /**
   * Round 2 of `shard`: writes Q_iᵀ = (Mᵀ P̂)ᵀ into out and adds M − P̂ Q_iᵀ to e. `round1` is the
   * round-1 broadcast. With fp16 factors Q_i is rounded as it will travel before e takes it. `grad` is for a shard whose round 1 this worker did not run.
   */
  round2(shard: number, round1: Float32Array, out: Float32Array, grad?: Float32Array): void {
    const { plan } = this;
    checkLength('round-1 broadcast', round1, plan.round1Floats);
    checkLength('round-2 vector', out, plan.round2Floats);
    const M = this.held.get(shard) ?? grad;
    if (!M) throw new Error(`PowerSGD: round 2 of shard ${shard} without its round 1 or its gradient`);
    checkLength('gradient', M, plan.total);
    for (const m of plan.matrices) {
      const { offset, rows, cols, pAt, qAt } = m;
      const d = new Float64Array(cols);
      for (let k = 0; k < plan.rank; k++) {
        d.fill(0);
        for (let i = 0; i < rows; i++) {
          const p = round1[pAt + k * rows + i], row = offset + i * cols;
          for (let j = 0; j < cols; j++) d[j] += p * M[row + j];
        }
        out.set(d, qAt + k * cols);
      }
      // fp16 factors: the error is what the coordinator will not get, so Q_i as it travels.
      if (plan.factors === 'fp16') roundToHalf(out, qAt, plan.rank * cols);
      for (let i = 0; i < rows; i++) {
        const row = offset + i * cols;
        for (let j = 0; j < cols; j++) {
          let a = 0;
          for (let k = 0; k < plan.rank; k++) a += round1[pAt + k * rows + i] * out[qAt + k * cols + j];
          const r = M[row + j] - a;
          this.error[row + j] = this.carried ? this.error[row + j] + r : r;
        }
      }
    }
    this.carried = true;
    this.held.delete(shard);
  }

  /** Forgets a held shard that was taken away before its round 2 (its error share is lost). */
  abandon(shard: number): void {
    this.held.delete(shard);
  }
}
