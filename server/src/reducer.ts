// Streaming aggregation: gradient segments are summed as they arrive, in shard order.
//
// Shard k's segment s is folded into the sum once shards 0..k−1 have been folded for s, so the
// floating-point result is exactly sumInOrder's (the reference in aggregate.ts) whatever the
// arrival order, and most of the sum is done while slower workers are still uploading. A body
// that arrives early waits as the very Buffer ws handed us (no copy). Bodies are kept until the
// step ends, so a shard whose worker is lost mid-upload is taken out again by re-folding the
// segments it touched from the other shards' bodies.
//
// The sum lives in a WebAssembly memory with SIMD add/check kernels (simd.ts); a compressed body
// is decoded into a scratch region first, an fp32 one copied there (ws's Buffer is not wasm memory).
import { CLOSE, ProtocolError } from '@tabtrain/shared';
import { checkBody, decodeInto, type Codec, type Segment } from '@tabtrain/shared/compress';
import { SimdArena } from '@tabtrain/shared/simd';

export interface GradientSlice { offset: number; total: number; codec?: string }

/** Checks gradient frames against a segment plan (offset, codec, exact body length), without keeping them. */
export class FrameCheck {
  private readonly byOffset = new Map<number, Segment>();
  constructor(readonly plan: Segment[], readonly total: number) {
    for (const s of plan) this.byOffset.set(s.offset, s);
  }

  /**
   * The frame's segment and its body, 4-byte aligned (copied if it was not). Throws a
   * ProtocolError (the sender's fault) for a frame that does not fit the plan.
   */
  check(g: GradientSlice, body: Uint8Array): { segment: Segment; body: Uint8Array } {
    const s = this.byOffset.get(g.offset);
    if (g.total !== this.total || !s) throw new ProtocolError(CLOSE.badGradient, `gradient segment at ${g.offset} of ${g.total} is not in this run's plan of ${this.plan.length} segments over ${this.total} parameters`);
    const codec = (g.codec ?? 'fp32') as Codec;
    if (codec !== s.codec) throw new ProtocolError(CLOSE.badGradient, `segment at ${g.offset} must be ${s.codec}, got ${String(codec).slice(0, 16)}; this run uses another --compress (or --factors)`);
    if (body.byteOffset % 4 !== 0) body = new Uint8Array(body); // a copy (Buffer#slice would be a view)
    const why = checkBody(s, body);
    if (why) throw new ProtocolError(CLOSE.badGradient, why);
    return { segment: s, body };
  }
}

export class StreamReducer {
  /** The step's gradient sum after finish(); a view into the arena (valid until the next begin()). */
  readonly sum: Float32Array;
  private readonly arena: SimdArena;
  private readonly scratchAt: number;
  private readonly frames: FrameCheck;
  private shards = 0;
  /** Per segment: how many shards (0..next−1) are in the sum. */
  private next = new Int32Array(0);
  /** held[segment][shard]: the body as received, until the step ends. */
  private held: (Uint8Array | null)[][] = [];
  private bad: { shard: number; why: string }[] = [];
  /**
   * Per segment: its sum is final and already applied (a pipelined step, step.ts). A frozen
   * segment is never taken apart again: a shard recomputed after its worker was lost has its
   * frozen segments skipped, since what the lost worker sent for them is in the sum for good.
   */
  private frozen = new Uint8Array(0);
  /** Called once a segment holds every shard (in shard order): the step may apply it. */
  onSegmentDone: ((s: Segment) => void) | null = null;
  private draining = false;
  /** Milliseconds spent folding in this step, and gradient bytes (as received) folded. */
  foldMs = 0;
  foldedBytes = 0;

  /**
   * `onBad` is called (outside the fold loop) for a shard whose body decoded to a non-finite
   * value; that shard has already been taken out of the sum. The caller drops its worker.
   */
  constructor(readonly plan: Segment[], readonly total: number, private readonly onBad: (shard: number, why: string) => void = () => {}, regions = 0) {
    const scratch = Math.max(0, ...plan.map((s) => s.count));
    const stride = (total + 15) & ~15;
    this.scratchAt = stride;
    const regionsAt = (stride + scratch + 15) & ~15;
    this.arena = new SimdArena(regionsAt + regions * stride);
    this.sum = this.arena.f32.subarray(0, total);
    this.regions = Array.from({ length: regions }, (_, i) => this.arena.f32.subarray(regionsAt + i * stride, regionsAt + i * stride + total));
    this.frames = new FrameCheck(plan, total);
  }

  /**
   * Arrays of `total` floats the caller asked for, in the arena beside the sum (the coordinator
   * keeps its weights here), so that sgd() runs as one SIMD pass.
   */
  readonly regions: Float32Array[];

  /** w ← w − lr · g / batch, bit-equal to sgdStep; SIMD when both live in this arena. */
  sgd(w: Float32Array, g: Float32Array, lr: number, batch: number): void {
    this.arena.sgd(w, g, lr, batch);
  }

  get simd(): boolean { return this.arena.simd; }

  /** Starts a step summed over `shards` shards. */
  begin(shards: number): void {
    this.shards = shards;
    this.next = new Int32Array(this.plan.length);
    this.frozen = new Uint8Array(this.plan.length);
    this.held = this.plan.map(() => new Array<Uint8Array | null>(shards).fill(null));
    this.bad = [];
    this.foldMs = 0;
    this.foldedBytes = 0;
    if (shards === 0) this.sum.fill(0);
  }

  /**
   * Checks one gradient frame against the run's plan without folding it: its segment and the body,
   * 4-byte aligned (copied if it was not). Throws a ProtocolError (the sender's fault) for a frame
   * that does not fit the plan. Verified copies are checked here on arrival and folded later.
   */
  check(g: GradientSlice, body: Uint8Array): { segment: Segment; body: Uint8Array } {
    return this.frames.check(g, body);
  }

  /**
   * Takes one gradient frame of `shard` and folds what it can. Returns the number of floats it
   * covers. Throws a ProtocolError (the sender's fault) for a frame that does not fit the plan.
   */
  accept(shard: number, g: GradientSlice, body: Uint8Array): number {
    const { segment, body: aligned } = this.check(g, body);
    this.hold(shard, segment, aligned);
    return segment.count;
  }

  /** Takes a segment body that check() passed, and folds what it can. */
  hold(shard: number, s: Segment, body: Uint8Array): void {
    if (shard < 0 || shard >= this.shards) throw new ProtocolError(CLOSE.notOwner, `shard ${shard} is not in this step`);
    if (this.frozen[s.index]) return; // applied already: a recomputed shard's copy of it is not needed
    if (this.held[s.index][shard] || this.next[s.index] > shard) throw new ProtocolError(CLOSE.duplicate, `segment at ${s.offset} of shard ${shard} arrived twice`);
    this.held[s.index][shard] = body;
    this.advance(s);
    this.report();
  }

  /** The worker of `shard` is gone: forget its bodies and take what it contributed out of the sum. */
  revoke(shard: number): void {
    if (shard < 0 || shard >= this.shards) return;
    for (const s of this.plan) {
      if (this.frozen[s.index]) continue;
      const had = this.held[s.index][shard] !== null || this.next[s.index] > shard;
      this.held[s.index][shard] = null;
      if (had && this.next[s.index] > shard) { this.next[s.index] = 0; this.advance(s); }
    }
    this.report();
  }

  /** Marks segment s applied: it stays as it is whatever happens to its shards (see `frozen`). */
  freeze(s: Segment): void {
    this.frozen[s.index] = 1;
  }

  /** Undoes every freeze (the pipelined step was called off): segments can be taken apart again. */
  thaw(): void {
    this.frozen.fill(0);
  }

  /** Whether segment s holds every shard of the step. */
  done(s: Segment): boolean {
    return this.next[s.index] === this.shards;
  }


  /** Whether every segment of `shard` has arrived (folded or waiting). */
  complete(shard: number): boolean {
    return this.plan.every((s) => this.next[s.index] > shard || this.held[s.index][shard] !== null);
  }

  /** Ends the step: every shard must be in the sum. Releases the bodies. Returns the sum. */
  finish(): Float32Array {
    for (const s of this.plan) {
      if (this.next[s.index] !== this.shards) throw new Error(`segment ${s.index}: ${this.next[s.index]} of ${this.shards} shards folded`);
    }
    this.held = [];
    return this.sum;
  }

  /** Folds segment s's bodies in shard order for as long as the next one is here. */
  private advance(s: Segment): void {
    const t0 = performance.now();
    const row = this.held[s.index];
    for (let k = this.next[s.index]; k < this.shards && row[k]; k = this.next[s.index]) {
      if (this.fold(s, row[k]!, k === 0)) {
        this.next[s.index] = k + 1;
        this.foldedBytes += row[k]!.byteLength;
        if (k + 1 === this.shards) this.onSegmentDone?.(s);
      } else {
        // The sum of this segment is spoiled: drop the body, rebuild 0..k−1 from the kept ones.
        row[k] = null;
        this.bad.push({ shard: k, why: `segment at ${s.offset} decodes to a non-finite value` });
        this.next[s.index] = 0;
      }
    }
    this.foldMs += performance.now() - t0;
  }

  private fold(s: Segment, body: Uint8Array, first: boolean): boolean {
    const a = this.arena;
    if (first) {
      if (s.codec === 'fp32') {
        a.f32.set(new Float32Array(body.buffer, body.byteOffset, s.count), s.offset);
        return a.check(s.offset, s.count);
      }
      return decodeInto(s, body, a.f32);
    }
    if (s.codec === 'fp32') a.f32.set(new Float32Array(body.buffer, body.byteOffset, s.count), this.scratchAt);
    else decodeInto(s, body, a.f32, this.scratchAt);
    return a.add(s.offset, this.scratchAt, s.count);
  }

  private report(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.bad.length) {
        const b = this.bad.shift()!;
        this.onBad(b.shard, b.why);
      }
    } finally {
      this.draining = false;
    }
  }
}
