// The exact copy of a powersgd worker's weights: bit-equal to the coordinator's, hash-checked,
// and kept off the step's critical path. The working copy (the tensors the Net computes with, on
// its backend) takes each update on the device and may drift from this one by rounding; every K
// versions, and after a failed hash check, it is replaced by this one (core.ts).
//
// `ExactReplica` is the logic, pure (no tfjs, no Node, no DOM): the same frames as the working
// copy (full weights, both rounds' broadcasts), applied with the coordinator's kernel
// (LowRankKernel, applyPart) as they arrive. It runs where a host puts it: a worker_threads thread
// in Node (exact-replica-thread.ts), a Web Worker in the page (exact-replica-webworker.ts), or
// this thread (`LocalReplica`, the fallback where no thread can be started). Hosts only pass
// messages: `serveReplica` is the whole of a thread's side.
import { replicaHash, type Basis } from '@tabtrain/shared';
import { LowRankPool, type StartShare } from '@tabtrain/shared/low-rank-pool';
import { ArrivingUpdate, LowRankKernel, applyPart, type PowerSgdPlan, type UpdatePart } from '@tabtrain/shared/powersgd';

/** What the worker's main thread tells its exact copy, in frame order. */
export type ReplicaRequest =
  /** `threads`: threads that apply each update (this one and threads − 1 helpers sharing its memory: low-rank-pool.ts); default 1. */
  | { op: 'init'; plan: PowerSgdPlan; lr: number; corruptVersion?: number; threads?: number }
  /** A slice of full weights (a resync, or the first weights). */
  | { op: 'weights'; version: number; offset: number; total: number; floats: Float32Array }
  /** A slice of a powersgd broadcast; round 2's are applied as they complete a part of the update. */
  | { op: 'basis'; basis: Basis; floats: Float32Array }
  /** Answers the replica's hash at `version`, or null when it is not at that version. */
  | { op: 'hash'; id: number; version: number }
  /** Answers a copy of the weights at `version` and their hash (the working copy's refresh), or null. */
  | { op: 'snapshot'; id: number; version: number };

export interface ReplicaReply { id: number; hash?: string | null; weights?: Float32Array | null }

/** One broadcast vector arriving slice by slice, in order (the main thread's WorkerRounds takes them too). */
export class Incoming {
  readonly v: Float32Array;
  version = -1;
  /** Floats of `version` taken so far. */
  received = 0;
  /** `into`: where the vector is kept (a thread pool's shared factors), else an array of its own. */
  constructor(floats: number, into?: Float32Array) { this.v = into ?? new Float32Array(floats); }

  /** Takes a slice; true once the vector of b.version is whole. */
  take(b: Basis, body: Float32Array): boolean {
    if (b.total !== this.v.length || b.offset + body.length > this.v.length) throw new Error(`basis round ${b.round} slice ${b.offset}+${body.length} does not fit its ${this.v.length} floats`);
    if (b.offset === 0) { this.version = b.version; this.received = 0; }
    if (b.version !== this.version || b.offset !== this.received) throw new Error(`basis round ${b.round} v${b.version} slice at ${b.offset} arrived out of order`);
    this.v.set(body, b.offset);
    this.received += body.length;
    return this.received === this.v.length;
  }

  whole(version: number): boolean { return this.version === version && this.received === this.v.length; }
}

export class ExactReplica {
  /** The weights, in the kernel's memory where WebAssembly SIMD exists (updated in place). */
  readonly weights: Float32Array;
  private readonly kernel: LowRankKernel | null;
  private readonly round1: Incoming;
  private readonly round2: Incoming;
  /** The version the weights are at, or −1 (being overwritten, or a step was missed). */
  version = -1;
  private incomingVersion = -1;
  private received = 0;
  private arriving: ArrivingUpdate | null = null;
  private hashed: { version: number; hash: string } | null = null;

  /** `pool`: helper threads that apply each part with this one (the weights and factors live in its shared memory), or none. */
  constructor(readonly plan: PowerSgdPlan, private readonly lr: number, private readonly corruptVersion?: number, private readonly pool: LowRankPool | null = null) {
    this.kernel = pool ? null : LowRankKernel.withWeights(plan);
    this.weights = pool?.weights ?? this.kernel?.weights ?? new Float32Array(plan.total);
    this.round1 = new Incoming(plan.round1Floats, pool?.round1);
    this.round2 = new Incoming(plan.round2Floats, pool?.round2);
  }

  /** Handles one request; returns the answer of a question (hash, snapshot), null otherwise. */
  handle(r: ReplicaRequest): ReplicaReply | null {
    switch (r.op) {
      case 'init': throw new Error('exact replica: init twice');
      case 'weights': this.takeWeights(r.version, r.offset, r.total, r.floats); return null;
      case 'basis': this.takeBasis(r.basis, r.floats); return null;
      case 'hash': return { id: r.id, hash: this.hashAt(r.version) };
      case 'snapshot': return this.atVersion(r.version) ? { id: r.id, weights: this.weights.slice(), hash: this.hashAt(r.version) } : { id: r.id, weights: null };
    }
  }

  private takeWeights(version: number, offset: number, total: number, floats: Float32Array): void {
    if (total !== this.plan.total || offset + floats.length > total) throw new Error(`exact replica: weights slice ${offset}+${floats.length} does not fit ${this.plan.total}`);
    if (offset === 0 || version !== this.incomingVersion) {
      this.version = -1;
      this.arriving = null;
      this.incomingVersion = version;
      this.received = 0;
    }
    this.hashed = null;
    this.weights.set(floats, offset);
    this.received += floats.length;
    if (this.received === total) { this.version = version; this.hashed = null; }
  }

  /** As the coordinator: each part of a round-2 update is applied once its factors are whole, on the base version only. */
  private takeBasis(b: Basis, floats: Float32Array): void {
    if (b.round === 1) { this.round1.take(b, floats); return; }
    const whole = this.round2.take(b, floats);
    if (b.offset === 0) this.arriving = this.version === b.version - 1 && this.round1.whole(b.version) ? new ArrivingUpdate(this.plan, b.version) : null;
    const a = this.arriving;
    if (a?.version === b.version) this.apply(a.due(this.round2.received), b.batch);
    if (!whole) return;
    if (a?.version === b.version && a.done) {
      if (b.version === this.corruptVersion) this.weights[0] += 1; // fault injection (tests)
      this.version = b.version;
      this.hashed = null;
    } else if (this.version !== b.version) { // full weights of this version may have come first, holding the update already
      this.version = -1; // not on the base version: the worker asks for the full weights
      this.hashed = null;
    }
    this.arriving = null;
  }

  /** One part of the update: split over the pool's threads (the matrices come in plan order, contiguous), or on this thread. */
  private apply(part: UpdatePart, batch: number): void {
    if (!this.pool) { applyPart(this.plan, this.weights, part, this.round1.v, this.round2.v, this.lr, batch, this.kernel); return; }
    const from = part.matrices.length ? this.plan.matrices.indexOf(part.matrices[0]) : 0;
    if (part.matrices.length || part.dense.length) this.pool.apply(from, from + part.matrices.length, part.dense.length > 0, this.lr, batch);
  }

  dispose(): void { this.pool?.dispose(); }

  private atVersion(version: number): boolean {
    return this.version === version && this.arriving === null;
  }

  /** The hash of `version`: also while the next update is being applied (a shard redone in round 2 checks the base), if it was hashed before. */
  private hashAt(version: number): string | null {
    if (this.hashed?.version === version) return this.hashed.hash;
    if (!this.atVersion(version)) return null;
    this.hashed = { version, hash: replicaHash(this.weights) };
    return this.hashed.hash;
  }
}

/** The main thread's handle on its exact copy, wherever that runs. */
export interface ReplicaHost {
  /** Sends a request that needs no answer; the host copies `floats` (the caller may reuse its buffer). */
  post(r: Extract<ReplicaRequest, { op: 'weights' | 'basis' }>): void;
  hash(version: number): Promise<string | null>;
  snapshot(version: number): Promise<Snapshot | null>;
  dispose(): void;
}

/** The exact weights of a version, and their hash (replicaHash). */
export interface Snapshot { weights: Float32Array; hash: string }

const snapshotOf = (r: ReplicaReply): Snapshot | null => (r.weights && r.hash ? { weights: r.weights, hash: r.hash } : null);

/** Makes a worker's exact copy for a run's plan (node-worker.ts: a thread; page.ts: a Web Worker). */
export type ReplicaHostFactory = (plan: PowerSgdPlan, lr: number, corruptVersion?: number) => ReplicaHost;

/** The exact copy on this thread: where no thread can be started, and for tests. Answers after the work queued before. */
export class LocalReplica implements ReplicaHost {
  private readonly replica: ExactReplica;
  private next = 0;
  constructor(plan: PowerSgdPlan, lr: number, corruptVersion?: number) { this.replica = new ExactReplica(plan, lr, corruptVersion); }
  post(r: Extract<ReplicaRequest, { op: 'weights' | 'basis' }>): void { this.replica.handle(r); }
  async hash(version: number): Promise<string | null> { return this.replica.handle({ op: 'hash', id: this.next++, version })!.hash ?? null; }
  async snapshot(version: number): Promise<Snapshot | null> { return snapshotOf(this.replica.handle({ op: 'snapshot', id: this.next++, version })!); }
  dispose(): void {}
}

/** The two ends of a thread's message channel, as Node's worker_threads and the Web Worker API both give them. */
export interface ReplicaPort {
  postMessage(m: unknown, transfer?: ArrayBuffer[]): void;
}

/**
 * The main thread's side of an exact copy in another thread: requests are posted in frame order
 * (a thread takes messages in order, so an answer reflects every frame before its question).
 * `failed` is called once if the thread reports an error: the worker then stops (a broken exact
 * copy cannot be trusted to refresh anything).
 */
export class ThreadReplica implements ReplicaHost {
  private next = 0;
  private readonly waiting = new Map<number, (r: ReplicaReply) => void>();
  private error: Error | null = null;

  constructor(private readonly port: ReplicaPort, private readonly stop: () => void, plan: PowerSgdPlan, lr: number, corruptVersion?: number, threads?: number) {
    port.postMessage({ op: 'init', plan, lr, corruptVersion, threads } satisfies ReplicaRequest);
  }

  /** The thread's messages: answers, or `{ error }`. */
  onMessage(m: ReplicaReply | { error: string }): void {
    if ('error' in m) { this.fail(new Error(`exact replica thread: ${m.error}`)); return; }
    const f = this.waiting.get(m.id);
    this.waiting.delete(m.id);
    f?.(m);
  }

  post(r: Extract<ReplicaRequest, { op: 'weights' | 'basis' }>): void {
    if (this.error) throw this.error;
    // A copy of its own, transferred: a frame's body is a view into a larger buffer that cloning would copy whole.
    const floats = r.floats.slice();
    this.port.postMessage({ ...r, floats }, [floats.buffer]);
  }

  private ask(r: { op: 'hash' | 'snapshot'; version: number }): Promise<ReplicaReply> {
    if (this.error) return Promise.reject(this.error);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (reply) => (this.error ? reject(this.error) : resolve(reply)));
      this.port.postMessage({ ...r, id });
    });
  }

  async hash(version: number): Promise<string | null> { return (await this.ask({ op: 'hash', version })).hash ?? null; }
  async snapshot(version: number): Promise<Snapshot | null> { return snapshotOf(await this.ask({ op: 'snapshot', version })); }

  /** Ends the thread; a question still unanswered is refused, so that no shard waits for ever on a thread that is gone. */
  dispose(): void {
    this.fail(this.error ?? new Error('exact replica thread: disposed before it answered'));
    this.stop();
  }

  private fail(e: Error): void {
    this.error = e;
    for (const f of this.waiting.values()) f({ id: -1 });
    this.waiting.clear();
  }
}

/**
 * A thread's whole side: `init` makes the replica, every later request is handled in order; a
 * failure is reported once, then nothing more is done. `startShare`: how this host starts helper
 * threads for `init.threads` (none: the replica applies on its own thread).
 */
export function serveReplica(reply: (m: ReplicaReply | { error: string }, transfer?: ArrayBuffer[]) => void, startShare?: StartShare): (r: ReplicaRequest) => void {
  let replica: ExactReplica | null = null;
  let failed = false;
  return (r) => {
    if (failed) return;
    try {
      if (r.op === 'init') {
        const helpers = (r.threads ?? 1) - 1;
        replica = new ExactReplica(r.plan, r.lr, r.corruptVersion, startShare && helpers > 0 ? LowRankPool.create(r.plan, helpers, startShare) : null);
        return;
      }
      if (!replica) throw new Error(`${r.op} before init`);
      const answer = replica.handle(r);
      if (answer) reply(answer, answer.weights ? [answer.weights.buffer as ArrayBuffer] : []);
    } catch (e) {
      failed = true;
      reply({ error: (e as Error).message });
    }
  };
}
