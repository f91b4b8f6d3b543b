// The wasm step kernels (client/src/wasm-step-kernels.ts) against the cpu backend's reference
// kernels, at the dense and pool layer shapes of all six models, plus strides 1 and 4 and padding.
import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { MODELS, layerShapes } from '@tabtrain/shared';
import { registerWasmKernels } from '../../client/src/wasm-kernels';
import { heapKernels } from '../../client/src/wasm-step-kernels';

const BATCH = 3;

/** Seeded uniform [-1, 1); `levels` > 0 rounds to that many steps so that windows have ties. */
function random(n: number, seed: number, levels = 0): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 31 - 1;
    out[i] = levels ? Math.max(0, Math.round(u * levels) / levels) : u;
  }
  return out;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Runs `f` on `backend` and returns its output's values and shape. */
async function on(backend: string, f: () => tf.Tensor): Promise<{ shape: number[]; values: Float32Array }> {
  await tf.setBackend(backend);
  const before = tf.engine().backend.numDataIds();
  const t = tf.tidy(f);
  const values = (await t.data()) as Float32Array;
  const shape = t.shape;
  t.dispose();
  // Every intermediate the kernels made was freed.
  expect(tf.engine().backend.numDataIds()).toBe(before);
  return { shape, values };
}

function expectClose(expected: Float32Array, actual: Float32Array, rel: number): void {
  expect(actual.length).toBe(expected.length);
  let diff = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  expect(scale).toBeGreaterThan(0.01); // a real result, not all zeros
  expect(diff, `max diff ${diff} vs max |value| ${scale}`).toBeLessThanOrEqual(rel * scale);
}

// Every distinct dense layer [in, out] and pool layer (input [h, w, c], size, stride) of the zoo.
// The cpu backend takes tens of seconds at the full-size models' largest layers, so those keep
// their geometry and lose width: a dense layer's input is capped at MAX_INPUTS (its units, and so
// which operand the kernel transposes and packs, are kept), a pool's channels at MAX_CHANNELS
// beyond MAX_POOL_FLOATS (its height, width, window and stride are kept).
const MAX_INPUTS = 512, MAX_POOL_FLOATS = 40_000, MAX_CHANNELS = 4; // 4: a whole lane group of the SIMD kernel
// A full-size model's conv layer keeps its input size, kernel, stride and padding; its channels are
// halved until one example's forward pass is within MAX_CONV_MACS multiply-adds (the small and
// tiny models' layers, the ones the tests and the CPU demo train, are checked whole).
const MAX_CONV_MACS = 400_000;
const convs = new Map<string, { input: [number, number, number]; filters: number; kernel: number; stride: number; pad: number }>();
const dense = new Map<string, [number, number]>();
const pools = new Map<string, { input: [number, number, number]; size: number; stride: number; pad: 'valid' | 'same' | number }>();
for (const spec of Object.values(MODELS)) {
  const shapes = layerShapes(spec);
  spec.layers.forEach((l, i) => {
    const prev = i === 0 ? [spec.input, spec.input, 1] : shapes[i - 1].shape;
    if (l.kind === 'dense') {
      const inputs = Math.min(prev[0], MAX_INPUTS);
      dense.set(`${inputs}x${l.units}${inputs < prev[0] ? ' (capped)' : ''}`, [inputs, l.units]);
    }
    if (l.kind === 'conv') {
      const [h, w] = prev;
      let [ci, co] = [prev[2], l.filters];
      const macs = () => shapes[i].shape[0] * shapes[i].shape[1] * ci * co * l.kernel * l.kernel;
      while (spec.input > 100 && macs() > MAX_CONV_MACS && ci * co > 1) { ci = Math.max(1, ci >> 1); co = Math.max(1, co >> 1); }
      const capped = ci < prev[2] || co < l.filters ? ` (${prev[2]}→${l.filters} capped)` : '';
      convs.set(`${h}x${w}x${ci}→${co}${capped} k${l.kernel} s${l.stride} p${l.pad}`, { input: [h, w, ci], filters: co, kernel: l.kernel, stride: l.stride, pad: l.pad });
    }
    if (l.kind === 'pool') {
      const [h, w, c] = prev;
      const channels = h * w * c > MAX_POOL_FLOATS ? Math.min(c, MAX_CHANNELS) : c;
      pools.set(`${h}x${w}x${channels}${channels < c ? ' (capped)' : ''} pool ${l.size}/${l.stride}`, { input: [h, w, channels], size: l.size, stride: l.stride, pad: 'valid' });
    }
  });
}
// Strides 1 and 4, and padding, which no model's pool has but MaxPoolGrad must still get right.
pools.set('stride 1, same padding', { input: [9, 9, 5], size: 3, stride: 1, pad: 'same' });
pools.set('stride 4, pad 1', { input: [17, 15, 3], size: 5, stride: 4, pad: 1 });
pools.set('stride 4, same padding (asymmetric)', { input: [10, 13, 2], size: 3, stride: 4, pad: 'same' });
// The same with whole groups of 4 channels: kernels.wat's SIMD maxPoolGrad, not the plain loop.
pools.set('stride 1, same padding, 8 channels', { input: [9, 9, 8], size: 3, stride: 1, pad: 'same' });
pools.set('stride 4, pad 1, 4 channels', { input: [17, 15, 4], size: 5, stride: 4, pad: 1 });
pools.set('stride 4, same padding (asymmetric), 12 channels', { input: [10, 13, 12], size: 3, stride: 4, pad: 'same' });

beforeAll(async () => {
  registerWasmKernels();
  expect(await tf.setBackend('wasm')).toBe(true);
});

describe('wasm BatchMatMul with transposes (the dense layers)', () => {
  for (const [name, [inputs, units]] of dense) {
    it(`matches cpu at ${name}: x·W, xᵀ·dy, dy·Wᵀ`, async () => {
      const x = random(BATCH * inputs, 1), w = random(inputs * units, 2), dy = random(BATCH * units, 3);
      const cases: [string, () => tf.Tensor][] = [
        ['forward', () => tf.matMul(tf.tensor2d(x, [BATCH, inputs]), tf.tensor2d(w, [inputs, units]))],
        ['weight gradient', () => tf.matMul(tf.tensor2d(x, [BATCH, inputs]), tf.tensor2d(dy, [BATCH, units]), true, false)],
        ['input gradient', () => tf.matMul(tf.tensor2d(dy, [BATCH, units]), tf.tensor2d(w, [inputs, units]), false, true)],
        ['both transposed', () => tf.matMul(tf.tensor2d(w, [inputs, units]), tf.tensor2d(x, [BATCH, inputs]), true, true)],
      ];
      for (const [, f] of cases) {
        const expected = await on('cpu', f);
        const actual = await on('wasm', f);
        expect(actual.shape).toEqual(expected.shape);
        expectClose(expected.values, actual.values, 1e-5);
      }
    });
  }
});

// Strides 1 and 4 with padding beyond the zoo's (AlexNet's conv1 is stride 4, pad 1).
convs.set('stride 4, pad 3, k5', { input: [19, 17, 3], filters: 5, kernel: 5, stride: 4, pad: 3 });
convs.set('stride 1, pad 2, k3 (pad > kernel - 1 - pad)', { input: [6, 7, 2], filters: 3, kernel: 3, stride: 1, pad: 2 });

describe('wasm convolution gradients (input: the flipped filter on the heap; filter)', () => {
  for (const [name, c] of convs) {
    it(`matches cpu at ${name}`, async () => {
      const xShape: [number, number, number, number] = [2, ...c.input];
      const wShape: [number, number, number, number] = [c.kernel, c.kernel, c.input[2], c.filters];
      const x = random(size(xShape), 6), w = random(size(wShape), 7);
      await tf.setBackend('cpu');
      const outShape = tf.tidy(() => tf.conv2d(tf.zeros(xShape) as tf.Tensor4D, tf.zeros(wShape) as tf.Tensor4D, c.stride, c.pad).shape);
      const r = random(size(outShape), 8);
      const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), tf.tensor(r, outShape)));
      for (const which of [0, 1]) {
        const f = () => tf.grads(loss)([tf.tensor(x, xShape), tf.tensor(w, wShape)])[which];
        const expected = await on('cpu', f);
        const actual = await on('wasm', f);
        expect(actual.shape).toEqual(expected.shape);
        expectClose(expected.values, actual.values, 1e-4);
      }
    });
  }
});

describe('wasm MaxPoolGrad', () => {
  for (const [name, p] of pools) {
    it(`matches cpu bit for bit: ${name}`, async () => {
      const xShape: [number, number, number, number] = [BATCH, ...p.input];
      // Ties (many zeros, as after a ReLU, and repeated values) test which maximum gets the gradient.
      const x = random(size(xShape), 4, 8);
      const outShape = tf.tidy(() => tf.maxPool(tf.zeros(xShape) as tf.Tensor4D, p.size, p.stride, p.pad).shape);
      const r = random(size(outShape), 5);
      const f = () => tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, p.size, p.stride, p.pad), tf.tensor(r, outShape))))(tf.tensor(x, xShape));
      const expected = await on('cpu', f);
      const actual = await on('wasm', f);
      expect(actual.shape).toEqual(xShape);
      expect(Array.from(actual.values)).toEqual(Array.from(expected.values));
      expect(expected.values.some((v) => v !== 0)).toBe(true);
    });
  }

  it('takes the SIMD kernel over the heap, and matches cpu where windows hold NaN and -Infinity', async () => {
    expect(heapKernels(tf.backend())).not.toBeNull();
    const xShape: [number, number, number, number] = [BATCH, 7, 7, 8];
    const x = random(size(xShape), 6, 8);
    // Whole windows of -Infinity (nothing passes), NaN beside finite values (never a maximum).
    for (let i = 0; i < x.length; i += 3) x[i] = i % 2 ? Number.NaN : -Infinity;
    for (let i = 0; i < 7 * 7 * 8; i += 8) x[i] = -Infinity;
    const outShape = tf.tidy(() => tf.maxPool(tf.zeros(xShape) as tf.Tensor4D, 3, 2, 'valid').shape);
    const r = random(size(outShape), 7);
    const f = () => tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, 3, 2, 'valid'), tf.tensor(r, outShape))))(tf.tensor(x, xShape));
    const expected = await on('cpu', f);
    const actual = await on('wasm', f);
    expect(Array.from(actual.values)).toEqual(Array.from(expected.values));
  });
});
