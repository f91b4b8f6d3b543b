// The model zoo, as data. Every end (coordinator, Node worker, browser tab, tests, export) reads
// these specs, so a layer exists in exactly one place. Layout is NHWC, as TensorFlow.js wants.
import { hashString, mixSeed, rng } from './rng';

export type LayerSpec =
  /** Conv2d + ReLU, PyTorch-style symmetric zero padding. */
  | { kind: 'conv'; filters: number; kernel: number; stride: number; pad: number }
  | { kind: 'pool'; size: number; stride: number }
  | { kind: 'flatten' }
  | { kind: 'dense'; units: number; relu: boolean }
  | { kind: 'dropout'; rate: number };

export interface ModelSpec {
  name: string;
  description: string;
  /** Side of the square input; the 28×28 images are resized (bilinear) to it on the worker. */
  input: number;
  /** d2l's learning rate for this model. */
  lr: number;
  layers: LayerSpec[];
}

export interface ParamInfo {
  name: string;
  shape: number[];
  size: number;
  /** Index of the first float of this parameter in the flat vector. */
  offset: number;
  /** Index of the layer in spec.layers that owns it. */
  layer: number;
  role: 'kernel' | 'bias';
  fanIn: number;
  fanOut: number;
}

const conv = (filters: number, kernel: number, stride = 1, pad = 0): LayerSpec => ({ kind: 'conv', filters, kernel, stride, pad });
const pool = (size: number, stride: number): LayerSpec => ({ kind: 'pool', size, stride });
const dense = (units: number, relu = true): LayerSpec => ({ kind: 'dense', units, relu });
const dropout: LayerSpec = { kind: 'dropout', rate: 0.5 };
const flatten: LayerSpec = { kind: 'flatten' };

/** d2l 8.1 AlexNet; `div` divides the conv channels and `hidden` sets the dense width. */
function alexnet(name: string, description: string, input: number, div: number, hidden: number, lr: number): ModelSpec {
  const c = (n: number) => Math.max(1, Math.round(n / div));
  return {
    name, description, input, lr,
    layers: [
      conv(c(96), 11, 4, 1), pool(3, 2),
      conv(c(256), 5, 1, 2), pool(3, 2),
      conv(c(384), 3, 1, 1), conv(c(384), 3, 1, 1), conv(c(256), 3, 1, 1), pool(3, 2),
      flatten,
      dense(hidden), dropout,
      dense(hidden), dropout,
      dense(10, false),
    ],
  };
}

/** d2l 8.2 VGG-11: conv_arch ((1,64),(1,128),(2,256),(2,512),(2,512)), channels ÷ ratio. */
export const VGG11_ARCH: ReadonlyArray<readonly [number, number]> = [[1, 64], [1, 128], [2, 256], [2, 512], [2, 512]];
function vgg11(name: string, description: string, input: number, ratio: number, hidden: number, lr: number): ModelSpec {
  const layers: LayerSpec[] = [];
  for (const [convs, channels] of VGG11_ARCH) {
    for (let i = 0; i < convs; i++) layers.push(conv(Math.max(1, Math.floor(channels / ratio)), 3, 1, 1));
    layers.push(pool(2, 2));
  }
  layers.push(flatten, dense(hidden), dropout, dense(hidden), dropout, dense(10, false));
  return { name, description, input, lr, layers };
}

/**
 * Named models. The full-size ones are d2l's; the small ones keep every layer of the real stack
 * at the smallest input it accepts, so CPU tests and demos run the same code path.
 */
export const MODELS: Record<string, ModelSpec> = Object.fromEntries([
  alexnet('alexnet', "d2l AlexNet at 224×224, 46,764,746 parameters (d2l: lr 0.01)", 224, 1, 4096, 0.01),
  vgg11('vgg11', "d2l VGG-11 with channels ÷ 4 (small_conv_arch) at 224×224, 43,093,322 parameters (d2l: lr 0.05)", 224, 4, 4096, 0.05),
  vgg11('vgg11-full', "d2l VGG-11 at full width (ratio 1) at 224×224, 128,806,154 parameters", 224, 1, 4096, 0.05),
  alexnet('alexnet-small', "AlexNet's layers at 65×65 (smallest it accepts), channels ÷ 4, dense 256: the CPU demo, ~83% test accuracy after one epoch at batch 32", 65, 4, 256, 0.1),
  vgg11('vgg11-small', "VGG-11's layers at 32×32, channels ÷ 16, dense 256: a CPU demo", 32, 16, 256, 0.05),
  alexnet('alexnet-tiny', "AlexNet's layers at 65×65, channels ÷ 16, dense 32: for protocol and fault tests", 65, 16, 32, 0.05),
  vgg11('vgg11-tiny', "VGG-11's layers at 32×32, channels ÷ 32, dense 32: for protocol and fault tests", 32, 32, 32, 0.05),
].map((m) => [m.name, m]));

export function getModel(name: string): ModelSpec {
  const spec = MODELS[name];
  if (!spec) throw new Error(`unknown model '${name}'; choose one of: ${Object.keys(MODELS).join(', ')}`);
  return spec;
}

export interface LayerShape { layer: number; kind: LayerSpec['kind']; shape: number[] }

/** Output shape of every layer for one example, by PyTorch's formulas (floor division). */
export function layerShapes(spec: ModelSpec): LayerShape[] {
  let shape = [spec.input, spec.input, 1];
  return spec.layers.map((l, layer) => {
    if (l.kind === 'conv') {
      const side = (s: number) => Math.floor((s + 2 * l.pad - l.kernel) / l.stride) + 1;
      shape = [side(shape[0]), side(shape[1]), l.filters];
    } else if (l.kind === 'pool') {
      const side = (s: number) => Math.floor((s - l.size) / l.stride) + 1;
      shape = [side(shape[0]), side(shape[1]), shape[2]];
    } else if (l.kind === 'flatten') {
      shape = [shape.reduce((a, b) => a * b, 1)];
    } else if (l.kind === 'dense') {
      shape = [l.units];
    }
    if (shape.some((s) => s < 1)) throw new Error(`model ${spec.name}: layer ${layer} (${l.kind}) has empty output ${JSON.stringify(shape)}; input ${spec.input} is too small`);
    return { layer, kind: l.kind, shape: [...shape] };
  });
}

/** Parameters in their one fixed order: for each conv/dense layer, kernel then bias. */
export function paramLayout(spec: ModelSpec): { params: ParamInfo[]; total: number } {
  const params: ParamInfo[] = [];
  let offset = 0;
  let channels = 1;
  let features = 0;
  const shapes = layerShapes(spec);
  const add = (name: string, shape: number[], layer: number, role: ParamInfo['role'], fanIn: number, fanOut: number) => {
    const size = shape.reduce((a, b) => a * b, 1);
    params.push({ name, shape, size, offset, layer, role, fanIn, fanOut });
    offset += size;
  };
  spec.layers.forEach((l, i) => {
    if (l.kind === 'conv') {
      const k = l.kernel * l.kernel;
      add(`layer${i}_conv/kernel`, [l.kernel, l.kernel, channels, l.filters], i, 'kernel', channels * k, l.filters * k);
      add(`layer${i}_conv/bias`, [l.filters], i, 'bias', channels * k, l.filters * k);
      channels = l.filters;
    } else if (l.kind === 'flatten') {
      features = shapes[i].shape[0];
    } else if (l.kind === 'dense') {
      add(`layer${i}_dense/kernel`, [features, l.units], i, 'kernel', features, l.units);
      add(`layer${i}_dense/bias`, [l.units], i, 'bias', features, l.units);
      features = l.units;
    }
  });
  return { params, total: offset };
}

/** Identifies the network's structure; a worker built from another spec is refused. */
export function modelHash(spec: ModelSpec): string {
  return hashString(JSON.stringify({ input: spec.input, layers: spec.layers }));
}

/** A welcome's model, as a worker builds it: refused when the coordinator's structure hash differs from ours. */
export function welcomedModel(name: string, coordinatorHash: string): ModelSpec {
  const spec = getModel(name);
  if (modelHash(spec) !== coordinatorHash) throw new Error(`model ${spec.name}: coordinator hash ${coordinatorHash} differs from ours ${modelHash(spec)}`);
  return spec;
}

/** Hashes of every model this build knows, sent in the hello. */
export function zooHashes(): Record<string, string> {
  return Object.fromEntries(Object.values(MODELS).map((m) => [m.name, modelHash(m)]));
}

/**
 * d2l's initialisation: Xavier-uniform kernels, PyTorch's default uniform(±1/sqrt(fan_in)) biases.
 * Drawn from the run seed, parameter by parameter, into one flat vector.
 */
export function initParams(spec: ModelSpec, seed: number): Float32Array {
  const { params, total } = paramLayout(spec);
  const flat = new Float32Array(total);
  params.forEach((p, i) => {
    const next = rng(mixSeed(seed, 0x1417, i));
    const bound = p.role === 'kernel' ? Math.sqrt(6 / (p.fanIn + p.fanOut)) : 1 / Math.sqrt(p.fanIn);
    for (let j = p.offset; j < p.offset + p.size; j++) flat[j] = (2 * next() - 1) * bound;
  });
  return flat;
}

/** Dropout layers in order, with their width, for mask generation. */
export function dropoutLayers(spec: ModelSpec): { layer: number; units: number; rate: number }[] {
  const shapes = layerShapes(spec);
  const out: { layer: number; units: number; rate: number }[] = [];
  spec.layers.forEach((l, i) => { if (l.kind === 'dropout') out.push({ layer: i, units: shapes[i].shape[0], rate: l.rate }); });
  return out;
}
