// Times one layer's three kernels (forward, input gradient, filter gradient) on the current tfjs
// backend, each variant the page or the worker may run: the input gradient by tfjs's naive kernel
// and by its matmul-based one (WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE), the filter gradient by tfjs's
// kernel and by the split-K one (client/src/webgpu-kernels.ts). No Node-only imports: the same code
// runs in Dawn (bench/gpu/layer-bench.ts) and in Chromium (bench/gpu/browser-layers.ts).
import * as tf from '@tensorflow/tfjs-core';
import { registerWebGPUKernels, restoreWebGPUKernels, splitKInstalled } from '../../client/src/webgpu-kernels';
import type { LayerGeometry } from './layers';

export type KernelName = 'fwd' | 'dX naive' | 'dX mm' | 'dX' | 'dW tfjs' | 'dW split-k' | 'dW';

export interface LayerTiming {
  layer: LayerGeometry;
  /** Median ms of each kernel run alone (queue drained before and after), null where not run. */
  ms: Partial<Record<KernelName, number | null>>;
  /** How many timed runs each median is of. */
  runs: Partial<Record<KernelName, number>>;
}

export interface TimingOptions {
  /** Timed runs per kernel (after one untimed run that compiles its pipeline). */
  reps: number;
  /** A kernel stops repeating once its timed runs add up to this (a slow kernel gets fewer). */
  budgetMs: number;
  /** Only these kernels (default: every variant). */
  only?: KernelName[];
}

/** Waits until every kernel submitted so far has run (webgpu); other backends compute eagerly. */
export async function settle(): Promise<void> {
  const be = tf.backend() as unknown as { ensureCommandEncoderReady?(): void; endComputePassEncoder?(): void; submitQueue?(): void; device?: { queue: { onSubmittedWorkDone(): Promise<unknown> } } };
  if (be.ensureCommandEncoderReady && be.endComputePassEncoder && be.submitQueue && be.device) {
    // As tfjs itself submits: an open compute pass is ended first.
    be.ensureCommandEncoderReady();
    be.endComputePassEncoder();
    be.submitQueue();
    await be.device.queue.onSubmittedWorkDone();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeKernel(run: () => tf.Tensor, opts: TimingOptions): Promise<{ ms: number; runs: number }> {
  tf.dispose(run()); // compiles the pipeline
  await settle();
  const times: number[] = [];
  let spent = 0;
  while (times.length < opts.reps && (times.length === 0 || spent < opts.budgetMs)) {
    const t0 = performance.now();
    const out = run();
    await settle();
    const dt = performance.now() - t0;
    out.dispose();
    times.push(dt);
    spent += dt;
  }
  return { ms: median(times), runs: times.length };
}

/** The padding as tfjs's kernels take it: PyTorch's symmetric zero padding, NHWC. */
export const explicitPad = (p: number): tf.backend_util.ExplicitPadding => [[0, 0], [p, p], [p, p], [0, 0]];

/** The three kernels of a conv layer, as Net's gradient calls them (tf.conv2d's gradient runs these). */
export function convKernels(g: LayerGeometry, x: tf.Tensor4D, w: tf.Tensor4D, dy: tf.Tensor4D) {
  const pad = explicitPad(g.pad);
  return {
    fwd: () => tf.conv2d(x, w, g.stride, pad),
    dX: () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { inputShape: x.shape, strides: g.stride, pad, dataFormat: 'NHWC' } as never) as tf.Tensor,
    dW: () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: g.stride, pad, dataFormat: 'NHWC', filterShape: w.shape } as never) as tf.Tensor,
  };
}

/**
 * Inputs of a layer's shapes, filled on the device: tf.randomUniform draws its numbers in
 * JavaScript (VGG conv1's dy at batch 128 is 100 M of them) and uploads them. fp32 kernels take
 * the same time whatever the (normal, finite) values.
 */
export function layerInputs(g: LayerGeometry): { x: tf.Tensor4D; w: tf.Tensor4D; dy: tf.Tensor4D } {
  return {
    x: tf.fill([g.batch, g.inH, g.inW, g.inC], 0.5) as tf.Tensor4D,
    w: tf.fill([g.kernel, g.kernel, g.inC, g.outC], -0.01) as tf.Tensor4D,
    dy: tf.fill([g.batch, g.outH, g.outW, g.outC], 0.25) as tf.Tensor4D,
  };
}

/** Times a layer's kernels; leaves the backend's kernels and flags as it found them. */
export async function timeLayer(g: LayerGeometry, opts: TimingOptions): Promise<LayerTiming> {
  const result: LayerTiming = { layer: g, ms: {}, runs: {} };
  const want = (k: KernelName) => !opts.only || opts.only.includes(k);
  const record = async (k: KernelName, run: () => tf.Tensor) => {
    if (!want(k)) return;
    const { ms, runs } = await timeKernel(run, opts);
    result.ms[k] = +ms.toFixed(3);
    result.runs[k] = runs;
  };
  const { x, w, dy } = layerInputs(g);
  try {
    if (g.kind === 'dense') {
      const x2 = x.reshape([g.batch, g.inC]) as tf.Tensor2D, w2 = w.reshape([g.inC, g.outC]) as tf.Tensor2D, dy2 = dy.reshape([g.batch, g.outC]) as tf.Tensor2D;
      await record('fwd', () => tf.matMul(x2, w2));
      if (!g.first) await record('dX', () => tf.matMul(dy2, w2, false, true));
      await record('dW', () => tf.matMul(x2, dy2, true, false));
      tf.dispose([x2, w2, dy2]);
      return result;
    }
    const k = convKernels(g, x, w, dy);
    await record('fwd', k.fwd);
    if (tf.getBackend() === 'webgpu') {
      const naive = tf.env().getBool('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE');
      try {
        for (const [name, flag] of [['dX naive', true], ['dX mm', false]] as const) {
          tf.env().set('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE', flag);
          if (!g.first) await record(name, k.dX);
        }
      } finally {
        tf.env().set('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE', naive);
      }
      const before = splitKInstalled();
      try {
        restoreWebGPUKernels();
        await record('dW tfjs', k.dW);
        if (registerWebGPUKernels()) await record('dW split-k', k.dW);
      } finally {
        if (before) registerWebGPUKernels(); else restoreWebGPUKernels();
      }
    } else {
      if (!g.first) await record('dX', k.dX);
      await record('dW', k.dW);
    }
    return result;
  } finally {
    tf.dispose([x, w, dy]);
  }
}
