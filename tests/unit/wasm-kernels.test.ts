// The wasm convolution gradient kernels against the cpu backend, which has reference kernels
// for both. Every case runs the same random data through both backends.
import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// The CJS tfjs-core build that Node loads registers no gradients; tf.grad needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { registerWasmKernels } from '../../client/src/wasm-kernels';

type Pad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];

interface Case {
  name: string;
  x: [number, number, number, number];
  k: number;
  outChannels: number;
  stride: number;
  pad: Pad;
}

const CASES: Case[] = [
  { name: 'stride 1 pad 1 k3', x: [2, 8, 8, 3], k: 3, outChannels: 4, stride: 1, pad: 1 },
  { name: 'stride 4 pad 1 k11, input 65 (AlexNet conv1, remainder 1)', x: [2, 65, 65, 1], k: 11, outChannels: 4, stride: 4, pad: 1 },
  { name: 'stride 4 pad 1 k11, input 67 (remainder 3)', x: [2, 67, 67, 2], k: 11, outChannels: 3, stride: 4, pad: 1 },
  { name: 'stride 1 pad 2 k5', x: [3, 9, 9, 5], k: 5, outChannels: 6, stride: 1, pad: 2 },
  { name: "stride 2 'valid', odd input", x: [2, 9, 9, 3], k: 3, outChannels: 2, stride: 2, pad: 'valid' },
  { name: "stride 2 'valid', even input (last row unused)", x: [2, 10, 10, 3], k: 3, outChannels: 2, stride: 2, pad: 'valid' },
  { name: "stride 2 'same' (asymmetric pad)", x: [2, 10, 10, 3], k: 3, outChannels: 2, stride: 2, pad: 'same' },
  { name: "stride 1 'same' k3", x: [2, 7, 7, 4], k: 3, outChannels: 5, stride: 1, pad: 'same' },
  { name: 'stride 1 explicit asymmetric pad, non-square input', x: [2, 7, 9, 3], k: 3, outChannels: 2, stride: 1, pad: [[0, 0], [2, 0], [0, 1], [0, 0]] },
];

/** Seeded uniform [-1, 1) so that a failure reproduces. */
function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** max |a - b| and max |a|, for a relative tolerance. */
function compare(expected: Float32Array, actual: Float32Array): { diff: number; scale: number } {
  expect(actual.length).toBe(expected.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return { diff, scale };
}

/** Gradients of sum(conv2d(x, w) * r) with respect to x and w, on `backend`. */
async function convGrads(backend: string, c: Case, data: { x: Float32Array; w: Float32Array; r: Float32Array }, rShape: number[]) {
  await tf.setBackend(backend);
  expect(tf.getBackend()).toBe(backend);
  const x = tf.tensor4d(data.x, c.x);
  const w = tf.tensor4d(data.w, [c.k, c.k, c.x[3], c.outChannels]);
  const r = tf.tensor(data.r, rShape);
  const grad = tf.grads((a, b) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), r)));
  const [dx, dw] = grad([x, w]);
  const result = { dx: (await dx.data()) as Float32Array, dw: (await dw.data()) as Float32Array };
  tf.dispose([x, w, r, dx, dw]);
  return result;
}

beforeAll(async () => {
  registerWasmKernels();
  registerWasmKernels(); // idempotent: a second call must neither throw nor re-wrap
  expect(await tf.setBackend('wasm')).toBe(true);
  expect(await tf.setBackend('cpu')).toBe(true);
});

describe('registerWasmKernels', () => {
  it('registers Conv2DBackpropFilter for wasm', () => {
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')).toBeDefined();
  });

  for (const c of CASES) {
    it(`matches cpu gradients: ${c.name}`, async () => {
      await tf.setBackend('cpu');
      const rShape = tf.tidy(() => tf.conv2d(tf.zeros(c.x) as tf.Tensor4D, tf.zeros([c.k, c.k, c.x[3], c.outChannels]) as tf.Tensor4D, c.stride, c.pad).shape);
      const data = {
        x: random(size(c.x), 1),
        w: random(c.k * c.k * c.x[3] * c.outChannels, 2),
        r: random(size(rShape), 3),
      };
      const expected = await convGrads('cpu', c, data, rShape);

      await tf.setBackend('wasm');
      const idsBefore = tf.engine().backend.numDataIds();
      const actual = await convGrads('wasm', c, data, rShape);
      // Every intermediate the kernels made was freed.
      expect(tf.engine().backend.numDataIds()).toBe(idsBefore);

      for (const key of ['dx', 'dw'] as const) {
        const { diff, scale } = compare(expected[key], actual[key]);
        expect(scale).toBeGreaterThan(0.1); // a real gradient, not all zeros
        expect(diff, `${key}: max diff ${diff} vs max |grad| ${scale}`).toBeLessThan(1e-4 * scale);
      }
    });
  }

  it("handles dimRoundingMode 'ceil' (dy reaches past the padded input)", async () => {
    // tf.grad never passes dimRoundingMode, so call the kernel as an op would.
    const x = [1, 8, 8, 2];
    const filterShape: [number, number, number, number] = [3, 3, 2, 3];
    const dyShape = [1, 4, 4, 3]; // ceil((8 - 3) / 2 + 1) = 4
    const attrs = { strides: 2, pad: 0, dataFormat: 'NHWC', dimRoundingMode: 'ceil', filterShape };
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const inputs = { x: tf.tensor(random(size(x), 4), x), dy: tf.tensor(random(size(dyShape), 5), dyShape) };
      const dw = tf.engine().runKernel('Conv2DBackpropFilter', inputs, attrs) as tf.Tensor;
      expect(dw.shape).toEqual(filterShape);
      const values = (await dw.data()) as Float32Array;
      tf.dispose([inputs.x, inputs.dy, dw]);
      return values;
    };
    const { diff, scale } = compare(await run('cpu'), await run('wasm'));
    expect(scale).toBeGreaterThan(0.1);
    expect(diff).toBeLessThan(1e-4 * scale);
  });

  // The filter gradient is a Conv2D with dilation = forward stride and explicit, asymmetric
  // padding: check wasm's (XNNPACK) Conv2D does both right.
  it('wasm Conv2D is correct with dilations > 1 and explicit asymmetric padding', async () => {
    const xShape: [number, number, number, number] = [3, 13, 11, 2];
    const wShape: [number, number, number, number] = [4, 3, 2, 5];
    const pad: Pad = [[0, 0], [2, 5], [1, 3], [0, 0]];
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const y = tf.tidy(() => tf.conv2d(tf.tensor4d(random(size(xShape), 6), xShape), tf.tensor4d(random(size(wShape), 7), wShape), 1, pad, 'NHWC', [4, 3]));
      const values = { shape: y.shape, data: (await y.data()) as Float32Array };
      y.dispose();
      return values;
    };
    const expected = await run('cpu');
    const actual = await run('wasm');
    expect(actual.shape).toEqual(expected.shape);
    const { diff, scale } = compare(expected.data, actual.data);
    expect(diff).toBeLessThan(1e-5 * scale);
  });

  it('rejects NCHW with a clear error', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 2, 5, 5]);
    const dy = tf.zeros([1, 3, 3, 3]);
    expect(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'valid', dataFormat: 'NCHW', filterShape: [3, 3, 2, 3] }))
      .toThrow(/only NHWC/);
    tf.dispose([x, dy]);
  });
});
