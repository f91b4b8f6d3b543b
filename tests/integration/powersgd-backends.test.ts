// The worker's PowerSGD on tfjs ops (client/src/powersgd-ops.ts) on the cpu and the wasm backends,
// against each other and against the Float32Array reference (shared/src/powersgd-worker.ts): the same
// 5-step, 2-worker run ends within 1e-4 on all three. The coordinator's side (fold in shard order,
// orthonormalise, apply, warm-start Q) is the real shared code.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { getModel, initParams, paramLayout, type ParamInfo } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { applyPowerSgd, powerSgdPlan, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { PowerSgdWorker } from '@tabtrain/shared/powersgd-worker';
import { roundToHalf } from '@tabtrain/shared/scalar-codecs';
import { initialQ, nextQ, orthonormaliseRound1 } from '@tabtrain/shared/powersgd-basis';
import { PowerSgdOps } from '../../client/src/powersgd-ops';
import { registerWasmKernels } from '../../client/src/wasm-kernels';

const STEPS = 5, SHARDS = 2, SEED = 17, LR = 0.05;

/** A worker's two rounds, whichever implementation runs them; gradients come as flat vectors. */
interface Rounds {
  round1(shard: number, grad: Float32Array, out: Float32Array): Promise<void>;
  round2(shard: number, round1: Float32Array, out: Float32Array): Promise<void>;
  setQ(q: Float32Array): void;
  error(): Promise<Float32Array>;
  dispose(): void;
}

function reference(plan: PowerSgdPlan): Rounds {
  const w = new PowerSgdWorker(plan, initialQ(plan, SEED));
  return {
    round1: async (s, g, out) => w.round1(s, g, out),
    round2: async (s, r1, out) => w.round2(s, r1, out),
    setQ: (q) => w.setQ(q),
    error: async () => w.error.slice(),
    dispose: () => {},
  };
}

/** PowerSgdOps fed with per-parameter tensors made from the flat gradient, disposed right after round 1. */
function ops(plan: PowerSgdPlan, params: ParamInfo[]): Rounds {
  const o = new PowerSgdOps(plan, initialQ(plan, SEED));
  return {
    round1: async (s, g, out) => {
      const grads = params.map((p) => tf.tensor(g.slice(p.offset, p.offset + p.size), p.shape));
      try { await o.round1(s, grads, out); } finally { tf.dispose(grads); }
    },
    round2: (s, r1, out) => o.round2(s, r1, out),
    setQ: (q) => o.setQ(q),
    error: () => o.readError(),
    dispose: () => o.dispose(),
  };
}

/** Round 1 of every shard folded in shard order, the same for round 2, as the coordinator does. */
async function fold(n: number, make: (shard: number, out: Float32Array) => Promise<void>, floats: number): Promise<Float32Array> {
  const sum = new Float32Array(floats);
  for (let s = 0; s < SHARDS; s++) {
    const out = new Float32Array(floats);
    await make(s, out);
    for (let i = 0; i < floats; i++) sum[i] += out[i];
  }
  return sum;
}

/**
 * STEPS two-round steps: `grad(t, shard, w)` gives each shard's gradient sum at the current weights
 * (one worker per shard). Returns the final weights and the workers' error feedback.
 */
async function run(plan: PowerSgdPlan, make: () => Rounds, w0: Float32Array, grad: (t: number, shard: number, w: Float32Array) => Promise<Float32Array>, batch: number) {
  const workers = Array.from({ length: SHARDS }, make);
  const w = w0.slice();
  try {
    for (let t = 0; t < STEPS; t++) {
      const grads = await Promise.all(Array.from({ length: SHARDS }, (_, s) => grad(t, s, w)));
      const round1 = await fold(SHARDS, (s, out) => workers[s].round1(s, grads[s], out), plan.round1Floats);
      orthonormaliseRound1(plan, round1, SEED, t);
      const round2 = await fold(SHARDS, (s, out) => workers[s].round2(s, round1, out), plan.round2Floats);
      applyPowerSgd(plan, w, round1, round2, LR, batch);
      const q = nextQ(plan, round2, SEED, t + 1);
      for (const wk of workers) wk.setQ(q);
    }
    return { w, errors: await Promise.all(workers.map((x) => x.error())) };
  } finally {
    workers.forEach((x) => x.dispose());
  }
}

function maxAbs(v: Float32Array): number { let m = 0; for (const x of v) m = Math.max(m, Math.abs(x)); return m; }
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

async function onBackend<T>(backend: 'cpu' | 'wasm', f: () => Promise<T>): Promise<T> {
  expect(await tf.setBackend(backend)).toBe(true);
  const before = tf.memory().numTensors;
  const out = await f();
  expect(tf.memory().numTensors).toBe(before); // nothing left behind on the backend
  return out;
}

describe('PowerSGD on tfjs ops, cpu and wasm backends', () => {
  tf.env().set('PROD', true);
  registerWasmKernels();

  it('synthetic gradients: the ops on cpu and on wasm and the Float32Array reference end 5 steps within 1e-4', async () => {
    // Odd shapes: a conv kernel, dense kernels with cols not a multiple of 4, a tiny kernel sent dense.
    const { params, offset } = layoutOf([[3, 3, 4, 16], [16], [40, 13], [13], [13, 3], [3], [64, 30], [30]]);
    const plan = powerSgdPlan(params, offset, 2);
    expect(plan.matrices).toHaveLength(3);
    const w0 = random(offset, 1);
    const grad = async (t: number, s: number) => random(offset, 100 * t + s + 2);
    const ref = await run(plan, () => reference(plan), w0, grad, 8);
    const cpu = await onBackend('cpu', () => run(plan, () => ops(plan, params), w0, grad, 8));
    const wasm = await onBackend('wasm', () => run(plan, () => ops(plan, params), w0, grad, 8));
    expect(maxAbsDiff(w0, ref.w)).toBeGreaterThan(0.01);
    expect(maxAbs(ref.errors[0])).toBeGreaterThan(0.1); // random gradients are far from rank 2: e carries a lot
    for (const other of [cpu, wasm]) {
      expect(maxAbsDiff(other.w, ref.w)).toBeLessThan(1e-4);
      other.errors.forEach((e, i) => expect(maxAbsDiff(e, ref.errors[i]) / maxAbs(ref.errors[i])).toBeLessThan(1e-4));
    }
    expect(maxAbsDiff(cpu.w, wasm.w)).toBeLessThan(1e-4);
  });

  it('fp16 factors: the ops (cpu, wasm) and the reference send Q_i as halves and keep e = M − P̂ Q_iᵀ with the Q_i they sent', async () => {
    const { params, offset } = layoutOf([[3, 3, 4, 16], [16], [40, 13], [13], [64, 30], [30]]);
    const plan = powerSgdPlan(params, offset, 2, 'fp16');
    const grad = random(offset, 3);
    const check = async (r: Rounds) => {
      try {
        const p = new Float32Array(plan.round1Floats);
        await r.round1(0, grad, p);
        orthonormaliseRound1(plan, p, SEED, 0);
        roundToHalf(p, 0, plan.round1Floats); // P̂ as the fp16 broadcast carries it
        const q = new Float32Array(plan.round2Floats);
        await r.round2(0, p, q);
        const rounded = q.slice();
        roundToHalf(rounded, 0, rounded.length);
        expect(q).toEqual(rounded);
        const e = await r.error();
        let worst = 0;
        for (const m of plan.matrices) {
          for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) {
            let a = 0;
            for (let k = 0; k < plan.rank; k++) a += p[m.pAt + k * m.rows + i] * q[m.qAt + k * m.cols + j];
            const x = m.offset + i * m.cols + j;
            worst = Math.max(worst, Math.abs(e[x] - (grad[x] - a)));
          }
        }
        return worst;
      } finally {
        r.dispose();
      }
    };
    const worst = [await check(reference(plan)), await onBackend('cpu', () => check(ops(plan, params))), await onBackend('wasm', () => check(ops(plan, params)))];
    console.log(`fp16 factors: max |e − (M − P̂ Q_iᵀ)| reference ${worst[0].toExponential(2)}, cpu ${worst[1].toExponential(2)}, wasm ${worst[2].toExponential(2)} (|M| ≤ 1)`);
    for (const w of worst) expect(w).toBeLessThan(1e-5);
  });

  it('alexnet-tiny trained 5 steps at rank 2, gradients from the model on each backend: cpu and wasm end within 1e-4', async () => {
    const spec = getModel('alexnet-tiny');
    const { params, total } = paramLayout(spec);
    const plan = powerSgdPlan(params, total, 2);
    expect(plan.matrices).toHaveLength(8); // every kernel is factored
    const per = 2;
    const images = Uint8Array.from({ length: STEPS * SHARDS * per * 784 }, (_, i) => (Math.imul(i, 2654435761) >>> 24));
    const labels = Uint8Array.from({ length: STEPS * SHARDS * per }, (_, i) => (i * 7) % 10);
    const w0 = initParams(spec, SEED);
    /** The shard's gradient sum on the current backend (no dropout: the masks are another test's business). */
    const gradients = (net: Net) => async (t: number, s: number, w: Float32Array) => {
      net.setWeights(w);
      const at = (t * SHARDS + s) * per;
      const x = net.inputs(images.subarray(at * 784), per);
      const y = tf.tidy(() => tf.oneHot(tf.tensor1d(Array.from(labels.subarray(at, at + per)), 'int32'), 10));
      const { value, grads } = tf.variableGrads(() => tf.neg(tf.sum(tf.mul(tf.logSoftmax(net.forward(x, null)), y))) as tf.Scalar, net.vars);
      const flat = new Float32Array(total);
      params.forEach((p, i) => flat.set(grads[net.vars[i].name].dataSync() as Float32Array, p.offset));
      tf.dispose([x, y, value, ...Object.values(grads)]);
      return flat;
    };
    const train = (backend: 'cpu' | 'wasm', make: () => Rounds) => onBackend(backend, async () => {
      const net = new Net(spec);
      try { return await run(plan, make, w0, gradients(net), SHARDS * per); } finally { net.dispose(); }
    });
    const cpu = await train('cpu', () => ops(plan, params));
    const wasm = await train('wasm', () => ops(plan, params));
    const ref = await train('cpu', () => reference(plan));
    expect(maxAbsDiff(w0, cpu.w)).toBeGreaterThan(1e-3); // it trained
    console.log(`alexnet-tiny, 5 PowerSGD steps at rank 2: max |w_cpu − w_wasm| = ${maxAbsDiff(cpu.w, wasm.w).toExponential(2)}, max |w_cpu − w_reference| = ${maxAbsDiff(cpu.w, ref.w).toExponential(2)}, max |Δw| = ${maxAbsDiff(w0, cpu.w).toExponential(2)}`);
    expect(maxAbsDiff(cpu.w, wasm.w)).toBeLessThan(1e-4);
    expect(maxAbsDiff(cpu.w, ref.w)).toBeLessThan(1e-4);
  });
});

/** A flat layout of tensors of these shapes (kernels: more than one dimension), and its floats. */
function layoutOf(shapes: number[][]): { params: ParamInfo[]; offset: number } {
  let offset = 0;
  const params = shapes.map((shape, i): ParamInfo => {
    const size = shape.reduce((a, b) => a * b, 1);
    const p: ParamInfo = { name: `p${i}`, shape, size, offset, layer: i, role: shape.length > 1 ? 'kernel' : 'bias', fanIn: 1, fanOut: 1 };
    offset += size;
    return p;
  });
  return { params, offset };
}

/** Seeded uniform [-1, 1) floats. */
function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 31 - 1; });
}
