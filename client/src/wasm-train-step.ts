// A shard's training step on the wasm backend without tfjs's engine (issue 23).
//
// The profile (docs/BENCHMARKS.md §7) put tfjs's own work — dispatch, the gradient tape, the
// tensors it saves and clones, their allocation and the garbage they leave — at a fifth to a third
// of a small model's step; it grows with the number of ops, not their size. Here the layers call
// the wasm kernels directly, as the kernels in wasm-kernels.ts already call each other: the same
// kernels the engine would run for Net.forward and its gradient (Conv2D, Add, Relu, MaxPool,
// BatchMatMul, and their gradients), in the same order, so the forward is bit for bit the
// engine's, and so is the gradient: the one loop here, the loss's gradient at the labels, rounds
// as tfjs's does. The gradients are copied from the heap straight into the caller's flat vector.
// Nothing becomes a tf.Tensor: no tape, no clones.
//
// Why not XNNPACK's fused conv + bias + ReLU: its other rounding moved a max pool's winner in
// AlexNet at 224×224 (two near-equal maxima), which sent a gradient to another pixel: 4e-3 of conv
// 0's gradient against the engine's and the cpu backend's, past what two honest copies of a shard
// are held to (server/src/verify.ts). The unfused Add and Relu cost 0.1 ms a step.
//
// tests/unit/wasm-train-step.test.ts holds it to the engine on the cpu backend for the small
// models and to the engine on wasm at 224×224. Net.gradient uses it wherever the wasm backend is
// active (installWasmTrainStep, called by registerWasmKernels); other backends keep the engine.
import * as tf from '@tensorflow/tfjs-core';
import { Net, type ShardStats } from '@tabtrain/shared/net';
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { LayerSpec } from '@tabtrain/shared';
import type { WasmHeap } from './wasm-step-kernels';


/** One layer's forward, kept for its backward: its input, its output, its first parameter, a dropout mask. */
interface Saved { layer: LayerSpec; x: TensorInfo; y: TensorInfo; param: number; mask?: TensorInfo }

/** Makes Net.gradient run shards through wasmShardStep while the wasm backend is active. */
export function installWasmTrainStep(): void {
  Net.step = { backend: 'wasm', run: wasmShardStep };
}

const view = (t: TensorInfo, shape: number[]): TensorInfo => ({ dataId: t.dataId, shape, dtype: t.dtype });

/**
 * Forward and backward of `net` on the shard `x` (already the model's input, [count, side, side, 1]),
 * writing the gradient sum into `out` at the parameters' offsets. `masks[d]` is dropout layer d's
 * [count, units] mask, as Net.gradient draws it.
 */
export function wasmShardStep(net: Net, x: tf.Tensor4D, labels: Uint8Array, masks: Float32Array[], count: number, out: Float32Array): ShardStats {
  const backend = tf.backend() as WasmHeap;
  // Everything made here, freed at the end, or as soon as nothing reads it (a full-size model's
  // activations are hundreds of MB).
  const owned = new Set<object>();
  const run = (name: string, inputs: Record<string, TensorInfo>, attrs: object = {}): TensorInfo => {
    const kernel = tf.getKernel(name, 'wasm');
    if (!kernel) throw new Error(`wasm kernel ${name} is not registered: call registerWasmKernels() first`);
    const t = kernel.kernelFunc({ inputs, backend, attrs: attrs as unknown as NamedAttrMap }) as TensorInfo;
    owned.add(t.dataId);
    return t;
  };
  const free = (...ts: TensorInfo[]) => {
    for (const t of ts) if (owned.delete(t.dataId)) backend.disposeData(t.dataId);
  };
  /** `f(a)`, freeing `a` after (its last reader). */
  const freeing = (a: TensorInfo, f: (a: TensorInfo) => TensorInfo) => { const t = f(a); free(a); return t; };
  // A view is taken after every allocation: growing the heap detaches the old ones.
  const heap = (t: TensorInfo) => backend.typedArrayFromHeap(t);
  const param = (i: number): TensorInfo => ({ dataId: net.vars[i].dataId, shape: net.vars[i].shape, dtype: 'float32' });
  const gradientOut = (i: number, g: TensorInfo) => { out.set(heap(g), net.params[i].offset); free(g); };
  try {
    // Forward: the engine's kernels for Net.forward, in its order.
    const saved: Saved[] = [];
    let h: TensorInfo = { dataId: x.dataId, shape: x.shape, dtype: 'float32' };
    let p = 0, d = 0;
    for (const layer of net.spec.layers) {
      const at = p;
      let y: TensorInfo;
      let mask: TensorInfo | undefined;
      if (layer.kind === 'conv') {
        const conv = run(tf.Conv2D, { x: h, filter: param(p) }, { strides: layer.stride, pad: layer.pad, dataFormat: 'NHWC', dilations: 1 });
        y = freeing(freeing(conv, (c) => run(tf.Add, { a: c, b: param(p + 1) })), (z) => run(tf.Relu, { x: z }));
        p += 2;
      } else if (layer.kind === 'pool') {
        y = run(tf.MaxPool, { x: h }, { filterSize: layer.size, strides: layer.stride, pad: 'valid' });
      } else if (layer.kind === 'flatten') {
        y = view(h, [count, h.shape.slice(1).reduce((a, b) => a * b, 1)]);
      } else if (layer.kind === 'dense') {
        y = freeing(run(tf.BatchMatMul, { a: h, b: param(p) }, { transposeA: false, transposeB: false }), (m) => run(tf.Add, { a: m, b: param(p + 1) }));
        if (layer.relu) y = freeing(y, (z) => run(tf.Relu, { x: z }));
        p += 2;
      } else {
        mask = backend.makeOutput(h.shape, 'float32');
        owned.add(mask.dataId);
        heap(mask).set(masks[d++]);
        y = run(tf.Multiply, { a: h, b: mask });
      }
      saved.push({ layer, x: h, y, param: at, mask });
      h = y;
    }

    // Loss: the sum over the shard of -log softmax at the label, and its gradient softmax - onehot,
    // with the kernels and in the order of tf.logSoftmax and its gradient.
    const ls = logSoftmax(run, free, h);
    const stats = lossStats(heap(h), heap(ls), labels, count, h.shape[1]);
    let dy = freeing(run(tf.Exp, { x: ls }), (softmax) => {
      const d = backend.makeOutput(h.shape, 'float32');
      owned.add(d.dataId);
      const s = heap(softmax), g = heap(d), classes = h.shape[1];
      // -onehot - (-1 · softmax), as the gradient computes it: one float32 rounding, at the label.
      for (let i = 0; i < g.length; i++) g[i] = i % classes === labels[(i / classes) | 0] ? Math.fround(s[i] - 1) : s[i];
      return d;
    });

    // Backward, layer by layer in reverse, with the kernels of tfjs's gradients.
    const reluBackward = (g: TensorInfo, y: TensorInfo) => freeing(run(tf.Step, { x: y }, { alpha: 0 }), (step) => freeing(g, (a) => run(tf.Multiply, { a, b: step })));
    for (let i = saved.length - 1; i >= 0; i--) {
      const { layer, x: lx, y, param: at, mask } = saved[i];
      if (layer.kind === 'conv') {
        const w = param(at);
        dy = reluBackward(dy, y);
        gradientOut(at + 1, run(tf.Sum, { x: dy }, { axis: [0, 1, 2], keepDims: false }));
        const conv = { strides: layer.stride, pad: layer.pad, dataFormat: 'NHWC' };
        gradientOut(at, run(tf.Conv2DBackpropFilter, { x: lx, dy }, { ...conv, filterShape: w.shape }));
        // The first layer's input is the image: no gradient flows there.
        if (i > 0) dy = freeing(dy, (g) => run(tf.Conv2DBackpropInput, { dy: g, filter: w }, { ...conv, inputShape: lx.shape }));
        free(y);
      } else if (layer.kind === 'pool') {
        dy = freeing(dy, (g) => run(tf.MaxPoolGrad, { dy: g, input: lx, output: y }, { filterSize: layer.size, strides: layer.stride, pad: 'valid' }));
        free(y);
      } else if (layer.kind === 'flatten') {
        dy = view(dy, lx.shape);
      } else if (layer.kind === 'dense') {
        if (layer.relu) dy = reluBackward(dy, y);
        gradientOut(at + 1, run(tf.Sum, { x: dy }, { axis: [0], keepDims: false }));
        gradientOut(at, run(tf.BatchMatMul, { a: lx, b: dy }, { transposeA: true, transposeB: false }));
        if (i > 0) dy = freeing(dy, (g) => run(tf.BatchMatMul, { a: g, b: param(at) }, { transposeA: false, transposeB: true }));
        free(y);
      } else {
        dy = freeing(dy, (g) => run(tf.Multiply, { a: g, b: mask! }));
        free(mask!, y);
      }
    }
    return stats;
  } finally {
    for (const id of owned) backend.disposeData(id);
  }
}

type Run = (name: string, inputs: Record<string, TensorInfo>, attrs?: object) => TensorInfo;

/** tf.logSoftmax's forward on the wasm kernels: (z - max) - log Σ exp(z - max), row by row. */
function logSoftmax(run: Run, free: (...ts: TensorInfo[]) => void, logits: TensorInfo): TensorInfo {
  const max = run(tf.Max, { x: logits }, { reductionIndices: [1], keepDims: true });
  const shifted = run(tf.Sub, { a: logits, b: max });
  const exp = run(tf.Exp, { x: shifted });
  const sum = run(tf.Sum, { x: exp }, { axis: [1], keepDims: true });
  const log = run(tf.Log, { x: sum });
  const value = run(tf.Sub, { a: shifted, b: log });
  free(max, shifted, exp, sum, log);
  return value;
}

/**
 * The loss sum as the engine's Multiply, Sum and Neg give it (a float32 sum in order: only the
 * label's term is not zero), and the correct count: the first largest logit, as tf.argMax picks it.
 */
function lossStats(logits: Float32Array, logSoftmax: Float32Array, labels: Uint8Array, count: number, classes: number): ShardStats {
  let sum = 0, correct = 0;
  for (let n = 0; n < count; n++) {
    const row = n * classes;
    sum = Math.fround(sum + logSoftmax[row + labels[n]]);
    let argmax = 0;
    for (let c = 1; c < classes; c++) if (logits[row + c] > logits[row + argmax]) argmax = c;
    if (argmax === labels[n]) correct++;
  }
  return { lossSum: -sum, correct, count };
}
