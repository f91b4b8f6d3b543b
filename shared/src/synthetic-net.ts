// The synthetic net (`tabtrain worker --synthetic-ms-per-example X`), a synthetic "GPU" for the
// scale-out benchmark: it stands in for Net inside the real WorkerCore. Computing a shard sleeps
// count × X ms (sleeping, not spinning, so the machine's cores stay free for the communication
// being measured) and the gradient is a fixed deterministic vector of the model's full size.
// Everything else the worker does (taking in the weights, encoding and sending the gradient,
// decoding and applying compressed updates) is real CPU work on this machine.
//
// Browser-safe: no Node imports (the page's WorkerCore imports it).
import { mixSeed, paramLayout, type ModelSpec } from '@tabtrain/shared';
import type { Net, ShardStats } from '@tabtrain/shared/net';

/** What WorkerCore needs from a model: Net, or this stand-in. */
export type Trainable = Pick<Net, 'total' | 'setWeights' | 'gradient' | 'evaluate' | 'dispose'>;

/** d2l's V100 runs AlexNet at ~4,000 examples/s: 0.25 ms per example. */
export const V100_MS_PER_EXAMPLE = 0.25;
export class SyntheticNet implements Trainable {
  readonly total: number;
  /** The array last filled: the gradient is written once, then left in place (it never changes). */
  private filled: Float32Array | null = null;

  constructor(readonly spec: ModelSpec, readonly msPerExample: number) {
    this.total = paramLayout(spec).total;
  }

  /** A real worker uploads the weights to its GPU here; a synthetic one has nowhere to put them. */
  setWeights(flat: Float32Array): void {
    if (flat.length !== this.total) throw new Error(`weights have ${flat.length} floats, model ${this.spec.name} needs ${this.total}`);
  }

  async gradient(_images: Uint8Array, _labels: Uint8Array, count: number, seed: number, _step: number, _position: number, out: Float32Array): Promise<ShardStats> {
    await sleep(count * this.msPerExample);
    if (this.filled !== out) {
      fillGradient(out, seed);
      this.filled = out;
    }
    return { lossSum: count * Math.LN10, correct: Math.round(count / 10), count };
  }

  async evaluate(_images: Uint8Array, _labels: Uint8Array, count: number): Promise<ShardStats> {
    await sleep((count * this.msPerExample) / 3); // forward only: about a third of a training step
    return { lossSum: count * Math.LN10, correct: Math.round(count / 10), count };
  }

  dispose(): void {}
}

/** Gradient-like values (|g| ≲ 1e-3, 70% exact zeros as in a real AlexNet gradient), cheap to make. */
export function fillGradient(out: Float32Array, seed: number): void {
  let x = mixSeed(seed, 0x5e7) | 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; // xorshift32
    const u = (x >>> 0) / 4294967296;
    out[i] = u < 0.7 ? 0 : (u - 0.85) * 6.6e-3;
  }
}

/** Resolves after `ms`: how the synthetic net and machine stand in for device work (sleeping, not spinning). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
