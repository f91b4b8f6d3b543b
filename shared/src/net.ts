// The one builder: turns a ModelSpec into TensorFlow.js computation. Written with tfjs-core ops
// (not tf.layers) so that dropout masks come from our seeded generator and every backend
// (cpu, wasm, webgl, webgpu) runs the identical graph.
// The union package, not tfjs-core alone: it registers the gradient of every op.
import * as tf from '@tensorflow/tfjs';
import { dropoutLayers, paramLayout, type ModelSpec, type ParamInfo } from './models';
import { dropoutMask } from './rng';
import { IMAGE_BYTES } from './protocol';

export interface ShardStats { lossSum: number; correct: number; count: number }

/**
 * How weights reach the variables and gradients come back. The default works on every backend;
 * a backend can install a faster one (client/src/webgpu-io.ts: staging buffers reused across
 * steps, in-place queue writes) by assigning `Net.io`.
 */
export interface TensorIO {
  /** Reads ts[i] into out at params[i].offset. */
  read(ts: tf.Tensor[], params: ParamInfo[], out: Float32Array): Promise<void>;
  /** Writes flat's slices into the variables it can; returns which it did (Net assigns the rest). */
  write?(vars: tf.Variable[], params: ParamInfo[], flat: Float32Array): boolean[];
  dispose?(): void;
}

const defaultIO: TensorIO = {
  async read(ts, params, out) {
    // Every read is started before the first is awaited: their round trips overlap.
    const reads = ts.map((t) => t.data());
    for (let i = 0; i < ts.length; i++) out.set(await reads[i] as Float32Array, params[i].offset);
  },
};

/**
 * A shard step that a backend may install in place of the engine's (client/src/wasm-train-step.ts:
 * the wasm kernels called directly, no gradient tape). Used while `backend` is the active one:
 * `run` writes the gradient sum into `out` and returns the stats.
 */
export interface ShardStep {
  backend: string;
  run(net: Net, x: tf.Tensor4D, labels: Uint8Array, masks: Float32Array[], count: number, out: Float32Array): ShardStats;
}

export class Net {
  static io: TensorIO = defaultIO;
  static step: ShardStep | null = null;
  readonly params: ParamInfo[];
  readonly total: number;
  /** gradientTensors' scratch where Net.step runs the shard (one gradient's floats, kept across steps). */
  private flatGradient: Float32Array | null = null;
  /** Resident weights, one variable per parameter, in layout order. */
  readonly vars: tf.Variable[];

  constructor(readonly spec: ModelSpec) {
    const layout = paramLayout(spec);
    this.params = layout.params;
    this.total = layout.total;
    // tidy() frees the zeros each variable starts from (a variable only shares their buffer):
    // without it every Net left one model-sized set of tensors behind, per (re)join.
    this.vars = this.params.map((p) => tf.tidy(() => tf.variable(tf.zeros(p.shape), true)));
  }

  /** Loads a flat weight vector (one write per variable). */
  setWeights(flat: Float32Array): void {
    if (flat.length !== this.total) throw new Error(`weights have ${flat.length} floats, model ${this.spec.name} needs ${this.total}`);
    const done = Net.io.write?.(this.vars, this.params, flat);
    this.params.forEach((p, i) => {
      if (done?.[i]) return;
      // slice(): backends may keep a reference to the array they are given; ours is reused. wasm
      // copies it into its heap at once, so a view spares it a copy of the model a step.
      const part = tf.getBackend() === 'wasm' ? flat.subarray(p.offset, p.offset + p.size) : flat.slice(p.offset, p.offset + p.size);
      const t = tf.tensor(part, p.shape, 'float32');
      this.vars[i].assign(t);
      t.dispose();
    });
  }

  /** Reads the resident weights back into a flat vector (a worker measures its working copy's drift with it). */
  async getWeights(out: Float32Array): Promise<void> {
    if (out.length !== this.total) throw new Error(`weights vector has ${out.length} floats, model ${this.spec.name} needs ${this.total}`);
    await Net.io.read(this.vars, this.params, out);
  }

  /** uint8 28×28 images → float [n, input, input, 1] in [0, 1], resized bilinearly as d2l does. */
  inputs(images: Uint8Array, count: number): tf.Tensor4D {
    return tf.tidy(() => {
      const x = tf.div(tf.tensor4d(images.subarray(0, count * IMAGE_BYTES), [count, 28, 28, 1], 'int32'), 255) as tf.Tensor4D;
      const side = this.spec.input;
      return side === 28 ? x : tf.image.resizeBilinear(x, [side, side], false, true);
    });
  }

  /** Logits for a batch. `masks` holds one [n, units] tensor per dropout layer, or null (eval). */
  forward(x: tf.Tensor4D, masks: tf.Tensor2D[] | null): tf.Tensor2D {
    let h: tf.Tensor = x;
    let v = 0;
    let d = 0;
    this.spec.layers.forEach((l) => {
      switch (l.kind) {
        case 'conv':
          h = tf.relu(tf.add(tf.conv2d(h as tf.Tensor4D, this.vars[v] as tf.Tensor4D, l.stride, l.pad), this.vars[v + 1]));
          v += 2;
          break;
        case 'pool':
          h = tf.maxPool(h as tf.Tensor4D, l.size, l.stride, 'valid');
          break;
        case 'flatten':
          h = tf.reshape(h, [h.shape[0], -1]);
          break;
        case 'dense':
          h = tf.add(tf.matMul(h as tf.Tensor2D, this.vars[v] as tf.Tensor2D), this.vars[v + 1]);
          if (l.relu) h = tf.relu(h);
          v += 2;
          break;
        case 'dropout':
          if (masks) h = tf.mul(h, masks[d]);
          d++;
          break;
      }
    });
    return h as tf.Tensor2D;
  }

  /**
   * The gradient SUM over a shard, read back variable by variable into `out` (never one big GPU
   * tensor: WebGPU caps a binding at 128 MiB). Dropout masks are seeded per example.
   */
  async gradient(images: Uint8Array, labels: Uint8Array, count: number, seed: number, step: number, position: number, out: Float32Array): Promise<ShardStats> {
    if (Net.step?.backend === tf.getBackend()) {
      const x = this.inputs(images, count);
      try {
        return Net.step.run(this, x, labels, this.dropoutMasks(seed, step, position, count), count, out);
      } finally {
        x.dispose();
      }
    }
    const { stats, grads } = await this.gradientTensors(images, labels, count, seed, step, position);
    try {
      await Net.io.read(grads, this.params, out);
      return stats;
    } finally {
      tf.dispose(grads);
    }
  }

  /**
   * The gradient SUM over a shard as one tensor per parameter, left on the backend (the caller
   * disposes them): PowerSGD (client/src/powersgd-ops.ts) reads back only its factors.
   */
  async gradientTensors(images: Uint8Array, labels: Uint8Array, count: number, seed: number, step: number, position: number): Promise<{ stats: ShardStats; grads: tf.Tensor[] }> {
    if (Net.step?.backend === tf.getBackend()) {
      // The backend's own step (the engine's gradient bit for bit), then one tensor per parameter
      // from the flat sum: two copies of the gradient, against the engine's tape and clones.
      const flat = (this.flatGradient ??= new Float32Array(this.total));
      const stats = await this.gradient(images, labels, count, seed, step, position, flat);
      return { stats, grads: this.params.map((p) => tf.tensor(flat.subarray(p.offset, p.offset + p.size), p.shape)) };
    }
    const masks = this.dropoutMasks(seed, step, position, count).map((m) => tf.tensor2d(m, [count, m.length / count]));
    const x = this.inputs(images, count);
    const y = tf.tensor1d(Int32Array.from(labels.subarray(0, count)), 'int32');
    let correctT: tf.Scalar | null = null;
    const { value, grads } = tf.variableGrads(() => {
      const logits = this.forward(x, masks);
      correctT = tf.keep(countCorrect(logits, y));
      return lossSum(logits, y);
    }, this.vars);
    tf.dispose([x, y, ...masks]);
    const ordered = this.vars.map((v) => grads[v.name]);
    try {
      return { stats: { lossSum: (await value.data())[0], correct: (await correctT!.data())[0], count }, grads: ordered };
    } catch (e) {
      tf.dispose(ordered);
      throw e;
    } finally {
      tf.dispose([value, correctT!]);
    }
  }

  /** One [count, units] mask per dropout layer, seeded per example (the same on every backend and worker). */
  private dropoutMasks(seed: number, step: number, position: number, count: number): Float32Array[] {
    return dropoutLayers(this.spec).map((l) => dropoutMask(seed, step, l.layer, position, count, l.units, l.rate));
  }

  /** Forward only, no dropout: loss sum and correct count. */
  async evaluate(images: Uint8Array, labels: Uint8Array, count: number): Promise<ShardStats> {
    const [loss, correct] = tf.tidy(() => {
      const y = tf.tensor1d(Int32Array.from(labels.subarray(0, count)), 'int32');
      const logits = this.forward(this.inputs(images, count), null);
      return [lossSum(logits, y), countCorrect(logits, y)];
    });
    try {
      return { lossSum: (await loss.data())[0], correct: (await correct.data())[0], count };
    } finally {
      tf.dispose([loss, correct]);
    }
  }

  dispose(): void { tf.dispose(this.vars); }
}

/** Sum (not mean) of the cross-entropy over the batch: the coordinator divides once. */
function lossSum(logits: tf.Tensor2D, y: tf.Tensor1D): tf.Scalar {
  return tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(y, 10)))) as tf.Scalar;
}

function countCorrect(logits: tf.Tensor2D, y: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), y), 'int32')) as tf.Scalar;
}
