// The step's arithmetic and what it broadcasts: the weights (the only truth: every worker starts
// from them), the streaming reducer that sums the shards' gradients in shard order, SGD, and the
// frames that carry the result to the workers: the weights, encoded once per version, or in a
// compressed run the encoded update (with the coordinator's own error feedback, so that every
// replica applies the identical bits), plus the replica hash of every --verify-every'th version.
//
// The Step is what the rest of the server calls; the algorithm is one of three modes behind one
// interface (step-mode.ts): fp32 pipelined by segment (step-fp32.ts), fp16/int8 with the
// coordinator's error feedback (step-coded.ts), powersgd's two rounds (step-powersgd.ts). The Step
// keeps what is the same in all three: the version counter, the frame checks, the weights' chunk
// frames and the replica hash.
//
// It never sees a socket or a worker: the coordinator hands it gradient frames and sends what it
// encodes.
import { MSG, chunkRanges, encode, initParams, paramLayout, replicaHash, type ModelSpec } from '@tabtrain/shared';
import { NO_COMPRESSION, planSegments, powerSgdPlanOf, uploadBytes, type Compression, type Segment } from '@tabtrain/shared/compress';
import { startShareThread } from './apply-threads';
import { FrameCheck, type GradientSlice } from './reducer';
import { CodedStep } from './step-coded';
import { Fp32Step } from './step-fp32';
import { VersionFrames, type StepContext, type StepMode, type StepTimes } from './step-mode';
import { PowerSgdStep } from './step-powersgd';

export class Step {
  /** The only truth: every worker starts from these (the last whole step's). */
  get weights(): Float32Array { this.mode.flush(); return this.mode.weights; }
  /** A segment of the next version is ready: its weights frame, and its index in the plan. */
  onStaged: ((frame: Uint8Array, index: number) => void) | null = null;
  /** powersgd: a frame of the round in hand's broadcast is ready (stageRound): its round and its index among the round's frames. */
  onRoundStaged: ((frame: Uint8Array, round: 1 | 2, index: number) => void) | null = null;
  /** Number of SGD steps applied to the weights. */
  version = 0;
  /** The run's algorithm: it owns the weights' memory and the reducer (the step's alone), and makes the update. */
  private mode: StepMode;
  /** How gradients and updates travel now: the run's --compress, or what --compress auto chose last (switchTo). */
  private current: Compression;
  private readonly weightFrames = new VersionFrames();
  private hashCache: { version: number; hash: string } | null = null;
  private uploadBytes: number;
  private readonly layout: ReturnType<typeof paramLayout>;
  private readonly context: StepContext;

  /** `applyThreads`: powersgd's update applied by that many helper threads (0: on this thread). */
  constructor(spec: ModelSpec, seed: number, compress: Compression, private readonly onBadShard: (shard: number, why: string) => void, private readonly pipeline = true, private readonly applyThreads = 0) {
    this.layout = paramLayout(spec);
    this.context = {
      version: () => this.version,
      seed,
      staged: (frame, index) => this.onStaged?.(frame, index),
      roundStaged: (frame, round, index) => this.onRoundStaged?.(frame, round, index),
      advance: (weightFrames) => {
        this.version++;
        if (weightFrames) this.weightFrames.keep(this.version, weightFrames);
      },
      encodedWeights: () => this.encodedWeights(),
    };
    this.current = compress;
    this.uploadBytes = uploadBytes(this.layout.params, this.layout.total, compress);
    this.mode = this.build(compress);
    this.mode.weights.set(initParams(spec, seed));
  }

  /** The mode of `compress`, with fresh state: an empty sum, no error feedback, no broadcast frames. */
  private build(compress: Compression): StepMode {
    const { params, total } = this.layout;
    const psgd = powerSgdPlanOf(params, total, compress);
    const plan = psgd ? [] : planSegments(params, total, compress);
    return psgd ? new PowerSgdStep(psgd, this.context, this.onBadShard, this.applyThreads > 0 ? { count: this.applyThreads, start: startShareThread } : undefined)
      : compress.mode !== 'none' ? new CodedStep(plan, total, this.context, this.onBadShard)
        : new Fp32Step(plan, total, this.context, this.onBadShard, this.pipeline);
  }

  /** How gradients and updates travel now. */
  get compress(): Compression { return this.current; }
  /** No compression: the broadcast is the weights, train copies compare float by float. */
  get fp32(): boolean { return this.current.mode === 'none'; }
  get powerSgd(): boolean { return this.current.mode === 'powersgd'; }

  /**
   * Between steps only (--compress auto, autopilot.ts): the run goes on in `compress`, from the
   * same weights (a pending powersgd update applied first) at the same version. The new mode
   * starts from zero: its error feedback (the coordinator's downlink encoder) and every broadcast
   * of the old one are gone, so each worker needs the full weights again (Replicas.restart).
   */
  switchTo(compress: Compression): void {
    const weights = this.weights.slice();
    this.mode.dispose(); // its helper threads, if any: the weights are copied out, the update applied
    this.mode = this.build(compress);
    this.mode.weights.set(weights);
    this.current = compress;
    this.uploadBytes = uploadBytes(this.layout.params, this.layout.total, compress);
    this.hashCache = null;
  }

  /** Starts step number `step`, summed over `shards` shards, of `batch` examples at learning rate `lr`. */
  begin(shards: number, lr: number, batch: number, step = 0): void {
    this.mode.begin(shards, lr, batch, step);
  }

  /**
   * Checks a gradient frame against the run's plan (offset, codec, exact body length), or against
   * the fp32 plan for a compressed run's fp32 check copy. Throws a ProtocolError.
   */
  check(g: GradientSlice, body: Uint8Array, fp32Check: boolean): { segment: Segment; body: Uint8Array } {
    return fp32Check ? this.checkFp32(g, body) : this.mode.reducer.check(g, body);
  }

  /** Sums one checked frame of a shard's gradient (a copy that counts). */
  accept(shard: number, g: GradientSlice, body: Uint8Array): void {
    this.mode.reducer.accept(shard, g, body);
  }

  /** Holds a streamed shard's segment, summed once the segments before it are (shard order). */
  hold(shard: number, segment: Segment, body: Uint8Array): void {
    this.mode.reducer.hold(shard, segment, body);
  }

  /** Takes a shard's gradient out of the sum (its copy is redone or replaced). */
  revoke(shard: number): void {
    this.mode.reducer.revoke(shard);
  }

  /** Time spent summing segments as they arrived, this step (or round). */
  get foldMs(): number { return this.mode.reducer.foldMs; }

  /**
   * Checks an fp32 gradient frame against the fp32 plan (a compressed run's probation check copy,
   * which is compared, never summed). Throws a ProtocolError like the reducer's check.
   */
  private checkFp32(g: GradientSlice, body: Uint8Array): { segment: Segment; body: Uint8Array } {
    this.fp32Checker ??= new FrameCheck(planSegments(this.layout.params, this.layout.total, NO_COMPRESSION), this.layout.total);
    return this.fp32Checker.check(g, body);
  }
  private fp32Checker: FrameCheck | null = null;

  /**
   * A train copy's whole gradient, decoded to floats as the reducer would sum it (its frames were
   * checked on arrival): for the trusted-reference check (reference.ts). Null in powersgd runs,
   * whose copies are factor vectors, and for a copy whose frames do not cover the plan.
   */
  decodeCopy(frames: { g: GradientSlice; body: Uint8Array }[]): Float32Array | null {
    return this.mode.decodeCopy(frames);
  }

  /** powersgd: the round in hand (1 outside powersgd runs). */
  get round(): 1 | 2 { return this.mode.round; }

  /** Floats a copy of a train shard sends: the gradient's, or the round in hand's factor vector (what the round's reducer sums). */
  get copyFloats(): number { return this.mode.reducer.total; }

  /**
   * powersgd: round 1 is summed. Finishes its broadcast (P̂ and the fp32 tensors' sums, encoded
   * once for every worker; most of it went out already, see step-powersgd.ts) and starts round 2
   * over `shards` shards. Returns the whole broadcast's frames, in order.
   */
  endRound1(shards: number): Uint8Array[] {
    return this.mode.endRound1(shards);
  }

  /** Frames of the update that makes the current version (a compressed run's, or powersgd's round 2): a worker sent them all has taken the step. */
  get updateFrameCount(): number { return this.mode.updateFrameCount; }

  /** powersgd: the round-1 broadcast of the step making version + 1 (during round 2), or of the last step. */
  get basisFrames(): Uint8Array[] { return this.mode.basisFrames; }

  /**
   * The step's sum must change after segments were applied (an implausible or non-finite shard):
   * the pipeline is off for this step, which is then applied whole. True if frames went out.
   */
  callOff(): boolean {
    return this.mode.callOff();
  }

  /** Segments of the next version sent so far in this step (all of them once a pipelined step is applied). */
  get staged(): number { return this.mode.staged; }

  get segments(): number { return this.mode.segments; }

  /** Whether steps are applied and broadcast segment by segment. */
  get pipelined(): boolean { return this.mode.pipelined; }

  /** Bytes of one worker's upload per step in this run (gradient frames, or both rounds' factors). */
  get gradientBytes(): number { return this.uploadBytes; }

  /**
   * Applies the summed step (every shard must be in the sum): w ← w − lr · Σ / batch, with the
   * decoded update in compressed runs (powersgd: P̂ (ΣQ_i)ᵀ, held until flush()), then version + 1.
   * Returns where the time went, in ms.
   */
  apply(lr: number, batch: number): StepTimes {
    return this.mode.apply(lr, batch);
  }

  /** powersgd: applies the update held back by apply(). Returns the ms it took (0: none pending). */
  flush(): number {
    return this.mode.flush();
  }

  /** powersgd: starts applying the held update; with --apply-threads it runs beside the event loop, and the weights' readers (this.weights) wait for it. */
  release(): void {
    this.mode.release();
  }

  /** powersgd: how long the last flush took. */
  get flushedMs(): number { return this.mode.flushedMs; }

  /** Ends the mode's helper threads (powersgd with --apply-threads). */
  dispose(): void {
    this.mode.dispose();
  }

  /**
   * What a worker holding `version` needs to be at the current one: nothing, the update, or the
   * full weights. In a powersgd run the update is the step's two broadcasts (round 1's only if the
   * worker was not sent it: `basis` is the version whose round 1 it has), and full weights come
   * with the last round-2 sum, from which the worker's next Q is made.
   */
  framesFor(version: number, basis = -1): Uint8Array[] {
    if (version === this.version) return [];
    return this.mode.framesFor(version, basis);
  }

  /** The weights as chunk frames, encoded once per version and shared by every worker. */
  encodedWeights(): Uint8Array[] {
    if (!this.weightFrames.has(this.version)) {
      const weights = this.weights, total = weights.length;
      this.weightFrames.keep(this.version, chunkRanges(total).map(([o, e]) => encode({ type: MSG.weights, version: this.version, offset: o, total }, weights.subarray(o, e))));
    }
    return this.weightFrames.of(this.version);
  }

  /** The weights' replicaHash on every `every`-th version of a compressed run (computed once per version). */
  checkHash(every: number): string | undefined {
    if (this.fp32 || every <= 0 || this.version === 0 || this.version % every !== 0) return undefined;
    if (this.hashCache?.version !== this.version) this.hashCache = { version: this.version, hash: replicaHash(this.weights) };
    return this.hashCache.hash;
  }

  /** Continues from a checkpoint's weights at `version`. */
  restore(weights: Float32Array, version: number): void {
    if (weights.length !== this.mode.weights.length) throw new Error(`checkpoint has ${weights.length} weights, model needs ${this.mode.weights.length}`);
    this.mode.restore(weights);
    this.version = version;
    this.weightFrames.clear();
  }
}
