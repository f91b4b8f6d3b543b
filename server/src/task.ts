// A task (one shard of a step, or of an evaluation) and its copies: what the scheduler (scheduler.ts)
// hands out and judges, the coordinator folds and times, and waiting.ts explains. Types only.
import type { Gradient, Result } from '@tabtrain/shared';
import type { Split } from './data';
import type { Conn, TaskKind } from './membership';

/** One worker's computation of a task. */
export interface Copy {
  task: Task;
  owner: Conn;
  /** Gradient floats received so far (in order). */
  received: number;
  /** The gradient's frames as received (train), for comparison and, if buffered, for folding later. */
  frames: { g: Gradient; body: Uint8Array }[];
  /** Whether its frames go straight into the reducer (a task with one copy) or wait for a verdict. */
  streamed: boolean;
  /** A probation copy: compared with the trusted copy, never folded; the step does not wait for it. */
  shadow: boolean;
  /**
   * Compressed runs: it computes the plain fp32 gradient (assign.fp32), not the run's codec: a
   * probation shadow of a train shard, and the established worker's `check` copy it is judged by.
   */
  fp32Check: boolean;
  /** Σ g² of its gradient, accumulated as frames arrive (fp32 runs): the plausibility check. */
  normSq: number;
  /** When its gradient's first byte and its last frame arrived (performance.now()): its upload rate. */
  firstAt: number;
  lastAt: number;
  /** When its assign was handed to the transport (performance.now()), and the bytes sent with it: its pace (pace.ts). */
  sentAt: number;
  sentBytes: number;
  result: Result | null;
}

export interface Task {
  kind: TaskKind;
  step: number;
  shard: number;
  position: number;
  count: number;
  /** Example indices into the split. */
  indices: Uint32Array;
  split: Split;
  /** Copies being computed. */
  copies: Copy[];
  /** Copies that finished and wait for a verdict (verified tasks). */
  finished: Copy[];
  /** How many agreeing copies the result needs: 1; 2 for a verified task; 3 once two disagreed. */
  want: number;
  /** Why it is verified, for the log: 'spot check', 'norm', 'reference' (reference.ts: recomputed by a vouched worker). */
  why: string;
  /** Whether its spot check was rolled: once, when a remote established worker first takes it. */
  rolled: boolean;
  /** What made it suspect (a frame's norm), for the verdict: set while a vouched worker recomputes it. */
  suspicion?: string;
  /** Probation copies that finished, waiting for the trusted result to be compared with. */
  shadows: Copy[];
  /** Whether a probation copy was handed out (one per task). */
  shadowed: boolean;
  /**
   * Compressed runs: the finished fp32 copy of an established worker that the task's train shadows
   * are judged by (its trusted copy is compressed, so not comparable), and whether one is out.
   */
  check: Copy | null;
  checking: boolean;
  /** A copy of it was lost (timeout, close): it goes to a measured worker if one can take it. */
  retaken: boolean;
  /** --balance cost: the connection the plan gave it to (null: anyone); void once that worker is gone. */
  pin: number | null;
  /**
   * powersgd runs: which round of the shard (1: the gradient's P_i; 2: its Q_i). A round-2 task
   * is pinned to `heldBy`, the connection that ran round 1 and keeps the shard's M; anyone else
   * is sent the shard's examples and recomputes the gradient.
   */
  round: 1 | 2;
  heldBy: number | null;
  done: boolean;
  result: Result | null;
  /** The copy whose result counts; kept while a shadow may still compare with it. */
  trusted: Copy | null;
  /** The copy whose frames are in the step's sum (train); the scheduler's alone to write (streamedInto, complete, revoke). The reducer keeps the bodies, by shard. */
  inReducer: Copy | null;
  /** Connection that delivered the result, and when (performance.now()). */
  doneBy: number | null;
  doneAt: number;
}
