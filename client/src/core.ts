// The worker core, shared by the browser page and the Node worker. It only sees frames in and
// frames out; the backend setup and the socket belong to the entry points.
import * as tf from '@tensorflow/tfjs-core';
import {
  MSG, PROTOCOL_VERSION, IMAGE_BYTES, asFloat32, decodeFrame, encode, paramLayout, replicaHash, validate, welcomedModel, zooHashes,
  type Assign, type Basis, type Hello, type Progress, type RunInfo, type Update, type WorkerKind,
} from '@tabtrain/shared';
import { Net, type ShardStats } from '@tabtrain/shared/net';
import { GradientEncoder, NO_COMPRESSION, checkBody, checkCompression, decodeInto, encodeFactors, gradientFrame, planSegments, powerSgdPlanOf, roundSegments } from '@tabtrain/shared/compress';
import { SyntheticNet, type Trainable } from '@tabtrain/shared/synthetic-net';
import { UpdateArena } from '@tabtrain/shared/simd';
import { WorkerRounds, type ShardGradient } from './powersgd-rounds';
import { LocalReplica, type ReplicaHost, type ReplicaHostFactory } from './exact-replica';
import { applyOnDevice, refreshOnDevice } from './device-update';
import { DEFAULT_REFRESH_EVERY } from '@tabtrain/shared/powersgd';

export interface WorkerIdentity {
  workerId: string;
  kind: WorkerKind;
  backend: string;
  adapter: Record<string, unknown> | null;
  token?: string;
  /** The session secret of our last welcome: presented on a reconnect to be the same worker again. */
  session?: string;
  /** The key of a coordinator that started this worker itself (TABTRAIN_LOCAL_KEY). */
  local?: string;
}

/** What the page shows and the Node worker logs. */
export interface WorkerStatus {
  state: 'connecting' | 'joining' | 'idle' | 'working' | 'closed';
  run: RunInfo | null;
  /** The assign's step: the weights version the shard is computed at (a train shard makes step + 1, as the coordinator numbers it). */
  step: number;
  /** The kind of the shard in hand or last computed. */
  task: 'train' | 'eval' | null;
  shardSize: number;
  computeMs: number;
  uploadMs: number;
  examplesPerSec: number;
  tensors: number;
}

/** Sends one frame; resolves when the socket has taken it (Node: written; browser: drained). */
export type SendFrame = (frame: Uint8Array) => Promise<void>;

export class WorkerCore {
  private net: Trainable | null = null;
  /** Encodes gradients as the run's --compress says, keeping this worker's error feedback. */
  private encoder: GradientEncoder | null = null;
  /** powersgd runs: the rounds' broadcasts, Q and this worker's factors (powersgd-rounds.ts). */
  private rounds: WorkerRounds | null = null;
  /** powersgd runs: the exact copy of the weights, off the critical path (exact-replica.ts); the Net's variables are the working copy. */
  private exact: ReplicaHost | null = null;
  /** The version at which the working copy was last made equal to the exact copy (full weights, or a refresh). */
  private refreshedAt = -1;
  /** The largest |working − exact| measured at the last refresh, reported in the status message. */
  private drift: number | undefined;
  /** The fp32 plan, for a compressed run's probation checks (assign.fp32): stateless, no error feedback. */
  private fp32: GradientEncoder | null = null;
  /** Gradient frames of the last step, one per segment, reused by the next. */
  private frames: Uint8Array[] = [];
  private run: RunInfo | null = null;
  private version = -1;
  /** This worker's copy of the weights: filled by full weights, advanced by compressed runs' updates. */
  private replica: Float32Array | null = null;
  private incomingVersion = -1;
  private received = 0;
  private updateVersion = -1;
  private updateReceived = 0;
  private hashed: { version: number; hash: string } | null = null;
  /** An assign parked until the full weights it asked for (resync) have arrived. */
  private parked: { a: Assign; body: Uint8Array } | null = null;
  private resyncedAt = -1;
  private grad: Float32Array | null = null;
  /** fp16 and int8 runs: the replica and the decoded update (apart from `grad`, which a synthetic net fills only once), side by side for SIMD SGD. */
  private updates: UpdateArena | null = null;
  private queue: Promise<void> = Promise.resolve();
  readonly status: WorkerStatus = { state: 'connecting', run: null, step: -1, task: null, shardSize: 0, computeMs: 0, uploadMs: 0, examplesPerSec: 0, tensors: 0 };

  constructor(
    private readonly id: WorkerIdentity,
    private readonly send: SendFrame,
    private readonly opts: {
      delayMsPerExample?: number; syntheticMsPerExample?: number; onStatus?: (s: WorkerStatus) => void; log?: (line: string) => void;
      /** Where the run stands and this worker's part in it (the page shows it). */
      onProgress?: (p: Progress) => void;
      /** Fault injection for tests: perturb the replica after applying this version's update. */
      corruptVersion?: number;
      /** powersgd: refresh the working weights from the exact copy every this many versions (default DEFAULT_REFRESH_EVERY). */
      refreshEvery?: number;
      /** powersgd: where the exact copy runs (node-worker.ts: a thread; page.ts: a Web Worker); default this thread. */
      exactReplica?: ReplicaHostFactory;
    } = {},
  ) {}

  hello(): Uint8Array {
    const h: Hello = { type: MSG.hello, protocol: PROTOCOL_VERSION, workerId: this.id.workerId, kind: this.id.kind, backend: this.id.backend, adapter: this.id.adapter, modelHashes: zooHashes() };
    if (this.id.token) h.token = this.id.token;
    if (this.id.session) h.session = this.id.session;
    if (this.id.local) h.local = this.id.local;
    this.update({ state: 'joining' });
    return encode(h);
  }

  /** Queues one incoming frame; frames are handled strictly in order. Rejections surface via `failed`. */
  receive(frame: Uint8Array): Promise<void> {
    this.queue = this.queue.then(() => this.handle(frame));
    return this.queue;
  }

  private async handle(frame: Uint8Array): Promise<void> {
    const { header, body } = decodeFrame(frame);
    const msg = validate(header);
    switch (msg.type) {
      case MSG.welcome: {
        const spec = welcomedModel(msg.run.model, msg.run.modelHash);
        // A second welcome of the same run changes its compression (--compress auto): the net stays,
        // and so do whole weights held outside powersgd (its exact copy is in another thread).
        const again = this.net !== null && this.run?.modelHash === msg.run.modelHash;
        const kept = again && this.version >= 0 && !this.rounds && this.replica ? { version: this.version, weights: this.replica } : null;
        if (!again) {
          this.net?.dispose();
          // Synthetic: the benchmark's stand-in GPU (synthetic-net.ts); same protocol, no tfjs compute.
          this.net = this.opts.syntheticMsPerExample !== undefined ? new SyntheticNet(spec, this.opts.syntheticMsPerExample) : new Net(spec);
        }
        const net = this.net!;
        this.run = msg.run;
        this.version = -1;
        this.replica = null;
        this.updates = null;
        this.parked = null;
        this.grad = new Float32Array(net.total);
        const compress = checkCompression(msg.run.compress);
        const { params } = paramLayout(spec);
        const psgd = powerSgdPlanOf(params, net.total, compress);
        this.rounds?.dispose();
        // A real net keeps the gradient and PowerSGD's state on its backend; the synthetic one has arrays.
        this.rounds = psgd ? new WorkerRounds(psgd, msg.run.seed, net instanceof Net) : null;
        this.exact?.dispose();
        this.exact = psgd ? (this.opts.exactReplica ?? ((p, lr, c) => new LocalReplica(p, lr, c)))(psgd, msg.run.lr, this.opts.corruptVersion) : null;
        this.drift = undefined;
        this.encoder = psgd ? null : new GradientEncoder(planSegments(params, net.total, compress), net.total);
        this.fp32 = new GradientEncoder(planSegments(params, net.total, NO_COMPRESSION), net.total);
        // Error feedback starts from zero in the new mode (fresh encoders); the weights go on, as the coordinator's do.
        if (kept) this.keepWeights(kept.version, kept.weights);
        // Our identity from now on (the identity object outlives this connection): the coordinator
        // gives a new id when ours was taken, and a secret that makes a reconnect us again.
        this.id.workerId = msg.workerId;
        if (msg.session) this.id.session = msg.session;
        this.update({ state: 'idle', run: msg.run });
        this.opts.log?.(again ? `compression is now ${compress.mode}${kept ? `; weights of v${kept.version} kept` : ''}` : `joined as ${msg.workerId}: ${spec.name}, ${net.total.toLocaleString('en-US')} parameters`);
        return;
      }
      case MSG.weights: {
        const net = this.need();
        if (msg.total !== net.total || msg.offset + body.byteLength / 4 > net.total) throw new Error(`weights slice ${msg.offset}+${body.byteLength / 4} does not fit ${net.total}`);
        if (msg.offset === 0 || msg.version !== this.incomingVersion) {
          this.replica ??= this.updateArena()?.replica ?? new Float32Array(net.total);
          this.version = -1; // the replica is being overwritten
          this.incomingVersion = msg.version;
          this.received = 0;
        }
        const floats = asFloat32(body);
        this.replica!.set(floats, msg.offset);
        this.exact?.post({ op: 'weights', version: msg.version, offset: msg.offset, total: msg.total, floats });
        this.received += body.byteLength / 4;
        if (this.received === net.total) {
          net.setWeights(this.replica!);
          this.version = msg.version;
          this.refreshedAt = msg.version;
          this.hashed = null;
          this.rounds?.restart();
          const p = this.parked;
          if (p && p.a.version === this.version) {
            this.parked = null;
            return this.compute(p.a, p.body);
          }
        }
        return;
      }
      case MSG.update:
        return this.applyUpdate(msg, body);
      case MSG.basis:
        return this.onBasis(msg, body);
      case MSG.assign:
        return this.compute(msg, body);
      case MSG.notice:
        this.opts.log?.(`coordinator: ${msg.message}`);
        return;
      case MSG.progress:
        this.opts.onProgress?.(msg);
        return;
      default:
        throw new Error(`unexpected ${msg.type} from the coordinator`);
    }
  }

  /** After a change of compression: the replica (and a powersgd run's exact copy) holds `weights` at `version`, as before it. */
  private keepWeights(version: number, weights: Float32Array): void {
    this.replica = this.updateArena()?.replica ?? new Float32Array(weights.length);
    this.replica.set(weights);
    this.exact?.post({ op: 'weights', version, offset: 0, total: weights.length, floats: this.replica });
    this.version = version;
    this.refreshedAt = version;
  }

  /**
   * One segment of a compressed run's update: decoded into the update buffer; once all
   * have come, SGD applies it to the replica with the coordinator's arithmetic, so the replica
   * stays bit-equal to the coordinator's weights (checked by the assigns' hashes).
   */
  private applyUpdate(u: Update, body: Uint8Array): void {
    const net = this.need();
    const s = this.encoder!.plan.find((x) => x.offset === u.offset);
    if (!s || (u.codec ?? 'fp32') !== s.codec || u.total !== net.total) throw new Error(`update segment at ${u.offset} (${u.codec ?? 'fp32'}) is not in this run's plan`);
    if (u.offset === 0) { this.updateVersion = u.version; this.updateReceived = 0; }
    if (u.version !== this.updateVersion || u.offset !== this.updateReceived) throw new Error(`update v${u.version} segment at ${u.offset} arrived out of order`);
    const aligned = body.byteOffset % 4 === 0 ? body : new Uint8Array(body);
    const why = checkBody(s, aligned);
    const updates = this.updateArena()!;
    if (why || !decodeInto(s, aligned, updates.update)) throw new Error(`update v${u.version}: ${why ?? 'decodes to NaN/Inf'}`);
    this.updateReceived += s.count;
    if (this.updateReceived < net.total) return;
    // Not on the base version (a resync is on its way, or we missed one): the next assign asks.
    if (this.version !== u.version - 1 || this.replica !== updates.replica) { this.version = -1; return; }
    updates.apply(this.run!.lr, u.batch);
    if (u.version === this.opts.corruptVersion) this.replica[0] += 1;
    net.setWeights(this.replica);
    this.version = u.version;
    this.hashed = null;
  }

  /**
   * A slice of a powersgd broadcast. The exact copy takes each (in its thread), applying the
   * update's parts as they complete, bit for bit as the coordinator. The working copy keeps the
   * base weights until the update is whole (a shard redone in round 2 is recomputed on them); then
   * P̂ (ΣQ_i)ᵀ is applied to it on the device and Q is warm-started. Every K versions it is
   * replaced by the exact copy. A replica not on the base version waits for the full weights.
   */
  private async onBasis(b: Basis, body: Uint8Array): Promise<void> {
    const net = this.need();
    const rounds = this.rounds;
    if (!rounds) throw new Error('basis in a run without powersgd');
    const floats = rounds.decode(b, body);
    const whole = rounds.take(b, floats);
    this.exact!.post({ op: 'basis', basis: b, floats });
    if (b.round === 1 || !whole) return;
    const applied = this.version === b.version - 1 && rounds.whole(b.version);
    if (applied) {
      if (net instanceof Net) applyOnDevice(net, rounds.plan, rounds.round1Sum, rounds.round2Sum, this.run!.lr, b.batch);
      this.version = b.version;
      this.hashed = null;
    }
    // Full weights of this version may have come first (a newcomer): they hold the update already.
    if (this.version !== b.version) { this.version = -1; return; } // the next assign asks for the full weights
    rounds.warmStart(b.version, rounds.round2Sum);
    if (applied && net instanceof Net && b.version - this.refreshedAt >= (this.opts.refreshEvery ?? DEFAULT_REFRESH_EVERY)) await this.refresh(net, b.version);
  }

  /** The working copy becomes the exact copy of `version`; the drift between them is measured first. */
  private async refresh(net: Net, version: number): Promise<void> {
    const snapshot = await this.exact!.snapshot(version);
    if (!snapshot) {
      this.opts.log?.(`the exact copy is not at v${version} to refresh the working weights: asking for the full weights at the next shard`);
      this.version = -1;
      return;
    }
    this.drift = await refreshOnDevice(net, snapshot.weights);
    this.opts.log?.(`v${version}: working weights refreshed from the exact copy (hash ${snapshot.hash}) after ${version - this.refreshedAt} versions; drift max |working − exact| ${this.drift.toExponential(2)}`);
    this.refreshedAt = version;
  }

  /** True when the replica is the weights the assign needs: its version, and its hash when the assign carries one. */
  private holds(a: Assign): boolean {
    if (a.version !== this.version) return false;
    // powersgd: the exact copy checks the hash in its thread while the shard computes (checked).
    if (a.hash === undefined || !this.replica || this.exact) return true;
    if (this.hashed?.version !== this.version) this.hashed = { version: this.version, hash: replicaHash(this.replica) };
    return this.hashed.hash === a.hash;
  }

  private async compute(a: Assign, body: Uint8Array): Promise<void> {
    const net = this.need();
    if (!this.holds(a)) return this.askFullWeights(a, body, a.version === this.version ? `hash ${this.hashed?.hash} differs from the coordinator's ${a.hash}` : `is v${this.version}, shard needs v${a.version}`);
    // powersgd: the exact copy's hash, computed in its thread while this shard computes.
    const check = this.exact && a.hash !== undefined ? this.exact.hash(a.version) : null;
    check?.catch(() => {}); // awaited below; a shard that fails first must not leave it unhandled
    // A powersgd round 2 on the worker that kept the shard's M comes without examples.
    const kept = a.round === 2 && body.byteLength === 0;
    if (!kept && body.byteLength !== a.count * (IMAGE_BYTES + 1)) throw new Error(`shard body ${body.byteLength} bytes, expected ${a.count * (IMAGE_BYTES + 1)}`);
    const images = body.subarray(0, a.count * IMAGE_BYTES);
    const labels = body.subarray(a.count * IMAGE_BYTES);
    this.update({ state: 'working', step: a.step, task: a.task, shardSize: a.count });
    const t0 = performance.now();
    let factors: Float32Array | null = null;
    let stats: ShardStats;
    if (this.rounds && a.task === 'train' && !a.fp32) {
      const r = await this.powerRound(a, images, labels, check ? () => this.checked(a, body, check) : null);
      if (!r) return;
      ({ stats, factors } = r);
    } else {
      if (check && !(await this.checked(a, body, check))) return;
      stats = a.task === 'train'
        ? await net.gradient(images, labels, a.count, this.run!.seed, a.step, a.position, this.grad!)
        : await net.evaluate(images, labels, a.count);
    }
    if (this.opts.delayMsPerExample) await new Promise((r) => setTimeout(r, this.opts.delayMsPerExample! * a.count));
    const computeMs = performance.now() - t0;
    let encodeMs = 0;
    let sendMs = 0;
    if (factors) {
      // The round's factor vector, as fp32 slices or (--factors fp16) halves: the coordinator sums them.
      const round = a.round ?? 1;
      for (const seg of roundSegments(this.rounds!.plan, round)) {
        const t1 = performance.now();
        const { frame, body: b } = gradientFrame(seg, a.step, a.shard, factors.length, null, round);
        encodeFactors(seg, factors, b);
        const t2 = performance.now();
        await this.send(frame);
        encodeMs += t2 - t1;
        sendMs += performance.now() - t2;
      }
    } else if (a.task === 'train') {
      // One frame per segment of the run's plan (a probation check: the fp32 plan), the body
      // encoded straight into the frame.
      const encoder = a.fp32 ? this.fp32! : this.encoder!;
      for (const seg of encoder.plan) {
        const t1 = performance.now();
        // Last step's frame is free again: the socket copied it (Node: masking; browser: send()).
        const { frame, body } = gradientFrame(seg, a.step, a.shard, net.total, this.frames[seg.index]);
        this.frames[seg.index] = frame;
        encoder.encode(seg, this.grad!, body);
        const t2 = performance.now();
        await this.send(frame);
        encodeMs += t2 - t1;
        sendMs += performance.now() - t2;
      }
    }
    await this.send(encode({ type: MSG.result, task: a.task, step: a.step, shard: a.shard, ...stats, timings: { computeMs, encodeMs, sendMs } }));
    const mem = tf.memory();
    await this.send(encode({ type: MSG.status, tensors: mem.numTensors, bytes: mem.numBytes, ...(this.drift !== undefined ? { drift: this.drift } : {}) }));
    this.update({
      state: 'idle', computeMs, uploadMs: encodeMs + sendMs,
      examplesPerSec: a.task === 'train' ? (a.count * 1000) / (computeMs + encodeMs + sendMs) : this.status.examplesPerSec,
      tensors: tf.memory().numTensors,
    });
  }

  /** Parks the assign and asks for the full weights: they replace both copies. */
  private async askFullWeights(a: Assign, body: Uint8Array, why: string): Promise<void> {
    if (this.resyncedAt === a.version) throw new Error(`weights still differ from the coordinator's v${a.version} after a full copy`);
    this.opts.log?.(`replica ${why}: asking for the full weights`);
    this.resyncedAt = a.version;
    this.version = -1;
    this.parked = { a, body };
    await this.send(encode({ type: MSG.resync, version: a.version }));
  }

  /** powersgd: true when the exact copy's hash is the assign's; otherwise asks for the full weights (the working copy is refreshed from them). */
  private async checked(a: Assign, body: Uint8Array, check: Promise<string | null>): Promise<boolean> {
    const hash = await check;
    if (hash === a.hash) return true;
    await this.askFullWeights(a, body, hash === null ? `exact copy is not at v${a.version}` : `exact copy's hash ${hash} differs from the coordinator's ${a.hash}`);
    return false;
  }

  /**
   * A powersgd train assign: round 1 computes the shard's gradient and its P_i; round 2 its Q_i,
   * from the M kept in round 1, or (the assign carries the examples) from the gradient recomputed
   * here, when round 1 was another worker's. Round 2 from a kept M reports no loss: round 1 did.
   */
  private async powerRound(a: Assign, images: Uint8Array, labels: Uint8Array, checked: (() => Promise<boolean>) | null): Promise<{ stats: ShardStats; factors: Float32Array } | null> {
    const rounds = this.rounds!;
    const recompute = a.round !== 2 || images.byteLength > 0;
    let stats: ShardStats = { lossSum: 0, correct: 0, count: a.count };
    let grad: ShardGradient | undefined;
    if (recompute) ({ stats, grad } = await this.shardGradient(a, images, labels));
    try {
      // The hash, awaited before the factors touch the error feedback: a failed check leaves no trace of this shard.
      if (checked && !(await checked())) return null;
      const factors = a.round === 2 ? await rounds.factors2(a.version + 1, a.shard, grad) : await rounds.factors1(a.step, a.shard, grad!);
      return { stats, factors };
    } finally {
      if (grad && !(grad instanceof Float32Array)) tf.dispose(grad);
    }
  }

  /** The shard's gradient sum: tensors left on the backend for a real net, the flat array for the synthetic one. */
  private async shardGradient(a: Assign, images: Uint8Array, labels: Uint8Array): Promise<{ stats: ShardStats; grad: ShardGradient }> {
    const net = this.need();
    const seed = this.run!.seed;
    if (net instanceof Net) {
      const { stats, grads } = await net.gradientTensors(images, labels, a.count, seed, a.step, a.position);
      return { stats, grad: grads };
    }
    return { stats: await net.gradient(images, labels, a.count, seed, a.step, a.position, this.grad!), grad: this.grad! };
  }

  /** fp16 and int8 runs (updates, not weights, each step): the replica's arena, made on first use; null otherwise. */
  private updateArena(): UpdateArena | null {
    const mode = this.run?.compress?.mode;
    if (mode !== 'fp16' && mode !== 'int8') return null;
    return (this.updates ??= new UpdateArena(this.need().total));
  }

  private need(): Trainable {
    if (!this.net) throw new Error('message before welcome');
    return this.net;
  }

  private update(patch: Partial<WorkerStatus>): void {
    Object.assign(this.status, patch);
    this.opts.onStatus?.(this.status);
  }

  close(): void {
    this.update({ state: 'closed' });
  }

  dispose(): void {
    this.rounds?.dispose();
    this.rounds = null;
    this.exact?.dispose();
    this.exact = null;
    this.net?.dispose();
    this.net = null;
  }
}
