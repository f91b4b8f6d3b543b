// The conv and dense layers of a model as the kernels see them at a batch size: input and output
// shapes, filter, stride, padding and multiply-adds. Read from shared/src/models.ts (the one source
// of truth for models), so the kit and the kernel tests use d2l's real layer geometry.
import { getModel, layerShapes } from '@tabtrain/shared';

export interface LayerGeometry {
  /** e.g. 'alexnet conv1', 'vgg11 dense2' (1-based within its kind). */
  name: string;
  kind: 'conv' | 'dense';
  batch: number;
  /** conv: NHWC input and output sides; dense: inH = inW = outH = outW = 1, inC/outC the features. */
  inH: number; inW: number; inC: number;
  outH: number; outW: number; outC: number;
  kernel: number; stride: number; pad: number;
  /** Multiply-adds of the forward pass; the input and the filter gradient cost the same. */
  macs: number;
  /** The first layer's input gradient is never computed in training (the images need none). */
  first: boolean;
}

export function modelLayers(model: string, batch: number): LayerGeometry[] {
  const spec = getModel(model);
  const shapes = layerShapes(spec);
  const out: LayerGeometry[] = [];
  let prev = [spec.input, spec.input, 1];
  let convs = 0, denses = 0;
  spec.layers.forEach((l, i) => {
    if (l.kind === 'conv') {
      const [outH, outW, outC] = shapes[i].shape;
      out.push({ name: `${model} conv${++convs}`, kind: 'conv', batch, inH: prev[0], inW: prev[1], inC: prev[2], outH, outW, outC,
        kernel: l.kernel, stride: l.stride, pad: l.pad, macs: batch * outH * outW * outC * l.kernel * l.kernel * prev[2], first: out.length === 0 });
    } else if (l.kind === 'dense') {
      const inC = prev.reduce((a, b) => a * b, 1);
      out.push({ name: `${model} dense${++denses}`, kind: 'dense', batch, inH: 1, inW: 1, inC, outH: 1, outW: 1, outC: l.units,
        kernel: 1, stride: 1, pad: 0, macs: batch * inC * l.units, first: out.length === 0 });
    }
    prev = shapes[i].shape;
  });
  return out;
}

/** One line for a table: '11×11/4 pad 1, 224²×1 → 54²×96' or 'dense 6400 → 4096'. */
export function describeLayer(g: LayerGeometry): string {
  return g.kind === 'conv'
    ? `${g.kernel}×${g.kernel}/${g.stride} pad ${g.pad}, ${g.inH}²×${g.inC} → ${g.outH}²×${g.outC}`
    : `dense ${g.inC} → ${g.outC}`;
}
