// A powersgd step's update applied to the working copy of the weights on the Net's own backend
// (the GPU on webgpu, webgl and Dawn): only the factors are uploaded (AlexNet at rank 4: 0.6 MB
// instead of the 187 MB weights). The backend's fp32 matMul and sub round differently from the
// coordinator's kernel (a double sum over the rank, one rounding): the working copy stays within
// rounding of the exact copy, which refreshes it every K versions (exact-replica.ts, core.ts).
import * as tf from '@tensorflow/tfjs-core';
import type { Net } from '@tabtrain/shared/net';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/** w ← w − lr/batch · P̂ Qᵀ per matrix, and w ← w − lr/batch · g for the fp32 tensors, on the backend. */
export function applyOnDevice(net: Net, plan: PowerSgdPlan, round1: Float32Array, round2: Float32Array, lr: number, batch: number): void {
  const { rank } = plan;
  const scale = lr / batch;
  tf.tidy(() => {
    // slice(): a backend may keep the array it is given, and these are reused by the next step.
    for (const t of plan.dense) {
      const v = net.vars[t.param];
      v.assign(tf.sub(v, tf.mul(tf.tensor(round1.slice(t.at, t.at + t.count), v.shape), scale)));
    }
    for (const m of plan.matrices) {
      const v = net.vars[m.param];
      const p = tf.tensor2d(round1.slice(m.pAt, m.pAt + rank * m.rows), [rank, m.rows]);
      const q = tf.tensor2d(round2.slice(m.qAt, m.qAt + rank * m.cols), [rank, m.cols]);
      // (P̂ᵀ)ᵀ Qᵀ = P̂ Qᵀ [rows, cols]: the kernel's own layout, reshaped without a copy.
      v.assign(tf.sub(v, tf.reshape(tf.mul(tf.matMul(p, q, true, false), scale), v.shape)));
    }
  });
}

/**
 * Replaces the working copy by the exact weights, on the backend, and returns the largest
 * |working − exact| measured there just before: one upload of the weights and one scalar read
 * back, instead of reading the weights back and comparing them on the CPU (at AlexNet size
 * 187 MB over PCIe and a CPU pass over 47 M floats).
 */
export async function refreshOnDevice(net: Net, exact: Float32Array): Promise<number> {
  if (exact.length !== net.total) throw new Error(`exact weights have ${exact.length} floats, model ${net.spec.name} needs ${net.total}`);
  // One variable at a time: the upload and the difference of one tensor live on the device at once, not the model's.
  const maxes = net.vars.map((v, i) => tf.tidy(() => {
    const p = net.params[i];
    const t = tf.tensor(exact.slice(p.offset, p.offset + p.size), p.shape, 'float32');
    const m = tf.max(tf.abs(tf.sub(v, t)));
    v.assign(t);
    return m;
  }));
  const all = tf.tidy(() => tf.max(tf.stack(maxes)));
  try {
    return (await all.data())[0];
  } finally {
    tf.dispose([...maxes, all]);
  }
}
