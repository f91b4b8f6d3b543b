import { describe, expect, it, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { MODELS, getModel, initParams, layerShapes, modelHash, paramLayout } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { registerWasmKernels } from '../../client/src/wasm-kernels';

// PyTorch's output shapes for one 1×1×224×224 input (d2l 8.1 / 8.2 printouts), NCHW → [H, W, C].
const ALEXNET_TORCH = [
  ['conv', [54, 54, 96]], ['pool', [26, 26, 96]], ['conv', [26, 26, 256]], ['pool', [12, 12, 256]],
  ['conv', [12, 12, 384]], ['conv', [12, 12, 384]], ['conv', [12, 12, 256]], ['pool', [5, 5, 256]],
  ['flatten', [6400]], ['dense', [4096]], ['dropout', [4096]], ['dense', [4096]], ['dropout', [4096]], ['dense', [10]],
];
const VGG11_TORCH = [
  ['conv', [224, 224, 16]], ['pool', [112, 112, 16]], ['conv', [112, 112, 32]], ['pool', [56, 56, 32]],
  ['conv', [56, 56, 64]], ['conv', [56, 56, 64]], ['pool', [28, 28, 64]],
  ['conv', [28, 28, 128]], ['conv', [28, 28, 128]], ['pool', [14, 14, 128]],
  ['conv', [14, 14, 128]], ['conv', [14, 14, 128]], ['pool', [7, 7, 128]],
  ['flatten', [6272]], ['dense', [4096]], ['dropout', [4096]], ['dense', [4096]], ['dropout', [4096]], ['dense', [10]],
];

beforeAll(async () => {
  registerWasmKernels();
  await tf.setBackend('wasm');
});

/** Runs the real builder's layers one by one on the wasm backend and records each output shape. */
function tfjsShapes(name: string): number[][] {
  const net = new Net(getModel(name));
  const spec = net.spec;
  const shapes: number[][] = [];
  tf.tidy(() => {
    // Build a prefix model per layer by truncating the spec: the same builder, the same ops.
    for (let k = 1; k <= spec.layers.length; k++) {
      const prefix = new Net({ ...spec, layers: spec.layers.slice(0, k) });
      const out = prefix.forward(prefix.inputs(new Uint8Array(784), 1), null);
      shapes.push(out.shape.slice(1));
      prefix.dispose();
    }
  });
  net.dispose();
  return shapes;
}

describe('model zoo', () => {
  it('AlexNet has d2l\'s parameter count and PyTorch\'s shapes, analytically and in tfjs', () => {
    const spec = getModel('alexnet');
    expect(paramLayout(spec).total).toBe(46_764_746);
    expect(layerShapes(spec).map((s) => [s.kind, s.shape])).toEqual(ALEXNET_TORCH);
    expect(tfjsShapes('alexnet')).toEqual(ALEXNET_TORCH.map((s) => s[1]));
  });

  it('VGG-11 ÷4 has d2l\'s parameter count and PyTorch\'s shapes, analytically and in tfjs', () => {
    const spec = getModel('vgg11');
    expect(paramLayout(spec).total).toBe(43_093_322);
    expect(layerShapes(spec).map((s) => [s.kind, s.shape])).toEqual(VGG11_TORCH);
    expect(tfjsShapes('vgg11')).toEqual(VGG11_TORCH.map((s) => s[1]));
  });

  it('small configs keep the full layer stack and build through the same code', () => {
    for (const name of ['alexnet-small', 'alexnet-tiny']) expect(getModel(name).layers.map((l) => l.kind)).toEqual(getModel('alexnet').layers.map((l) => l.kind));
    for (const name of ['vgg11-small', 'vgg11-tiny']) expect(getModel(name).layers.map((l) => l.kind)).toEqual(getModel('vgg11').layers.map((l) => l.kind));
    for (const spec of Object.values(MODELS)) {
      if (spec.input > 65) continue;
      const shapes = tfjsShapes(spec.name);
      expect(shapes).toEqual(layerShapes(spec).map((s) => s.shape));
    }
    expect(layerShapes(getModel('alexnet-small')).find((s) => s.kind === 'flatten')!.shape).toEqual([64]);
  });

  it('initialises as d2l does: Xavier-uniform kernels, uniform(±1/sqrt(fan_in)) biases, seeded', () => {
    const spec = getModel('alexnet-small');
    const w = initParams(spec, 1);
    expect(initParams(spec, 1)).toEqual(w);
    expect(initParams(spec, 2)).not.toEqual(w);
    for (const p of paramLayout(spec).params) {
      const v = w.subarray(p.offset, p.offset + p.size);
      const bound = p.role === 'kernel' ? Math.sqrt(6 / (p.fanIn + p.fanOut)) : 1 / Math.sqrt(p.fanIn);
      const max = v.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
      expect(max).toBeLessThanOrEqual(bound);
      if (p.size > 1000) expect(max).toBeGreaterThan(0.95 * bound); // it fills the range, not a smaller one
    }
    // conv1 of AlexNet: fan_in 1·11·11, fan_out 96·11·11
    const conv1 = paramLayout(getModel('alexnet')).params[0];
    expect([conv1.fanIn, conv1.fanOut]).toEqual([121, 96 * 121]);
  });

  it('hashes differ between models and are stable', () => {
    const hashes = Object.values(MODELS).map(modelHash);
    expect(new Set(hashes).size).toBe(hashes.length);
    expect(modelHash(getModel('alexnet'))).toBe(modelHash(getModel('alexnet')));
  });
});
