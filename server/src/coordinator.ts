// The coordinator: owns the weights, the data and the clock; workers only compute. This file is
// the run loop (epochs, evaluation, the summary) and the wiring of the rooms that each own one job:
//
//   wire.ts / transport.ts   what carries the frames: sockets (or memory-wire.ts in tests)
//   sessions.ts              each worker's messages in and out, assigns and their deadlines
//   membership.ts            who the workers are: identity, join and replace, trust, the status table
//   scheduler.ts             the task queue of a step: copies, who computes what, verdicts
//   training-step.ts         one step: plan → tasks → rounds → apply → the step's record
//   step.ts                  the weights, the shard-ordered sum (the step owns its reducer), SGD, the broadcast frames
//   replicas.ts              which version each worker holds and what it is sent next
//   run-state.ts             waiting, running, paused, evaluating, finished, stopped, failed, with reasons
//
// One step: plan shards over the usable workers → send each its shard (weights first if it holds
// an older version) → collect each shard's gradient SUM → sum in shard order → SGD → version+1.
// Shards wait in a queue, so a shard whose worker vanishes goes to the next idle one and the
// step's gradient stays the exact gradient of the whole batch.
import { EventEmitter } from 'node:events';
import { CLOSE, IMAGE_BYTES, epochOrder, getModel, modelHash, paramLayout, stepsPerEpoch, type ModelSpec, type RunInfo } from '@tabtrain/shared';
import { printable } from '@tabtrain/shared/text';
import { NO_COMPRESSION } from '@tabtrain/shared/compress';
import { applyThreadsFor } from './apply-threads';
import { AutoCompression, Autopilot, describeCompression } from './autopilot';
import type { Dataset } from './data';
import { weightsSha256 } from './files';
import { formatSeconds, plural } from './format';
import { FullCopies } from './full-copies';
import { Membership, type Conn } from './membership';
import { Replicas } from './replicas';
import { ModeSpans } from './mode-spans';
import { DEFAULTS, type CoordinatorOptions, type EpochMetrics, type StepRecord, type Summary } from './run-options';
import { RunProgress } from './run-progress';
import { RunControl, type RunState } from './run-state';
import { Scheduler } from './scheduler';
import { RunStopped, Sessions } from './sessions';
import { Step } from './step';
import { TrainingStep } from './training-step';
import { Transport } from './transport';
import { StallWatch } from './waiting';
import type { Route, Wire } from './wire';

export { DEFAULTS, RunStopped, weightsSha256 };
export type { CoordinatorOptions, EpochMetrics, Route, RunState, StepRecord, Summary };

export class Coordinator {
  readonly spec: ModelSpec;
  readonly run: RunInfo;
  epoch = 0;
  readonly history: EpochMetrics[] = [];
  /**
   * 'step' (StepRecord), 'epoch' (EpochMetrics), 'log' (string), 'state' (RunState), 'workers' (),
   * 'round' ({step, round}: a powersgd step's second round begins), 'segment' (index: a pipelined
   * step's segment is out), 'close' () for the dashboard, metrics and logs; listeners must be
   * cheap (they run on the training path).
   */
  readonly events = new EventEmitter();
  readonly startedAt = Date.now();
  readonly opts: CoordinatorOptions;
  /** Training totals of the epoch in progress (checkpointed with the weights). */
  epochAcc = { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 };
  /** Called after each step that does not end an epoch, and after each epoch (checkpoints). */
  afterStep: ((c: Coordinator) => Promise<void> | void) | null = null;

  private readonly transport: Wire<Conn>;
  private readonly members: Membership;
  private readonly scheduler: Scheduler;
  private readonly model: Step;
  private readonly sessions: Sessions;
  private readonly training: TrainingStep;
  private readonly control: RunControl;
  private readonly copies: FullCopies;
  private readonly stalls: StallWatch; // why a step waits, in the run's state (waiting.ts)
  /** --compress auto: the compression chosen at each step boundary (autopilot.ts); null for a fixed --compress. */
  readonly auto: AutoCompression | null;
  private waitingSince = 0;
  private closed = false;
  /** Which compression ran at which steps, for the summary (auto switches between modes). */
  private readonly modes = new ModeSpans();

  constructor(opts: CoordinatorOptions, readonly data: Dataset) {
    const log = opts.log;
    // One sink for every line the run logs: what a peer sent is escaped here too (printable).
    this.opts = { ...opts, log: (raw) => { const line = printable(raw); log(line); this.events.emit('log', line); } };
    const o = this.opts;
    this.spec = getModel(opts.model);
    this.run = { model: this.spec.name, modelHash: modelHash(this.spec), seed: opts.seed, batch: opts.batch, lr: opts.lr ?? this.spec.lr, paramCount: paramLayout(this.spec).total };
    // --compress auto starts in fp32 and changes mode at step boundaries (autopilot.ts).
    const compress = opts.autoRank !== undefined ? NO_COMPRESSION : opts.compress ?? NO_COMPRESSION;
    if (compress.mode !== 'none') this.run.compress = compress;
    // What the rooms ask of the compression is asked of the Step each time: an auto run changes it.
    const step = () => this.model;
    const probation = o.probation ?? DEFAULTS.probation;
    const wire = () => this.transport;
    this.control = new RunControl({ log: o.log, changed: (s) => this.events.emit('state', s), stopping: () => this.sessions.abandonIfStopped() });
    this.model = new Step(this.spec, opts.seed, compress, (shard, why) => this.sessions.badShard(shard, why), o.pipeline ?? true, applyThreadsFor(this.run.paramCount, o.applyThreads));
    this.members = new Membership({
      run: this.run, token: o.token, open: o.open, probation, log: o.log,
      drop: (c, code, why) => this.transport.drop(c, code, why), changed: () => this.events.emit('workers'),
      holds: (c) => this.scheduler.copyOf(c) !== null,
    });
    this.copies = new FullCopies({ token: o.token, probation, retry: () => this.sessions.dispatch(), log: o.log });
    this.scheduler = new Scheduler({
      get fp32() { return step().fp32; }, verifyShards: o.verifyShards ?? DEFAULTS.verifyShards, probation, deadlineMs: o.deadlineMs,
      minDeadlineMs: o.minDeadlineMs ?? DEFAULTS.minDeadlineMs, firstDeadlineMs: o.firstDeadlineMs ?? DEFAULTS.firstDeadlineMs,
      newcomerDeadlineMs: o.newcomerDeadlineMs ?? DEFAULTS.newcomerDeadlineMs, log: o.log,
      fold: (t, c) => {
        if (t.inReducer) this.model.revoke(t.shard);
        for (const f of c.frames) this.model.accept(t.shard, f.g, f.body);
      },
      decode: (c) => (c.fp32Check ? null : this.model.decodeCopy(c.frames)), get codedCompare() { return !step().powerSgd; },
    }, this.members);
    const replicas = new Replicas(this.model, wire, this.members, this.scheduler, this.events);
    this.sessions = new Sessions({
      run: this.run, log: o.log, verifyEvery: o.verifyEvery ?? DEFAULTS.verifyEvery, get fp32() { return step().fp32; }, get powerSgd() { return step().powerSgd; },
      closed: () => this.closed, changed: () => this.events.emit('workers'), stopping: () => this.control.stopRequested,
      empty: () => this.noteWaiting(),
      // A worker came back to a run that waited mid-run for one: it goes on (or stays paused).
      joined: () => { if (this.control.state === 'waiting' && this.step > 0) this.control.carryOn(); },
    }, this.members, this.scheduler, this.model, replicas, this.copies, wire);
    this.training = new TrainingStep(o, this.run, data, this.model, this.scheduler, this.sessions, replicas, this.members, this.events, wire);
    this.auto = opts.autoRank === undefined ? null : new AutoCompression(new Autopilot({ params: paramLayout(this.spec).params, total: this.run.paramCount, pipeline: o.pipeline ?? true, exampleBytes: IMAGE_BYTES + 1 }, opts.autoRank, opts.autoFactors), {
      step: this.model, run: this.run, replicas, sessions: this.sessions, log: o.log,
      idle: () => this.members.workers().every((c) => this.scheduler.copyOf(c) === null),
    });
    this.events.on('step', (s: StepRecord) => this.modes.add(s.step, s.mode ?? 'none'));
    const socket = (handler: Parameters<NonNullable<CoordinatorOptions['wire']>>[0]) => new Transport<Conn>({
      port: o.port, host: o.host, tls: o.tls, staticDir: o.staticDir, helloTimeoutMs: o.helloTimeoutMs,
      heartbeatMs: o.heartbeatMs ?? DEFAULTS.heartbeatMs, slowReaderMs: o.slowReaderMs ?? DEFAULTS.slowReaderMs, log: o.log,
    }, handler);
    this.transport = (o.wire ?? socket)({
      open: (peer) => this.members.open(peer),
      message: (c, msg, body) => this.sessions.message(c, msg, body),
      gone: (c, code, reason, byUs) => this.sessions.gone(c, code, reason, byUs),
      joined: (c) => c.joined,
      idle: (c) => c.joined && this.scheduler.copyOf(c) === null,
    });
    this.stalls = new StallWatch({
      tasks: () => this.scheduler.tasks, members: this.members, log: o.log, state: () => ({ state: this.state, reason: this.stateReason }),
      // A quiet reason reaches the dashboard with its next push ('workers'), without a state change.
      say: (s, why, quiet) => { if (quiet) { this.control.explain(why); this.events.emit('workers'); } else this.control.set(s, why); },
    });
    new RunProgress({ members: this.members, wire, events: this.events, position: () => this.position() });
  }

  /** The only truth: every worker starts from these. */
  get weights(): Float32Array { return this.model.weights; }
  /** Number of SGD steps applied to the weights: the run's one step counter. */
  get version(): number { return this.model.version; }
  get step(): number { return this.model.version; }
  get state(): RunState { return this.control.state; }
  get stateReason(): string { return this.control.reason; }
  get lastStep(): StepRecord | null { return this.training.last; }
  /** Workers caught lying (the last 50). */
  get caught() { return this.members.caught; }

  /**
   * HTTP handlers asked before the static files (the dashboard adds its routes here); each
   * returns true when it answered. The coordinator itself knows nothing about them.
   */
  addRoutes(route: Route): void {
    this.transport.addRoutes(route);
  }

  listen(): Promise<number> {
    return this.transport.listen();
  }

  private noteWaiting(): void {
    this.waitingSince = Date.now();
    if (this.state === 'running' || this.state === 'evaluating') this.control.set('waiting', 'no workers connected');
    this.opts.log(`waiting for workers: ${this.members.workers().length} connected, run paused until one joins (need ${this.opts.minWorkers} to start)`);
  }

  private async waitForWorkers(n: number): Promise<void> {
    if (this.members.workers().length >= n) return;
    if (this.closed) throw new RunStopped();
    this.opts.log(`waiting for ${plural(n, 'worker')} (${this.members.workers().length} connected): join at the addresses above`);
    while (this.members.workers().length < n && !this.closed && !this.control.stopRequested) await new Promise((r) => setTimeout(r, 100));
  }

  /**
   * Writes the current weights as a LayersModel into opts.exportDir. Weights only change inside
   * the synchronous SGD call, so the copy taken here is always a whole step's weights.
   */
  async exportNow(): Promise<number> {
    const step = this.step;
    const { exportLayersModel } = await import('./export');
    await exportLayersModel(this.spec, this.weights.slice(), this.opts.exportDir!);
    this.opts.log(`exported the weights of step ${step} as a TensorFlow.js LayersModel to ${this.opts.exportDir}`);
    return step;
  }

  /** Continues from a checkpoint: weights, step, the epoch in progress and the metrics history. */
  restore(state: { step: number; weights: Float32Array; epochAcc: Coordinator['epochAcc']; history: EpochMetrics[] }): void {
    this.model.restore(state.weights, state.step);
    this.epochAcc = { ...state.epochAcc };
    this.history.splice(0, this.history.length, ...state.history);
  }

  // ---- control (run-state.ts) ----

  /** Holds the run before its next step until resume() or stop(). */
  pause(reason = 'paused by an operator'): void {
    if (!this.closed) this.control.pause(reason, this.step);
  }

  resume(): void {
    this.control.resume(this.step);
  }

  /** Ends the run after the current step; train() then returns its summary as usual. */
  stop(reason = 'stopped by an operator'): void {
    // A step in flight still completes: name the step the run will end on.
    const inHand = this.sessions.busy && this.scheduler.tasks[0]?.kind === 'train';
    this.control.stop(reason, inHand ? `the step in hand (step ${this.step + 1})` : `step ${this.step}`, this.step);
  }

  // ---- training ----

  /** Test accuracy at the current weights, forward only, split over the workers. */
  evaluate(): Promise<number> {
    return this.training.evaluate();
  }

  /**
   * Trains from the current position (step 0, or a checkpoint's) to the end. The position in the
   * run is derived from `step` alone: epoch = step ÷ steps-per-epoch, so a resumed run replays
   * exactly the batches an uninterrupted one would.
   */
  async train(): Promise<Summary> {
    const { epochs, batch, seed } = this.opts;
    const n = this.data.train.count;
    const perEpoch = stepsPerEpoch(n, batch);
    const maxSteps = Math.min(this.opts.maxSteps ?? Infinity, epochs * perEpoch);
    const t0 = performance.now();
    let lastProgress = 0;
    let partialEpoch: EpochMetrics | null = null;
    let order: Uint32Array = new Uint32Array(0), orderOf = -1;
    try {
      this.control.set('waiting', `waiting for ${plural(this.opts.minWorkers, 'worker')}`);
      // A run already at its end (a resume of a finished one) has nothing to wait for.
      if (this.step < maxSteps) await this.waitForWorkers(this.opts.minWorkers);
      this.control.set('running');
      while (this.step < maxSteps && !this.closed && !this.control.stopRequested) {
        this.epoch = Math.floor(this.step / perEpoch);
        const s = this.step % perEpoch;
        // The shuffle of 60,000 took 0.55 ms, a fiftieth of a quick-start step: once per epoch.
        if (orderOf !== this.epoch) { order = epochOrder(n, seed, this.epoch); orderOf = this.epoch; }
        await this.control.whilePaused(() => this.closed);
        if (this.control.stopRequested || this.closed) break;
        this.auto?.boundary(this.training.fleet(), this.step);
        const s0 = performance.now();
        const r = await this.training.train(order.subarray(s * batch, Math.min(n, (s + 1) * batch)), this.epoch);
        const acc = this.epochAcc;
        acc.seconds += (performance.now() - s0) / 1000;
        this.auto?.observed(performance.now() - s0);
        acc.lossSum += r.lossSum; acc.correct += r.correct; acc.examples += r.count; acc.steps++;
        const epochEnd = s === perEpoch - 1;
        if (performance.now() - lastProgress > 1000 || epochEnd) {
          lastProgress = performance.now();
          const left = Math.min(perEpoch - s - 1, maxSteps - this.step);
          this.opts.progress(`epoch ${this.epoch + 1}/${epochs} step ${s + 1}/${perEpoch}: loss ${(acc.lossSum / acc.examples).toFixed(3)}, train acc ${(acc.correct / acc.examples).toFixed(3)}, ${(acc.examples / acc.seconds).toFixed(1)} examples/sec, ${plural(this.members.workers().length, 'worker')}, epoch eta ${formatSeconds((acc.seconds / acc.steps) * left)}`);
        }
        if (epochEnd) await this.endEpoch(false);
        else await this.afterStep?.(this);
      }
    } catch (e) {
      if (!(e instanceof RunStopped)) { this.control.set('failed', (e as Error).message); throw e; }
    }
    // A run cut short mid-epoch (also by losing every worker to a stop) records the partial epoch;
    // it skips the 10,000-image evaluation.
    if (this.epochAcc.steps > 0) partialEpoch = await this.endEpoch(true);
    this.control.end(this.step);
    const epochsDone = partialEpoch ? [...this.history, partialEpoch] : [...this.history];
    const examples = epochsDone.reduce((a, m) => a + m.examples, 0);
    const trainSeconds = epochsDone.reduce((a, m) => a + m.examples / m.examplesPerSec, 0);
    return {
      model: this.spec.name, modelHash: this.run.modelHash, paramCount: this.run.paramCount,
      config: { epochs, batch, lr: this.run.lr, seed, minWorkers: this.opts.minWorkers, maxSteps: this.opts.maxSteps ?? null, evalExamples: this.opts.evalExamples, compress: this.run.compress ?? NO_COMPRESSION, auto: this.auto !== null },
      modes: this.modes.spans,
      steps: this.step, examples, epochs: epochsDone, examplesPerSec: examples / Math.max(trainSeconds, 1e-9),
      seconds: (performance.now() - t0) / 1000, workersSeen: this.transport.opened,
      weightsSha256: weightsSha256(this.weights), stoppedBy: this.step >= epochs * perEpoch ? 'epochs' : this.control.stopRequested ? 'stop' : 'max-steps',
    };
  }

  private async endEpoch(partial: boolean): Promise<EpochMetrics> {
    const acc = this.epochAcc;
    this.control.set('evaluating');
    const testAcc = partial ? null : await this.evaluate();
    this.control.carryOn();
    const m: EpochMetrics = { epoch: this.epoch + 1, steps: acc.steps, examples: acc.examples, loss: acc.lossSum / acc.examples, trainAcc: acc.correct / acc.examples, testAcc, examplesPerSec: acc.examples / acc.seconds, seconds: acc.seconds };
    // A partial epoch (stop, --max-steps) is reported but not closed: a resumed run goes on
    // accumulating it, so the epoch's line is still one line over all its steps.
    if (!partial) {
      this.history.push(m);
      this.epochAcc = { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 };
    }
    this.opts.log(`epoch ${m.epoch}${partial ? ' (partial)' : ''}: loss ${m.loss.toFixed(3)}, train acc ${m.trainAcc.toFixed(3)}, test acc ${testAcc === null ? 'n/a' : testAcc.toFixed(3)}, ${m.examplesPerSec.toFixed(1)} examples/sec`);
    this.events.emit('epoch', m);
    if (!partial) await this.afterStep?.(this);
    return m;
  }

  /** Where the run stands, as the workers' progress messages say it (run-progress.ts). */
  private position() {
    const perEpoch = stepsPerEpoch(this.data.train.count, this.opts.batch);
    const { epochs } = this.opts;
    return { state: this.state, reason: this.stateReason, step: this.step, totalSteps: Math.min(this.opts.maxSteps ?? Infinity, epochs * perEpoch), epoch: Math.min(this.epoch + 1, epochs), epochs };
  }

  status() {
    const live = this.members.workers().length;
    return {
      model: this.run.model, modelHash: this.run.modelHash, paramCount: this.run.paramCount,
      config: { epochs: this.opts.epochs, batch: this.opts.batch, lr: this.run.lr, seed: this.opts.seed, maxSteps: this.opts.maxSteps ?? null },
      // 1-based, as every epoch a person reads (the header, the log lines).
      step: this.step, epoch: Math.min(this.epoch + 1, this.opts.epochs), version: this.version,
      waitingForWorkers: live === 0, waitingSince: live === 0 ? this.waitingSince : null,
      history: this.history,
      workers: this.members.rows().map((r) => ({ ...r, waiting: this.copies.reason(r.id) })),
      caught: this.members.caught,
      compression: describeCompression(this.model.compress, this.auto),
    };
  }

  /** Says goodbye to every worker with `code` and stops listening; the default reason says whether the run finished or was stopped. */
  async close(code: number = CLOSE.finished, reason = this.state === 'stopped' ? `run stopped: ${this.stateReason}` : 'run finished'): Promise<void> {
    this.closed = true;
    this.stalls.stop();
    // Listeners (the dashboard) send their last word while the sockets are still open.
    this.events.emit('close');
    this.sessions.close();
    await this.transport.close(code, reason);
    this.model.dispose();
  }
}
