// An fp32 step, pipelined by segment: as soon as every shard's part of segment k is summed (in
// shard order, verified copies only once they agreed), SGD makes segment k of the next version in
// the second weights region and its frame goes out, while later segments are still arriving, so the
// up- and down-links work at once. The bits are those of applying the whole step at its end (SGD
// is elementwise). The weights in use stay the last whole step's until the step is applied, so a
// stop or a crash mid-step never sees half a step; an applied segment is frozen in the sum (a
// recomputed shard skips it), and a step whose sum must change after all (an implausible gradient,
// a non-finite one) calls the pipeline off and is applied whole. Without --pipeline every step is
// applied whole and its weights encoded once for every worker.
import { MSG, encode } from '@tabtrain/shared';
import type { Segment } from '@tabtrain/shared/compress';
import { WholeGradientStep, finishTimed, type StepContext, type StepTimes } from './step-mode';

export class Fp32Step extends WholeGradientStep {
  /** Pipelined runs: where the next version is made, segment by segment (the other region). */
  private next: Float32Array | null;
  /** This step's pipeline: still on, segments applied so far, their frames, the step's SGD arguments. */
  private pipe = { on: false, staged: 0, frames: [] as Uint8Array[], lr: 0, batch: 0 };

  constructor(plan: Segment[], total: number, ctx: StepContext, onBadShard: (shard: number, why: string) => void, pipeline: boolean) {
    super(plan, total, ctx, onBadShard);
    this.next = pipeline ? this.reducer.regions[1] : null;
    if (pipeline) this.reducer.onSegmentDone = () => this.stage();
  }

  override get pipelined(): boolean { return this.next !== null; }
  override get staged(): number { return this.pipe.on ? this.pipe.staged : 0; }

  override begin(shards: number, lr: number, batch: number): void {
    this.pipe = { on: this.next !== null, staged: 0, frames: [], lr, batch };
    this.reducer.begin(shards);
  }

  /** Applies, in plan order, every segment whose sum is complete: SGD into `next`, frozen, its frame sent. */
  private stage(): void {
    const p = this.pipe;
    while (p.on && p.staged < this.plan.length && this.reducer.done(this.plan[p.staged])) {
      const s = this.plan[p.staged];
      const w = this.next!.subarray(s.offset, s.offset + s.count);
      w.set(this.current.subarray(s.offset, s.offset + s.count));
      this.reducer.sgd(w, this.reducer.sum.subarray(s.offset, s.offset + s.count), p.lr, p.batch);
      this.reducer.freeze(s);
      const frame = encode({ type: MSG.weights, version: this.ctx.version() + 1, offset: s.offset, total: this.current.length }, w);
      p.frames.push(frame);
      this.ctx.staged(frame, p.staged++);
    }
  }

  /** The step's sum must change after segments were applied: the pipeline is off for this step, which is then applied whole. True if frames went out. */
  override callOff(): boolean {
    const sent = this.pipe.on && this.pipe.staged > 0;
    this.pipe.on = false;
    this.reducer.thaw();
    return sent;
  }

  apply(lr: number, batch: number): StepTimes {
    const { sum, aggregateMs, at } = finishTimed(this.reducer);
    if (this.pipe.on) {
      this.stage(); // every segment is complete now; any not yet applied is applied here
      [this.current, this.next] = [this.next!, this.current];
      this.ctx.advance(this.pipe.frames);
      return { aggregateMs, applyMs: performance.now() - at, broadcastMs: 0 };
    }
    this.reducer.sgd(this.current, sum, lr, batch);
    this.ctx.advance();
    const applied = performance.now();
    this.ctx.encodedWeights(); // fp32 runs broadcast the weights: encoded once for every worker
    return { aggregateMs, applyMs: applied - at, broadcastMs: performance.now() - applied };
  }
}
