// The wasm training step without tfjs's engine (client/src/wasm-train-step.ts) against the engine's
// own path (Net.forward + tf.variableGrads), on real Fashion-MNIST, at every model's layer shapes:
// bit for bit the engine's on wasm (the same kernels in the same order: a run's trajectory does
// not move), and the cpu backend's to float32 rounding. The small models run a ragged shard of 3;
// the full-size ones one example, on wasm only (the cpu backend's naive convolutions would take
// minutes at 224×224).
import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { MODELS, initParams } from '@tabtrain/shared';
import { Net, type ShardStats } from '@tabtrain/shared/net';
import { registerWasmKernels } from '../../client/src/wasm-kernels';
import { loadFashionMnist } from '../../server/src/data';

const data = loadFashionMnist().train;
let direct: typeof Net.step = null;

beforeAll(async () => {
  registerWasmKernels();
  direct = Net.step;
  await tf.setBackend('wasm');
});

/** One shard's gradient and stats on `backend`, through the direct step or the engine's path. */
async function shard(backend: string, name: string, count: number, path: 'direct' | 'engine'): Promise<{ grad: Float32Array; stats: ShardStats; leftover: number }> {
  await tf.setBackend(backend);
  const net = new Net(MODELS[name]);
  net.setWeights(initParams(net.spec, 7));
  const grad = new Float32Array(net.total).fill(NaN); // every float must be written
  const before = tf.engine().backend.numDataIds();
  Net.step = path === 'direct' ? direct : null;
  try {
    // Examples 100.. and step 3: dropout masks of a later step, at a position other than 0.
    const stats = await net.gradient(data.images.subarray(100 * 784, (100 + count) * 784), data.labels.subarray(100, 100 + count), count, 11, 3, 100, grad);
    return { grad, stats, leftover: tf.engine().backend.numDataIds() - before };
  } finally {
    Net.step = direct;
    net.dispose();
  }
}

/** Bit for bit, -0 included; and every float was written. */
function expectIdentical(expected: { grad: Float32Array; stats: ShardStats }, actual: { grad: Float32Array; stats: ShardStats }): void {
  let differ = 0;
  for (let i = 0; i < expected.grad.length; i++) if (!Object.is(expected.grad[i], actual.grad[i])) differ++;
  expect(differ).toBe(0);
  expect(actual.grad.some(Number.isNaN)).toBe(false);
  expect(actual.stats).toEqual(expected.stats);
}

function expectSameGradient(expected: Float32Array, actual: Float32Array, rel: number): void {
  let diff = 0, norm = 0, unwritten = 0;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(actual[i])) unwritten++;
    diff += (expected[i] - actual[i]) ** 2;
    norm += expected[i] ** 2;
  }
  expect(unwritten).toBe(0);
  expect(norm).toBeGreaterThan(1e-6); // a real gradient
  expect(Math.sqrt(diff / norm)).toBeLessThanOrEqual(rel);
}

describe('the wasm step without the engine', () => {
  it('is installed by registerWasmKernels for wasm, and leaves every other backend to the engine', async () => {
    expect(direct?.backend).toBe('wasm');
    // On cpu, Net.gradient with the step installed is the engine's path, bit for bit.
    const withStep = await shard('cpu', 'vgg11-tiny', 2, 'direct');
    const engine = await shard('cpu', 'vgg11-tiny', 2, 'engine');
    expect(withStep.grad).toEqual(engine.grad);
    expect(withStep.stats).toEqual(engine.stats);
  });

  for (const name of ['alexnet-tiny', 'vgg11-tiny', 'alexnet-small', 'vgg11-small']) {
    it(`${name}: the engine's gradient on wasm bit for bit, the cpu backend's to rounding; frees what it made`, async () => {
      const cpu = await shard('cpu', name, 3, 'engine');
      const wasm = await shard('wasm', name, 3, 'direct');
      expectIdentical(await shard('wasm', name, 3, 'engine'), wasm);
      expectSameGradient(cpu.grad, wasm.grad, 2e-5);
      expect(wasm.stats.count).toBe(3);
      expect(wasm.stats.correct).toBe(cpu.stats.correct);
      expect(wasm.stats.lossSum).toBeCloseTo(cpu.stats.lossSum, 4);
      expect(wasm.leftover).toBe(0);
    });
  }

  it('gradientTensors (PowerSGD\'s tensors) goes through the step too: the engine\'s tensors bit for bit, nothing left over', async () => {
    await tf.setBackend('wasm');
    const net = new Net(MODELS['alexnet-small']);
    net.setWeights(initParams(net.spec, 7));
    const tensors = async (step: typeof Net.step) => {
      Net.step = step;
      const before = tf.engine().backend.numDataIds();
      try {
        const { stats, grads } = await net.gradientTensors(data.images.subarray(100 * 784, 103 * 784), data.labels.subarray(100, 103), 3, 11, 3, 100);
        const grad = new Float32Array(net.total);
        for (const [i, p] of net.params.entries()) {
          expect(grads[i].shape).toEqual(p.shape);
          grad.set(await grads[i].data(), p.offset);
        }
        tf.dispose(grads);
        return { grad, stats, leftover: tf.engine().backend.numDataIds() - before };
      } finally {
        Net.step = direct;
      }
    };
    try {
      const viaStep = await tensors(direct);
      expectIdentical(await tensors(null), viaStep);
      expect(viaStep.leftover).toBe(0);
    } finally {
      net.dispose();
    }
  });

  for (const name of ['alexnet', 'vgg11']) {
    it(`${name} (224×224): the engine's gradient on wasm bit for bit, one example`, async () => {
      const engine = await shard('wasm', name, 1, 'engine');
      const wasm = await shard('wasm', name, 1, 'direct');
      expectIdentical(engine, wasm);
      expect(wasm.leftover).toBe(0);
    });
  }
});
