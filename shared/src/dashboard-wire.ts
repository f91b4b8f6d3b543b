// What the coordinator sends the dashboard page: the JSON of GET /api/status and of the
// server-sent events on GET /api/events, imported by both ends (server/src/dashboard.ts and
// client/src/dashboard.ts), so neither can drift from the other: types, and the thinning rule
// both ends apply to the step curve.
//
// The event stream:
//   event: snapshot   data: Snapshot   once, when the page connects (and again after a reconnect)
//   event: update     data: Update     at most DASHBOARD.updateIntervalMs apart, only when something changed
// A snapshot's steps, train points and log are those of the latest update, so the updates that
// follow neither repeat nor skip a step; its epochs are the coordinator's whole history (a resumed
// run restores it), so an update may repeat an epoch: pages merge epochs by number.

/** A worker's state as the dashboard names it. */
export const WORKER_STATE = {
  /** Connected and said hello, but has not returned its first shard yet (receiving weights, compiling). */
  joining: 'joining',
  /** Computing a shard. */
  working: 'working',
  /** Waiting for the next shard. */
  idle: 'idle',
  /** Socket closed; kept in the table so that its bytes still count. */
  lost: 'lost',
} as const;
export type WorkerState = (typeof WORKER_STATE)[keyof typeof WORKER_STATE];

/** Whether POST /api/control is open: 'admin' when the coordinator has --admin-token, else read-only. */
export type ControlMode = 'admin' | 'read-only';

/** Actions of POST /api/control. */
export const CONTROL_ACTIONS = ['pause', 'resume', 'stop', 'export'] as const;
export type ControlAction = (typeof CONTROL_ACTIONS)[number];

/** One training step, as plotted: numbers rounded for the wire. Times in ms. */
export interface StepPoint {
  step: number;
  /** 1-based epoch the step belongs to. */
  epoch: number;
  loss: number;
  acc: number;
  examples: number;
  /** examples / wall time of the step. */
  examplesPerSec: number;
  wallMs: number;
  /** Slowest shard's compute, as its worker measured it. */
  computeMs: number;
  /** Slowest shard's encode + send, as its worker measured it. */
  uploadMs: number;
  /** The rest of the collect phase: weights and shards on the wire, queueing, the straggler's lag. */
  waitMs: number;
  aggregateMs: number;
  applyMs: number;
  broadcastMs: number;
  /** Connection id of the worker the step waited for (null with one shard). */
  straggler: number | null;
  /** Wall clock (ms since 1970) when the step ended. */
  at: number;
}

/**
 * d2l's Animator: the epoch's running train loss and train accuracy (its mean over the epoch's
 * steps so far), sampled every trainEvery(stepsPerEpoch) steps and at the epoch's end, so that a
 * long epoch shows its accuracy long before it ends. x = step / stepsPerEpoch (epochs).
 * A resumed run's restored epochs have one point each, at their end (the checkpoint keeps each
 * epoch's totals, not its steps), and its open epoch one at the resumed step; the points that
 * follow go on from the restored totals.
 */
export interface TrainPoint {
  step: number;
  /** 1-based epoch. */
  epoch: number;
  /** Examples of the epoch so far. */
  examples: number;
  /** Mean loss over the epoch so far. */
  loss: number;
  /** Train accuracy over the epoch so far. */
  acc: number;
}

/** Running points per epoch, as d2l's train_ch6 adds them to its Animator. */
export const TRAIN_POINTS_PER_EPOCH = 5;

/** Steps between two running points: ceil(stepsPerEpoch / 5), at least 1. */
export function trainEvery(stepsPerEpoch: number): number {
  return Math.max(1, Math.ceil(stepsPerEpoch / TRAIN_POINTS_PER_EPOCH));
}

/** Whether the epoch's running means are sampled after its `stepInEpoch`-th step (1-based). */
export function isTrainSample(stepInEpoch: number, stepsPerEpoch: number): boolean {
  return stepInEpoch % trainEvery(stepsPerEpoch) === 0 || stepInEpoch === stepsPerEpoch;
}

/** An epoch's d2l figures (the coordinator's EpochMetrics). */
export interface EpochPoint {
  epoch: number;
  steps: number;
  examples: number;
  loss: number;
  trainAcc: number;
  /** null for a partial epoch (a run cut short skips the test evaluation). */
  testAcc: number | null;
  examplesPerSec: number;
  seconds: number;
}

export interface WorkerRow {
  /** Connection id: the coordinator's own number for this socket. */
  id: number;
  workerId: string;
  kind: string;
  backend: string;
  /** The adapter in one line (description or vendor/architecture, Dawn backend, "fallback"), '' when none. */
  adapterName: string;
  state: WorkerState;
  shardSize: number;
  computeMs: number;
  uploadMs: number;
  bytesIn: number;
  bytesOut: number;
  examplesPerSec: number;
  shardsDone: number;
  /** The latest step waited for this worker. */
  straggler: boolean;
}

/** The run header: what the run is and where it stands. */
export interface RunHeader {
  model: string;
  modelHash: string;
  paramCount: number;
  config: { epochs: number; batch: number; lr: number; seed: number; maxSteps: number | null; balance: string; minWorkers: number; evalExamples: number };
  /** waiting | running | paused | evaluating | finished | stopped | failed */
  state: string;
  /** Why the run is in its state (pause reason, failure message, ...); '' when none. */
  reason: string;
  step: number;
  /** Steps the run will take in all: epochs × steps per epoch, or --max-steps if smaller. */
  totalSteps: number;
  stepsPerEpoch: number;
  /** 1-based epoch in progress (the last one once the run is over). */
  epoch: number;
  startedAt: number;
  /**
   * The run's time as of `now`: seconds since this coordinator started, plus the training seconds
   * a resumed run's checkpoint carries (priorSec). A fresh run: seconds since start.
   */
  elapsedSec: number;
  /**
   * Training seconds before this coordinator started: a resumed run's restored epochs' `seconds`
   * plus its open epoch's; 0 for a fresh run. (The earlier sessions' waits and evaluations are
   * not checkpointed.) The speed chart's x is priorSec + seconds since startedAt.
   */
  priorSec: number;
  /** The step this coordinator started from: a resumed run's checkpoint step, else 0. */
  resumedFromStep: number;
  /** Whether GET /api/log serves the --log JSONL file (every step, unthinned). */
  fullLog: boolean;
  /** Seconds left at the recent step rate; null when unknown or not running. */
  etaSec: number | null;
  /** Bytes to and from every worker that ever joined. */
  totalBytes: number;
  /** The latest d2l-style line: loss, train acc, test acc, examples/sec. */
  line: string;
  control: ControlMode;
  /** The latest checkpoint write's failure in one line ('' when it succeeded or there are no checkpoints). */
  checkpointProblem?: string;
  /**
   * How gradients travel now, and with --compress auto why: 'powersgd r4 (auto: predicted 144 ms a
   * step against fp32's 8,760 ms with 4 workers; slowest link 119.0 MB/s)'.
   */
  compression?: string;
  /** Each mode's predicted step, ms, at --compress auto's last choice (none before one). */
  compressionPrices?: { mode: string; ms: number }[];
  /** Share of the latest step spent other than computing (moving bytes, and the coordinator's arithmetic): 1 − compute ÷ wall; null before a step. */
  commShare?: number | null;
  /** Server wall clock when this header was made (ms since 1970). */
  now: number;
}

/**
 * The workers as they were at one moment of the run (taken at a step, at most every
 * DASHBOARD.workerSampleMs): the per-worker charts (compute time, link rates, shard size, memory).
 */
export interface WorkerSample {
  /** Wall clock (ms since 1970) of the sample. */
  at: number;
  /** The run's step when it was taken. */
  step: number;
  workers: {
    id: number;
    workerId: string;
    backend: string;
    shardSize: number;
    /** Its last shard's compute, as it measured it. */
    computeMs: number;
    /** Measured rates of its gradient uploads and of the coordinator's sends to it, bytes/s (0 = not measured yet). */
    upBytesPerSec: number;
    downBytesPerSec: number;
    /** Bytes of live tensors on its backend, as it last reported. */
    tensorBytes: number;
    examplesPerSec: number;
  }[];
}

/** Worker samples kept (by the coordinator and the page); past this thinned like the steps. */
export const MAX_WORKER_SAMPLES = 2000;

export interface Update {
  /** Increases by one per update; a snapshot carries the seq of the update it reflects. */
  seq: number;
  header: RunHeader;
  workers: WorkerRow[];
  /** Steps since the previous update (a snapshot: every step kept). */
  steps: StepPoint[];
  /** Epochs since the previous update (a snapshot: all). */
  epochs: EpochPoint[];
  /** Running train loss/acc points since the previous update (a snapshot: every one kept). */
  train: TrainPoint[];
  /** Coordinator log lines since the previous update (a snapshot: the latest few). */
  log: string[];
  /** Worker samples since the previous update (a snapshot: every one kept). */
  samples?: WorkerSample[];
}

export type Snapshot = Update;

/** Per-step points a page keeps; past this the older half is thinned (the server does the same). */
export const MAX_STEP_POINTS = 8000;

/** Running train points kept (5 an epoch: 1600 epochs); past this thinned like the steps. */
export const MAX_TRAIN_POINTS = 8000;

/** Keeps every other point of the older half: the recent steps stay dense, the curve keeps its shape. */
export function thin<T>(points: T[]): void {
  const half = points.length >> 1;
  const kept = points.slice(0, half).filter((_, i) => i % 2 === 0);
  points.splice(0, half, ...kept);
}
