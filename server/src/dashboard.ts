// The coordinator's window for people and for monitoring: the live dashboard's data, the status
// API, Prometheus metrics, run control and the JSONL metrics log. One Dashboard per Coordinator;
// it only listens to the coordinator's events and reads its status, so training never waits on it.
//
//   GET  /dashboard      the page (client/dashboard.html, built by Vite into the static folder)
//   GET  /api/status     JSON: the coordinator's status() plus the run header and the workers table
//   GET  /api/events     server-sent events: a snapshot, then coalesced updates (see dashboard-wire.ts)
//   GET  /metrics        Prometheus text format (prom-client, a registry of this coordinator's own)
//   GET  /api/log        the --log JSONL file as written so far (every step, never thinned); 404 without --log
//   POST /api/control    {"action": "pause" | "resume" | "stop" | "export"}, `Authorization: Bearer <--admin-token>`
//
// Why the stream costs training nothing: event listeners only push to arrays and arm one timer;
// at most one update per DASHBOARD.updateIntervalMs is built, serialised once and written to every
// page; a page that cannot keep up is dropped (its EventSource reconnects and gets a snapshot), and
// the streams are capped in number and in unsent bytes (event-streams.ts).
import { closeSync, createReadStream, existsSync, fstatSync, openSync, writeSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resolve } from 'node:path';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { stepsPerEpoch } from '@tabtrain/shared';
import {
  CONTROL_ACTIONS, WORKER_STATE,
  type ControlAction, type ControlMode, type EpochPoint, type RunHeader, type Snapshot, type StepPoint, type TrainPoint, type Update, type WorkerRow, type WorkerState,
  MAX_STEP_POINTS, MAX_TRAIN_POINTS, isTrainSample, thin,
} from '@tabtrain/shared/dashboard-wire';
import type { Checkpointer } from './checkpoint';
import { ControlLimit } from './control-limit';
import { EventStreams, STREAM_LIMITS, type StreamLimits } from './event-streams';
import type { Coordinator, EpochMetrics, RunState, StepRecord } from './coordinator';
import { sameSecret } from './secrets';
import { DEFAULT_STATIC_DIR } from './static';
import { guarded } from './guard';

export const DASHBOARD = {
  /** At most 4 updates a second per page: smooth enough to watch, nothing for the event loop. */
  updateIntervalMs: 250,
  /** Per-step points kept for the curves; past this the older half is thinned to every other step. */
  maxStepPoints: MAX_STEP_POINTS,
  /** Log lines a new page gets in its snapshot. */
  logLines: 60,
  /** Steps averaged for the ETA. */
  etaWindow: 50,
  /** POST /api/control bodies are tiny JSON. */
  maxControlBytes: 1024,
} as const;

const TERMINAL: readonly RunState[] = ['finished', 'stopped', 'failed'];

type WorkerStatus = ReturnType<Coordinator['status']>['workers'][number];

/**
 * Where this coordinator took the run up: step 0, or a resumed run's checkpoint step with the
 * training seconds and the open epoch's totals it restored. Read off the coordinator (its step,
 * `history` and `epochAcc`) until training starts, then fixed: the CLI builds the Dashboard before
 * it restores, and restores before train(), whose first act is a state change.
 */
interface Origin {
  step: number;
  /** Σ history[].seconds + epochAcc.seconds as restored. */
  seconds: number;
  /** The open epoch's restored totals (steps 0 when none). */
  acc: Coordinator['epochAcc'];
}

/** The running totals of the epoch in progress, for its running train loss and accuracy. */
interface OpenEpoch { epoch: number; examples: number; lossSum: number; correct: number }

export class Dashboard {
  readonly registry = new Registry();
  readonly control: ControlMode;
  /** The run's checkpoints (--checkpoint), for /api/status's `checkpoint` and the page's warning. */
  checkpoint: Checkpointer | null = null;
  /** Updates serialised so far: one per update however many pages watch (tests read it). */
  serialisations = 0;
  private readonly streams: EventStreams;
  private readonly controlLimit: ControlLimit;
  private readonly updateIntervalMs: number;
  private readonly steps: StepPoint[] = [];
  private readonly train: TrainPoint[] = [];
  private readonly logTail: string[] = [];
  private pending = { steps: [] as StepPoint[], epochs: [] as EpochPoint[], train: [] as TrainPoint[], log: [] as string[] };
  private origin: Origin | null = null;
  private open: OpenEpoch | null = null;
  private seq = 0;
  private snapshotFrame: { seq: number; frame: Buffer } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private readonly recentWallMs: number[] = [];
  /**
   * Bytes per connection still in the status table, and the bytes of those it has forgotten
   * (it keeps the last 64 lost ones), so that the total stays a total in bounded memory.
   */
  private bytesByConn = new Map<number, number>();
  private bytesForgotten = 0;
  private logFd: number | null = null;
  private closed = false;
  private readonly m;
  private readonly listeners: [string, Parameters<Coordinator['events']['on']>[1]][];

  /** `limits` shrink the stream caps and the update interval in tests. */
  constructor(private readonly coord: Coordinator, limits: Partial<StreamLimits & { updateIntervalMs: number }> = {}) {
    const { adminToken, metricsLog } = coord.opts;
    this.control = adminToken ? 'admin' : 'read-only';
    this.m = this.makeMetrics();
    this.updateIntervalMs = limits.updateIntervalMs ?? DASHBOARD.updateIntervalMs;
    this.streams = new EventStreams({ ...STREAM_LIMITS, ...limits }, (n) => this.m.streams.set(n), (name, fn) => guarded(coord.opts.log, name, fn));
    this.controlLimit = new ControlLimit(coord.opts.log);
    if (metricsLog) {
      try {
        this.logFd = openSync(metricsLog, 'a');
      } catch (e) {
        throw new Error(`--log ${metricsLog}: cannot open for appending (${(e as Error).message})`);
      }
      const r = coord.run;
      this.writeLog({ type: 'run', model: r.model, modelHash: r.modelHash, paramCount: r.paramCount, config: this.config(), stepsPerEpoch: this.perEpoch(), totalSteps: this.totalSteps() });
    }
    this.listeners = [
      ['step', (s: StepRecord) => this.onStep(s)],
      ['epoch', (e: EpochMetrics) => this.onEpoch(e)],
      ['log', (line: string) => this.onLog(line)],
      ['state', (s: RunState) => this.onState(s)],
      ['workers', () => this.schedule()],
    ];
    for (const [name, fn] of this.listeners) coord.events.on(name, fn);
    coord.addRoutes((req, res, path) => this.handle(req, res, path));
    coord.events.once('close', () => this.close());
  }

  // ---- events (on the training path: push and arm a timer, nothing more) ----

  private onStep(s: StepRecord): void {
    // train() changes state before its first step; this is for a coordinator driven otherwise.
    if (!this.origin) this.fix(s.step - 1);
    this.runningMeans(s);
    const p: StepPoint = {
      step: s.step, epoch: s.epoch, loss: round(s.loss), acc: round(s.acc), examples: s.examples,
      examplesPerSec: round(s.examples / Math.max(s.wallMs, 1e-3) * 1000), wallMs: ms(s.wallMs),
      computeMs: ms(s.computeMs), uploadMs: ms(s.uploadMs), waitMs: ms(Math.max(0, s.collectMs - s.computeMs - s.uploadMs)),
      aggregateMs: ms(s.aggregateMs), applyMs: ms(s.applyMs), broadcastMs: ms(s.broadcastMs), straggler: s.straggler, at: s.at,
    };
    this.pending.steps.push(p);
    this.recentWallMs.push(s.wallMs);
    if (this.recentWallMs.length > DASHBOARD.etaWindow) this.recentWallMs.shift();
    const m = this.m;
    m.steps.inc();
    m.examples.inc(s.examples);
    m.stepSeconds.observe(s.wallMs / 1000);
    m.loss.set(s.loss);
    m.acc.set(s.acc);
    m.examplesPerSec.set(p.examplesPerSec);
    for (const phase of ['collect', 'compute', 'upload', 'aggregate', 'apply', 'broadcast'] as const) {
      m.phase.set({ phase }, s[`${phase}Ms`] / 1000);
    }
    this.writeLog({ type: 'step', ...s });
    this.schedule();
  }

  /** Adds the step to its epoch's running totals; every trainEvery steps (and at the end) a point. */
  private runningMeans(s: StepRecord): void {
    const per = this.perEpoch();
    const inEpoch = s.step - (s.epoch - 1) * per;
    if (this.open?.epoch !== s.epoch) {
      // The epoch the run resumed in goes on from the checkpoint's totals, as the coordinator's does.
      const o = this.origin!;
      const resumedIn = o.acc.steps > 0 && s.epoch === Math.floor(o.step / per) + 1 && s.step > o.step;
      this.open = resumedIn
        ? { epoch: s.epoch, examples: o.acc.examples, lossSum: o.acc.lossSum, correct: o.acc.correct }
        : { epoch: s.epoch, examples: 0, lossSum: 0, correct: 0 };
    }
    const a = this.open;
    a.examples += s.examples;
    a.lossSum += s.loss * s.examples;
    a.correct += s.acc * s.examples;
    if (isTrainSample(inEpoch, per)) {
      this.pending.train.push({ step: s.step, epoch: s.epoch, examples: a.examples, loss: round(a.lossSum / a.examples), acc: round(a.correct / a.examples) });
    }
  }

  private onEpoch(e: EpochMetrics): void {
    // A partial epoch (a run cut short) ends off the sampling grid: its last point is the epoch's own figures.
    const end = (e.epoch - 1) * this.perEpoch() + e.steps;
    const last = this.pending.train.at(-1) ?? this.train.at(-1);
    if (e.steps > 0 && last?.step !== end) this.pending.train.push(epochEndPoint(e, end));
    this.pending.epochs.push({ ...e });
    this.m.epochLoss.set(e.loss);
    this.m.epochAcc.set(e.trainAcc);
    if (e.testAcc !== null) this.m.testAcc.set(e.testAcc);
    this.m.epochExamplesPerSec.set(e.examplesPerSec);
    this.writeLog({ type: 'epoch', ...e });
    this.schedule();
  }

  private onLog(line: string): void {
    this.pending.log.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (this.pending.log.length > DASHBOARD.logLines) this.pending.log.shift();
    this.schedule();
  }

  private onState(state: RunState): void {
    if (!this.origin) this.fix(this.coord.step);
    this.writeLog({ type: 'state', state, reason: this.coord.stateReason });
    // The final state goes out at once: the coordinator may close right after it.
    this.schedule(TERMINAL.includes(state));
  }

  // ---- where this coordinator took the run up (a resumed run) ----

  private originNow(step = this.coord.step): Origin {
    const c = this.coord;
    return { step, seconds: c.history.reduce((a, e) => a + e.seconds, 0) + c.epochAcc.seconds, acc: { ...c.epochAcc } };
  }

  /** The origin, fixed from now on; a resumed run's restored epochs become points of the running curves. */
  private fix(step: number): void {
    this.origin = this.originNow(step);
    this.pending.train.unshift(...this.restoredPoints(this.origin));
  }

  private base(): Origin {
    return this.origin ?? this.originNow();
  }

  /** One running point per restored epoch (at its end) and one for the open epoch's restored steps. */
  private restoredPoints(o: Origin): TrainPoint[] {
    const per = this.perEpoch();
    const points = this.coord.history.map((e) => epochEndPoint(e, (e.epoch - 1) * per + e.steps));
    const a = o.acc;
    if (a.steps > 0 && a.examples > 0 && o.step > 0) {
      points.push({ step: o.step, epoch: Math.floor((o.step - 1) / per) + 1, examples: a.examples, loss: round(a.lossSum / a.examples), acc: round(a.correct / a.examples) });
    }
    return points.filter((p) => p.step <= o.step);
  }

  // ---- the stream ----

  private schedule(now = false): void {
    if (this.closed) return;
    if (now) {
      this.flush();
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, this.lastFlush + this.updateIntervalMs - performance.now());
    this.timer = setTimeout(guarded(this.coord.opts.log, 'dashboard flush', () => this.flush()), wait);
    this.timer.unref();
  }

  /** Publishes what happened since the last update: one object, one JSON.stringify, every page. */
  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.lastFlush = performance.now();
    const { steps, epochs, train, log } = this.pending;
    this.pending = { steps: [], epochs: [], train: [], log: [] };
    this.steps.push(...steps);
    if (this.steps.length > DASHBOARD.maxStepPoints) thin(this.steps);
    this.train.push(...train);
    if (this.train.length > MAX_TRAIN_POINTS) thin(this.train);
    this.logTail.push(...log);
    this.logTail.splice(0, Math.max(0, this.logTail.length - DASHBOARD.logLines));
    this.seq++;
    if (this.streams.size === 0) return;
    const { header, workers } = this.view();
    const update: Update = { seq: this.seq, header, workers, steps, epochs, train, log };
    this.serialisations++;
    this.streams.send(Buffer.from(`event: update\ndata: ${JSON.stringify(update)}\n\n`));
  }

  /** The state as of the latest update, serialised once per update for every page that connects. */
  private snapshot(): Buffer {
    if (this.snapshotFrame?.seq !== this.seq) {
      const { header, workers } = this.view();
      // Epochs from the coordinator's history, which a resumed run restores from its checkpoint.
      // Before training starts, a resumed run's restored points are read off the coordinator.
      const train = this.origin ? this.train : this.restoredPoints(this.base());
      const s: Snapshot = { seq: this.seq, header, workers, steps: this.steps, epochs: this.coord.history, train, log: this.logTail };
      this.snapshotFrame = { seq: this.seq, frame: Buffer.from(`event: snapshot\ndata: ${JSON.stringify(s)}\n\n`) };
    }
    return this.snapshotFrame.frame;
  }

  private openStream(req: IncomingMessage, res: ServerResponse): void {
    const address = req.socket.remoteAddress ?? '?';
    const refusal = this.closed ? 'the run is over' : this.streams.refusal(address);
    if (refusal) return json(res, 503, { error: refusal }, { 'retry-after': '5' });
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no', 'x-content-type-options': 'nosniff' });
    res.socket?.setNoDelay(true);
    // EventSource retries after this many ms when the coordinator restarts.
    res.write('retry: 2000\n\n');
    this.streams.add(res, address, this.snapshot());
  }

  /** Unsent bytes of all open event streams, and how many streams were closed for falling behind. */
  streamBacklog(): { streams: number; bufferedBytes: number; dropped: number } {
    return { streams: this.streams.size, bufferedBytes: this.streams.bufferedBytes(), dropped: this.streams.dropped };
  }

  // ---- what the page and /api/status show ----

  private config(): RunHeader['config'] {
    const o = this.coord.opts;
    return { epochs: o.epochs, batch: o.batch, lr: this.coord.run.lr, seed: o.seed, maxSteps: o.maxSteps ?? null, balance: o.balance, minWorkers: o.minWorkers, evalExamples: o.evalExamples };
  }

  private perEpoch(): number {
    return stepsPerEpoch(this.coord.data.train.count, this.coord.opts.batch);
  }

  private totalSteps(): number {
    return Math.min(this.coord.opts.maxSteps ?? Infinity, this.coord.opts.epochs * this.perEpoch());
  }

  private view(status = this.coord.status()): { header: RunHeader; workers: WorkerRow[] } {
    const c = this.coord;
    const workers = status.workers.map((w) => this.row(w));
    const seen = new Map(workers.map((w) => [w.id, w.bytesIn + w.bytesOut]));
    for (const [id, bytes] of this.bytesByConn) if (!seen.has(id)) this.bytesForgotten += bytes;
    this.bytesByConn = seen;
    const live = workers.filter((w) => w.state !== WORKER_STATE.lost).length;
    const left = this.totalSteps() - c.step;
    const meanWall = this.recentWallMs.length ? this.recentWallMs.reduce((a, b) => a + b, 0) / this.recentWallMs.length : NaN;
    const moving = c.state === 'running' || c.state === 'evaluating';
    const now = Date.now();
    const origin = this.base();
    const header: RunHeader = {
      model: c.run.model, modelHash: c.run.modelHash, paramCount: c.run.paramCount, config: this.config(),
      state: c.state, reason: c.stateReason, step: c.step, totalSteps: this.totalSteps(), stepsPerEpoch: this.perEpoch(),
      epoch: Math.min(c.epoch + 1, c.opts.epochs), startedAt: c.startedAt, elapsedSec: origin.seconds + (now - c.startedAt) / 1000,
      priorSec: origin.seconds, resumedFromStep: origin.step, fullLog: this.logFd !== null,
      etaSec: moving && Number.isFinite(meanWall) ? (left * meanWall) / 1000 : null,
      totalBytes: this.bytesForgotten + [...seen.values()].reduce((a, b) => a + b, 0),
      line: this.d2lLine(live), control: this.control, now, checkpointProblem: this.checkpoint?.problem() ?? '',
    };
    return { header, workers };
  }

  private row(w: WorkerStatus): WorkerRow {
    // The coordinator keeps no 'joining' state: a worker joins until its first shard comes back.
    const state: WorkerState = w.state === 'lost' ? WORKER_STATE.lost
      : w.shardsDone === 0 ? WORKER_STATE.joining
      : w.state === 'working' ? WORKER_STATE.working : WORKER_STATE.idle;
    return {
      id: w.id, workerId: String(w.workerId).slice(0, 80), kind: w.kind, backend: String(w.backend).slice(0, 40), adapterName: adapterName(w.adapter),
      state, shardSize: w.shardSize, computeMs: ms(w.computeMs), uploadMs: ms(w.uploadMs), bytesIn: w.bytesIn, bytesOut: w.bytesOut,
      examplesPerSec: round(w.examplesPerSec), shardsDone: w.shardsDone, straggler: this.coord.lastStep?.straggler === w.id,
    };
  }

  /** d2l's train_ch6 line: loss, train acc, test acc, examples/sec; the epoch in progress if any. */
  private d2lLine(workers: number): string {
    const c = this.coord;
    const on = `on ${workers} worker${workers === 1 ? '' : 's'}`;
    const a = c.epochAcc;
    if (a.steps > 0) {
      const s = c.step - Math.floor((c.step - 1) / this.perEpoch()) * this.perEpoch();
      return `epoch ${c.epoch + 1}/${c.opts.epochs} step ${s}/${this.perEpoch()}: loss ${(a.lossSum / a.examples).toFixed(3)}, train acc ${(a.correct / a.examples).toFixed(3)}, ${(a.examples / Math.max(a.seconds, 1e-9)).toFixed(1)} examples/sec ${on}`;
    }
    const e = c.history.at(-1);
    if (!e) return '';
    return `epoch ${e.epoch}: loss ${e.loss.toFixed(3)}, train acc ${e.trainAcc.toFixed(3)}, test acc ${e.testAcc === null ? 'n/a' : e.testAcc.toFixed(3)}, ${e.examplesPerSec.toFixed(1)} examples/sec ${on}`;
  }

  /** GET /api/status: the coordinator's status() (whatever it grows), the header, the table's rows. */
  status() {
    const s = this.coord.status();
    const { header, workers } = this.view(s);
    const raw = new Map(s.workers.map((w) => [w.id, w]));
    return {
      ...s,
      state: this.coord.state, reason: this.coord.stateReason, startedAt: this.coord.startedAt,
      header, lastStep: this.coord.lastStep, checkpoint: this.checkpoint?.status() ?? null,
      workers: workers.map((w) => ({ ...raw.get(w.id), ...w })),
    };
  }

  // ---- Prometheus ----

  private makeMetrics() {
    const registers = [this.registry];
    // Process CPU, memory and event-loop lag: the lag shows whether the coordinator keeps up.
    collectDefaultMetrics({ register: this.registry });
    const workerLabels = ['worker', 'worker_id', 'kind', 'backend'] as const;
    return {
      steps: new Counter({ name: 'tabtrain_steps_total', help: 'Training steps completed by this coordinator process', registers }),
      step: new Gauge({ name: 'tabtrain_step', help: 'Position in the run: steps done since step 0 (a resumed run starts at its checkpoint)', registers }),
      epoch: new Gauge({ name: 'tabtrain_epoch', help: 'Epoch in progress, 1-based', registers }),
      examples: new Counter({ name: 'tabtrain_examples_total', help: 'Training examples processed by this coordinator process', registers }),
      examplesPerSec: new Gauge({ name: 'tabtrain_examples_per_second', help: 'Examples per second of the latest step (examples / step wall time)', registers }),
      epochExamplesPerSec: new Gauge({ name: 'tabtrain_epoch_examples_per_second', help: "Examples per second of the latest epoch, d2l's figure", registers }),
      loss: new Gauge({ name: 'tabtrain_train_loss', help: 'Mean training loss of the latest step', registers }),
      acc: new Gauge({ name: 'tabtrain_train_accuracy', help: 'Training accuracy of the latest step', registers }),
      epochLoss: new Gauge({ name: 'tabtrain_epoch_train_loss', help: 'Mean training loss of the latest epoch', registers }),
      epochAcc: new Gauge({ name: 'tabtrain_epoch_train_accuracy', help: 'Training accuracy of the latest epoch', registers }),
      testAcc: new Gauge({ name: 'tabtrain_test_accuracy', help: 'Test accuracy at the end of the latest full epoch', registers }),
      stepSeconds: new Histogram({ name: 'tabtrain_step_seconds', help: 'Wall time of one step', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers }),
      phase: new Gauge({ name: 'tabtrain_step_phase_seconds', help: "Where the latest step's wall time went (collect spans compute and upload)", labelNames: ['phase'] as const, registers }),
      state: new Gauge({ name: 'tabtrain_run_state', help: 'Run state: 1 for the current one', labelNames: ['state'] as const, registers }),
      workers: new Gauge({ name: 'tabtrain_workers', help: 'Workers by state', labelNames: ['state'] as const, registers }),
      bytes: new Gauge({ name: 'tabtrain_bytes', help: 'Bytes moved to and from every worker that ever joined', labelNames: ['direction'] as const, registers }),
      streams: new Gauge({ name: 'tabtrain_dashboard_streams', help: 'Dashboard pages connected to /api/events', registers }),
      wExamplesPerSec: new Gauge({ name: 'tabtrain_worker_examples_per_second', help: "A worker's measured training examples per second (EMA; sizes its shards)", labelNames: workerLabels, registers }),
      wComputeSec: new Gauge({ name: 'tabtrain_worker_compute_seconds', help: "A worker's compute time on its latest shard", labelNames: workerLabels, registers }),
      wUploadSec: new Gauge({ name: 'tabtrain_worker_upload_seconds', help: "A worker's encode + send time on its latest shard", labelNames: workerLabels, registers }),
      wShard: new Gauge({ name: 'tabtrain_worker_shard_size', help: "Examples in a worker's latest shard", labelNames: workerLabels, registers }),
      wBytesIn: new Gauge({ name: 'tabtrain_worker_received_bytes', help: 'Bytes the coordinator received from a worker', labelNames: workerLabels, registers }),
      wBytesOut: new Gauge({ name: 'tabtrain_worker_sent_bytes', help: 'Bytes the coordinator sent to a worker', labelNames: workerLabels, registers }),
      wShards: new Gauge({ name: 'tabtrain_worker_shards', help: 'Shards a worker has returned', labelNames: workerLabels, registers }),
      wStraggler: new Gauge({ name: 'tabtrain_worker_straggler', help: '1 for the worker the latest step waited for', labelNames: workerLabels, registers }),
    };
  }

  /** Sets the gauges that are read off the coordinator at scrape time, not on the training path. */
  private refreshGauges(): void {
    const m = this.m;
    const { header, workers } = this.view();
    m.step.set(header.step);
    m.epoch.set(header.epoch);
    for (const s of ['waiting', 'running', 'paused', 'evaluating', 'finished', 'stopped', 'failed'] satisfies RunState[]) m.state.set({ state: s }, s === header.state ? 1 : 0);
    for (const s of Object.values(WORKER_STATE)) m.workers.set({ state: s }, workers.filter((w) => w.state === s).length);
    m.bytes.set({ direction: 'in' }, workers.reduce((a, w) => a + w.bytesIn, 0));
    m.bytes.set({ direction: 'out' }, workers.reduce((a, w) => a + w.bytesOut, 0));
    m.bytes.set({ direction: 'total' }, header.totalBytes);
    const per = [m.wExamplesPerSec, m.wComputeSec, m.wUploadSec, m.wShard, m.wBytesIn, m.wBytesOut, m.wShards, m.wStraggler];
    // Lost workers leave the per-worker series: tabs come and go, series must not pile up.
    for (const g of per) g.reset();
    for (const w of workers) {
      if (w.state === WORKER_STATE.lost) continue;
      const l = { worker: String(w.id), worker_id: w.workerId, kind: w.kind, backend: w.backend };
      m.wExamplesPerSec.set(l, w.examplesPerSec);
      m.wComputeSec.set(l, w.computeMs / 1000);
      m.wUploadSec.set(l, w.uploadMs / 1000);
      m.wShard.set(l, w.shardSize);
      m.wBytesIn.set(l, w.bytesIn);
      m.wBytesOut.set(l, w.bytesOut);
      m.wShards.set(l, w.shardsDone);
      m.wStraggler.set(l, w.straggler ? 1 : 0);
    }
  }

  // ---- control ----

  private async onControl(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A refusal closes the connection: the body the peer may still be sending is never read.
    const refuse = (status: number, body: unknown, headers: Record<string, string> = {}) => json(res, status, body, { connection: 'close', ...headers });
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!(declared <= DASHBOARD.maxControlBytes)) return refuse(413, { error: `a control body is at most ${DASHBOARD.maxControlBytes} bytes` });
    const token = this.coord.opts.adminToken;
    if (!token) return refuse(403, { error: 'read-only: the coordinator was started without --admin-token' });
    // Before the token is compared: an address past its tries learns nothing about the token.
    const address = req.socket.remoteAddress ?? '?';
    const wait = this.controlLimit.retryAfter(address);
    if (wait > 0) return refuse(429, { error: `too many wrong admin tokens from ${address}: try again in ${wait} s` }, { 'retry-after': String(wait) });
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!sameSecret(given, token)) {
      this.controlLimit.refuse(address);
      return refuse(401, { error: 'missing or wrong admin token' }, { 'www-authenticate': 'Bearer' });
    }
    // JSON only: a cross-site form cannot send it without a preflight, which we never answer.
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) return refuse(415, { error: 'send {"action": ...} as application/json' });
    let action: ControlAction;
    try {
      const body = JSON.parse(await readBody(req, DASHBOARD.maxControlBytes)) as { action?: unknown };
      if (!CONTROL_ACTIONS.includes(body?.action as ControlAction)) throw new Error(`action must be one of ${CONTROL_ACTIONS.join(', ')}`);
      action = body.action as ControlAction;
    } catch (e) {
      if (e instanceof BodyTooLarge) return refuse(413, { error: e.message });
      if (e instanceof BodyTimeout) return refuse(408, { error: e.message });
      return refuse(400, { error: (e as Error).message });
    }
    const c = this.coord;
    if (action === 'export') {
      if (!c.opts.exportDir) return json(res, 409, { error: 'start the coordinator with --export DIR to export on demand' });
      try {
        const step = await c.exportNow();
        return json(res, 200, { ok: true, action, step, dir: c.opts.exportDir });
      } catch (e) {
        return json(res, 500, { error: `export failed: ${(e as Error).message}` });
      }
    }
    if (TERMINAL.includes(c.state)) return json(res, 409, { error: `the run is already ${c.state}`, state: c.state, reason: c.stateReason });
    const who = `from the dashboard (${req.socket.remoteAddress ?? '?'})`;
    if (action === 'pause') c.pause(`paused ${who}`);
    else if (action === 'resume') c.resume();
    else c.stop(`stopped ${who}`);
    json(res, 200, { ok: true, action, state: c.state, reason: c.stateReason });
  }

  // ---- HTTP ----

  /** Answers the dashboard's routes; false for any other path (the coordinator serves those). */
  handle(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const get = req.method === 'GET' || req.method === 'HEAD';
    switch (path) {
      case '/api/status':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        json(res, 200, this.status());
        return true;
      case '/api/events':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        // HEAD gets the stream's headers and no body: a stream that never ends has no HEAD.
        if (req.method === 'HEAD') { res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' }); res.end(); return true; }
        this.openStream(req, res);
        return true;
      case '/metrics':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        this.refreshGauges();
        this.registry.metrics().then(
          (text) => { res.writeHead(200, { 'content-type': this.registry.contentType, 'cache-control': 'no-store' }); res.end(text); },
          (e: Error) => { res.writeHead(500, { 'content-type': 'text/plain' }); res.end(`metrics failed: ${e.message}\n`); },
        );
        return true;
      case '/api/log':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        this.serveLog(req, res);
        return true;
      case '/api/control':
        if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
        this.onControl(req, res).catch((e: Error) => { if (!res.headersSent) json(res, 500, { error: e.message }); else res.destroy(); });
        return true;
      case '/dashboard/':
        // The page's asset URLs are relative: they resolve from /dashboard, not /dashboard/.
        res.writeHead(301, { location: '/dashboard' });
        res.end();
        return true;
      case '/dashboard': {
        const root = this.coord.opts.staticDir ?? DEFAULT_STATIC_DIR;
        if (existsSync(resolve(root, 'dashboard.html'))) return false;
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`the dashboard page is not built: run \`npm run build:client\` (looked in ${root}). /api/status and /metrics work without it.\n`);
        return true;
      }
      default:
        return false;
    }
  }

  // ---- the JSONL log ----

  /**
   * GET /api/log: the --log file up to its size now. Every line up to there is whole (each is one
   * synchronous write), so a download taken mid-run parses. It holds every step, unthinned, and a
   * file appended to by earlier sessions of a resumed run holds theirs too.
   */
  private serveLog(req: IncomingMessage, res: ServerResponse): void {
    if (this.logFd === null) {
      return json(res, 404, { error: 'the coordinator was started without --log FILE; the page\'s CSV and JSONL downloads hold the points the page has' });
    }
    const size = fstatSync(this.logFd).size;
    res.writeHead(200, {
      'content-type': 'application/x-ndjson; charset=utf-8', 'content-length': String(size), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff',
      'content-disposition': `attachment; filename="tabtrain-${this.coord.run.model.replace(/[^\w.-]/g, '_')}-log.jsonl"`,
    });
    if (req.method === 'HEAD' || size === 0) { res.end(); return; }
    const file = this.coord.opts.metricsLog!;
    const stream = createReadStream(file, { start: 0, end: size - 1 });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }

  private writeLog(record: Record<string, unknown>): void {
    if (this.logFd === null) return;
    // Synchronous and whole lines: a crash leaves every line written so far complete (~20 µs a step).
    writeSync(this.logFd, `${JSON.stringify({ at: Date.now(), ...record })}\n`);
  }

  /** Sends the last update, ends every stream and closes the log. The coordinator calls it on close. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    for (const [name, fn] of this.listeners) this.coord.events.off(name, fn);
    this.streams.close();
    this.controlLimit.close();
    if (this.logFd !== null) closeSync(this.logFd);
    this.logFd = null;
  }
}

function epochEndPoint(e: EpochMetrics, step: number): TrainPoint {
  return { step, epoch: e.epoch, examples: e.examples, loss: round(e.loss), acc: round(e.trainAcc) };
}

function adapterName(a: Record<string, unknown> | null): string {
  if (!a) return '';
  const s = (k: string) => (typeof a[k] === 'string' ? (a[k] as string) : '');
  const parts = [s('description') || [s('vendor'), s('architecture'), s('device')].filter(Boolean).join(' ')];
  if (s('backendType')) parts.push(s('backendType'));
  if (a.isFallbackAdapter === true) parts.push('fallback');
  return parts.filter(Boolean).join(', ').slice(0, 120);
}

const round = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(5)) : 0);
const ms = (x: number) => Math.round(x * 100) / 100;

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(JSON.stringify(body));
}

function methodNotAllowed(res: ServerResponse, allow: string): true {
  json(res, 405, { error: `use ${allow}` }, { allow });
  return true;
}

class BodyTooLarge extends Error {}
class BodyTimeout extends Error {}

/** A control body is tiny: one that has not arrived whole by then never will (a truncated or trickled body). */
const BODY_TIMEOUT_MS = 2000;

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      reject(new BodyTimeout(`the control body did not arrive whole within ${BODY_TIMEOUT_MS} ms`));
      req.pause();
      req.removeAllListeners('data');
    }, BODY_TIMEOUT_MS);
    timer.unref();
    req.on('close', () => clearTimeout(timer));
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new BodyTooLarge(`a control body is at most ${limit} bytes`));
        // Read no more of it; the 413 goes out with connection: close, which ends the socket.
        req.pause();
        req.removeAllListeners('data');
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => { clearTimeout(timer); resolveBody(Buffer.concat(chunks).toString('utf8')); });
    req.on('error', reject);
  });
}
