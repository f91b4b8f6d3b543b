// Synthetic workers for the scale-out benchmark. Browser-safe: no Node imports.
//
// SyntheticNet (`tabtrain worker --synthetic-ms-per-example X`) is a synthetic "GPU": it stands in
// for Net inside the real WorkerCore. Computing a shard sleeps count × X ms (sleeping, not spinning,
// so the machine's cores stay free for the communication being measured) and the gradient is a
// fixed deterministic vector of the model's full size. Everything else the worker does (taking in
// the weights, encoding and sending the gradient, decoding and applying compressed updates) is
// real CPU work on this machine.
//
// SyntheticMachine (`bench scaleout --link`; the Node entry at the end of this file) stands for a whole worker
// machine. Everything such a machine does on its own hardware is a sleep: the forward and backward
// pass at X ms per example, and every piece of per-worker CPU work (copying the weights into its
// replica, encoding the gradient, decoding and applying an update, hashing the replica) for the time
// that work took when measured once on this machine (measureWorkerCosts). With powersgd the worker
// keeps two copies of the weights (client/src/exact-replica.ts): the exact copy's update and hash
// run in a thread of their own, so they cost the step time only when it has to wait for them; the
// working copy takes the update on the GPU (slept: the factors over PCIe, then passes over the
// weights at V100 bandwidth), and every K versions is replaced (the weights over PCIe, and the
// drift's passes on the GPU). What crosses the network
// is real: the same frames, byte for byte, through a real WebSocket (ws framing and masking, the
// kernel's TCP), to the real coordinator. The point: N worker processes share this machine's cores
// with the coordinator, and their real CPU work would contend with the coordinator's.
//
// Run as a Node program (the benchmark does; `node --import tsx shared/src/synthetic.ts ...`):
//   synthetic.ts measure MODEL MODE RANK   prints the WorkerCosts of that configuration as JSON
//   synthetic.ts machine JSON              one SyntheticMachine session, MachineEntryOptions as JSON
// The entry loads ws only when run that way, so the page's bundle never touches it.
import { CHUNK_FLOATS, CLOSE, CLOSE_NAMES, IMAGE_BYTES, MAX_FRAME_BYTES, MSG, closeReason, PROTOCOL_VERSION, decodeFrame, encode, getModel, paramLayout, replicaHash, validate, welcomedModel, zooHashes, type Assign, type ModelSpec, type RunInfo } from '@tabtrain/shared';
import type { Net, ShardStats } from '@tabtrain/shared/net';
import { mixSeed } from '@tabtrain/shared';
import { GradientEncoder, NO_COMPRESSION, checkBody, checkCompression, decodeInto, gradientFrame, planSegments, powerSgdPlanOf, roundSegments, type Compression, type Segment } from '@tabtrain/shared/compress';
import { ArrivingUpdate, DEFAULT_REFRESH_EVERY, LowRankKernel, applyPart, applyPowerSgd, nextQ, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { UpdateArena } from '@tabtrain/shared/simd';
import { PCIE_BYTES_PER_MS, V100_BYTES_PER_MS, deviceUpdateMs, refreshMs } from '@tabtrain/shared/device-costs';

export { PCIE_BYTES_PER_MS, V100_BYTES_PER_MS, powerSgdMachineMs } from '@tabtrain/shared/device-costs';

/** What WorkerCore needs from a model: Net, or this stand-in. */
export type Trainable = Pick<Net, 'total' | 'setWeights' | 'gradient' | 'evaluate' | 'dispose'>;

/** d2l's V100 runs AlexNet at ~4,000 examples/s: 0.25 ms per example. */
export const V100_MS_PER_EXAMPLE = 0.25;
/** Passes over the matrices' floats per round (powersgd-ops.ts): round 1 reads g and e, writes M, reads M for P; round 2 reads M for Q, then M and e and writes e. */
const POWERSGD_PASSES = 4;
export class SyntheticNet implements Trainable {
  readonly total: number;
  /** The array last filled: the gradient is written once, then left in place (it never changes). */
  private filled: Float32Array | null = null;

  constructor(readonly spec: ModelSpec, readonly msPerExample: number) {
    this.total = paramLayout(spec).total;
  }

  /** A real worker uploads the weights to its GPU here; a synthetic one has nowhere to put them. */
  setWeights(flat: Float32Array): void {
    if (flat.length !== this.total) throw new Error(`weights have ${flat.length} floats, model ${this.spec.name} needs ${this.total}`);
  }

  async gradient(_images: Uint8Array, _labels: Uint8Array, count: number, seed: number, _step: number, _position: number, out: Float32Array): Promise<ShardStats> {
    await sleep(count * this.msPerExample);
    if (this.filled !== out) {
      fillGradient(out, seed);
      this.filled = out;
    }
    return { lossSum: count * Math.LN10, correct: Math.round(count / 10), count };
  }

  async evaluate(_images: Uint8Array, _labels: Uint8Array, count: number): Promise<ShardStats> {
    await sleep((count * this.msPerExample) / 3); // forward only: about a third of a training step
    return { lossSum: count * Math.LN10, correct: Math.round(count / 10), count };
  }

  dispose(): void {}
}

/** Gradient-like values (|g| ≲ 1e-3, 70% exact zeros as in a real AlexNet gradient), cheap to make. */
export function fillGradient(out: Float32Array, seed: number): void {
  let x = mixSeed(seed, 0x5e7) | 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; // xorshift32
    const u = (x >>> 0) / 4294967296;
    out[i] = u < 0.7 ? 0 : (u - 0.85) * 6.6e-3;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- the synthetic worker machine ----

/** Per-worker CPU work of one run configuration (model + compression), measured once on this machine, in ms. */
export interface WorkerCosts {
  model: string;
  compress: Compression;
  /** Copying received weights into the replica, per float. */
  weightsMsPerFloat: number;
  /** Encoding each gradient segment, in plan order. */
  encodeMs: number[];
  /** Checking and decoding each segment of a compressed update, in plan order. */
  decodeMs: number[];
  /** SGD applying a decoded update to the replica (UpdateArena: SIMD where it exists, as workers do). */
  applyMs: number;
  /** powersgd: the update's parts applied one by one as they arrive (the fp32 tensors, then each matrix in plan order). */
  applyPartMs: number[];
  /** replicaHash of the replica (assigns of compressed runs carry a hash every --verify-every steps). */
  hashMs: number;
  /** powersgd: making the next step's Q from the round-2 broadcast (nextQ), on the worker's CPU. */
  warmStartMs: number;
}

/**
 * Times, on this machine, the CPU work a worker does per step for `spec` under `compress`: the
 * same functions WorkerCore calls, on a gradient like SyntheticNet's. Each runs once to warm up the
 * JIT and the allocator, then 3 times, and the fastest is kept. AlexNet with PowerSGD takes several
 * seconds; needs about 5 model-sized vectors of memory.
 */
export function measureWorkerCosts(spec: ModelSpec, compress: Compression, seed = 42): WorkerCosts {
  const { params, total } = paramLayout(spec);
  const replica = new Float32Array(total);
  const incoming = new Float32Array(total).fill(1e-3);
  // Best of 3 after one warm-up run (JIT, allocator): on a shared machine the fastest is the work's own cost.
  const time = (f: () => void) => { f(); let best = Infinity; for (let i = 0; i < 3; i++) { const t0 = performance.now(); f(); best = Math.min(best, performance.now() - t0); } return best; };
  const copyMs = time(() => { for (let o = 0; o < total; o += CHUNK_FLOATS) replica.set(incoming.subarray(o, Math.min(total, o + CHUNK_FLOATS)), o); });
  const psgd = powerSgdPlanOf(params, total, compress);
  if (psgd) {
    // The factors are made on the worker's GPU (slept, see POWERSGD_PASSES); its CPU applies the update and makes the next Q.
    const [round1, round2] = syntheticFactors(psgd, seed);
    // As a worker keeps it (powersgd-rounds.ts): the replica in the kernel's memory, updated in place.
    const kernel = LowRankKernel.withWeights(psgd);
    const w = kernel?.weights ?? replica;
    const applyMs = time(() => applyPowerSgd(psgd, w, round1, round2, spec.lr, 128, kernel));
    const parts = [{ dense: psgd.dense, matrices: [] }, ...psgd.matrices.map((m) => ({ dense: [], matrices: [m] }))];
    const applyPartMs = parts.map((part) => time(() => applyPart(psgd, w, part, round1, round2, spec.lr, 128, kernel)));
    const warmStartMs = time(() => { nextQ(psgd, round2, seed, 1); });
    const hashMs = time(() => { replicaHash(replica); });
    return { model: spec.name, compress, weightsMsPerFloat: copyMs / total, encodeMs: [], decodeMs: [], applyMs, applyPartMs, hashMs, warmStartMs };
  }
  const plan = planSegments(params, total, compress);
  const grad = new Float32Array(total);
  fillGradient(grad, seed);
  const encoder = new GradientEncoder(plan, total);
  const bodies = plan.map((s) => gradientFrame(s, 1, 0, total).body);
  const encodeMs = plan.map((s) => time(() => encoder.encode(s, grad, bodies[s.index])));
  const compressed = compress.mode !== 'none';
  // As a worker keeps them (core.ts): the replica and the decoded update side by side, SIMD SGD.
  const updates = new UpdateArena(total);
  const decodeMs = compressed ? plan.map((s) => time(() => { if (checkBody(s, bodies[s.index]) || !decodeInto(s, bodies[s.index], updates.update)) throw new Error(`segment ${s.index} does not decode`); })) : plan.map(() => 0);
  const applyMs = compressed ? time(() => updates.apply(spec.lr, 128)) : 0;
  const hashMs = compressed ? time(() => { replicaHash(replica); }) : 0;
  return { model: spec.name, compress, weightsMsPerFloat: copyMs / total, encodeMs, decodeMs, applyMs, applyPartMs: [], hashMs, warmStartMs: 0 };
}

/**
 * A synthetic machine's factor vectors of both rounds: gradient-like values, as its gradient is.
 * Their values change no cost: the coordinator sums and orthonormalises whatever comes.
 */
function syntheticFactors(plan: PowerSgdPlan, seed: number): [Float32Array, Float32Array] {
  const r1 = new Float32Array(plan.round1Floats), r2 = new Float32Array(plan.round2Floats);
  fillGradient(r1, seed);
  fillGradient(r2, seed + 1);
  return [r1, r2];
}

/** Ms a V100 takes for one PowerSGD round's passes over the plan's matrices. */
function powerSgdGpuMs(plan: PowerSgdPlan): number {
  const floats = plan.matrices.reduce((a, m) => a + m.rows * m.cols, 0);
  return (POWERSGD_PASSES * 4 * floats) / V100_BYTES_PER_MS;
}

/** Blocks the thread for `ms` without using the CPU (Atomics.wait), as synchronous CPU work would block it. */
export function blockFor(ms: number): void {
  if (!(ms > 0)) return;
  Atomics.wait(BLOCK, 0, 0, ms);
}
const BLOCK = typeof SharedArrayBuffer === 'function' ? new Int32Array(new SharedArrayBuffer(4)) : new Int32Array(1);

export interface MachineOptions {
  /** Forward + backward per example, ms (d2l's V100: 0.25). Slept: the event loop stays free, as it is while a GPU computes. */
  msPerExample: number;
  /**
   * The worker's CPU work, from measureWorkerCosts, or null to skip it (it then costs nothing).
   * Blocked for (blockFor): the event loop stops for that long, as it does while the CPU works.
   */
  costs: WorkerCosts | null;
  /** The key of workers started by the coordinator's own process tree (TABTRAIN_LOCAL_KEY), if any. */
  local?: string;
  /** powersgd: versions between refreshes of the working copy from the exact copy (default DEFAULT_REFRESH_EVERY). */
  refreshEvery?: number;
  log?: (line: string) => void;
}

/**
 * The protocol side of a worker machine, frames in and frames out, like WorkerCore, with every
 * local computation replaced by a sleep (see the top of this file). It holds no replica: the
 * gradient it sends does not depend on the weights, so it keeps only the versions in order, and
 * trusts the weights' hash (it has nothing to hash; it blocks for the time hashing takes).
 */
export class SyntheticMachine {
  private run: RunInfo | null = null;
  private spec: ModelSpec | null = null;
  private plan: Segment[] = [];
  private frames: Uint8Array[] = [];
  private version = -1;
  private incomingVersion = -1;
  private received = 0;
  private updateVersion = -1;
  private updateReceived = 0;
  /** powersgd: the plan, both rounds' frames (made at welcome, headers rewritten per shard), and the broadcasts seen. */
  private psgd: {
    plan: PowerSgdPlan; frames: [Uint8Array[], Uint8Array[]]; gpuMs: number; basis: Record<1 | 2, { version: number; received: number }>;
    /** The update being applied to the exact copy as its round 2 arrives (exact-replica.ts). */
    arriving: ArrivingUpdate | null;
    /** When the exact copy's thread is done with the work given it so far (performance.now() ms): it runs beside the main thread, on another core. */
    threadFreeAt: number;
    /** The version at which the working copy on the GPU was last made equal to the exact copy. */
    refreshedAt: number;
  } | null = null;
  private parked: { a: Assign; body: Uint8Array } | null = null;
  /** A compressed run's probation checks (assign.fp32): the fp32 gradient's frames, made at the first. */
  private fp32Frames: Uint8Array[] = [];
  private queue: Promise<void> = Promise.resolve();
  /** Milliseconds spent standing in for CPU work, and for the GPU, so far (the benchmark reports them). */
  readonly slept = { cpuMs: 0, computeMs: 0 };

  constructor(private readonly workerId: string, private readonly send: (frame: Uint8Array) => Promise<void>, private readonly opts: MachineOptions, private readonly token?: string) {}

  hello(): Uint8Array {
    return encode({ type: MSG.hello, protocol: PROTOCOL_VERSION, workerId: this.workerId, kind: 'node', backend: 'synthetic', adapter: null, modelHashes: zooHashes(), ...(this.token ? { token: this.token } : {}), ...(this.opts.local ? { local: this.opts.local } : {}) });
  }

  /** Frames are handled strictly in order; a rejection means the connection should close. */
  receive(frame: Uint8Array): Promise<void> {
    this.queue = this.queue.then(() => this.handle(frame));
    return this.queue;
  }

  private block(ms: number): void {
    if (!this.opts.costs) return;
    blockFor(ms);
    this.slept.cpuMs += ms;
  }

  /** The new weights go to the GPU (PCIE_BYTES_PER_MS), slept; skipped with the CPU work (costs null). */
  private async upload(): Promise<void> {
    if (!this.opts.costs) return;
    const ms = (4 * this.need().paramCount) / PCIE_BYTES_PER_MS;
    await sleep(ms);
    this.slept.computeMs += ms;
  }

  /** Work for the exact copy's thread, `ms` long, after what it was given before. */
  private onThread(ms: number): void {
    const p = this.psgd!;
    if (this.opts.costs) p.threadFreeAt = Math.max(performance.now(), p.threadFreeAt) + ms;
  }

  /** Waits for the exact copy's thread to finish what it was given (its answer is needed now). */
  private async awaitThread(): Promise<void> {
    const wait = this.psgd!.threadFreeAt - performance.now();
    if (!(wait > 0)) return;
    await sleep(wait);
    this.slept.cpuMs += wait;
  }

  /**
   * powersgd: the update applied to the working copy on the GPU (device-update.ts): the factors
   * go up (PCIe), then passes over the weights at the GPU's memory bandwidth (device-costs.ts).
   */
  private async deviceUpdate(): Promise<void> {
    if (!this.opts.costs) return;
    const { plan } = this.psgd!;
    const ms = deviceUpdateMs(plan);
    await sleep(ms);
    this.slept.computeMs += ms;
  }

  /** powersgd, every K versions: the exact copy's snapshot goes up to the GPU, which measures the drift and replaces the working copy by it. */
  private async refresh(version: number): Promise<void> {
    const p = this.psgd!;
    p.refreshedAt = version;
    if (!this.opts.costs) return;
    await this.awaitThread();
    const ms = refreshMs(p.plan.total);
    await sleep(ms);
    this.slept.computeMs += ms;
  }

  private async handle(frame: Uint8Array): Promise<void> {
    const { header, body } = decodeFrame(frame);
    const msg = validate(header);
    switch (msg.type) {
      case MSG.welcome: {
        const spec = welcomedModel(msg.run.model, msg.run.modelHash);
        const compress = checkCompression(msg.run.compress);
        const c = this.opts.costs;
        if (c && (c.model !== spec.name || c.compress.mode !== compress.mode || (compress.mode === 'powersgd' && c.compress.rank !== compress.rank))) {
          throw new Error(`costs were measured for ${c.model}/${c.compress.mode}, the run is ${spec.name}/${compress.mode}`);
        }
        const { params, total } = paramLayout(spec);
        this.spec = spec;
        this.run = msg.run;
        const psgd = powerSgdPlanOf(params, total, compress);
        if (psgd) {
          const frames = syntheticFactors(psgd, msg.run.seed).map((v, i) => roundSegments(psgd, (i + 1) as 1 | 2).map((s) => {
            const { frame: f, body: b } = gradientFrame(s, 0, 0, v.length, null, (i + 1) as 1 | 2);
            b.set(new Uint8Array(v.buffer, 4 * s.offset, 4 * s.count));
            return f;
          }));
          this.psgd = { plan: psgd, frames: frames as [Uint8Array[], Uint8Array[]], gpuMs: powerSgdGpuMs(psgd), basis: { 1: { version: -1, received: 0 }, 2: { version: -1, received: 0 } }, arriving: null, threadFreeAt: 0, refreshedAt: -1 };
          this.plan = [];
        } else {
          this.psgd = null;
          this.plan = planSegments(params, total, compress);
          // The gradient's frames, encoded once for real (the coordinator decodes real codec output), then reused.
          const grad = new Float32Array(total);
          fillGradient(grad, msg.run.seed);
          const encoder = new GradientEncoder(this.plan, total);
          this.frames = this.plan.map((s) => { const { frame: f, body: b } = gradientFrame(s, 0, 0, total); encoder.encode(s, grad, b); return f; });
        }
        this.version = -1;
        this.parked = null;
        this.fp32Frames = [];
        this.opts.log?.(`joined as ${msg.workerId}: ${spec.name}, ${total.toLocaleString('en-US')} parameters, synthetic machine`);
        return;
      }
      case MSG.weights: {
        const total = this.need().paramCount;
        const floats = body.byteLength / 4;
        if (msg.total !== total || msg.offset + floats > total) throw new Error(`weights slice ${msg.offset}+${floats} does not fit ${total}`);
        if (msg.offset === 0 || msg.version !== this.incomingVersion) {
          this.version = -1;
          this.incomingVersion = msg.version;
          this.received = 0;
          if (this.psgd) this.psgd.arriving = null; // the replica is replaced: no update is half applied to it
        }
        this.block(floats * (this.opts.costs?.weightsMsPerFloat ?? 0));
        this.received += floats;
        if (this.received === total) {
          await this.upload();
          this.version = msg.version;
          if (this.psgd) this.psgd.refreshedAt = msg.version;
          const p = this.parked;
          if (p && p.a.version === this.version) { this.parked = null; return this.compute(p.a, p.body); }
        }
        return;
      }
      case MSG.update: {
        const run = this.need();
        const s = this.plan.find((x) => x.offset === msg.offset);
        if (!s || (msg.codec ?? 'fp32') !== s.codec || msg.total !== run.paramCount || body.byteLength !== s.bytes) throw new Error(`update segment at ${msg.offset} (${msg.codec ?? 'fp32'}) is not in this run's plan`);
        if (msg.offset === 0) { this.updateVersion = msg.version; this.updateReceived = 0; }
        if (msg.version !== this.updateVersion || msg.offset !== this.updateReceived) throw new Error(`update v${msg.version} segment at ${msg.offset} arrived out of order`);
        this.block(this.opts.costs?.decodeMs[s.index] ?? 0);
        this.updateReceived += s.count;
        if (this.updateReceived < run.paramCount) return;
        if (this.version !== msg.version - 1) { this.version = -1; return; }
        this.block(this.opts.costs?.applyMs ?? 0);
        await this.upload();
        this.version = msg.version;
        return;
      }
      case MSG.basis: {
        const p = this.psgd;
        if (!p) throw new Error('basis in a run without powersgd');
        const floats = msg.round === 1 ? p.plan.round1Floats : p.plan.round2Floats;
        const got = p.basis[msg.round];
        if (msg.total !== floats || msg.offset + body.byteLength / 4 > floats) throw new Error(`basis round ${msg.round} slice does not fit its ${floats} floats`);
        if (msg.offset === 0) { got.version = msg.version; got.received = 0; }
        if (msg.version !== got.version || msg.offset !== got.received) throw new Error(`basis round ${msg.round} v${msg.version} slice at ${msg.offset} arrived out of order`);
        got.received += body.byteLength / 4;
        if (msg.round === 1) return;
        // As WorkerCore: the exact copy (a thread: its time is its own) takes each part of the
        // update as it arrives; the working copy on the GPU takes the whole update once it is here.
        const round1 = p.basis[1];
        if (msg.offset === 0) {
          const base = this.version === msg.version - 1 && round1.version === msg.version && round1.received === p.plan.round1Floats;
          p.arriving = base ? new ArrivingUpdate(p.plan, msg.version) : null;
        }
        if (p.arriving?.version === msg.version) {
          const part = p.arriving.due(got.received);
          const costs = this.opts.costs?.applyPartMs ?? [];
          this.onThread((part.dense.length ? costs[0] : 0) + part.matrices.reduce((a, m) => a + costs[1 + p.plan.matrices.indexOf(m)], 0));
        }
        if (got.received < floats) return;
        if (p.arriving?.version === msg.version && p.arriving.done) {
          await this.deviceUpdate();
          this.version = msg.version;
        }
        if (this.version !== msg.version) { this.version = -1; return; }
        this.block(this.opts.costs?.warmStartMs ?? 0);
        if (msg.version - p.refreshedAt >= (this.opts.refreshEvery ?? DEFAULT_REFRESH_EVERY)) await this.refresh(msg.version);
        return;
      }
      case MSG.assign:
        return this.compute(msg, body);
      case MSG.notice:
        this.opts.log?.(`coordinator: ${msg.message}`);
        return;
      default:
        throw new Error(`unexpected ${msg.type} from the coordinator`);
    }
  }

  private async compute(a: Assign, body: Uint8Array): Promise<void> {
    const run = this.need();
    if (a.version !== this.version) {
      this.opts.log?.(`holds v${this.version}, shard needs v${a.version}: asking for the full weights`);
      this.version = -1;
      this.parked = { a, body };
      await this.send(encode({ type: MSG.resync, version: a.version }));
      return;
    }
    // powersgd: the exact copy hashes in its thread while the shard computes; elsewhere, on the main thread.
    if (a.hash !== undefined) {
      if (this.psgd) this.onThread(this.opts.costs?.hashMs ?? 0);
      else this.block(this.opts.costs?.hashMs ?? 0);
    }
    if (this.psgd && a.task === 'train' && !a.fp32) return this.powerRound(a, body);
    if (this.psgd) await this.awaitThread();
    if (a.fp32 && this.fp32Frames.length === 0) {
      // A compressed run's probation check: plain fp32 frames of the synthetic gradient, made once.
      const { params, total } = paramLayout(this.spec!);
      const grad = new Float32Array(total);
      fillGradient(grad, run.seed);
      this.fp32Frames = planSegments(params, total, NO_COMPRESSION).map((s) => { const { frame: f, body: b } = gradientFrame(s, 0, 0, total); b.set(new Uint8Array(grad.buffer, 4 * s.offset, 4 * s.count)); return f; });
    }
    if (body.byteLength !== a.count * (IMAGE_BYTES + 1)) throw new Error(`shard body ${body.byteLength} bytes, expected ${a.count * (IMAGE_BYTES + 1)}`);
    const t0 = performance.now();
    const ms = a.count * this.opts.msPerExample * (a.task === 'train' ? 1 : 1 / 3);
    await sleep(ms);
    this.slept.computeMs += ms;
    const computeMs = performance.now() - t0;
    let encodeMs = 0;
    let sendMs = 0;
    const stats = { lossSum: a.count * Math.LN10, correct: Math.round(a.count / 10), count: a.count };
    if (a.task === 'train') {
      const plan = a.fp32 ? planSegments(paramLayout(this.spec!).params, run.paramCount, NO_COMPRESSION) : this.plan;
      const frames = a.fp32 ? this.fp32Frames : this.frames;
      for (const seg of plan) {
        const t1 = performance.now();
        const old = frames[seg.index];
        // The header carries the step and shard; the body, encoded at welcome, stays in place.
        const { frame, body: b } = gradientFrame(seg, a.step, a.shard, run.paramCount, old);
        if (frame !== old) b.set(old.subarray(old.byteLength - seg.bytes)); // the header's length changed (rare)
        frames[seg.index] = frame;
        if (!a.fp32) this.block(this.opts.costs?.encodeMs[seg.index] ?? 0);
        const t2 = performance.now();
        await this.send(frame);
        encodeMs += t2 - t1;
        sendMs += performance.now() - t2;
      }
    }
    await this.send(encode({ type: MSG.result, task: a.task, step: a.step, shard: a.shard, ...stats, timings: { computeMs, encodeMs, sendMs } }));
    await this.send(encode({ type: MSG.status, tensors: 0, bytes: 0 }));
  }

  /** A powersgd round: the GPU's forward and backward (round 1, or a recomputation) and its passes over the matrices are slept; the factors are sent for real. */
  private async powerRound(a: Assign, body: Uint8Array): Promise<void> {
    const p = this.psgd!;
    const round = a.round ?? 1;
    const recompute = round === 1 || body.byteLength > 0;
    if (recompute && body.byteLength !== a.count * (IMAGE_BYTES + 1)) throw new Error(`shard body ${body.byteLength} bytes, expected ${a.count * (IMAGE_BYTES + 1)}`);
    if (round === 2 && (p.basis[1].version !== a.version + 1 || p.basis[1].received !== p.plan.round1Floats)) throw new Error(`round 2 of shard ${a.shard} before the round-1 broadcast of version ${a.version + 1}`);
    const t0 = performance.now();
    const ms = (recompute ? a.count * this.opts.msPerExample : 0) + p.gpuMs;
    await sleep(ms);
    this.slept.computeMs += ms;
    await this.awaitThread(); // the hash check's answer, before the factors leave
    const computeMs = performance.now() - t0;
    let sendMs = 0;
    const frames = p.frames[round - 1];
    for (let i = 0; i < frames.length; i++) {
      const old = frames[i];
      const floats = round === 1 ? p.plan.round1Floats : p.plan.round2Floats;
      const seg = roundSegments(p.plan, round)[i];
      const { frame, body: b } = gradientFrame(seg, a.step, a.shard, floats, old, round);
      if (frame !== old) b.set(old.subarray(old.byteLength - seg.bytes));
      frames[i] = frame;
      const t2 = performance.now();
      await this.send(frame);
      sendMs += performance.now() - t2;
    }
    const stats = recompute ? { lossSum: a.count * Math.LN10, correct: Math.round(a.count / 10), count: a.count } : { lossSum: 0, correct: 0, count: a.count };
    await this.send(encode({ type: MSG.result, task: a.task, step: a.step, shard: a.shard, ...stats, timings: { computeMs, encodeMs: 0, sendMs } }));
    await this.send(encode({ type: MSG.status, tensors: 0, bytes: 0 }));
  }

  private need(): RunInfo {
    if (!this.run || !this.spec) throw new Error('message before welcome');
    return this.run;
  }
}

// ---- Node entry (the benchmark's processes); never runs in a page ----

export interface MachineEntryOptions {
  url: string;
  msPerExample: number;
  /** null: the worker's CPU work is skipped rather than slept (costs nothing). */
  costs: WorkerCosts | null;
  token?: string;
}

interface NodeProcess {
  argv: string[];
  env: Record<string, string | undefined>;
  send?: unknown;
  exit(code: number): never;
  on(event: string, f: () => void): void;
}

async function nodeMain(proc: NodeProcess): Promise<void> {
  const [cmd, ...rest] = proc.argv.slice(2);
  if (cmd === 'measure') {
    const [model, mode, rank] = rest;
    const costs = measureWorkerCosts(getModel(model), checkCompression({ mode, rank: Number(rank) }));
    console.log(JSON.stringify(costs));
    proc.exit(0);
  }
  if (cmd !== 'machine') throw new Error(`usage: synthetic.ts measure MODEL MODE RANK | synthetic.ts machine JSON`);
  const o = JSON.parse(rest[0]) as MachineEntryOptions;
  // A worker the benchmark started exits with it (the IPC channel closes even on SIGKILL), and
  // leaves Ctrl-C to it. It presents the local key it inherits (TABTRAIN_LOCAL_KEY), as the
  // coordinator's own local workers do: the benchmark's workers are established from the first step.
  if (proc.send) proc.on('disconnect', () => proc.exit(0));
  proc.on('SIGINT', () => {});
  const WS = 'ws';
  const { default: WebSocket } = (await import(/* @vite-ignore */ WS)) as { default: typeof import('ws').default };
  const id = `synthetic-${Math.random().toString(16).slice(2, 10)}`;
  const ws = new WebSocket(o.url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
  const send = (frame: Uint8Array) => new Promise<void>((res, rej) => ws.send(frame, (err?: Error) => (err ? rej(err) : res())));
  const machine = new SyntheticMachine(id, send, { msPerExample: o.msPerExample, costs: o.costs, local: proc.env.TABTRAIN_LOCAL_KEY }, o.token);
  ws.on('open', () => ws.send(machine.hello()));
  ws.on('message', (data: Uint8Array) => {
    machine.receive(data).catch((e) => {
      console.error(`[${id}] error: ${(e as Error).message}`);
      ws.close(CLOSE.unexpected, closeReason((e as Error).message));
    });
  });
  ws.on('error', (e: Error) => console.error(`[${id}] socket error: ${e.message}`));
  ws.on('close', (code: number, reason: Uint8Array) => {
    if (code === CLOSE.finished) proc.exit(0);
    console.error(`[${id}] closed: ${CLOSE_NAMES[code] ?? code} (${code}) ${new TextDecoder().decode(reason)}`);
    proc.exit(1);
  });
}

const nodeProcess = (globalThis as { process?: NodeProcess }).process;
if (nodeProcess?.argv?.[1]?.endsWith('synthetic.ts') && typeof (globalThis as { window?: unknown }).window === 'undefined') {
  nodeMain(nodeProcess).catch((e) => { console.error(`synthetic.ts: ${(e as Error).stack ?? e}`); nodeProcess.exit(1); });
}
