// The convolution kernels the page and the Dawn worker register (the split-K filter gradient) or
// choose (tfjs's naive or matmul-based input gradient), checked against the cpu backend at AlexNet's
// and VGG-11's layer geometry: d2l's kernel sizes, strides and paddings, with channels, sides and
// the batch cut down so that the test takes seconds (kernelCases). No Node-only imports: tests/integration/dawn.test.ts runs it in Dawn on llvmpipe,
// tests/browser/kernels.test.ts bundles it into a page on SwiftShader.
import * as tf from '@tensorflow/tfjs-core';
import { registerWebGPUKernels, restoreWebGPUKernels, splitKInstalled } from '../../client/src/webgpu-kernels';
import { modelLayers, type LayerGeometry } from '../../bench/gpu/layers';
import { convKernels } from '../../bench/gpu/layer-timing';

/**
 * Every distinct conv geometry of both models at batch `batch`: d2l's kernel sizes, strides and
 * paddings; channels capped at `cap`; sides above `side` (or 4 kernels, for AlexNet's 11×11) cut
 * down to one with the same remainder of (side + 2·pad − kernel) mod stride, so that the last,
 * partial window is the real one (AlexNet conv1: 224 → 44, both leave 3). Kept small for time:
 * on llvmpipe each new shape also compiles pipelines.
 */
export function kernelCases(batch = 1, cap = 8, side = 32): LayerGeometry[] {
  const seen = new Set<string>();
  const shrink = (g: LayerGeometry): LayerGeometry => {
    const inC = Math.min(g.inC, cap), outC = Math.min(g.outC, cap);
    const rest = (h: number) => (h + 2 * g.pad - g.kernel) % g.stride;
    let inH = Math.min(g.inH, Math.max(side, 4 * g.kernel));
    while (rest(inH) !== rest(g.inH)) inH--;
    const outH = Math.floor((inH + 2 * g.pad - g.kernel) / g.stride) + 1;
    return { ...g, inC, outC, inH, inW: inH, outH, outW: outH, macs: batch * outH * outH * outC * g.kernel * g.kernel * inC };
  };
  return ['alexnet', 'vgg11'].flatMap((m) => modelLayers(m, batch)).filter((g) => g.kind === 'conv').map(shrink).filter((g) => {
    // AlexNet's conv3–5 and VGG's layers at one side become the same case: keep one.
    const key = [g.kernel, g.stride, g.pad, g.inH, g.inC, g.outC].join();
    return !seen.has(key) && Boolean(seen.add(key));
  }).concat([
    // More than one 32×32 output tile of the split-K kernel (m = 3·3·40, n = 36), batch 2.
    { ...shrink(modelLayers('vgg11', 2)[6]), name: 'vgg11 conv7, 40→36 channels', inC: 40, outC: 36, macs: 0 },
  ]);
}

export type Variant = 'dW split-k' | 'dW tfjs' | 'dX naive' | 'dX mm';
export const VARIANTS: Variant[] = ['dW split-k', 'dX naive', 'dX mm'];

export interface CheckResult { layer: string; variant: Variant; maxDiff: number; maxRef: number; ok: boolean }

/** A deterministic fill in [-1, 1]: the same inputs on both backends. */
const fill = (n: number, a: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * a + 0.3));

async function compute(g: LayerGeometry, variant: Variant): Promise<Float32Array> {
  const x = tf.tensor4d(fill(g.batch * g.inH * g.inW * g.inC, 0.37), [g.batch, g.inH, g.inW, g.inC]);
  const w = tf.tensor4d(fill(g.kernel * g.kernel * g.inC * g.outC, 0.11).map((v) => v * 0.1), [g.kernel, g.kernel, g.inC, g.outC]);
  const dy = tf.tensor4d(fill(g.batch * g.outH * g.outW * g.outC, 0.23), [g.batch, g.outH, g.outW, g.outC]);
  const k = convKernels(g, x, w, dy);
  const out = variant.startsWith('dW') ? k.dW() : k.dX();
  try {
    return (await out.data()) as Float32Array;
  } finally {
    tf.dispose([x, w, dy, out]);
  }
}

/**
 * Each variant on webgpu against the cpu backend, within `tol` of the largest reference value
 * (fp32 sums in another order). Leaves the backend, the kernels and the flag as it found them.
 */
export async function checkKernels(cases: LayerGeometry[], variants: Variant[] = VARIANTS, tol = 1e-5): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const naive = tf.env().getBool('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE');
  const splitK = splitKInstalled();
  try {
    for (const g of cases) {
      for (const variant of variants) {
        await tf.setBackend('cpu');
        const ref = await compute(g, variant);
        await tf.setBackend('webgpu');
        if (variant === 'dW split-k' && !registerWebGPUKernels()) throw new Error('the split-K kernel could not be registered');
        if (variant === 'dW tfjs') restoreWebGPUKernels();
        tf.env().set('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE', variant !== 'dX mm');
        const got = await compute(g, variant);
        let maxDiff = 0, maxRef = 0;
        for (let i = 0; i < ref.length; i++) { maxDiff = Math.max(maxDiff, Math.abs(got[i] - ref[i])); maxRef = Math.max(maxRef, Math.abs(ref[i])); }
        if (got.length !== ref.length || !Number.isFinite(maxDiff)) maxDiff = Infinity;
        results.push({ layer: `${g.name} (${g.kernel}×${g.kernel}/${g.stride} pad ${g.pad}, ${g.batch}×${g.inH}²×${g.inC} → ${g.outH}²×${g.outC})`, variant, maxDiff, maxRef, ok: maxDiff <= tol * Math.max(1, maxRef) });
      }
    }
  } finally {
    await tf.setBackend('webgpu');
    tf.env().set('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE', naive);
    if (splitK) registerWebGPUKernels(); else restoreWebGPUKernels();
  }
  return results;
}
