// What the step's three algorithms have in common, and the one interface the Step (step.ts) drives
// them through, as PyTorch DDP keeps its reducer apart from its comm hooks:
//   step-fp32.ts      fp32, pipelined by segment (SGD into a second region as sums complete)
//   step-coded.ts     fp16/int8: the sum encoded once more with the coordinator's error feedback
//   step-powersgd.ts  two rounds of factor vectors, the update flushed after the next assigns
// A mode owns where the weights live and the reducer of the round in hand; the Step owns the
// version counter, the frame checks, the weights' chunk frames and the replica hash, and hands a
// mode only what it needs of them (StepContext).
import { decodeInto, type Segment } from '@tabtrain/shared/compress';
import { StreamReducer, type GradientSlice } from './reducer';

/** Where a step's time went, in ms (the step record's aggregateMs, applyMs, broadcastMs). */
export interface StepTimes { aggregateMs: number; applyMs: number; broadcastMs: number }

/** What a mode may read or do of the Step around it. */
export interface StepContext {
  /** Steps applied so far: a frame of the step in hand carries version() + 1. */
  version(): number;
  /** The run's seed (powersgd orthonormalises with it). */
  readonly seed: number;
  /** A segment of the next version's weights is ready (Step.onStaged). */
  staged(frame: Uint8Array, index: number): void;
  /** powersgd: a frame of the round in hand's broadcast is ready (Step.onRoundStaged). */
  roundStaged(frame: Uint8Array, round: 1 | 2, index: number): void;
  /** The step is applied: version + 1. `weightFrames`: the new version's weights, already encoded (a pipelined step's segments). */
  advance(weightFrames?: Uint8Array[]): void;
  /** The current version's weights as chunk frames, encoded once per version (a pending update applied first). */
  encodedWeights(): Uint8Array[];
}

/** One step algorithm: the Step's public methods of the same names say what each member means. */
export interface StepMode {
  // The state: where the weights live, and the sum of the round in hand.
  /** The weights in use, as they are (a powersgd update may be pending: flush()). */
  readonly weights: Float32Array;
  /** The Step checks, folds and revokes frames through it; its length is what a copy sends. */
  readonly reducer: StreamReducer;
  // The step, in order.
  begin(shards: number, lr: number, batch: number, step: number): void;
  decodeCopy(frames: { g: GradientSlice; body: Uint8Array }[]): Float32Array | null;
  readonly round: 1 | 2;
  endRound1(shards: number): Uint8Array[];
  callOff(): boolean;
  apply(lr: number, batch: number): StepTimes;
  flush(): number;
  /** Starts what flush() finishes, without waiting where threads do it (powersgd); true if something was started. */
  release(): boolean;
  readonly flushedMs: number;
  // What goes to the workers.
  /** What a worker holding `version` (and `basis`'s round 1) needs; the Step answers the current version itself. */
  framesFor(version: number, basis: number): Uint8Array[];
  readonly updateFrameCount: number;
  readonly basisFrames: Uint8Array[];
  readonly pipelined: boolean;
  readonly segments: number;
  readonly staged: number;
  /** Takes a checkpoint's weights (their length checked) and forgets every frame and pending update. */
  restore(weights: Float32Array): void;
  /** Ends any threads of its own. */
  dispose(): void;
}

/** One version's broadcast frames, encoded once and shared by every worker. */
export class VersionFrames {
  private held: { version: number; frames: Uint8Array[] } | null = null;
  keep(version: number, frames: Uint8Array[]): void { this.held = { version, frames }; }
  has(version: number): boolean { return this.held?.version === version; }
  /** The frames if they make `version`, else none. */
  of(version: number): Uint8Array[] { return this.has(version) ? this.held!.frames : []; }
  /** Whatever is held, of any version. */
  get last(): Uint8Array[] { return this.held?.frames ?? []; }
  clear(): void { this.held = null; }
}

/** Ends the round's sum (complete already: segments were folded as they came) and times it. */
export function finishTimed(reducer: StreamReducer): { sum: Float32Array; aggregateMs: number; at: number } {
  const t0 = performance.now();
  const sum = reducer.finish(); // throws unless every shard is summed
  const at = performance.now();
  return { sum, aggregateMs: at - t0, at };
}

/**
 * fp32 and fp16/int8 runs: one round, the whole gradient summed by a plan of segments, its SGD
 * SIMD in the reducer's arena. The weights and a second region (the next version's, or a coded
 * run's decoded update) live beside the sum there.
 */
export abstract class WholeGradientStep implements StepMode {
  readonly reducer: StreamReducer;
  /** The weights in use (region 0, or region 1 after a pipelined step swapped them). */
  protected current: Float32Array;
  readonly round = 1;
  readonly basisFrames: Uint8Array[] = [];
  readonly flushedMs = 0;

  constructor(protected readonly plan: Segment[], total: number, protected readonly ctx: StepContext, onBadShard: (shard: number, why: string) => void) {
    this.reducer = new StreamReducer(plan, total, onBadShard, 2);
    this.current = this.reducer.regions[0];
  }

  get weights(): Float32Array { return this.current; }
  get segments(): number { return this.plan.length; }
  get staged(): number { return 0; }
  get pipelined(): boolean { return false; }
  get updateFrameCount(): number { return 0; }

  begin(shards: number, _lr: number, _batch: number, _step: number): void {
    this.reducer.begin(shards);
  }

  decodeCopy(frames: { g: GradientSlice; body: Uint8Array }[]): Float32Array | null {
    if (frames.length !== this.plan.length) return null;
    const out = new Float32Array(this.current.length);
    for (const f of frames) if (!decodeInto(this.reducer.check(f.g, f.body).segment, f.body, out)) return null;
    return out;
  }

  endRound1(): Uint8Array[] { throw new Error('endRound1: this run has one round (not powersgd)'); }

  /** Nothing was applied before the step's end: there is nothing to call off. */
  callOff(): boolean { return false; }

  abstract apply(lr: number, batch: number): StepTimes;

  flush(): number { return 0; }
  release(): boolean { return false; }
  dispose(): void {}

  framesFor(_version: number, _basis: number): Uint8Array[] { return this.ctx.encodedWeights(); }

  restore(weights: Float32Array): void { this.current.set(weights); }
}
