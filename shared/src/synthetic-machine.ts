// The synthetic worker machine (`bench scaleout --link`; synthetic.ts runs it as a program) stands
// for a whole worker machine. Everything such a machine does on its own hardware is a sleep: the
// forward and backward pass at X ms per example, and every piece of per-worker CPU work (copying
// the weights into its replica, encoding the gradient, decoding and applying an update, hashing
// the replica) for the time that work took when measured once on this machine (worker-costs.ts).
// With powersgd the worker keeps two copies of the weights (client/src/exact-replica.ts): the
// exact copy's update (split over MACHINE_APPLY_THREADS threads, as worker --apply-threads splits
// it) and hash run beside the main thread, so they cost the step time only when it has to wait for them; the working copy takes the update on the GPU (slept: the factors over
// PCIe, then passes over the weights at V100 bandwidth), and every K versions is replaced (the
// weights over PCIe, and the drift's passes on the GPU). What crosses the network is real: the
// same frames, byte for byte, through a real WebSocket (ws framing and masking, the kernel's TCP),
// to the real coordinator. The point: N worker processes share this machine's cores with the
// coordinator, and their real CPU work would contend with the coordinator's.
//
// Browser-safe: no Node imports.
import { IMAGE_BYTES, MSG, PROTOCOL_VERSION, decodeFrame, encode, paramLayout, validate, welcomedModel, zooHashes, type Assign, type ModelSpec, type RunInfo } from '@tabtrain/shared';
import { GradientEncoder, NO_COMPRESSION, checkCompression, encodeFactors, gradientFrame, planSegments, powerSgdPlanOf, roundSegments, type Segment } from '@tabtrain/shared/compress';
import { ArrivingUpdate, DEFAULT_REFRESH_EVERY, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { MACHINE_APPLY_THREADS, PCIE_BYTES_PER_MS, V100_BYTES_PER_MS, deviceUpdateMs, refreshMs } from '@tabtrain/shared/device-costs';
import { fillGradient, sleep } from '@tabtrain/shared/synthetic-net';
import { syntheticFactors, type WorkerCosts } from '@tabtrain/shared/worker-costs';

/** Passes over the matrices' floats per round (powersgd-ops.ts): round 1 reads g and e, writes M, reads M for P; round 2 reads M for Q, then M and e and writes e. */
const POWERSGD_PASSES = 4;

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
  /** --compress auto: the costs of every mode the coordinator may choose; the machine uses those of the mode each welcome names. */
  costsByMode?: WorkerCosts[];
  /** The key of workers started by the coordinator's own process tree (TABTRAIN_LOCAL_KEY), if any. */
  local?: string;
  /** powersgd: versions between refreshes of the working copy from the exact copy (default DEFAULT_REFRESH_EVERY). */
  refreshEvery?: number;
  /** powersgd: threads the exact copy applies each update with (worker --apply-threads; default MACHINE_APPLY_THREADS): each part takes 1/T of its one-thread time. */
  applyThreads?: number;
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

  /** The CPU work of the mode in use (MachineOptions.costs, or of costsByMode the welcomed mode's). */
  private costs: WorkerCosts | null;

  constructor(private readonly workerId: string, private readonly send: (frame: Uint8Array) => Promise<void>, private readonly opts: MachineOptions, private readonly token?: string) {
    this.costs = opts.costs;
  }

  hello(): Uint8Array {
    return encode({ type: MSG.hello, protocol: PROTOCOL_VERSION, workerId: this.workerId, kind: 'node', backend: 'synthetic', adapter: null, modelHashes: zooHashes(), ...(this.token ? { token: this.token } : {}), ...(this.opts.local ? { local: this.opts.local } : {}) });
  }

  /** Frames are handled strictly in order; a rejection means the connection should close. */
  receive(frame: Uint8Array): Promise<void> {
    this.queue = this.queue.then(() => this.handle(frame));
    return this.queue;
  }

  private block(ms: number): void {
    if (!this.costs) return;
    blockFor(ms);
    this.slept.cpuMs += ms;
  }

  /** The new weights go to the GPU (PCIE_BYTES_PER_MS), slept; skipped with the CPU work (costs null). */
  private async upload(): Promise<void> {
    if (!this.costs) return;
    const ms = (4 * this.need().paramCount) / PCIE_BYTES_PER_MS;
    await sleep(ms);
    this.slept.computeMs += ms;
  }

  /** Work for the exact copy's thread, `ms` long, after what it was given before. */
  private onThread(ms: number): void {
    const p = this.psgd!;
    if (this.costs) p.threadFreeAt = Math.max(performance.now(), p.threadFreeAt) + ms;
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
    if (!this.costs) return;
    const { plan } = this.psgd!;
    const ms = deviceUpdateMs(plan);
    await sleep(ms);
    this.slept.computeMs += ms;
  }

  /** powersgd, every K versions: the exact copy's snapshot goes up to the GPU, which measures the drift and replaces the working copy by it. */
  private async refresh(version: number): Promise<void> {
    const p = this.psgd!;
    p.refreshedAt = version;
    if (!this.costs) return;
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
        // A second welcome changes the compression (--compress auto): the version held stays, except out of powersgd (as core.ts).
        const kept = this.run?.modelHash === msg.run.modelHash && !this.psgd ? this.version : -1;
        if (this.opts.costsByMode) this.costs = this.opts.costsByMode.find((x) => x.compress.mode === compress.mode) ?? null;
        const c = this.costs;
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
            encodeFactors(s, v, b); // fp32, or --factors fp16: real halves, which the coordinator decodes
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
        this.version = kept;
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
        this.block(floats * (this.costs?.weightsMsPerFloat ?? 0));
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
        this.block(this.costs?.decodeMs[s.index] ?? 0);
        this.updateReceived += s.count;
        if (this.updateReceived < run.paramCount) return;
        if (this.version !== msg.version - 1) { this.version = -1; return; }
        this.block(this.costs?.applyMs ?? 0);
        await this.upload();
        this.version = msg.version;
        return;
      }
      case MSG.basis: {
        const p = this.psgd;
        if (!p) throw new Error('basis in a run without powersgd');
        const floats = msg.round === 1 ? p.plan.round1Floats : p.plan.round2Floats;
        const got = p.basis[msg.round];
        // fp16 factors (--factors fp16) come as halves: 2 bytes a float.
        const count = body.byteLength / ((msg.codec ?? 'fp32') === 'fp16' ? 2 : 4);
        if (msg.total !== floats || msg.offset + count > floats) throw new Error(`basis round ${msg.round} slice does not fit its ${floats} floats`);
        if (msg.offset === 0) { got.version = msg.version; got.received = 0; }
        if (msg.version !== got.version || msg.offset !== got.received) throw new Error(`basis round ${msg.round} v${msg.version} slice at ${msg.offset} arrived out of order`);
        got.received += count;
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
          const costs = this.costs?.applyPartMs ?? [];
          // Split by rows over the threads (low-rank-pool.ts): each takes 1/T of the part; the fp32 tensors are one thread's.
          const threads = this.opts.applyThreads ?? MACHINE_APPLY_THREADS;
          this.onThread((part.dense.length ? costs[0] : 0) + part.matrices.reduce((a, m) => a + costs[1 + p.plan.matrices.indexOf(m)], 0) / threads);
        }
        if (got.received < floats) return;
        if (p.arriving?.version === msg.version && p.arriving.done) {
          await this.deviceUpdate();
          this.version = msg.version;
        }
        if (this.version !== msg.version) { this.version = -1; return; }
        this.block(this.costs?.warmStartMs ?? 0);
        if (msg.version - p.refreshedAt >= (this.opts.refreshEvery ?? DEFAULT_REFRESH_EVERY)) await this.refresh(msg.version);
        return;
      }
      case MSG.assign:
        return this.compute(msg, body);
      case MSG.notice:
        this.opts.log?.(`coordinator: ${msg.message}`);
        return;
      case MSG.progress: // the run's progress, for a page to show: a benchmark's machine has no one to show it to
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
      if (this.psgd) this.onThread(this.costs?.hashMs ?? 0);
      else this.block(this.costs?.hashMs ?? 0);
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
        if (!a.fp32) this.block(this.costs?.encodeMs[seg.index] ?? 0);
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
    const computeMs = performance.now() - t0;
    // The hash check's answer, before the factors leave: the exact copy's threads' backlog, reported
    // as the time before sending (encodeMs), so that computeMs stays the GPU's.
    const t1 = performance.now();
    await this.awaitThread();
    const encodeMs = performance.now() - t1;
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
    await this.send(encode({ type: MSG.result, task: a.task, step: a.step, shard: a.shard, ...stats, timings: { computeMs, encodeMs, sendMs } }));
    await this.send(encode({ type: MSG.status, tensors: 0, bytes: 0 }));
  }

  private need(): RunInfo {
    if (!this.run || !this.spec) throw new Error('message before welcome');
    return this.run;
  }
}
