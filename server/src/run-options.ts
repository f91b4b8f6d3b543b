// What a run is given (CoordinatorOptions, with DEFAULTS) and what it reports: each step's
// record (the 'step' event), each epoch's figures, and the summary train() returns.
import type { Compression, FactorCodec } from '@tabtrain/shared/compress';
import type { ModeSpan } from './mode-spans';
import type { EpochPoint } from '@tabtrain/shared/dashboard-wire';
import type { ListenerTls } from './listener';
import type { Conn } from './membership';
import type { WireFactory } from './wire';

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
   * --compress auto: the coordinator picks the compression at each step boundary from what it
   * measures (autopilot.ts), among none, fp16, int8 and powersgd at this rank; it starts in fp32
   * and `compress` is ignored. Absent: `compress` is fixed for the run.
   */
  autoRank?: number;
  /** --compress auto with --factors fp16: powersgd, if chosen, sends its factors as fp16 (and is priced so). */
  autoFactors?: FactorCodec;
  /**
   * Emulated links for in-process tests (the memory wire times nothing): bytes/s each way of every
   * worker's link and of the coordinator's, in place of the measured rates, asked at each step.
   */
  links?: () => { worker: number; coordinator: number } | null;
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
  /** powersgd: helper threads that apply each update to the coordinator's weights beside the event loop (0: on it). Default applyThreadsFor (apply-threads.ts): one a core, at most 4, for models of 1 M weights or more; none below. */
  applyThreads?: number;
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
  epochs: 10, batch: 128, seed: 42, port: 8080, host: '0.0.0.0', minWorkers: 1, balance: 'cost',
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
  /** How gradients travelled in this step: none, fp16, int8 or powersgd-rR (with --compress auto, what it chose). */
  mode?: string;
}

export interface Summary {
  model: string;
  modelHash: string;
  paramCount: number;
  config: { epochs: number; batch: number; lr: number; seed: number; minWorkers: number; maxSteps: number | null; evalExamples: number; compress: Compression; auto: boolean };
  /** Which compression ran at which steps; with --compress auto (config.auto) config.compress is only the last mode. */
  modes: ModeSpan[];
  steps: number;
  examples: number;
  epochs: EpochMetrics[];
  examplesPerSec: number;
  seconds: number;
  workersSeen: number;
  weightsSha256: string;
  stoppedBy: 'epochs' | 'max-steps' | 'stop';
}
