// An fp16/int8 step: the shards' gradients arrive encoded and are summed decoded; the sum is then
// encoded once more, with the coordinator's own error feedback (the downlink encoder), and that
// encoding is both what the coordinator applies and what it broadcasts, so every replica applies
// the identical update (decoded by the same code) and stays bit-equal. Full weights are encoded
// only for a worker more than one version behind.
import { GradientEncoder, decodeInto, updateFrame, type Segment } from '@tabtrain/shared/compress';
import { VersionFrames, WholeGradientStep, finishTimed, type StepContext, type StepTimes } from './step-mode';

export class CodedStep extends WholeGradientStep {
  private readonly downlink: GradientEncoder;
  /** The decoded update of the last step (what SGD applied): the arena's second region. */
  private readonly applied: Float32Array;
  /** The update frames that make the current version. */
  private readonly update = new VersionFrames();

  constructor(plan: Segment[], total: number, ctx: StepContext, onBadShard: (shard: number, why: string) => void) {
    super(plan, total, ctx, onBadShard);
    this.downlink = new GradientEncoder(plan, total);
    this.applied = this.reducer.regions[1];
  }

  override get updateFrameCount(): number { return this.update.of(this.ctx.version()).length; }

  apply(lr: number, batch: number): StepTimes {
    const { sum, aggregateMs, at } = finishTimed(this.reducer);
    this.encodeUpdate(sum, batch);
    const encoded = performance.now();
    this.reducer.sgd(this.current, this.applied, lr, batch);
    this.ctx.advance();
    return { aggregateMs, applyMs: performance.now() - encoded, broadcastMs: encoded - at };
  }

  /** Encodes the gradient sum as version+1's update frames (one encode for every worker) and decodes them into `applied`, exactly as each worker will. */
  private encodeUpdate(sum: Float32Array, batch: number): void {
    const version = this.ctx.version() + 1;
    const frames = this.downlink.plan.map((s) => {
      const { frame, body } = updateFrame(s, version, this.current.length, batch);
      this.downlink.encode(s, sum, body);
      if (!decodeInto(s, body, this.applied)) throw new Error(`update of step ${version} decoded to NaN/Inf at segment ${s.index}`);
      return frame;
    });
    this.update.keep(version, frames);
  }

  /** One version behind: the (small) update; otherwise the full weights. */
  override framesFor(version: number): Uint8Array[] {
    const update = version === this.ctx.version() - 1 ? this.update.of(this.ctx.version()) : [];
    return update.length ? update : this.ctx.encodedWeights();
  }

  override restore(weights: Float32Array): void {
    super.restore(weights);
    this.update.clear();
  }
}
