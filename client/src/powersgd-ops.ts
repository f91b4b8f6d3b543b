// The worker's side of PowerSGD (shared/src/powersgd.ts) on tfjs ops, so that the gradient never
// leaves the backend: on webgpu and webgl the matrices M, their products and the error feedback
// stay on the GPU, and only the factors are read back (AlexNet at rank 4: 0.46 MB in round 1 and
// 0.15 MB in round 2, instead of the 187 MB gradient). On wasm and cpu the same ops run.
//
// It mirrors PowerSgdWorker (the Float32Array reference) step for step; the products here are
// the backend's fp32 matMul, so they agree with it to rounding, not bit for bit. Nothing here
// needs to be bit-exact: the factors are summed by the coordinator, and what every replica applies
// is the broadcast, through applyPowerSgd.
import * as tf from '@tensorflow/tfjs-core';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { roundToHalf } from '@tabtrain/shared/scalar-codecs';

export class PowerSgdOps {
  /** e per matrix [rows, cols], resident on the backend. */
  private readonly error: tf.Variable[];
  /** The step's Qᵀ per matrix [rank, cols]. */
  private q: tf.Tensor2D[] = [];
  /** Whether e holds error that no held M has taken in yet (see PowerSgdWorker). */
  private carried = false;
  /** M per matrix of each shard held between its two rounds. */
  private readonly held = new Map<number, tf.Tensor2D[]>();

  constructor(readonly plan: PowerSgdPlan, q: Float32Array) {
    // tidy(): a variable only shares the zeros' buffer; the zeros tensor itself must go.
    this.error = plan.matrices.map((m) => tf.tidy(() => tf.variable(tf.zeros([m.rows, m.cols]), false)));
    this.setQ(q);
  }

  /** The step's Q: initialQ for the first step, nextQ of the last round-2 broadcast after. */
  setQ(q: Float32Array): void {
    if (q.length !== this.plan.round2Floats) throw new Error(`PowerSGD: Q has ${q.length} floats, the plan needs ${this.plan.round2Floats}`);
    const { rank } = this.plan;
    tf.dispose(this.q);
    // slice(): a backend may keep the array it is given.
    this.q = this.plan.matrices.map((m) => tf.tensor2d(q.slice(m.qAt, m.qAt + rank * m.cols), [rank, m.cols]));
  }

  /**
   * Round 1 of `shard`. `grads` are the shard's gradient sums, one tensor per parameter in layout
   * order, still on the backend (the caller keeps ownership). Keeps M = grad (+ e) on the backend;
   * writes Pᵀ = (M Q)ᵀ and the fp32 tensors' gradients into `out` with one read back.
   */
  async round1(shard: number, grads: tf.Tensor[], out: Float32Array): Promise<void> {
    const { plan } = this;
    if (out.length !== plan.round1Floats) throw new Error(`PowerSGD: round-1 vector of ${out.length} floats, the plan needs ${plan.round1Floats}`);
    this.held.get(shard)?.forEach((t) => t.dispose());
    const carried = this.carried;
    const Ms = tf.tidy(() => plan.matrices.map((m, i) => {
      const g = tf.reshape(grads[m.param], [m.rows, m.cols]) as tf.Tensor2D;
      return carried ? tf.add(g, this.error[i]) as tf.Tensor2D : g;
    }));
    this.carried = false;
    this.held.set(shard, Ms);
    // Qᵀ Mᵀ = (M Q)ᵀ: factor-major, as the wire wants it, without a transpose of its own.
    await readInto(() => [
      ...Ms.map((M, i) => tf.matMul(this.q[i], M, false, true)),
      ...plan.dense.map((t) => grads[t.param]),
    ], out);
  }

  /**
   * Round 2 of `shard`: writes Q_iᵀ = (Mᵀ P̂)ᵀ into `out` and adds M − P̂ Q_iᵀ to e, on the backend.
   * `round1` is the round-1 broadcast. `grads` is for a shard whose round 1 this worker did not run.
   */
  async round2(shard: number, round1: Float32Array, out: Float32Array, grads?: tf.Tensor[]): Promise<void> {
    const { plan } = this;
    if (round1.length !== plan.round1Floats) throw new Error(`PowerSGD: round-1 broadcast of ${round1.length} floats, the plan needs ${plan.round1Floats}`);
    if (out.length !== plan.round2Floats) throw new Error(`PowerSGD: round-2 vector of ${out.length} floats, the plan needs ${plan.round2Floats}`);
    if (!this.held.has(shard) && !grads) throw new Error(`PowerSGD: round 2 of shard ${shard} without its round 1 or its gradient`);
    const Ms: tf.Tensor2D[] = this.held.get(shard) ?? tf.tidy(() => plan.matrices.map((m) => tf.reshape(grads![m.param], [m.rows, m.cols]) as tf.Tensor2D));
    this.held.delete(shard);
    const { rank } = plan;
    const pHat = plan.matrices.map((m) => tf.tensor2d(round1.slice(m.pAt, m.pAt + rank * m.rows), [rank, m.rows]));
    // P̂ᵀ M = (Mᵀ P̂)ᵀ, [rank, cols].
    const qs = tf.tidy(() => Ms.map((M, i) => tf.matMul(pHat[i], M) as tf.Tensor2D));
    const carried = this.carried;
    const feedback = (q: tf.Tensor2D[]) => {
      tf.tidy(() => Ms.forEach((M, i) => {
        const residual = tf.sub(M, tf.matMul(pHat[i], q[i], true, false));
        this.error[i].assign(carried ? tf.add(this.error[i], residual) : residual);
      }));
      this.carried = true;
    };
    try {
      if (plan.factors === 'fp16') {
        // The error is what the coordinator will not get: Q_i as it travels, read back, rounded to fp16, put back.
        await readInto(() => qs, out);
        roundToHalf(out, 0, out.length);
        const sent: tf.Tensor2D[] = plan.matrices.map((m) => tf.tensor2d(out.slice(m.qAt, m.qAt + rank * m.cols), [rank, m.cols]));
        feedback(sent);
        tf.dispose(sent);
      } else {
        feedback(qs);
        await readInto(() => qs, out);
      }
    } finally {
      tf.dispose([...qs, ...pHat, ...Ms]);
    }
  }

  /** Forgets a held shard that was taken away before its round 2 (its error share is lost). */
  abandon(shard: number): void {
    tf.dispose(this.held.get(shard) ?? []);
    this.held.delete(shard);
  }

  /** e as one flat vector of the parameter layout (0 outside the matrices): for tests and checkpoints. */
  async readError(): Promise<Float32Array> {
    const e = new Float32Array(this.plan.total);
    const parts = await Promise.all(this.error.map((v) => v.data()));
    this.plan.matrices.forEach((m, i) => e.set(parts[i] as Float32Array, m.offset));
    return e;
  }

  dispose(): void {
    tf.dispose([...this.error, ...this.q, ...[...this.held.values()].flat()]);
    this.held.clear();
  }
}

/** Flattens and concatenates the tensors `make` returns and reads them back into out, in one read. */
async function readInto(make: () => tf.Tensor[], out: Float32Array): Promise<void> {
  if (out.length === 0) return;
  const flat = tf.tidy(() => tf.concat(make().map((t) => tf.reshape(t, [-1]))));
  try {
    out.set(await flat.data() as Float32Array);
  } finally {
    flat.dispose();
  }
}
