// The coordinator: owns the weights, the data and the clock; workers only compute. This is the
// run loop, and the wiring of the parts that each own one job:
//
//   transport.ts    sockets: HTTP and the upgrade, validation, flood limit, heartbeats, closes
//   membership.ts   who the workers are: identity, join and replace, trust, the status table
//   scheduler.ts    the task queue of a step: copies, who computes what, deadlines, verdicts
//   step.ts         the weights, the shard-ordered sum, SGD, the broadcast frames
//
// One step: plan shards over the usable workers → send each its shard (weights first if it holds
// an older version) → collect each shard's gradient SUM → sum in shard order → SGD → version+1.
// Shards wait in a queue, so a shard whose worker vanishes goes to the next idle one and the
// step's gradient stays the exact gradient of the whole batch. Here: epochs, evaluation,
// pause/resume/stop, the status object, and the handling of each joined worker's messages.
import { EventEmitter } from 'node:events';
import {
  CLOSE, CLOSE_NAMES, IMAGE_BYTES, MSG, ProtocolError, encode, epochOrder, getModel, modelHash, paramLayout, planShards, stepsPerEpoch,
  type Assign, type Gradient, type Hello, type Message, type ModelSpec, type Resync, type Result, type RunInfo,
} from '@tabtrain/shared';
import { printable } from '@tabtrain/shared/text';
import { NO_COMPRESSION, type Compression } from '@tabtrain/shared/compress';
import type { EpochPoint } from '@tabtrain/shared/dashboard-wire';
import { gather, type Dataset } from './data';
import { weightsSha256 } from './files';
import { formatSeconds, plural } from './format';
import { guarded } from './guard';
import type { ListenerTls } from './listener';
import { CONN, Membership, type Conn } from './membership';
import { Scheduler, f32, type Task } from './scheduler';
import { Step } from './step';
import { planStep } from './cost-model';
import { FullCopies } from './full-copies';
import { missedDeadline, timeShard } from './pace';
import { LARGE_FRAME, Transport } from './transport';
import type { Route, Wire, WireFactory } from './wire';
import { codedNormSq, sumSquares } from './verify';
import { StallWatch } from './waiting';

export { weightsSha256 };
export type { Route };

export interface CoordinatorOptions {
  model: string;
  /** Also serve https and wss on the same port with this certificate (listener.ts); without it, plain http only. */
  tls?: ListenerTls;
  epochs: number;
  batch: number;
  lr?: number;
  seed: number;
  port: number;
  host: string;
  minWorkers: number;
  maxSteps?: number;
  /**
   * How gradients travel (compress.ts): none (fp32), fp16, int8 or powersgd; default none. A
   * compressed run also broadcasts the step's update in that codec instead of the weights.
   */
  compress?: Compression;
  /**
   * Compressed runs: every this many versions an assign carries the weights' replicaHash, and a
   * worker whose replica differs asks for the full weights before computing. Default 10.
   */
  verifyEvery?: number;
  /**
   * How shards are sized: 'speed' in proportion to each worker's measured examples/s (no step
   * waits on a slow tab), 'equal' evenly. Both give the exact batch gradient; only 'equal' is
   * bit-reproducible, because fp32 sums depend on where the batch is cut.
   */
  balance: 'speed' | 'equal' | 'cost';
  token?: string;
  /** Strangers (neither --local-workers nor holding the token) join on probation; without it they are refused. */
  open?: boolean;
  /** Test images evaluated at each epoch's end (d2l: all 10,000). */
  evalExamples: number;
  /** How long a new socket may take to say hello. */
  helloTimeoutMs: number;
  /**
   * A shard not returned within this many ms is taken back and its worker dropped. 0 = derive it
   * from the worker's measured speed: 5× its expected time, at least `minDeadlineMs`.
   */
  deadlineMs?: number;
  /** Floor of the derived deadline of a measured worker, and the cap of a newcomer's. */
  minDeadlineMs?: number;
  /** The deadline while no worker has a measured speed yet (the run's first shards: model build, warm-up). */
  firstDeadlineMs?: number;
  /** Floor of a not-yet-measured worker's deadline, which is otherwise 5× the fleet's median worker's time. */
  newcomerDeadlineMs?: number;
  /**
   * A worker whose send buffer has not shrunk for this long is closed as a slow reader. 15 s: a
   * reader behind a congested link can wait out several TCP retransmission timeouts in a row.
   */
  slowReaderMs?: number;
  /** Shards of each kind a new worker computes as shadow copies, checked against established workers, before its results count (0 = trust everyone). */
  probation?: number;
  /** Fraction of all shards also computed by a second established worker and compared before the step is applied. */
  verifyShards?: number;
  /**
   * fp32 runs apply and broadcast the step segment by segment as the sums complete (step.ts), so
   * the down-link works while the up-link still does; false applies the whole step at its end.
   * Both give the same bits. Default true.
   */
  pipeline?: boolean;
  /** Idle workers are pinged this often; one that misses two pongs is dropped. */
  heartbeatMs?: number;
  /** --export: where the LayersModel goes, at the end and on demand (dashboard 'export'). */
  exportDir?: string;
  /** Serves the built page and dashboard from here, if present. */
  staticDir?: string;
  /** Pause/resume/stop from the dashboard need this bearer token; without it the dashboard is read-only. */
  adminToken?: string;
  /**
   * What carries the frames: the sockets by default (transport.ts; port, host, tls, staticDir and
   * the timeouts configure it), or memory for tests that drive the coordinator in-process
   * (memory-wire.ts). Everything above the wire runs the same either way.
   */
  wire?: WireFactory<Conn>;
  /** Appends one JSON line per step, epoch and state change to this file (--log). */
  metricsLog?: string;
  log: (line: string) => void;
  /** Progress during an epoch; replaced in place on a terminal. */
  progress: (line: string) => void;
}

export const DEFAULTS = {
  epochs: 10, batch: 128, seed: 42, port: 8080, host: '0.0.0.0', minWorkers: 1, balance: 'speed',
  evalExamples: 10_000, helloTimeoutMs: 10_000, minDeadlineMs: 120_000, firstDeadlineMs: 120_000, newcomerDeadlineMs: 10_000,
  slowReaderMs: 15_000, heartbeatMs: 10_000, verifyEvery: 10, probation: 3, verifyShards: 0.05,
} as const;

/** An epoch's d2l figures: what the dashboard is sent (dashboard-wire.ts), kept in checkpoints. */
export type EpochMetrics = EpochPoint;

/** Where one step's wall time went; emitted as the 'step' event after every step. */
export interface StepRecord {
  step: number;
  epoch: number;
  examples: number;
  loss: number;
  acc: number;
  wallMs: number;
  /** From the first assign sent until the last shard's result arrived. */
  collectMs: number;
  /** Slowest shard's compute and upload, as the worker measured them. */
  computeMs: number;
  uploadMs: number;
  aggregateMs: number;
  /** Time spent summing gradient segments as they arrived, inside collectMs (streaming aggregation). */
  foldMs?: number;
  /** SGD applying the step; powersgd: applying the last update, which runs after the next step is dispatched. */
  applyMs: number;
  /** Encoding the new weights (fp32 runs) or the update (compressed runs) into frames; sending them overlaps the next step's dispatch. */
  broadcastMs: number;
  /** Connection id of the worker whose result came last: the one the step waited for. */
  straggler: number | null;
  /** Pipelined steps: segments of the new weights sent to a worker while some shard's gradient was still arriving; powersgd: frames of either round's broadcast sent while that round's factors were still arriving. */
  earlySegments: number;
  shards: { shard: number; worker: number | null; count: number; computeMs: number; uploadMs: number }[];
  at: number;
}

export type RunState = 'waiting' | 'running' | 'paused' | 'evaluating' | 'finished' | 'stopped' | 'failed';

export interface Summary {
  model: string;
  modelHash: string;
  paramCount: number;
  config: { epochs: number; batch: number; lr: number; seed: number; minWorkers: number; maxSteps: number | null; evalExamples: number; compress: Compression };
  steps: number;
  examples: number;
  epochs: EpochMetrics[];
  examplesPerSec: number;
  seconds: number;
  workersSeen: number;
  weightsSha256: string;
  stoppedBy: 'epochs' | 'max-steps' | 'stop';
}

export class Coordinator {
  readonly spec: ModelSpec;
  readonly run: RunInfo;
  step = 0;
  epoch = 0;
  readonly history: EpochMetrics[] = [];
  /**
   * 'step' (StepRecord), 'epoch' (EpochMetrics), 'log' (string), 'state' (RunState), 'workers' (),
   * 'round' ({step, round}: a powersgd step's second round begins),
   * 'close' () for the dashboard, metrics and logs; listeners must be cheap (they run on the training path).
   */
  readonly events = new EventEmitter();
  state: RunState = 'waiting';
  stateReason = '';
  readonly startedAt = Date.now();
  lastStep: StepRecord | null = null;
  readonly opts: CoordinatorOptions;

  private readonly transport: Wire<Conn>;
  private readonly members: Membership;
  private readonly scheduler: Scheduler;
  private readonly model: Step;
  private readonly stalls: StallWatch; // why a step waits, in the run's state (waiting.ts)
  private readonly copies: FullCopies;
  /** fp32 gradients (no --compress): copies of a shard can be compared float by float. */
  private readonly fp32: boolean;
  /** --compress powersgd: each step takes two rounds of factors (powersgd.ts, step.ts). */
  private readonly powerSgd: boolean;
  /** Each working worker's deadline timer. */
  private readonly deadlines = new Map<Conn, NodeJS.Timeout>();
  /** A pipelined step: the workers being sent the next version segment by segment, and how many segments each got. */
  private readonly pushed = new Map<Conn, number>();
  /** powersgd: the workers being sent the round in hand's broadcast as it is made (pushRound), and how many of its frames each got. */
  private readonly roundPushed = new Map<Conn, number>();
  private earlySegments = 0;
  /**
   * --balance cost: what the coordinator's link has been seen to carry each way, bytes/s: the
   * largest per-step aggregate so far, decaying slowly (a step's aggregate is a lower bound of the
   * link; the decay lets a link that got slower be seen).
   */
  private linkSeen = { up: 0, down: 0 };
  private tasksDone: (() => void) | null = null;
  private waitingSince = 0;
  private closed = false;
  private paused = false;
  /** Kept apart from stateReason, which every state change (evaluating, waiting) overwrites. */
  private pauseReason = '';
  private stopReason = '';
  private stopRequested = false;
  private resumeWaiters: (() => void)[] = [];

  constructor(opts: CoordinatorOptions, readonly data: Dataset) {
    const log = opts.log;
    // One sink for every line the run logs: what a peer sent is escaped here too (printable).
    this.opts = { ...opts, log: (raw) => { const line = printable(raw); log(line); this.events.emit('log', line); } };
    this.spec = getModel(opts.model);
    const { total } = paramLayout(this.spec);
    this.run = { model: this.spec.name, modelHash: modelHash(this.spec), seed: opts.seed, batch: opts.batch, lr: opts.lr ?? this.spec.lr, paramCount: total };
    const compress = opts.compress ?? NO_COMPRESSION;
    if (compress.mode !== 'none') this.run.compress = compress;
    this.fp32 = compress.mode === 'none';
    this.powerSgd = compress.mode === 'powersgd';
    const o = this.opts;
    const probation = o.probation ?? DEFAULTS.probation;
    this.model = new Step(this.spec, opts.seed, compress, (shard, why) => this.onBadShard(shard, why), o.pipeline ?? true);
    this.model.onStaged = (frame, index) => this.push(frame, index);
    this.model.onRoundStaged = (frame, round, index) => this.pushRound(frame, round, index);
    this.members = new Membership({
      run: this.run, token: o.token, open: o.open, probation, log: o.log,
      drop: (c, code, why) => this.transport.drop(c, code, why), changed: () => this.events.emit('workers'),
    });
    this.copies = new FullCopies({ token: o.token, probation, retry: () => this.dispatch(), log: o.log });
    this.scheduler = new Scheduler({
      fp32: this.fp32, verifyShards: o.verifyShards ?? DEFAULTS.verifyShards, probation, deadlineMs: o.deadlineMs,
      minDeadlineMs: o.minDeadlineMs ?? DEFAULTS.minDeadlineMs, firstDeadlineMs: o.firstDeadlineMs ?? DEFAULTS.firstDeadlineMs,
      newcomerDeadlineMs: o.newcomerDeadlineMs ?? DEFAULTS.newcomerDeadlineMs, log: o.log,
      fold: (t, c) => {
        const reducer = this.model.reducer;
        if (t.inReducer) reducer.revoke(t.shard);
        for (const f of c.frames) reducer.accept(t.shard, f.g, f.body);
      },
      decode: (c) => (c.fp32Check ? null : this.model.decodeCopy(c.frames)), codedCompare: !this.powerSgd,
    }, this.members);
    const wire = o.wire ?? ((handler) => new Transport<Conn>({
      port: o.port, host: o.host, tls: o.tls, staticDir: o.staticDir, helloTimeoutMs: o.helloTimeoutMs,
      heartbeatMs: o.heartbeatMs ?? DEFAULTS.heartbeatMs, slowReaderMs: o.slowReaderMs ?? DEFAULTS.slowReaderMs, log: o.log,
    }, handler));
    this.transport = wire({
      open: (peer) => this.members.open(peer),
      message: (c, msg, body) => this.onMessage(c, msg, body),
      gone: (c, code, reason, byUs) => this.onGone(c, code, reason, byUs),
      joined: (c) => c.state !== CONN.hello,
      idle: (c) => c.state === CONN.idle,
    });
    this.stalls = new StallWatch({
      tasks: () => this.scheduler.tasks, members: this.members, log: o.log, state: () => ({ state: this.state, reason: this.stateReason }),
      // A quiet reason reaches the dashboard with its next push ('workers'), without a state change.
      say: (s, why, quiet) => { if (quiet) { this.stateReason = why; this.events.emit('workers'); } else this.setState(s, why); },
    });
  }

  /** The only truth: every worker starts from these. */
  get weights(): Float32Array { return this.model.weights; }
  /** Number of SGD steps applied to the weights. */
  get version(): number { return this.model.version; }
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

  // ---- a worker's messages ----

  private onMessage(conn: Conn, msg: Message, body: Uint8Array): void {
    if (conn.state === CONN.hello) {
      if (msg.type !== MSG.hello) throw new ProtocolError(CLOSE.unexpected, `${msg.type} before hello`);
      return this.onHello(conn, msg);
    }
    switch (msg.type) {
      case MSG.gradient: return this.onGradient(conn, msg, body);
      case MSG.result: return this.onResult(conn, msg);
      case MSG.status: conn.tensors = msg.tensors; conn.tensorBytes = msg.bytes; conn.drift = msg.drift ?? conn.drift; return;
      case MSG.resync: return this.onResync(conn, msg);
      default: throw new ProtocolError(CLOSE.unexpected, `${msg.type} is not allowed from a joined worker`);
    }
  }

  private onHello(conn: Conn, h: Hello): void {
    const { workerId, how } = this.members.join(conn, h);
    this.copies.joined(conn, h.token);
    this.transport.send(conn, encode({ type: MSG.welcome, workerId, run: this.run, session: conn.session }));
    this.opts.log(`worker #${conn.id} joined: ${h.kind}/${h.backend.slice(0, 40)} from ${conn.remote} (${how}; ${this.members.workers().length} connected)`);
    if (this.state === 'waiting' && this.step > 0) this.setState(this.paused ? 'paused' : 'running', this.paused ? this.pauseReason : '');
    this.events.emit('workers');
    this.dispatch();
  }

  private onGradient(conn: Conn, g: Gradient, body: Uint8Array): void {
    const c = this.scheduler.owned(conn, g.step, g.shard, 'train');
    const round = this.powerSgd && !c.fp32Check ? c.task.round : undefined;
    if (g.round !== round) throw new ProtocolError(CLOSE.badGradient, `gradient of round ${g.round ?? 'none'} for a task of ${round ? `round ${round}` : c.fp32Check ? 'an fp32 check' : 'a run without rounds'}`);
    // In order, so `received` counts distinct floats: a repeated slice cannot fake a full gradient.
    if (g.offset !== c.received) throw new ProtocolError(CLOSE.badGradient, `gradient slice at ${g.offset}, expected the next at ${c.received}`);
    // The reducer checks the segment against the run's plan (offset, codec, exact body length);
    // an fp32 check copy of a compressed run, against the fp32 plan.
    const reducer = this.model.reducer;
    const checked = c.fp32Check ? this.model.checkFp32(g, body) : reducer.check(g, body);
    const t = c.task;
    // Compressed train frames of trusted workers: a plausible size before they are summed (verify.ts, FrameNorms).
    if (!this.fp32 && !c.fp32Check) {
      const s = checked.segment;
      const normSq = round !== undefined ? sumSquares([f32(checked.body)]) : codedNormSq(s, checked.body);
      const why = normSq === null ? null : this.scheduler.frameNorms.check(round !== undefined ? `round-${round} factor frame ${s.index}` : `${s.codec} segment ${s.index}`, normSq, t.count, conn.vouched);
      if (why && !this.scheduler.suspectFrame(c, `shard ${g.step}/${g.shard}: ${why}`)) return this.members.punish(conn, `shard ${g.step}/${g.shard}: ${why}`, this.step);
      if (why) reducer.revoke(t.shard);
    }
    const now = performance.now();
    if (c.received === 0) c.firstAt = conn.messageStartedAt;
    c.lastAt = now;
    c.frames.push({ g, body: checked.body });
    if (this.fp32 || c.fp32Check) c.normSq += sumSquares([f32(checked.body)]);
    c.received += checked.segment.count;
    // Folded after the bookkeeping: the segment this frame completes is applied and pushed at once
    // (step.ts, push()), and push() must see this copy as uploading (received > 0). Folded before
    // it, a worker's first segment found received = 0, so it was sent none of the new weights.
    if (c.streamed) {
      reducer.hold(t.shard, checked.segment, checked.body);
      t.inReducer = c;
    }
  }

  /** The worker's replica differs from ours (hash or version): send it the full weights, once per version. */
  private onResync(conn: Conn, r: Resync): void {
    const holding = this.scheduler.copyOf(conn) !== null;
    if (!holding || r.version !== this.version) throw new ProtocolError(CLOSE.unexpected, `resync for version ${r.version} while ${holding ? `the run is at ${this.version}` : 'holding no shard'}`);
    if (conn.resyncVersion === r.version) throw new ProtocolError(CLOSE.unexpected, `second resync for version ${r.version}: its replica still differs after a full copy`);
    if (this.copies.take(conn)) throw new ProtocolError(CLOSE.unexpected, `resync for version ${r.version}: ${this.copies.reason(conn.id)}`);
    conn.resyncVersion = r.version;
    conn.resyncs++;
    this.opts.log(`worker #${conn.id}: replica differs from version ${r.version}; resending the full weights`);
    // powersgd: with the last round-2 sum (the worker's next Q), and during round 2 its P̂.
    const frames = this.model.framesFor(-1);
    if (this.model.round === 2) frames.push(...this.model.basisFrames);
    for (const f of frames) this.transport.send(conn, f);
    if (this.model.round === 2) conn.basis = this.version + 1;
  }

  private onResult(conn: Conn, r: Result): void {
    const c = this.scheduler.owned(conn, r.step, r.shard, r.task);
    const t = c.task;
    if (r.count !== t.count || r.correct > r.count) throw new ProtocolError(CLOSE.badField, `result counts ${r.correct}/${r.count} for a shard of ${t.count}`);
    const floats = c.fp32Check ? this.run.paramCount : this.model.copyFloats;
    if (t.kind === 'train' && c.received !== floats) throw new ProtocolError(CLOSE.badGradient, `result after ${c.received} of ${floats} ${this.powerSgd ? `round-${t.round} factor` : 'gradient'} floats`);
    if (!Number.isFinite(c.normSq)) throw new ProtocolError(CLOSE.badGradient, `shard ${t.step}/${t.shard}: the gradient has NaN or Inf`);
    this.clearDeadline(conn);
    conn.state = CONN.idle;
    conn.shardsDone++;
    const lie = t.kind === 'train' && t.round === 1 && !c.fp32Check ? timeShard(conn, c, r) : null;
    if (lie) return this.members.punish(conn, `shard ${t.step}/${t.shard}: ${lie}`, this.step);
    this.scheduler.finish(c, r);
    if (this.scheduler.allDone()) this.tasksDone?.();
    this.dispatch();
  }

  /** A shard's gradient decoded to NaN/Inf (found when folded): take it out, redo the shard, drop its sender. */
  private onBadShard(shard: number, why: string): void {
    this.callOffPipeline();
    this.model.reducer.revoke(shard);
    const culprit = this.scheduler.spoiled(shard);
    if (culprit) this.transport.drop(culprit, CLOSE.badGradient, `shard ${this.step}/${shard}: ${why}`);
    this.dispatch();
  }

  /** A connection closed (by us or by the peer): its unfinished shard goes back to the queue. */
  private onGone(conn: Conn, code: number, reason: string, byUs: boolean): void {
    const joined = conn.state !== CONN.hello;
    if (joined && !byUs && !this.closed) this.opts.log(`worker #${conn.id} left (${CLOSE_NAMES[code] ?? code}${reason ? `: ${reason.slice(0, 120)}` : ''})`);
    this.clearDeadline(conn);
    if (byUs) this.members.closedFor(conn, code, reason, this.step);
    this.scheduler.unpin(conn);
    const { requeued, revoke } = this.scheduler.lose(conn);
    if (revoke) this.model.reducer.revoke(revoke.shard);
    if (requeued && !this.closed) this.opts.log(`shard ${requeued.step}/${requeued.shard} (${plural(requeued.count, 'example')}) goes back to the queue`);
    this.members.lost(conn);
    if (!joined || this.closed) return;
    if (this.scheduler.allDone()) this.tasksDone?.(); // it may have settled a check nobody else can make
    if (this.members.workers().length === 0) this.noteWaiting();
    this.abandonIfStopped();
    this.events.emit('workers');
    this.dispatch();
  }

  // ---- handing out work ----

  /** Gives each idle worker a copy to compute, weights first if it holds an older version. */
  private dispatch(): void {
    if (this.closed) return;
    for (const conn of this.members.workers()) {
      if (conn.state !== CONN.idle) continue;
      const pick = this.scheduler.next(conn, this.step);
      if (pick && this.copies.mustWait(conn, this.version, this.members.established(conn, pick.task.kind))) this.scheduler.unpin(conn);
      else if (pick) this.assign(conn, pick.task, pick.shadow, pick.check);
    }
  }

  private assign(conn: Conn, t: Task, shadow: boolean, check = false): void {
    const copy = this.scheduler.start(conn, t, shadow, check);
    conn.state = CONN.working;
    conn.shardSize = t.count;
    const sent0 = conn.bytesOut;
    for (const f of this.model.framesFor(conn.version, conn.basis)) this.transport.send(conn, f);
    conn.version = this.version;
    const a: Assign = { type: MSG.assign, task: t.kind, step: t.step, shard: t.shard, version: this.version, position: t.position, count: t.count };
    const round2 = t.kind === 'train' && t.round === 2;
    if (copy.fp32Check) {
      a.fp32 = true;
    } else if (round2) {
      a.round = 2;
      if (conn.basis !== this.version + 1) for (const f of this.model.basisFrames) this.transport.send(conn, f);
      conn.basis = this.version + 1;
    } else {
      const hash = this.model.checkHash(this.opts.verifyEvery ?? DEFAULTS.verifyEvery);
      if (hash) a.hash = hash;
    }
    // Round 2 on the worker that kept the shard's M needs no examples; anyone else recomputes it.
    if (round2 && t.heldBy !== conn.id) this.opts.log(`shard ${t.step}/${t.shard} round 2: worker #${conn.id} recomputes its gradient (${t.heldBy === null ? 'the worker of its round 1 is gone' : `round 1 was worker #${t.heldBy}'s`}; that worker's error feedback for it is lost)`);
    this.transport.send(conn, round2 && t.heldBy === conn.id ? encode(a) : encode(a, gather(t.split, t.indices)));
    Object.assign(copy, { sentAt: performance.now(), sentBytes: conn.bytesOut - sent0 });
    const ms = this.scheduler.deadlineFor(conn, t);
    this.deadlines.set(conn, setTimeout(guarded(this.opts.log, `worker #${conn.id} deadline`, () => {
      // Bytes still queued for it mean it never read its shard: a slow reader, not a slow GPU.
      const queued = this.transport.queued(conn);
      conn.timeouts++;
      if (missedDeadline(conn.timeouts, conn.local) === 'refuse') this.members.punish(conn, `missed ${conn.timeouts} shard deadlines (the last: shard ${t.step}/${t.shard}, ${ms} ms)`, this.step);
      else if (queued > 0) this.transport.drop(conn, CLOSE.slowReader, `${queued} bytes sent to it are still unread after ${ms} ms`);
      else this.transport.drop(conn, CLOSE.timeout, `shard ${t.step}/${t.shard} not returned within its ${ms} ms deadline`);
    }, () => this.transport.terminate(conn)), ms));
  }

  /**
   * Sends segment `index` of the next version to every worker that holds the current one and is
   * reading: idle, or uploading its shard (a worker still computing may not read for seconds, and
   * would look like a slow reader). One that missed a segment gets the whole weights at its next assign.
   */
  private push(frame: Uint8Array, index: number): void {
    const early = !this.scheduler.allDone();
    this.events.emit('segment', index);
    this.sendInOrder(this.pushed, frame, index, early);
  }

  /**
   * Frame `index` of a broadcast made while the step runs goes to every reading worker that holds
   * the current version and got the frames before it (`sent` counts them), and that `also`
   * admits. `early`: some shard was still arriving.
   */
  private sendInOrder(sent: Map<Conn, number>, frame: Uint8Array, index: number, early: boolean, also: (conn: Conn) => boolean = () => true): void {
    let any = false;
    for (const conn of this.members.workers()) {
      // A benched worker is not sent every step's weights: that would cost the link benching saves.
      if ((sent.get(conn) ?? 0) !== index || conn.version !== this.version || conn.benchedByMs !== null || !this.reading(conn) || !also(conn)) continue;
      this.transport.send(conn, frame);
      sent.set(conn, index + 1);
      any = true;
    }
    // Counted where it went to a worker, not where it was only made: a segment no one was sent is no overlap.
    if (early && any) this.earlySegments++;
  }

  /** A worker that reads what it is sent now: idle, or uploading its shard (one still computing may not read for seconds, and would look like a slow reader). */
  private reading(conn: Conn): boolean {
    const copy = this.scheduler.copyOf(conn);
    return conn.state === CONN.idle || (copy !== null && copy.received > 0);
  }

  /**
   * powersgd: frame `index` of round `round`'s broadcast (step.ts, stageRound) goes to every
   * reading worker of the step that has the frames before it: round 1's to those holding the
   * current weights, round 2's to those that also have this step's P̂. The rest get the whole
   * broadcast later (secondRound, framesFor), from its first frame, which restarts a partial one.
   */
  private pushRound(frame: Uint8Array, round: 1 | 2, index: number): void {
    this.sendInOrder(this.roundPushed, frame, index, !this.scheduler.allDone(), (conn) => round === 1 || conn.basis === this.version + 1);
  }

  /** The step is applied: who got every segment of it (a powersgd run: all of ΣQ_i, which the worker applies) holds the new version. */
  private settlePushed(): void {
    for (const [conn, n] of this.pushed) if (n === this.model.segments && !conn.closed) conn.version = this.version;
    this.pushed.clear();
    for (const [conn, n] of this.roundPushed) if (n === this.model.updateFrameCount && conn.basis === this.version && !conn.closed) conn.version = this.version;
    this.roundPushed.clear();
  }

  /** The pipeline is called off: a worker that got part of the next version must be sent the current one whole. */
  private callOffPipeline(): void {
    if (this.model.callOff()) for (const conn of this.pushed.keys()) conn.version = -1;
    this.pushed.clear();
  }

  private clearDeadline(conn: Conn): void {
    const timer = this.deadlines.get(conn);
    if (timer) clearTimeout(timer);
    this.deadlines.delete(conn);
  }

  private noteWaiting(): void {
    this.waitingSince = Date.now();
    if (this.state === 'running' || this.state === 'evaluating') this.setState('waiting', 'no workers connected');
    this.opts.log(`waiting for workers: ${this.members.workers().length} connected, run paused until one joins (need ${this.opts.minWorkers} to start)`);
  }

  /** Runs the tasks through the queue until every one is done. */
  private async execute(tasks: Task[]): Promise<void> {
    this.scheduler.tasks = tasks;
    const done = new Promise<void>((resolve) => { this.tasksDone = resolve; });
    if (this.members.workers().length === 0) this.noteWaiting();
    this.dispatch();
    await done;
    this.tasksDone = null;
    // Stopped with shards nobody is left to compute: drop the step unapplied (the weights stay
    // those of the last whole step, which is what a checkpoint then saves).
    if (this.closed || !tasks.every((t) => t.done)) throw new RunStopped();
  }

  private async waitForWorkers(n: number): Promise<void> {
    if (this.members.workers().length >= n) return;
    if (this.closed) throw new RunStopped();
    this.opts.log(`waiting for ${plural(n, 'worker')} (${this.members.workers().length} connected): join at the addresses above`);
    while (this.members.workers().length < n && !this.closed && !this.stopRequested) await new Promise((r) => setTimeout(r, 100));
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
    this.step = state.step;
    this.epochAcc = { ...state.epochAcc };
    this.history.splice(0, this.history.length, ...state.history);
  }

  // ---- control ----

  private setState(state: RunState, reason = ''): void {
    if (this.state === state && this.stateReason === reason) return;
    this.state = state;
    this.stateReason = reason;
    this.events.emit('state', state);
  }

  /** Holds the run before its next step until resume() or stop(). */
  pause(reason = 'paused by an operator'): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.pauseReason = reason;
    this.opts.log(`pausing after step ${this.step}: ${reason}`);
    this.setState('paused', reason);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.opts.log(`resuming at step ${this.step}`);
    this.setState('running');
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  /** Ends the run after the current step; train() then returns its summary as usual. */
  stop(reason = 'stopped by an operator'): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.stopReason = reason;
    // A step in flight still completes: name the step the run will end on.
    this.opts.log(`stopping after ${this.tasksDone && this.scheduler.tasks[0]?.kind === 'train' ? `the step in hand (step ${this.step + 1})` : `step ${this.step}`}: ${reason}`);
    this.resume();
    this.abandonIfStopped();
  }

  /** A stop with no worker left cannot finish the step in hand: give it up. */
  private abandonIfStopped(): void {
    if (this.stopRequested && this.members.workers().length === 0) this.tasksDone?.();
  }

  private async whilePaused(): Promise<void> {
    while (this.paused && !this.stopRequested && !this.closed) await new Promise<void>((r) => this.resumeWaiters.push(r));
  }

  // ---- training ----

  /** One synchronous step over `indices` (positions in the training set). Returns its stats. */
  async trainStep(indices: Uint32Array): Promise<{ lossSum: number; correct: number; count: number }> {
    const t0 = performance.now();
    const seen0 = { in: this.transport.bytesIn, out: this.transport.bytesOut };
    const plan = this.planTrain(indices.length);
    const tasks = plan.map((p, id) => {
      const t = this.scheduler.newTask('train', this.step, id, p.position, p.count, indices.subarray(p.position, p.position + p.count), this.data.train);
      t.pin = p.pin;
      return t;
    });
    this.model.begin(tasks.length, this.run.lr, indices.length, this.step);
    this.roundPushed.clear();
    this.earlySegments = 0;
    await this.execute(tasks);
    // Plausibility before the step is applied: a shard whose gradient norm stands out is
    // recomputed by another worker, and counts only if the two agree.
    for (let flagged = this.scheduler.recheckImplausible(tasks); flagged.length; flagged = this.scheduler.recheckImplausible(tasks)) {
      this.callOffPipeline();
      for (const [t, why] of flagged) {
        this.opts.log(`shard ${t.step}/${t.shard} from worker #${t.doneBy}: ${why}; recomputing it on another worker`);
        this.model.reducer.revoke(t.shard);
      }
      await this.execute(tasks);
    }
    for (const t of tasks) this.scheduler.norms.accept(t.trusted!.normSq, t.count);
    const round2 = this.powerSgd ? await this.secondRound(tasks) : null;
    const t1 = performance.now();
    const { aggregateMs, applyMs: applied, broadcastMs } = this.model.apply(this.run.lr, indices.length);
    // powersgd: the update reaches the weights once the next step's assigns are out (step.ts,
    // Rounds.pending): setImmediate runs after this step's promise chain has dispatched them.
    if (this.powerSgd) setImmediate(guarded(this.opts.log, 'applying the update', () => this.model.flush()));
    const applyMs = this.powerSgd ? this.model.flushedMs : applied;
    this.settlePushed();
    this.step++;
    const t4 = performance.now();
    const sum = (f: (r: Result) => number) => tasks.reduce((a, t) => a + f(t.result!), 0);
    const stats = { lossSum: sum((r) => r.lossSum), correct: sum((r) => r.correct), count: indices.length };
    const last = tasks.reduce((a, t) => (t.doneAt > a.doneAt ? t : a));
    const upload = (r: Result, shard: number) => r.timings.encodeMs + r.timings.sendMs + (round2 ? round2[shard].timings.encodeMs + round2[shard].timings.sendMs : 0);
    this.lastStep = {
      step: this.step, epoch: this.epoch + 1, examples: indices.length, loss: stats.lossSum / stats.count, acc: stats.correct / stats.count,
      wallMs: t4 - t0, collectMs: t1 - t0, computeMs: Math.max(...tasks.map((t) => t.result!.timings.computeMs)),
      uploadMs: Math.max(...tasks.map((t) => upload(t.result!, t.shard))), aggregateMs, foldMs: this.model.reducer.foldMs, applyMs, broadcastMs,
      straggler: tasks.length > 1 ? last.doneBy : null, earlySegments: this.earlySegments,
      shards: tasks.map((t) => ({ shard: t.shard, worker: t.doneBy, count: t.count, computeMs: t.result!.timings.computeMs, uploadMs: upload(t.result!, t.shard) })),
      at: Date.now(),
    };
    // Only steps that move several MB time the link; small ones time round trips.
    const rate = (bytes: number, ms: number) => (ms > 0 && bytes >= 4 * 1024 * 1024 ? (bytes * 1000) / ms : 0);
    this.linkSeen = {
      up: Math.max(0.98 * this.linkSeen.up, rate(this.transport.bytesIn - seen0.in, t1 - t0)),
      down: Math.max(0.98 * this.linkSeen.down, rate(this.transport.bytesOut - seen0.out, t4 - t0)),
    };
    this.events.emit('step', this.lastStep);
    return stats;
  }

  /**
   * powersgd's second round (powersgd.ts): round 1's sum becomes P̂, which goes to every worker
   * holding the current weights; then each shard's Q_i is asked of the worker that kept its M
   * (anyone else, sent the examples, recomputes it). Returns the round-2 results by shard.
   */
  private async secondRound(round1: Task[]): Promise<Result[]> {
    const frames = this.model.endRound1(round1.length);
    for (const conn of this.members.workers()) {
      if (conn.version !== this.version || conn.benchedByMs !== null) continue;
      // Most of P̂ went out while round 1 was still arriving (pushRound): the rest.
      for (const f of frames.slice(this.roundPushed.get(conn) ?? 0)) this.transport.send(conn, f);
      conn.basis = this.version + 1;
    }
    this.roundPushed.clear();
    this.events.emit('round', { step: this.step + 1, round: 2 });
    const live = new Set(this.members.workers().map((c) => c.id));
    const tasks = round1.map((r) => {
      const t = this.scheduler.newTask('train', r.step, r.shard, r.position, r.count, r.indices, r.split);
      t.round = 2;
      t.heldBy = r.doneBy !== null && live.has(r.doneBy) ? r.doneBy : null;
      t.pin = t.heldBy;
      return t;
    });
    await this.execute(tasks);
    return tasks.map((t) => t.result!);
  }

  /**
   * The step's shards: with --balance cost, the cost model's plan (cost-model.ts): which workers
   * make the predicted step shortest, how many examples each, and who is benched; else in
   * proportion to measured speed, or even. Nobody joined yet: one shard for whoever comes first.
   */
  private planTrain(batch: number): { position: number; count: number; pin: number | null }[] {
    const pool = this.members.pool('train');
    if (this.opts.balance !== 'cost' || !pool.length) {
      for (const c of pool) c.benchedByMs = null;
      const weights = pool.length ? pool.map((c) => (this.opts.balance === 'speed' ? c.speed || 1 : 1)) : [1];
      return planShards(batch, weights).map((p) => ({ position: p.position, count: p.count, pin: null }));
    }
    const weightsBytes = 4 * this.run.paramCount;
    // Weights under a frame that can time the link (transport.ts) cost no link time worth pricing.
    const small = weightsBytes < LARGE_FRAME;
    const workers = [...pool].sort((a, b) => a.id - b.id).map((c) => ({
      id: c.id, computeRate: c.computeRate, upRate: c.upRate || (small ? Infinity : 0), downRate: c.downRate || (small ? Infinity : 0),
      behind: Math.min(2, this.version - Math.max(0, c.version)),
    }));
    const last = this.lastStep;
    const rate = (bytes: number, ms: number | undefined) => (ms && ms > 0 ? (bytes * 1000) / ms : Infinity);
    const plan = planStep(workers, {
      batch, gradientBytes: this.model.gradientBytes, updateBytes: this.fp32 ? weightsBytes : this.model.gradientBytes, weightsBytes,
      exampleBytes: IMAGE_BYTES + 1, pipelined: this.model.pipelined,
    }, {
      upRate: this.linkSeen.up || Infinity, downRate: this.linkSeen.down || Infinity, foldRate: rate(this.model.gradientBytes * (last?.shards.length ?? 1), last?.foldMs),
      sgdRate: rate(weightsBytes, last?.applyMs), encodeRate: Infinity,
    }, { step: this.step, probeEvery: 50 });
    const benched = new Map(plan.benched.map((b) => [b.worker, b.lengthensMs]));
    // Infinity (no example left for it) shows as null in JSON, still benched.
    for (const c of pool) c.benchedByMs = benched.has(c.id) ? Math.round(benched.get(c.id)!) : null;
    return plan.shards.map((s) => ({ position: s.position, count: s.count, pin: s.worker }));
  }

  /** Test accuracy at the current weights, forward only, split over the workers. */
  async evaluate(): Promise<number> {
    const n = Math.min(this.opts.evalExamples, this.data.test.count);
    const tasks: Task[] = [];
    for (let o = 0, shard = 0; o < n; o += this.opts.batch, shard++) {
      const count = Math.min(this.opts.batch, n - o);
      tasks.push(this.scheduler.newTask('eval', this.step, shard, o, count, new Uint32Array(count).map((_, i) => o + i), this.data.test));
    }
    await this.execute(tasks);
    return tasks.reduce((a, t) => a + t.result!.correct, 0) / n;
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
    try {
      this.setState('waiting', `waiting for ${plural(this.opts.minWorkers, 'worker')}`);
      // A run already at its end (a resume of a finished one) has nothing to wait for.
      if (this.step < maxSteps) await this.waitForWorkers(this.opts.minWorkers);
      this.setState('running');
      while (this.step < maxSteps && !this.closed && !this.stopRequested) {
        this.epoch = Math.floor(this.step / perEpoch);
        const s = this.step % perEpoch;
        const order = epochOrder(n, seed, this.epoch);
        await this.whilePaused();
        if (this.stopRequested || this.closed) break;
        const s0 = performance.now();
        const r = await this.trainStep(order.subarray(s * batch, Math.min(n, (s + 1) * batch)));
        const acc = this.epochAcc;
        acc.seconds += (performance.now() - s0) / 1000;
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
      if (!(e instanceof RunStopped)) { this.setState('failed', (e as Error).message); throw e; }
    }
    // A run cut short mid-epoch (also by losing every worker to a stop) records the partial epoch;
    // it skips the 10,000-image evaluation.
    if (this.epochAcc.steps > 0) partialEpoch = await this.endEpoch(true);
    this.setState(this.stopRequested ? 'stopped' : 'finished', this.stopRequested ? this.stopReason : `${this.step} steps done`);
    const epochsDone = partialEpoch ? [...this.history, partialEpoch] : [...this.history];
    const examples = epochsDone.reduce((a, m) => a + m.examples, 0);
    const trainSeconds = epochsDone.reduce((a, m) => a + m.examples / m.examplesPerSec, 0);
    return {
      model: this.spec.name, modelHash: this.run.modelHash, paramCount: this.run.paramCount,
      config: { epochs, batch, lr: this.run.lr, seed, minWorkers: this.opts.minWorkers, maxSteps: this.opts.maxSteps ?? null, evalExamples: this.opts.evalExamples, compress: this.run.compress ?? NO_COMPRESSION },
      steps: this.step, examples, epochs: epochsDone, examplesPerSec: examples / Math.max(trainSeconds, 1e-9),
      seconds: (performance.now() - t0) / 1000, workersSeen: this.transport.opened,
      weightsSha256: weightsSha256(this.weights), stoppedBy: this.step >= epochs * perEpoch ? 'epochs' : this.stopRequested ? 'stop' : 'max-steps',
    };
  }

  /** Training totals of the epoch in progress (checkpointed with the weights). */
  epochAcc = { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 };
  /** Called after each step that does not end an epoch, and after each epoch (checkpoints). */
  afterStep: ((c: Coordinator) => Promise<void> | void) | null = null;

  private async endEpoch(partial: boolean): Promise<EpochMetrics> {
    const acc = this.epochAcc;
    this.setState('evaluating');
    const testAcc = partial ? null : await this.evaluate();
    this.setState(this.paused ? 'paused' : 'running', this.paused ? this.pauseReason : '');
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
    };
  }

  /** Says goodbye to every worker with `code` and stops listening. */
  async close(code: number = CLOSE.finished, reason = 'run finished'): Promise<void> {
    this.closed = true;
    this.stalls.stop();
    // Listeners (the dashboard) send their last word while the sockets are still open.
    this.events.emit('close');
    for (const timer of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
    this.tasksDone?.();
    await this.transport.close(code, reason);
  }
}

/** Thrown out of a step when the coordinator is closed under it (signal, stop). */
export class RunStopped extends Error { constructor() { super('run stopped'); } }
