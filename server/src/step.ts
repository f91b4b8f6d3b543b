// The step's arithmetic and what it broadcasts: the weights (the only truth: every worker starts
// from them), the streaming reducer that sums the shards' gradients in shard order, SGD, and the
// frames that carry the result to the workers: the weights, encoded once per version, or in a
// compressed run the encoded update (with the coordinator's own error feedback, so that every
// replica applies the identical bits), plus the replica hash of every --verify-every'th version.
//
// fp32 runs are pipelined by segment: as soon as every shard's part of segment k is summed (in
// shard order, verified copies only once they agreed), SGD makes segment k of the next version
// in a second weights region and its frame goes out, while later segments are still arriving, so
// the up- and down-links work at once. The bits are those of applying the whole step at its end
// (SGD is elementwise). The weights in use stay the last whole step's until the step is applied,
// so a stop or a crash mid-step never sees half a step; an applied segment is frozen in the sum
// (a recomputed shard skips it), and a step whose sum must change after all (an implausible
// gradient, a non-finite one) calls the pipeline off and is applied whole, as compressed runs are.
//
// powersgd runs take two rounds (powersgd.ts): a reducer per round sums the workers' factor
// vectors in shard order; the sum of round 1 is orthonormalised into P̂ and broadcast (`basis`
// round 1), and the sum of round 2 (ΣQ_i) is the step's update (`basis` round 2): every replica
// applies P̂ (ΣQ_i)ᵀ with the same kernel, and warm-starts its next Q from it. Both broadcasts go
// out matrix by matrix (`stageRound`): once every shard's factor of a matrix is summed, its P̂
// (or ΣQ) is final and sent, while later matrices are still arriving, so the coordinator's link
// carries both directions at once. A sent part is frozen in the sum: a shard redone after its
// worker was lost (or lied with a non-finite factor) skips it, as a pipelined fp32 step does.
//
// It never sees a socket or a worker: the coordinator hands it gradient frames and sends what it
// encodes.
import { MSG, chunkRanges, encode, initParams, paramLayout, replicaHash, type ModelSpec } from '@tabtrain/shared';
import {
  GradientEncoder, NO_COMPRESSION, decodeInto, planSegments, powerSgdPlanOf, roundSegments, updateFrame, uploadBytes, type Compression, type Segment,
} from '@tabtrain/shared/compress';
import { LowRankKernel, applyPowerSgd, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { orthonormaliseP } from '@tabtrain/shared/powersgd-basis';
import { FrameCheck, StreamReducer, type GradientSlice } from './reducer';

type Frames = { version: number; frames: Uint8Array[] };

/** A piece of a round's broadcast that is final as a whole: one matrix's factors, or the fp32 tensors' sums. */
interface RoundUnit { segs: Segment[]; matrix: number | null }

/** A powersgd run's state between and across its rounds. */
interface Rounds {
  plan: PowerSgdPlan;
  /** The sum of each round's factor vectors, in shard order. */
  reducers: [StreamReducer, StreamReducer];
  /** The round in hand. */
  round: 1 | 2;
  /** Per round, what its broadcast is made of, in order: a matrix's factor segments (round 1: with the matrix, to orthonormalise), or the fp32 tensors' sums. */
  units: [RoundUnit[], RoundUnit[]];
  /** Units of the round in hand broadcast so far, their frames in order, and the step's number and batch (the frames carry it). */
  staged: number;
  frames: Uint8Array[];
  step: number;
  batch: number;
  /** P̂ and the fp32 tensors' sums of the step in hand (after round 1), or of the last step. */
  basis: Float32Array;
  /** The round-1 broadcast of the step that made `version` (or is making version + 1). */
  basisFrames: Frames | null;
  /**
   * The last step's update, not yet applied to the weights: applying P̂ (ΣQ_i)ᵀ touches every
   * weight (~80 ms for AlexNet on one core here), and nothing in the next step needs the weights
   * until its round 2 is summed, so the coordinator applies it once the next step's assigns are
   * out (`flush`, while the workers compute), or earlier when anything reads the weights.
   */
  pending: { basis: Float32Array; update: Float32Array; lr: number; batch: number } | null;
}

export class Step {
  /** The only truth: every worker starts from these (the last whole step's). */
  get weights(): Float32Array { this.flush(); return this.current; }
  private current: Float32Array;
  /** Pipelined runs: where the next version is made, segment by segment (the other region). */
  private next: Float32Array | null = null;
  private readonly plan: Segment[];
  /** This step's pipeline: still on, segments applied so far, their frames, the step's SGD arguments. */
  private pipe = { on: false, staged: 0, frames: [] as Uint8Array[], lr: 0, batch: 0 };
  /** A segment of the next version is ready: its weights frame, and its index in the plan. */
  onStaged: ((frame: Uint8Array, index: number) => void) | null = null;
  /** powersgd: a frame of the round in hand's broadcast is ready (stageRound): its round and its index among the round's frames. */
  onRoundStaged: ((frame: Uint8Array, round: 1 | 2, index: number) => void) | null = null;
  /** Number of SGD steps applied to the weights. */
  version = 0;
  /** Sums gradient segments in shard order as they arrive (reducer.ts); in a powersgd run, the round in hand's factors. The step's alone. */
  private reducer: StreamReducer;
  /**
   * Compressed runs: the step's gradient sum is encoded once more, with the coordinator's own error
   * feedback, and that encoding is both what the coordinator applies and what it broadcasts, so
   * every replica applies the identical update (decoded by the same code) and stays bit-equal.
   */
  private readonly downlink: GradientEncoder | null = null;
  /** The decoded update of the last step (what SGD applied). */
  private readonly applied: Float32Array | null = null;
  private weightFrames: Frames | null = null;
  private updateFrames: Frames | null = null;
  private hashCache: { version: number; hash: string } | null = null;
  private readonly rounds: Rounds | null = null;
  private readonly kernel: LowRankKernel | null = null;
  private readonly compressed: boolean;
  private readonly uploadBytes: number;

  private readonly layout: ReturnType<typeof paramLayout>;

  constructor(spec: ModelSpec, private readonly seed: number, compress: Compression, onBadShard: (shard: number, why: string) => void, pipeline = true) {
    this.layout = paramLayout(spec);
    const { params, total } = this.layout;
    this.compressed = compress.mode !== 'none';
    this.uploadBytes = uploadBytes(params, total, compress);
    const psgd = powerSgdPlanOf(params, total, compress);
    if (psgd) {
      const reducers = ([1, 2] as const).map((round) => {
        const r = new StreamReducer(roundSegments(psgd, round), round === 1 ? psgd.round1Floats : psgd.round2Floats, onBadShard);
        r.onSegmentDone = () => this.stageRound();
        return r;
      }) as [StreamReducer, StreamReducer];
      this.rounds = {
        plan: psgd, reducers, round: 1, units: [roundUnits(psgd, reducers[0].plan, 1), roundUnits(psgd, reducers[1].plan, 2)],
        staged: 0, frames: [], step: 0, batch: 1, basis: new Float32Array(psgd.round1Floats), basisFrames: null, pending: null,
      };
      this.plan = [];
      this.reducer = this.rounds.reducers[0];
      // The weights live in the update kernel's memory: P̂Qᵀ is applied there in place.
      this.kernel = LowRankKernel.withWeights(psgd);
      this.current = this.kernel?.weights ?? new Float32Array(total);
      this.current.set(initParams(spec, seed));
      return;
    }
    const plan = planSegments(params, total, compress);
    this.plan = plan;
    // The weights and a second region (the next version's, or a compressed run's decoded
    // update) live beside the sum, for SIMD SGD.
    this.reducer = new StreamReducer(plan, total, onBadShard, 2);
    this.current = this.reducer.regions[0];
    this.current.set(initParams(spec, seed));
    if (this.compressed) {
      this.downlink = new GradientEncoder(plan, total);
      this.applied = this.reducer.regions[1];
    } else if (pipeline) {
      this.next = this.reducer.regions[1];
      this.reducer.onSegmentDone = () => this.stage();
    }
  }

  /** Starts step number `step`, summed over `shards` shards, of `batch` examples at learning rate `lr`. */
  begin(shards: number, lr: number, batch: number, step = 0): void {
    this.pipe = { on: this.next !== null, staged: 0, frames: [], lr, batch };
    if (this.rounds) {
      Object.assign(this.rounds, { round: 1, staged: 0, frames: [], step, batch });
      this.reducer = this.rounds.reducers[0];
    }
    this.reducer.begin(shards);
  }

  /**
   * Checks a gradient frame against the run's plan (offset, codec, exact body length), or against
   * the fp32 plan for a compressed run's fp32 check copy. Throws a ProtocolError.
   */
  check(g: GradientSlice, body: Uint8Array, fp32Check: boolean): { segment: Segment; body: Uint8Array } {
    return fp32Check ? this.checkFp32(g, body) : this.reducer.check(g, body);
  }

  /** Sums one checked frame of a shard's gradient (a copy that counts). */
  accept(shard: number, g: GradientSlice, body: Uint8Array): void {
    this.reducer.accept(shard, g, body);
  }

  /** Holds a streamed shard's segment, summed once the segments before it are (shard order). */
  hold(shard: number, segment: Segment, body: Uint8Array): void {
    this.reducer.hold(shard, segment, body);
  }

  /** Takes a shard's gradient out of the sum (its copy is redone or replaced). */
  revoke(shard: number): void {
    this.reducer.revoke(shard);
  }

  /** Time spent summing segments as they arrived, this step (or round). */
  get foldMs(): number { return this.reducer.foldMs; }

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
    if (this.rounds || frames.length !== this.plan.length) return null;
    const out = new Float32Array(this.current.length);
    for (const f of frames) if (!decodeInto(this.reducer.check(f.g, f.body).segment, f.body, out)) return null;
    return out;
  }

  /** powersgd: the round in hand (1 outside powersgd runs). */
  get round(): 1 | 2 { return this.rounds?.round ?? 1; }

  /** Floats a copy of a train shard sends: the gradient's, or the round in hand's factor vector. */
  get copyFloats(): number {
    if (!this.rounds) return this.current.length;
    return this.rounds.round === 1 ? this.rounds.plan.round1Floats : this.rounds.plan.round2Floats;
  }

  /**
   * powersgd: round 1 is summed. Finishes its broadcast (P̂ and the fp32 tensors' sums, encoded
   * once for every worker; most of it went out already, see stageRound) and starts round 2 over
   * `shards` shards. Returns the whole broadcast's frames, in order.
   */
  endRound1(shards: number): Uint8Array[] {
    const r = this.rounds!;
    r.reducers[0].finish(); // throws unless every shard is summed
    this.stageRound();
    r.basisFrames = { version: this.version + 1, frames: r.frames };
    Object.assign(r, { round: 2, staged: 0, frames: [] });
    this.reducer = r.reducers[1];
    this.reducer.begin(shards);
    return r.basisFrames.frames;
  }

  /**
   * powersgd: broadcasts, in order, every unit of the round in hand whose sum is complete: round
   * 1's matrix orthonormalised into its P̂ (its seed is the step's, so the bits are those of doing
   * all at the round's end), round 2's ΣQ as summed. Its segments are frozen (final), and each
   * frame goes to onRoundStaged and into the round's frames.
   */
  private stageRound(): void {
    const r = this.rounds!;
    const reducer = r.reducers[r.round - 1];
    const units = r.units[r.round - 1];
    while (r.staged < units.length && units[r.staged].segs.every((s) => reducer.done(s))) {
      const u = units[r.staged++];
      let v = reducer.sum;
      if (r.round === 1) {
        const from = u.segs[0].offset, last = u.segs[u.segs.length - 1];
        r.basis.set(reducer.sum.subarray(from, last.offset + last.count), from);
        if (u.matrix !== null) orthonormaliseP(r.plan, r.basis, this.seed, r.step, u.matrix);
        v = r.basis;
      }
      for (const s of u.segs) {
        reducer.freeze(s);
        const frame = encode({ type: MSG.basis, version: this.version + 1, round: r.round, offset: s.offset, total: v.length, batch: r.batch }, v.subarray(s.offset, s.offset + s.count));
        r.frames.push(frame);
        this.onRoundStaged?.(frame, r.round, r.frames.length - 1);
      }
    }
  }

  /** Frames of the update that makes the current version (a compressed run's, or powersgd's round 2): a worker sent them all has taken the step. */
  get updateFrameCount(): number {
    return this.updateFrames?.version === this.version ? this.updateFrames.frames.length : 0;
  }

  /** powersgd: the round-1 broadcast of the step making version + 1 (during round 2), or of the last step. */
  get basisFrames(): Uint8Array[] {
    return this.rounds?.basisFrames?.frames ?? [];
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
      const frame = encode({ type: MSG.weights, version: this.version + 1, offset: s.offset, total: this.current.length }, w);
      p.frames.push(frame);
      this.onStaged?.(frame, p.staged++);
    }
  }

  /**
   * The step's sum must change after segments were applied (an implausible or non-finite shard):
   * the pipeline is off for this step, which is then applied whole. True if frames went out.
   */
  callOff(): boolean {
    // powersgd: a broadcast part stays final (stageRound), so its segments stay frozen.
    if (this.rounds) return false;
    const sent = this.pipe.on && this.pipe.staged > 0;
    this.pipe.on = false;
    this.reducer.thaw();
    return sent;
  }

  /** Segments of the next version sent so far in this step (all of them once a pipelined step is applied). */
  get staged(): number {
    return this.pipe.on ? this.pipe.staged : 0;
  }

  get segments(): number {
    return this.plan.length;
  }

  /** Whether steps are applied and broadcast segment by segment. */
  get pipelined(): boolean {
    return this.next !== null;
  }

  /** Bytes of one worker's upload per step in this run (gradient frames, or both rounds' factors). */
  get gradientBytes(): number {
    return this.uploadBytes;
  }

  /**
   * Applies the summed step (reducer.finish() first): w ← w − lr · Σ / batch, with the decoded
   * update in compressed runs, then version + 1. Returns where the time went, in ms.
   */
  apply(lr: number, batch: number): { aggregateMs: number; applyMs: number; broadcastMs: number } {
    const t1 = performance.now();
    const sum = this.reducer.finish(); // already complete: segments were folded as they came
    const t2 = performance.now();
    if (this.rounds) {
      const r = this.rounds;
      const applyMs = this.flush(); // the step before's, if nothing has applied it yet
      r.pending = { basis: r.basis.slice(), update: sum.slice(), lr, batch };
      const t3 = performance.now();
      this.stageRound(); // what of ΣQ_i has not gone out yet
      this.version++;
      this.updateFrames = { version: this.version, frames: r.frames };
      return { aggregateMs: t2 - t1, applyMs, broadcastMs: performance.now() - t3 };
    }
    if (this.pipe.on) {
      this.stage(); // every segment is complete now; any not yet applied is applied here
      [this.current, this.next] = [this.next!, this.current];
      this.version++;
      this.weightFrames = { version: this.version, frames: this.pipe.frames };
      return { aggregateMs: t2 - t1, applyMs: performance.now() - t2, broadcastMs: 0 };
    }
    if (this.downlink) this.encodeUpdate(sum, batch);
    const t2b = performance.now();
    this.reducer.sgd(this.current, this.applied ?? sum, lr, batch);
    this.version++;
    const t3 = performance.now();
    // fp32 runs broadcast the weights; compressed ones encode full weights only for a joiner.
    if (!this.downlink) this.encodedWeights();
    const t4 = performance.now();
    return { aggregateMs: t2 - t1, applyMs: t3 - t2b, broadcastMs: t4 - t3 + (t2b - t2) };
  }

  /** powersgd: applies the update held back by apply() (see Rounds.pending). Returns the ms it took (0: none pending). */
  flush(): number {
    const p = this.rounds?.pending;
    if (!p) return 0;
    const t0 = performance.now();
    applyPowerSgd(this.rounds!.plan, this.current, p.basis, p.update, p.lr, p.batch, this.kernel);
    this.rounds!.pending = null;
    this.flushedMs = performance.now() - t0;
    return this.flushedMs;
  }

  /** powersgd: how long the last flush took. */
  flushedMs = 0;

  /**
   * What a worker holding `version` needs to be at the current one: nothing, the update, or the
   * full weights. In a powersgd run the update is the step's two broadcasts (round 1's only if the
   * worker was not sent it: `basis` is the version whose round 1 it has), and full weights come
   * with the last round-2 sum, from which the worker's next Q is made.
   */
  framesFor(version: number, basis = -1): Uint8Array[] {
    if (version === this.version) return [];
    if (this.rounds) {
      const update = this.updateFrames?.version === this.version ? this.updateFrames.frames : [];
      if (version === this.version - 1 && update.length) return basis === this.version ? update : [...this.basisFrames, ...update];
      return [...this.encodedWeights(), ...update];
    }
    // One version behind in a compressed run: the (small) update; otherwise the full weights.
    if (version === this.version - 1 && this.updateFrames?.version === this.version) return this.updateFrames.frames;
    return this.encodedWeights();
  }

  /** The weights as chunk frames, encoded once per version and shared by every worker. */
  encodedWeights(): Uint8Array[] {
    if (this.weightFrames?.version !== this.version) {
      const total = this.weights.length;
      const frames = chunkRanges(total).map(([o, e]) => encode({ type: MSG.weights, version: this.version, offset: o, total }, this.weights.subarray(o, e)));
      this.weightFrames = { version: this.version, frames };
    }
    return this.weightFrames.frames;
  }

  /** The weights' replicaHash on every `every`-th version of a compressed run (computed once per version). */
  checkHash(every: number): string | undefined {
    if (!this.compressed || every <= 0 || this.version === 0 || this.version % every !== 0) return undefined;
    if (this.hashCache?.version !== this.version) this.hashCache = { version: this.version, hash: replicaHash(this.weights) };
    return this.hashCache.hash;
  }

  /**
   * Compressed runs: encodes the gradient sum as version+1's update frames (one encode for every
   * worker) and decodes them into `applied`, exactly as each worker will.
   */
  private encodeUpdate(sum: Float32Array, batch: number): void {
    const version = this.version + 1;
    const frames = this.downlink!.plan.map((s) => {
      const { frame, body } = updateFrame(s, version, this.weights.length, batch);
      this.downlink!.encode(s, sum, body);
      if (!decodeInto(s, body, this.applied!)) throw new Error(`update of step ${version} decoded to NaN/Inf at segment ${s.index}`);
      return frame;
    });
    this.updateFrames = { version, frames };
  }

  /** Continues from a checkpoint's weights at `version`. */
  restore(weights: Float32Array, version: number): void {
    if (weights.length !== this.current.length) throw new Error(`checkpoint has ${weights.length} weights, model needs ${this.current.length}`);
    if (this.rounds) this.rounds.pending = null;
    this.current.set(weights);
    this.version = version;
    this.weightFrames = null;
    this.updateFrames = null;
    if (this.rounds) this.rounds.basisFrames = null;
  }
}

/** A round's segments grouped into what is final together: each matrix's factors (several segments only past CHUNK_FLOATS), then round 1's fp32 tensors. */
function roundUnits(plan: PowerSgdPlan, segs: Segment[], round: 1 | 2): RoundUnit[] {
  const units: RoundUnit[] = plan.matrices.map((m, i) => {
    const from = round === 1 ? m.pAt : m.qAt;
    const to = from + plan.rank * (round === 1 ? m.rows : m.cols);
    return { segs: segs.filter((s) => s.offset >= from && s.offset < to), matrix: round === 1 ? i : null };
  });
  const rest = segs.filter((s) => !units.some((u) => u.segs.includes(s)));
  if (rest.length) units.push({ segs: rest, matrix: null });
  return units;
}
