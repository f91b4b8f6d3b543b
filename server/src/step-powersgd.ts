// The coordinator's side of a powersgd step (powersgd.ts; docs/ARCHITECTURE.md, "A powersgd step:
// two rounds"), in the order it happens:
//   round 1 summed  a reducer sums the workers' P_i = M Q in shard order
//   P̂               each matrix's sum orthonormalised and broadcast (`basis` round 1) as soon as every
//                   shard's P of it is in, while later matrices still arrive (stageRound)
//   round 2         a second reducer sums Q_i = Mᵀ P̂; each matrix's ΣQ broadcast (`basis` round 2) as summed
//   update          the step's update is P̂ (ΣQ_i)ᵀ: every replica applies it with the same kernel
//                   and warm-starts its next Q from ΣQ_i
//   flush           the coordinator applies it once the next step's assigns are out: in helper
//                   threads (low-rank-pool.ts) where it has them, so that its event loop goes on
//                   receiving while the weights are updated; whatever reads the weights waits
// A sent part is frozen in its sum: a shard redone after its worker was lost (or lied with a
// non-finite factor) skips it, as a pipelined fp32 step does, so every replica applies what it was sent.
import { MSG, encode, type Basis } from '@tabtrain/shared';
import { encodeFactors, roundSegments, type Segment } from '@tabtrain/shared/compress';
import { LowRankPool, type StartShare } from '@tabtrain/shared/low-rank-pool';
import { LowRankKernel, applyPowerSgd, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { orthonormaliseP } from '@tabtrain/shared/powersgd-basis';
import { StreamReducer } from './reducer';
import { VersionFrames, finishTimed, type StepContext, type StepMode, type StepTimes } from './step-mode';

/** A piece of a round's broadcast that is final as a whole: one matrix's factors, or the fp32 tensors' sums. */
interface RoundUnit { segs: Segment[]; matrix: number | null }

export class PowerSgdStep implements StepMode {
  /** The weights live in the update kernel's memory: P̂Qᵀ is applied there in place. */
  readonly weights: Float32Array;
  private readonly kernel: LowRankKernel | null;
  /** Helper threads that apply the update off the event loop (--apply-threads), or null: this thread applies it. */
  private readonly pool: LowRankPool | null;
  /** The sum of each round's factor vectors, in shard order. */
  private readonly reducers: [StreamReducer, StreamReducer];
  /** Per round, what its broadcast is made of, in order: a matrix's factor segments (round 1: with the matrix, to orthonormalise), or the fp32 tensors' sums. */
  private readonly units: [RoundUnit[], RoundUnit[]];
  /** The round in hand, and its reducer. */
  round: 1 | 2 = 1;
  reducer: StreamReducer;
  /** Units of the round in hand broadcast so far, their frames in order, and the step's number and batch (the frames carry it). */
  private sent = 0;
  private frames: Uint8Array[] = [];
  private step = 0;
  private batch = 1;
  /** P̂ and the fp32 tensors' sums of the step in hand (after round 1), or of the last step. */
  private readonly basis: Float32Array;
  /** The round-1 broadcast of the step that made the current version (or is making the next). */
  private readonly round1 = new VersionFrames();
  /** The round-2 broadcast that made the current version. */
  private readonly update = new VersionFrames();
  /**
   * The last step's update, not yet applied to the weights: applying P̂ (ΣQ_i)ᵀ touches every
   * weight (~80 ms for AlexNet on one core here), and nothing in the next step needs the weights
   * until its round 2 is summed, so the coordinator applies it once the next step's assigns are
   * out (`flush`, while the workers compute), or earlier when anything reads the weights.
   */
  private pending: { basis: Float32Array; update: Float32Array; lr: number; batch: number } | null = null;
  /** How long the last flush on this thread took. */
  private ownMs = 0;
  readonly segments = 0;
  readonly staged = 0;
  readonly pipelined = false;

  constructor(private readonly plan: PowerSgdPlan, private readonly ctx: StepContext, onBadShard: (shard: number, why: string) => void, threads?: { count: number; start: StartShare }) {
    this.reducers = ([1, 2] as const).map((round) => {
      const r = new StreamReducer(roundSegments(plan, round), round === 1 ? plan.round1Floats : plan.round2Floats, onBadShard);
      r.onSegmentDone = () => this.stageRound();
      return r;
    }) as [StreamReducer, StreamReducer];
    this.units = [roundUnits(plan, this.reducers[0].plan, 1), roundUnits(plan, this.reducers[1].plan, 2)];
    this.reducer = this.reducers[0];
    this.basis = new Float32Array(plan.round1Floats);
    this.pool = threads ? LowRankPool.create(plan, threads.count, threads.start) : null;
    this.kernel = this.pool ? null : LowRankKernel.withWeights(plan);
    this.weights = this.pool?.weights ?? this.kernel?.weights ?? new Float32Array(plan.total);
  }

  /** Round 1 of step number `step` begins. */
  begin(shards: number, _lr: number, batch: number, step: number): void {
    this.step = step;
    this.batch = batch;
    this.startRound(1, shards);
  }

  private startRound(round: 1 | 2, shards: number): void {
    this.round = round;
    this.sent = 0;
    this.frames = [];
    this.reducer = this.reducers[round - 1];
    this.reducer.begin(shards);
  }

  /** Copies are factor vectors: nothing to compare with a reference gradient. */
  decodeCopy(): null { return null; }

  /**
   * Broadcasts, in order, every unit of the round in hand whose sum is complete: round 1's matrix
   * orthonormalised into its P̂ (its seed is the step's, so the bits are those of doing all at the
   * round's end), round 2's ΣQ as summed. Its segments are frozen (final), and each frame goes to
   * roundStaged and into the round's frames.
   */
  private stageRound(): void {
    const units = this.units[this.round - 1];
    while (this.sent < units.length && units[this.sent].segs.every((s) => this.reducer.done(s))) {
      const u = units[this.sent++];
      let v = this.reducer.sum;
      if (this.round === 1) {
        const from = u.segs[0].offset, last = u.segs[u.segs.length - 1];
        this.basis.set(this.reducer.sum.subarray(from, last.offset + last.count), from);
        if (u.matrix !== null) orthonormaliseP(this.plan, this.basis, this.ctx.seed, this.step, u.matrix);
        v = this.basis;
      }
      for (const s of u.segs) {
        this.reducer.freeze(s);
        const frame = encode(this.basisHeader(s, v.length), this.basisBody(s, v));
        this.frames.push(frame);
        this.ctx.roundStaged(frame, this.round, this.frames.length - 1);
      }
    }
  }

  private basisHeader(s: Segment, total: number): Basis {
    const h: Basis = { type: MSG.basis, version: this.ctx.version() + 1, round: this.round, offset: s.offset, total, batch: this.batch };
    if (s.codec !== 'fp32') h.codec = s.codec;
    return h;
  }

  /**
   * A broadcast segment's body. fp16 factors: encoded, and `v` (P̂, or ΣQ_i in the reducer's sum,
   * frozen) left holding the decoded halves, so that this coordinator applies the very values every
   * worker decodes (encodeFactors; saturating at ±65504 like the fp16 mode, never Inf).
   */
  private basisBody(s: Segment, v: Float32Array): Uint8Array | Float32Array {
    if (s.codec === 'fp32') return v.subarray(s.offset, s.offset + s.count);
    const body = new Uint8Array(s.bytes);
    encodeFactors(s, v, body);
    return body;
  }

  /**
   * Round 1 is summed: finishes its broadcast (P̂ and the fp32 tensors' sums, encoded once for
   * every worker; most of it went out already) and starts round 2 over `shards` shards. Returns
   * the whole broadcast's frames, in order.
   */
  endRound1(shards: number): Uint8Array[] {
    this.reducers[0].finish(); // throws unless every shard is summed
    this.stageRound();
    this.round1.keep(this.ctx.version() + 1, this.frames);
    this.startRound(2, shards);
    return this.round1.last;
  }

  /** powersgd: the round-1 broadcast of the step making version + 1 (during round 2), or of the last step. */
  get basisFrames(): Uint8Array[] { return this.round1.last; }

  /** A broadcast part stays final (stageRound), so its segments stay frozen: nothing to call off. */
  callOff(): boolean { return false; }

  /** Round 2 is summed: what of ΣQ_i has not gone out yet goes, and the update is held (pending) to apply after the next step's assigns. */
  apply(lr: number, batch: number): StepTimes {
    const { sum, aggregateMs } = finishTimed(this.reducer);
    const applyMs = this.flush(); // the step before's, if nothing has applied it yet
    const t0 = performance.now();
    this.stageRound(); // before the update is kept: with fp16 factors it rounds the sum to what the workers decode
    this.pending = { basis: this.basis.slice(), update: sum.slice(), lr, batch };
    this.ctx.advance();
    this.update.keep(this.ctx.version(), this.frames);
    return { aggregateMs, applyMs, broadcastMs: performance.now() - t0 };
  }

  get updateFrameCount(): number { return this.update.of(this.ctx.version()).length; }

  /** Applies the update held back by apply() (see `pending`), and waits for it. Returns the ms it took (0: none pending). */
  flush(): number {
    if (this.pool) {
      const started = this.release();
      const ms = this.pool.wait();
      return started ? ms : 0;
    }
    const p = this.pending;
    if (!p) return 0;
    const t0 = performance.now();
    applyPowerSgd(this.plan, this.weights, p.basis, p.update, p.lr, p.batch, this.kernel);
    this.pending = null;
    this.ownMs = performance.now() - t0;
    return this.ownMs;
  }

  /**
   * Starts applying the held update without waiting for it, where helper threads do it (the
   * weights may be read only after a flush); on this thread, the same as flush. True if one was started.
   */
  release(): boolean {
    const p = this.pending;
    if (!p) return false;
    if (!this.pool) { this.flush(); return true; }
    this.pool.wait(); // the one before must be done: the factors' memory is shared
    this.pool.round1.set(p.basis);
    this.pool.round2.set(p.update);
    this.pool.start(0, this.plan.matrices.length, true, p.lr, p.batch);
    this.pending = null;
    return true;
  }

  /** How long the last update took to apply (in the helper threads: start to end, once it ended). */
  get flushedMs(): number {
    if (this.pool) { void this.pool.busy; return this.pool.lastMs; }
    return this.ownMs;
  }

  /** Ends the helper threads; a later update is applied on this thread (the pool runs it alone). */
  dispose(): void { this.pool?.dispose(); }

  /**
   * One version behind: the step's two broadcasts (round 1's only if the worker was not sent it:
   * `basis` is the version whose round 1 it has). Otherwise full weights, with the last round-2
   * sum, from which the worker's next Q is made.
   */
  framesFor(version: number, basis: number): Uint8Array[] {
    const update = this.update.of(this.ctx.version());
    if (version === this.ctx.version() - 1 && update.length) return basis === this.ctx.version() ? update : [...this.basisFrames, ...update];
    return [...this.ctx.encodedWeights(), ...update];
  }

  restore(weights: Float32Array): void {
    this.pending = null;
    this.pool?.wait();
    this.weights.set(weights);
    this.round1.clear();
    this.update.clear();
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
