// bench/gpu/layers.ts: the layer geometry the GPU kit times and the kernel tests check is d2l's.
import { describe, expect, it } from 'vitest';
import { getModel, paramLayout } from '@tabtrain/shared';
import { describeLayer, modelLayers } from '../../bench/gpu/layers';

describe('GPU kit layer geometry', () => {
  it.each([['alexnet', 46_764_746], ['vgg11', 43_093_322]])('%s: every conv and dense layer, whose weights add up to the model\'s %d parameters', (model, params) => {
    const layers = modelLayers(model, 128);
    const weights = layers.reduce((s, g) => s + g.kernel * g.kernel * g.inC * g.outC + g.outC, 0);
    expect(weights).toBe(params);
    expect(paramLayout(getModel(model)).total).toBe(params);
    expect(layers.filter((g) => g.first).map((g) => g.name)).toEqual([`${model} conv1`]);
    // MACs per layer: batch · output positions · output channels · filter size.
    for (const g of layers) expect(g.macs).toBe(128 * g.outH * g.outW * g.outC * g.kernel * g.kernel * g.inC);
  });

  it("AlexNet's first layers as d2l has them", () => {
    const [c1, c2, c3] = modelLayers('alexnet', 2);
    expect(describeLayer(c1)).toBe('11×11/4 pad 1, 224²×1 → 54²×96');
    expect(describeLayer(c2)).toBe('5×5/1 pad 2, 26²×96 → 26²×256');
    expect(describeLayer(c3)).toBe('3×3/1 pad 1, 12²×256 → 12²×384');
    expect(describeLayer(modelLayers('alexnet', 2)[5])).toBe('dense 6400 → 4096');
  });
});
