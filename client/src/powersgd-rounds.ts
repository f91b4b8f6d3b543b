// A worker's side of a powersgd run (shared/src/powersgd.ts) across messages: the two broadcasts
// it collects (`basis` round 1: P̂; round 2: ΣQ_i, the update; the exact copy of the weights
// takes them too, in its own thread: exact-replica.ts), the Q that every replica
// warm-starts the same way, and its own factors of each shard it holds, computed on the backend
// (PowerSgdOps, for a real Net: only the factors are read back) or on Float32Arrays
// (PowerSgdWorker, for the synthetic net, whose gradient is an array already).
import type * as tf from '@tensorflow/tfjs-core';
import { asFloat32, type Basis } from '@tabtrain/shared';
import { checkBody, decodeInto, roundSegments, type Segment } from '@tabtrain/shared/compress';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { PowerSgdWorker } from '@tabtrain/shared/powersgd-worker';
import { initialQ, nextQ } from '@tabtrain/shared/powersgd-basis';
import { PowerSgdOps } from './powersgd-ops';
import { Incoming } from './exact-replica';

/** A shard's gradient as the net gives it: tensors on the backend, or a flat array. */
export type ShardGradient = tf.Tensor[] | Float32Array;

export class WorkerRounds {
  private readonly q0: Float32Array;
  private readonly side: PowerSgdOps | PowerSgdWorker;
  private readonly round1: Incoming;
  private readonly round2: Incoming;
  /** Each round's frames as the plan cuts them (their codecs: fp32, or fp16 factors). */
  private readonly segments: [Segment[], Segment[]];
  /** Shards whose M is held between the rounds, and their step: a new step forgets the old ones. */
  private held = new Set<number>();
  private heldStep = -1;

  constructor(readonly plan: PowerSgdPlan, private readonly seed: number, onBackend: boolean) {
    this.q0 = initialQ(plan, seed);
    this.round1 = new Incoming(plan.round1Floats);
    this.round2 = new Incoming(plan.round2Floats);
    this.segments = [roundSegments(plan, 1), roundSegments(plan, 2)];
    this.side = onBackend ? new PowerSgdOps(plan, this.q0) : new PowerSgdWorker(plan, this.q0);
  }

  /**
   * A broadcast slice's body as floats: fp32 viewed, fp16 (--factors fp16) decoded. Its codec must
   * be the run's for that slice, and an fp16 one must decode to finite values.
   */
  decode(b: Basis, body: Uint8Array): Float32Array {
    const seg = this.segments[b.round - 1].find((s) => s.offset === b.offset);
    const codec = b.codec ?? 'fp32';
    if (seg && codec !== seg.codec) throw new Error(`basis round ${b.round} slice at ${b.offset} is ${String(codec).slice(0, 16)}, this run's factors are ${seg.codec}`);
    if (codec === 'fp32') return asFloat32(body);
    if (!seg) throw new Error(`basis round ${b.round} ${String(codec).slice(0, 16)} slice at ${b.offset} is not in this run's plan`);
    const aligned = body.byteOffset % 4 === 0 ? body : new Uint8Array(body);
    const out = new Float32Array(seg.count);
    const why = checkBody(seg, aligned);
    if (why || !decodeInto(seg, aligned, out, 0)) throw new Error(`basis round ${b.round} v${b.version} slice at ${b.offset}: ${why ?? 'decodes to NaN/Inf'}`);
    return out;
  }

  /** A slice of a broadcast; true once the round-2 broadcast of b.version is whole. */
  take(b: Basis, body: Float32Array): boolean {
    if (b.round === 1) { this.round1.take(b, body); return false; }
    return this.round2.take(b, body);
  }

  /** True when both broadcasts of `version` are whole here: the update that makes it can be applied. */
  whole(version: number): boolean { return this.round1.whole(version) && this.round2.whole(version); }

  /** The round-1 broadcast last taken (P̂ and the fp32 tensors' sums). */
  get round1Sum(): Float32Array { return this.round1.v; }

  /** The round-2 broadcast last taken (ΣQ_i). */
  get round2Sum(): Float32Array { return this.round2.v; }

  /** The replica is at `version` by full weights: Q is the first one until that version's round 2 (if any) comes. */
  restart(): void {
    this.side.setQ(this.q0);
  }

  /** The replica is at `version` and round2 is that version's ΣQ_i: the next step's Q, as every replica makes it. */
  warmStart(version: number, round2: Float32Array): void {
    this.side.setQ(nextQ(this.plan, round2, this.seed, version));
  }

  /** Round 1 of a shard: P_i (and the fp32 tensors' sums), keeping its M until round 2. */
  async factors1(step: number, shard: number, grad: ShardGradient): Promise<Float32Array> {
    if (step !== this.heldStep) {
      for (const s of this.held) this.side.abandon(s);
      this.held.clear();
      this.heldStep = step;
    }
    const out = new Float32Array(this.plan.round1Floats);
    if (this.side instanceof PowerSgdOps) await this.side.round1(shard, grad as tf.Tensor[], out);
    else this.side.round1(shard, grad as Float32Array, out);
    this.held.add(shard);
    return out;
  }

  /** Round 2 of a shard of the step making `version`: Q_i from its kept M, or from `grad` when round 1 was another worker's. */
  async factors2(version: number, shard: number, grad?: ShardGradient): Promise<Float32Array> {
    if (!this.round1.whole(version)) throw new Error(`round 2 of shard ${shard} before the round-1 broadcast of version ${version}`);
    const out = new Float32Array(this.plan.round2Floats);
    // A recomputed shard starts from its bare gradient, even if an M of it is held (a stale one).
    if (grad) this.side.abandon(shard);
    if (this.side instanceof PowerSgdOps) await this.side.round2(shard, this.round1.v, out, grad as tf.Tensor[] | undefined);
    else this.side.round2(shard, this.round1.v, out, grad as Float32Array | undefined);
    this.held.delete(shard);
    return out;
  }

  dispose(): void {
    if (this.side instanceof PowerSgdOps) this.side.dispose();
  }
}
