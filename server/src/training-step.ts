// One training step, top to bottom: plan the shards → tasks → (powersgd: round 1, then round 2)
// → apply SGD → the step's record. Also the test evaluation, which is one forward-only round of
// tasks. The sessions run the tasks; the step (step.ts) sums and applies; the replicas
// (replicas.ts) say who holds the new version.
import type { EventEmitter } from 'node:events';
import { IMAGE_BYTES, planShards, type Result, type RunInfo } from '@tabtrain/shared';
import type { Dataset } from './data';
import { planStep, probeInterval, type WorkerCost } from './cost-model';
import { modeName, type Fleet } from './autopilot';
import { guarded } from './guard';
import { COMPUTE_SAMPLES } from './pace';
import { LARGE_FRAME, LinkMeter, onLoopback } from './link-meter';
import type { Conn, Membership } from './membership';
import type { Replicas } from './replicas';
import type { CoordinatorOptions, StepRecord } from './run-options';
import type { Scheduler, Task } from './scheduler';
import type { Sessions } from './sessions';
import type { Step } from './step';
import type { Wire } from './wire';

/** --balance cost: steps every worker computes after a switch into powersgd, before any is benched (COMPUTE_SAMPLES: its rate is then its own). */
export const WARM_STEPS = COMPUTE_SAMPLES;

export interface StepStats { lossSum: number; correct: number; count: number }

export class TrainingStep {
  /** The last step's record (the 'step' event's). */
  last: StepRecord | null = null;
  /** The compression the last cost plan was made in (--balance cost): a new one makes every bench stale. */
  private plannedIn: string | null = null;
  /** The version before which no worker is benched (WARM_STEPS after a switch into powersgd). */
  private warmUntil = 0;
  private readonly link: LinkMeter;
  /** --balance cost: steps between re-measurements of a benched worker (probeInterval, from the last plan). */
  private probeEvery = 50;

  constructor(
    private readonly opts: CoordinatorOptions,
    private readonly run: RunInfo,
    private readonly data: Dataset,
    private readonly model: Step,
    private readonly scheduler: Scheduler,
    private readonly sessions: Sessions,
    private readonly replicas: Replicas,
    private readonly members: Membership,
    private readonly events: EventEmitter,
    wire: () => Wire<Conn>,
  ) {
    this.link = new LinkMeter(wire);
  }

  /** One synchronous step over `indices` (positions in the training set), in epoch `epoch` (0-based). */
  async train(indices: Uint32Array, epoch: number): Promise<StepStats> {
    const t0 = performance.now();
    const step = this.model.version;
    this.link.begin();
    const tasks = this.plan(indices.length).map((p, id) => {
      const t = this.scheduler.newTask('train', step, id, p.position, p.count, indices.subarray(p.position, p.position + p.count), this.data.train);
      t.pin = p.pin;
      return t;
    });
    this.model.begin(tasks.length, this.run.lr, indices.length, step);
    this.replicas.begin();
    await this.sessions.execute(tasks);
    // Plausibility before the step is applied: a shard whose gradient norm stands out is
    // recomputed by another worker, and counts only if the two agree.
    for (let flagged = this.scheduler.recheckImplausible(tasks); flagged.length; flagged = this.scheduler.recheckImplausible(tasks)) {
      this.replicas.callOff();
      for (const [t, why] of flagged) {
        this.opts.log(`shard ${t.step}/${t.shard} from worker #${t.doneBy}: ${why}; recomputing it on another worker`);
        this.model.revoke(t.shard);
      }
      await this.sessions.execute(tasks);
    }
    for (const t of tasks) this.scheduler.norms.accept(t.trusted!.normSq, t.count);
    const round2 = this.model.powerSgd ? await this.secondRound(tasks) : null;
    const t1 = performance.now();
    const { aggregateMs, applyMs: applied, broadcastMs } = this.model.apply(this.run.lr, indices.length);
    // powersgd: the update reaches the weights once the next step's assigns are out (step.ts,
    // Rounds.pending): setImmediate runs after this step's promise chain has dispatched them. With
    // --apply-threads it is applied beside the event loop, which goes on receiving the next step.
    if (this.model.powerSgd) setImmediate(guarded(this.opts.log, 'applying the update', () => this.model.release()));
    const applyMs = this.model.powerSgd ? this.model.flushedMs : applied;
    this.replicas.settle();
    const t4 = performance.now();
    const sum = (f: (r: Result) => number) => tasks.reduce((a, t) => a + f(t.result!), 0);
    const stats = { lossSum: sum((r) => r.lossSum), correct: sum((r) => r.correct), count: indices.length };
    const last = tasks.reduce((a, t) => (t.doneAt > a.doneAt ? t : a));
    const upload = (r: Result, shard: number) => r.timings.encodeMs + r.timings.sendMs + (round2 ? round2[shard].timings.encodeMs + round2[shard].timings.sendMs : 0);
    this.last = {
      step: this.model.version, epoch: epoch + 1, examples: indices.length, loss: stats.lossSum / stats.count, acc: stats.correct / stats.count,
      wallMs: t4 - t0, collectMs: t1 - t0, computeMs: Math.max(...tasks.map((t) => t.result!.timings.computeMs)),
      uploadMs: Math.max(...tasks.map((t) => upload(t.result!, t.shard))), aggregateMs, foldMs: this.model.foldMs, applyMs, broadcastMs,
      straggler: tasks.length > 1 ? last.doneBy : null, earlySegments: this.replicas.earlySegments,
      shards: tasks.map((t) => ({ shard: t.shard, worker: t.doneBy, count: t.count, computeMs: t.result!.timings.computeMs, uploadMs: upload(t.result!, t.shard) })),
      at: Date.now(), mode: modeName(this.model.compress),
    };
    this.link.end(t1 - t0, t4 - t0);
    this.events.emit('step', this.last);
    return stats;
  }

  /**
   * powersgd's second round (powersgd.ts): round 1's sum becomes P̂, which goes to every worker
   * holding the current weights; then each shard's Q_i is asked of the worker that kept its M
   * (anyone else, sent the examples, recomputes it). Returns the round-2 results by shard.
   */
  private async secondRound(round1: Task[]): Promise<Result[]> {
    this.replicas.endRound1(this.model.endRound1(round1.length));
    this.events.emit('round', { step: this.model.version + 1, round: 2 });
    const live = new Set(this.members.workers().map((c) => c.id));
    const tasks = round1.map((r) => {
      const t = this.scheduler.newTask('train', r.step, r.shard, r.position, r.count, r.indices, r.split);
      t.round = 2;
      t.heldBy = r.doneBy !== null && live.has(r.doneBy) ? r.doneBy : null;
      t.pin = t.heldBy;
      return t;
    });
    await this.sessions.execute(tasks);
    return tasks.map((t) => t.result!);
  }

  /**
   * The step's shards: with --balance cost, the cost model's plan (cost-model.ts): which workers
   * make the predicted step shortest, how many examples each, and who is benched; else in
   * proportion to measured speed, or even. Nobody joined yet: one shard for whoever comes first.
   */
  private plan(batch: number): { position: number; count: number; pin: number | null }[] {
    const pool = this.members.pool('train');
    // After a switch into powersgd (--compress auto), every worker computes for WARM_STEPS steps
    // (shards by speed) before the plan may bench one. Those benched in the old mode hold older
    // weights than those that computed, and would be priced as downloading the whole weights on
    // every step they rejoined, which is paid once; and a bench decided on the rates of the first
    // steps after it (the catch-up, rough; then slow ones) stuck, since a benched worker falls
    // behind and is re-measured rarely (one run put a weak N = 8 batch on one worker). Out of
    // powersgd every worker needs the whole weights anyway (Replicas.restart): they start equal.
    // Not at the run's start, nor for a newcomer: unmeasured, it gets a probe shard until a clean
    // measurement (pace.ts), and a worker on a slow line does not hold five steps up.
    const mode = modeName(this.model.compress);
    if (this.plannedIn !== null && this.plannedIn !== mode && this.model.powerSgd) this.warmUntil = this.model.version + WARM_STEPS;
    this.plannedIn = mode;
    // The cost model takes each worker for a machine of its own. Workers that all run on this
    // machine (the quick start's --local-workers) share its cores: one measured while the others
    // computed looks slow, and once benched the rest speed up, so it stayed benched (the quick
    // start ran 572 examples/s on one of its two workers, 692 on both). They are split by speed.
    const oneMachine = !this.opts.links && pool.length > 1 && pool.every((c) => onLoopback(c.remote));
    if (this.opts.balance !== 'cost' || !pool.length || oneMachine || this.model.version < this.warmUntil) {
      for (const c of pool) c.benchedByMs = null;
      return planShards(batch, this.shares(pool)).map((p) => ({ position: p.position, count: p.count, pin: null }));
    }
    const weightsBytes = 4 * this.run.paramCount;
    const version = this.model.version;
    // A compute rate only a download measured is re-measured (a probe shard) before the plan trusts it.
    const sorted = [...pool].sort((a, b) => a.id - b.id);
    const workers = this.costs(sorted).map((w, i) => (sorted[i].computeRough ? { ...w, computeRate: 0 } : w));
    // Emulated links (tests, benchmarks) price the coordinator's link as fleet() does for the autopilot.
    const links = this.opts.links?.();
    const last = this.last;
    const rate = (bytes: number, ms: number | undefined) => (ms && ms > 0 ? (bytes * 1000) / ms : Infinity);
    const plan = planStep(workers, {
      batch, gradientBytes: this.model.gradientBytes, updateBytes: this.model.fp32 ? weightsBytes : this.model.gradientBytes, weightsBytes,
      exampleBytes: IMAGE_BYTES + 1, pipelined: this.model.pipelined, overlappedApply: this.model.powerSgd,
    }, {
      upRate: links?.coordinator ?? (this.link.up || Infinity), downRate: links?.coordinator ?? (this.link.down || Infinity), foldRate: rate(this.model.gradientBytes * (last?.shards.length ?? 1), last?.foldMs),
      sgdRate: rate(weightsBytes, last?.applyMs), encodeRate: Infinity,
    }, { step: version, probeEvery: this.probeEvery });
    const benched = new Map(plan.benched.map((b) => [b.worker, b.lengthensMs]));
    // Re-measuring a benched worker costs a step what the plan says adding it costs (its catch-up
    // included: at AlexNet size through 1 Gbit/s, the whole weights, 1.6 s): spaced so that probes
    // take at most 5% of the run, not every 50 steps whatever they cost.
    const dearest = Math.max(0, ...plan.benched.map((b) => b.lengthensMs).filter(Number.isFinite));
    if (plan.predictedMs) this.probeEvery = probeInterval(dearest, plan.predictedMs);
    // Infinity (no example left for it) shows as null in JSON, still benched.
    for (const c of pool) c.benchedByMs = benched.has(c.id) ? Math.round(benched.get(c.id)!) : null;
    return plan.shards.map((s) => ({ position: s.position, count: s.count, pin: s.worker }));
  }

  /** --balance speed (and cost while it warms up) or equal: each worker's share of the batch; nobody joined yet: one shard for whoever comes first. */
  private shares(pool: Conn[]): number[] {
    return pool.length ? pool.map((c) => (this.opts.balance === 'equal' ? 1 : c.speed || 1)) : [1];
  }

  /** The workers as the cost model prices them, in the order given. */
  private costs(pool: Conn[]): WorkerCost[] {
    const version = this.model.version;
    // Weights under a frame that can time the link (transport.ts) cost no link time worth pricing.
    const small = 4 * this.run.paramCount < LARGE_FRAME;
    const links = this.opts.links?.();
    return pool.map((c) => ({
      id: c.id, computeRate: c.computeRate, upRate: links?.worker ?? (c.upRate || (small ? Infinity : 0)), downRate: links?.worker ?? (c.downRate || (small ? Infinity : 0)),
      // At least 1: a worker holding the current weights still downloads this step's update on
      // its path (powersgd's P̂ and ΣQ, pipelined fp32's next weights), which the plan must price.
      behind: Math.max(1, Math.min(2, version - Math.max(0, c.version))),
    }));
  }

  /**
   * The fleet the next step may use, for --compress auto (autopilot.ts): the pool's costs, the
   * coordinator's link, and with --balance speed or equal the shards each worker would get.
   * `timed`: this mode's transfers time the links (its uploads are LARGE_FRAME or more), so the
   * rates are fresh; PowerSGD's few hundred KB a step do not, and its rates are the last timed.
   */
  fleet(): Fleet & { timed: boolean } {
    const pool = this.members.pool('train');
    const batch = this.opts.batch;
    const links = this.opts.links?.();
    const counts = this.opts.balance === 'cost' || !pool.length ? null : planShards(batch, this.shares(pool)).map((p) => p.count);
    const link = links ? { up: links.coordinator, down: links.coordinator } : { up: this.link.up || Infinity, down: this.link.down || Infinity };
    // A model whose weights fit under LARGE_FRAME moves no bytes worth pricing in any mode; its frames time round trips, not links.
    if (!links && 4 * this.run.paramCount < LARGE_FRAME) {
      const free = pool.map((c) => ({ id: c.id, computeRate: c.computeRate, upRate: Infinity, downRate: Infinity, behind: 1 }));
      return { workers: free, link: { up: Infinity, down: Infinity }, batch, counts, timed: true };
    }
    // Workers on this machine's loopback have no wire to save bytes on (link-meter.ts onLoopback).
    const workers = this.costs(pool).map((w, i) => (!links && onLoopback(pool[i].remote) ? { ...w, upRate: Infinity, downRate: Infinity } : w));
    const wired = links || pool.some((c) => !onLoopback(c.remote));
    return { workers, link: wired ? link : { up: Infinity, down: Infinity }, batch, counts, timed: !!links || this.model.gradientBytes >= LARGE_FRAME };
  }

  /** Test accuracy at the current weights, forward only, split over the workers. */
  async evaluate(): Promise<number> {
    const n = Math.min(this.opts.evalExamples, this.data.test.count);
    const tasks: Task[] = [];
    for (let o = 0, shard = 0; o < n; o += this.opts.batch, shard++) {
      const count = Math.min(this.opts.batch, n - o);
      tasks.push(this.scheduler.newTask('eval', this.model.version, shard, o, count, new Uint32Array(count).map((_, i) => o + i), this.data.test));
    }
    await this.sessions.execute(tasks);
    return tasks.reduce((a, t) => a + t.result!.correct, 0) / n;
  }
}
