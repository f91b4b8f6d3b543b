// A powersgd update applied by several threads at once (issue 20): the coordinator's weights and a
// worker's exact copy are 46.8 M floats at AlexNet size, and one core applies P̂ (ΣQ_i)ᵀ to them in
// 33–67 ms here, longer than a V100 step's 32 ms of compute. The weights, both rounds' broadcasts and
// each thread's scratch live in one shared WebAssembly memory; every thread runs the same kernel
// (lowRankApply, kernels.wat) on its own rows of every matrix. Each weight still gets the same
// operations in the same order (its f64 sum over the rank, rounded once), so the bits are those of
// one thread applying the whole update (LowRankKernel, applyPart): which thread takes which rows
// changes nothing (tests/unit/low-rank-pool.test.ts).
//
// The threads meet through Atomics on a few control words, not messages: a helper waits for the
// job counter to move, does its share, and the last one to finish wakes whoever waits. A job is a
// contiguous run of the plan's matrices (what ArrivingUpdate hands out, or all of them), plus the
// fp32 tensors when asked; share k of S takes rows [⌊k·rows/S⌋, ⌊(k+1)·rows/S⌋) of each.
//
// Pure code (no Node, no DOM): a host starts the helper threads (Node: server/src/apply-threads.ts,
// client/src/exact-replica-thread.ts) and each of them calls `serveShare` with what `start` gave it.
import type { LowRankMatrix, PowerSgdPlan } from './powersgd';
import { instantiateKernels, kernelMemory, sharedKernelsAvailable, type Kernels } from './simd';

/**
 * Weights below which the default is one thread: an update of a model this small takes about a
 * millisecond on one, and helper threads would only add their start (hundreds of ms under tsx).
 * An explicit thread count (--apply-threads) is taken at any size.
 */
export const POOL_MIN_FLOATS = 1 << 20;

/** Control words (Int32 slots). */
const GEN = 0, LEFT = 1, FROM = 2, TO = 3, DENSE = 4, SHARES = 5, STOP = 6, READY = 7;
/** Bytes of control: the Int32 slots, then lr and batch as f64 at byte 32. */
const CTL_BYTES = 64;
/** Weights per block through a thread's scratch: 256 KiB (as LowRankKernel's BLOCK_FLOATS). */
const BLOCK_FLOATS = 65536;
const blockRows = (cols: number) => Math.max(1, Math.floor(BLOCK_FLOATS / cols));
const align16 = (n: number) => (n + 15) & ~15;

/** What a helper thread needs: the memory, the plan (the layout follows from it) and which share it does. */
export interface ShareInit { memory: WebAssembly.Memory; plan: PowerSgdPlan; shares: number; share: number }

/** Where everything lies in the pool's memory, in bytes; the same for every thread of one plan and share count. */
function layout(plan: PowerSgdPlan, shares: number) {
  const maxCols = Math.max(1, ...plan.matrices.map((m) => m.cols));
  const maxRows = Math.max(1, ...plan.matrices.map((m) => blockRows(m.cols)));
  const round1At = CTL_BYTES;
  const round2At = align16(round1At + 4 * plan.round1Floats);
  const qBytes = align16(8 * plan.rank * maxCols), pBytes = align16(8 * plan.rank * maxRows);
  const scratchAt = align16(round2At + 4 * plan.round2Floats);
  const weightsAt = scratchAt + shares * (qBytes + pBytes);
  return { round1At, round2At, scratchAt, qBytes, pBytes, weightsAt, bytes: weightsAt + 4 * plan.total };
}

/** One thread's side: its kernel instance over the shared memory, and its share of a job. */
class Share {
  readonly ctl: Int32Array;
  private readonly f64: Float64Array;
  private readonly k: Kernels;
  private readonly w: Float32Array;
  private readonly round1: Float32Array;
  private readonly round2: Float32Array;
  private readonly qAt: number;
  private readonly pAt: number;

  constructor(private readonly init: ShareInit) {
    const { memory, plan, shares, share } = init;
    const at = layout(plan, shares);
    const k = instantiateKernels(memory);
    if (!k) throw new Error('WebAssembly SIMD is not available in this thread');
    this.k = k;
    this.ctl = new Int32Array(memory.buffer, 0, 8);
    this.f64 = new Float64Array(memory.buffer);
    this.w = new Float32Array(memory.buffer, at.weightsAt, plan.total);
    this.round1 = new Float32Array(memory.buffer, at.round1At, plan.round1Floats);
    this.round2 = new Float32Array(memory.buffer, at.round2At, plan.round2Floats);
    this.qAt = at.scratchAt + share * (at.qBytes + at.pBytes); // this thread's scratch, whichever share of a job it does
    this.pAt = this.qAt + at.qBytes;
  }

  /** This thread's share is done: the last one to end stamps the job's end (f64 slot 6) and wakes whoever waits. */
  end(): void {
    if (Atomics.sub(this.ctl, LEFT, 1) !== 1) return;
    this.f64[6] = clock();
    Atomics.notify(this.ctl, LEFT);
  }

  /** Does share `share` of `shares` of the job in the control words, with this thread's scratch. */
  run(share = this.init.share, shares = this.ctl[SHARES]): void {
    const { plan } = this.init;
    const lr = this.f64[4], batch = this.f64[5];
    // applyPart's arithmetic: k = lr / batch in double, each weight rounded once.
    const scale = lr / batch;
    if (share === 0 && this.ctl[DENSE]) {
      for (const t of plan.dense) for (let j = 0; j < t.count; j++) this.w[t.offset + j] -= scale * this.round1[t.at + j];
    }
    for (let i = this.ctl[FROM]; i < this.ctl[TO]; i++) {
      const m = plan.matrices[i];
      this.rows(m, Math.floor((m.rows * share) / shares), Math.floor((m.rows * (share + 1)) / shares), scale);
    }
  }

  /** lowRankApply on rows [r0, r1) of matrix m, a block at a time (as LowRankKernel.apply, in place). */
  private rows(m: LowRankMatrix, r0: number, r1: number, scale: number): void {
    if (r0 >= r1) return;
    const { rank } = this.init.plan;
    const { offset, rows, cols, pAt, qAt } = m;
    const nb = blockRows(cols);
    const weightsAt = this.w.byteOffset;
    this.f64.set(this.round2.subarray(qAt, qAt + rank * cols), this.qAt >> 3);
    for (let i0 = r0; i0 < r1; i0 += nb) {
      const n = Math.min(nb, r1 - i0);
      for (let k = 0; k < rank; k++) this.f64.set(this.round1.subarray(pAt + k * rows + i0, pAt + k * rows + i0 + n), (this.pAt >> 3) + k * nb);
      this.k.lowRankApply(weightsAt + 4 * (offset + i0 * cols), n, cols, this.pAt, 8 * nb, this.qAt, rank, scale);
    }
  }
}

/**
 * A helper thread's whole life: says it is ready, waits for each job, does its share, and returns
 * when the pool is disposed. It blocks its thread (Atomics.wait), so it must run in a thread of its own.
 */
export function serveShare(init: ShareInit): void {
  const s = new Share(init);
  // No job is handed out before every helper has said it is ready (after reading the counter).
  let seen = Atomics.load(s.ctl, GEN);
  Atomics.add(s.ctl, READY, 1);
  for (;;) {
    if (Atomics.load(s.ctl, STOP)) return;
    Atomics.wait(s.ctl, GEN, seen);
    // Woken is not a new job: the poster may be descheduled between moving GEN and its notify
    // while this thread does that job and comes back to wait, and the late notify then wakes it
    // with GEN unmoved. Doing the job again would apply the update twice to these rows and end it
    // twice (LEFT below zero: the caller waits for ever). Only a moved counter is a job.
    const now = Atomics.load(s.ctl, GEN);
    if (now === seen) continue;
    seen = now;
    if (Atomics.load(s.ctl, STOP)) return;
    s.run();
    s.end();
  }
}

/** Wall-clock ms that every thread reads alike (performance.now() counts from each thread's own start). */
const clock = () => performance.timeOrigin + performance.now();

/** Starts one helper thread on `init` (the host's: a worker_threads Worker, a Web Worker); returns how to end it. */
export type StartShare = (init: ShareInit) => () => void;

/**
 * The weights in shared memory and `helpers` threads that apply updates to them. `start` hands a
 * job to the helpers and returns at once (the coordinator: its event loop stays free); `apply`
 * also does a share on the calling thread and returns when all are done (a worker's exact copy,
 * in its own thread). While a job runs, nothing else may touch the weights or the factors: `wait`
 * first.
 */
export class LowRankPool {
  readonly weights: Float32Array;
  /** Where the caller puts both rounds' broadcasts before a job (the shared factors every thread reads). */
  readonly round1: Float32Array;
  readonly round2: Float32Array;
  /** How long the last job took, start to the last share's end, in ms (known once it is seen done: busy, wait). */
  lastMs = 0;
  private readonly ctl: Int32Array;
  private readonly f64: Float64Array;
  private readonly own: Share;
  private readonly stops: (() => void)[];
  private running = false;
  private startedAt = 0;
  /** After dispose: no helpers, every job runs whole on the calling thread. */
  private stopped = false;

  /** A pool, or null where threads cannot share memory here (no SharedArrayBuffer, no SIMD): apply on one thread then. */
  static create(plan: PowerSgdPlan, helpers: number, startShare: StartShare): LowRankPool | null {
    return helpers >= 1 && sharedKernelsAvailable() ? new LowRankPool(plan, helpers, startShare) : null;
  }

  private constructor(plan: PowerSgdPlan, readonly helpers: number, startShare: StartShare) {
    // Shares 0 .. helpers − 1 are the helpers', share `helpers` the caller's (apply).
    const shares = helpers + 1;
    const at = layout(plan, shares);
    const memory = kernelMemory(at.bytes, true);
    this.ctl = new Int32Array(memory.buffer, 0, 8);
    this.f64 = new Float64Array(memory.buffer, 0, 8);
    this.weights = new Float32Array(memory.buffer, at.weightsAt, plan.total);
    this.round1 = new Float32Array(memory.buffer, at.round1At, plan.round1Floats);
    this.round2 = new Float32Array(memory.buffer, at.round2At, plan.round2Floats);
    this.own = new Share({ memory, plan, shares, share: helpers });
    this.stops = Array.from({ length: helpers }, (_, share) => startShare({ memory, plan, shares, share }));
  }

  /**
   * Every helper has started. Until then a job runs whole on the calling thread: a thread that
   * blocked waiting for helpers still starting could wait for ever where their start needs its
   * event loop (a Web Worker's nested workers).
   */
  get ready(): boolean { return Atomics.load(this.ctl, READY) === this.helpers; }

  /** True while a job runs. */
  get busy(): boolean {
    if (this.running && Atomics.load(this.ctl, LEFT) === 0) this.finished();
    return this.running;
  }

  /** Hands matrices [from, to) of the plan (and the fp32 tensors if `dense`) to the helpers; the factors must be in round1/round2. */
  start(from: number, to: number, dense: boolean, lr: number, batch: number): void {
    this.wait();
    if (this.stopped || !this.ready) { this.alone(from, to, dense, lr, batch); return; }
    this.post(from, to, dense, lr, batch, this.helpers, this.helpers);
  }

  /** As start, with the calling thread doing a share too; returns when the update is applied. Blocks (Atomics.wait): not on a page's main thread. */
  apply(from: number, to: number, dense: boolean, lr: number, batch: number): void {
    this.wait();
    if (this.stopped || !this.ready) { this.alone(from, to, dense, lr, batch); return; }
    this.post(from, to, dense, lr, batch, this.helpers + 1, this.helpers);
    this.own.run();
    this.wait();
  }

  /** The whole job on this thread (helpers not started yet, or disposed): GEN does not move, so no helper takes it. */
  private alone(from: number, to: number, dense: boolean, lr: number, batch: number): void {
    this.describe(from, to, dense, lr, batch, 1);
    this.startedAt = clock();
    this.own.run(0, 1);
    this.f64[6] = clock();
    this.finished();
  }

  /** Writes a job's words; the helpers read them only once GEN moves (post). */
  private describe(from: number, to: number, dense: boolean, lr: number, batch: number, shares: number): void {
    this.ctl[FROM] = from;
    this.ctl[TO] = to;
    this.ctl[DENSE] = dense ? 1 : 0;
    this.ctl[SHARES] = shares;
    this.f64[4] = lr;
    this.f64[5] = batch;
  }

  private post(from: number, to: number, dense: boolean, lr: number, batch: number, shares: number, helpers: number): void {
    this.describe(from, to, dense, lr, batch, shares);
    Atomics.store(this.ctl, LEFT, helpers);
    this.running = true;
    this.startedAt = clock();
    Atomics.add(this.ctl, GEN, 1);
    Atomics.notify(this.ctl, GEN);
  }

  /** Blocks until the job in hand (if any) is done; returns its ms. */
  wait(): number {
    if (!this.running) return 0;
    for (let left = Atomics.load(this.ctl, LEFT); left !== 0; left = Atomics.load(this.ctl, LEFT)) {
      // A share ended twice: fail loudly rather than wait for ever on weights no longer known to be right.
      if (left < 0) throw new Error(`apply threads: ${-left} share(s) of a job ended more than once; the weights cannot be trusted`);
      Atomics.wait(this.ctl, LEFT, left);
    }
    this.finished();
    return this.lastMs;
  }

  private finished(): void {
    this.running = false;
    // The helpers' end stamp (Atomics.load of LEFT above orders it), or now for a job this thread did (alone, or its share last).
    this.lastMs = Math.max(this.f64[6], this.ctl[SHARES] > this.helpers ? clock() : 0, this.startedAt) - this.startedAt;
  }

  /** Ends the helpers (after the job in hand). */
  dispose(): void {
    this.wait();
    if (this.stopped) return;
    this.stopped = true;
    Atomics.store(this.ctl, STOP, 1);
    Atomics.add(this.ctl, GEN, 1);
    Atomics.notify(this.ctl, GEN);
    for (const stop of this.stops) stop();
  }
}
