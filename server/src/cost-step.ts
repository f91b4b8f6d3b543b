// The cost model of one synchronous step (issue 13, part 3): what a step over a set of workers,
// each computing so many examples, costs in seconds. Pure: the coordinator measures, this predicts;
// the planner (cost-plan.ts) picks the plan with it. cost-model.ts re-exports both.
//
// ## The model
//
// A step at weights version v over a set S of workers, worker i computing n_i examples
// (Σ n_i = B, the global batch), predicts, in seconds:
//
//   own links     down_i = δ_i / d_i          δ_i: 0 if i holds v, the update if it holds v−1,
//                                                  the full weights if it is further behind
//                 up_i   = γ / u_i            γ: one gradient upload (fp32 or the codec's plan bytes)
//   shared link   Dsh_i  = Σ_f min(δ_f, δ_i) / D      f: every flow on the coordinator's link
//                 Ush_i  = Σ_f min(γ_f, γ_i) / U         (participants, probes, side flows)
//   coordinator   fold   = |shards| · γ / F       F: gradient bytes/s it folds (decode + sum)
//                 tail   = W / G + W / E       W: the fp32 weights' bytes; G, E: its SGD and encode
//                                              rates over them (both walk every parameter)
//   per worker    D_i = max(down_i, Dsh_i),  U_i = max(up_i, Ush_i, fold),  r_i = 1/c_i + e/d_i
//
//   sequential (today: download, compute, upload, then SGD and encode, in turns)
//                 T = max_i (D_i + n_i·r_i + U_i) + tail
//   pipelined  (issue 13 part 2: step v+1's weights stream out while step v's gradients come in)
//                 T = max( max_i (n_i·r_i + max(D_i, U_i)),  fold + tail )
//
// c_i is the worker's measured compute rate (examples/s), u_i and d_i its measured throughput each
// way, U and D the coordinator link's, e the bytes of one example in an assign (785: 784 pixels
// and a label).
//
// Assumptions, and why they are good enough to choose a plan with:
// - A star: every byte crosses the coordinator's link, which serves its flows fairly (processor
//   sharing). Flows that start together finish at Σ_f min(size_f, size_i) / rate, so a flow of
//   the common size finishes when the whole link's load is through. Uploads start when each
//   worker's compute ends, not together: the model counts them as concurrent, which is
//   pessimistic by at most the spread of compute times (small: the planner evens those out).
// - Each worker's own link is separate, full duplex, and its measured throughput includes its own
//   CPU work on that path (encoding the gradient, decoding and applying an update), since that is
//   how it is measured.
// - Folding streams with the upload on the coordinator's one thread: the shards' folds are a
//   shared resource in series with each other, overlapping the link; SGD and encode run once
//   per step, after the last shard (sequential) or overlapped segment by segment (pipelined,
//   where the coordinator's CPU still cannot do more than one step's work per step).
// - An example's images add e/d_i to its worker's per-example time (an upper bound: the images
//   ride the same download as the weights). On the coordinator's link they are left out: B·e is
//   100 KB a step at B = 128, against 1.3 MB (alexnet-small) to 187 MB (AlexNet) per worker. The
//   gradient's size does not depend on the shard's.
// - Pipelined: the next weights cannot finish arriving before the slowest gradient is in, and
//   compute needs all of them. Writing it per worker as n_i·r_i + max(D_i, U_i) is exact when the
//   shards end their compute together, which is what the allocation aims for.

export interface WorkerCost {
  /** The coordinator's id for it (connection id). The array order given to the planner is the fixed order. */
  id: number;
  /** Train examples/s, measured (EMA of count ÷ compute time). 0 or NaN: not measured yet. */
  computeRate: number;
  /** Bytes/s a gradient moves worker → coordinator, its own encode included. 0 or NaN: not measured; Infinity: no limit. */
  upRate: number;
  /** Bytes/s the weights or update move coordinator → worker, its own decode and apply included. */
  downRate: number;
  /** Versions its replica is behind the weights the step computes at: 0 downloads nothing, 1 the update, more the full weights. */
  behind: number;
  /** When benched, the coordinator still sends it every step's update: its bytes load the coordinator's link either way. */
  keptCurrent?: boolean;
}

export interface RunCost {
  /** The global batch B; it stays fixed whatever the plan. */
  batch: number;
  /** Bytes of one gradient upload (fp32: 4 per parameter plus frame headers; a codec: its planBytes). */
  gradientBytes: number;
  /** Bytes a replica one version behind downloads (fp32: the weights; a codec: the update's frames). */
  updateBytes: number;
  /** The fp32 weights' bytes: what a replica further behind downloads, and what the coordinator's SGD and encode rates are per. */
  weightsBytes: number;
  /** Assign bytes per example (785: 784 pixels and a label). */
  exampleBytes: number;
  /** The step overlaps the next step's download with this step's upload (issue 13, part 2). */
  pipelined: boolean;
  /**
   * The coordinator applies a step's update once the next step's assigns are out, while the
   * workers compute (powersgd: step-powersgd.ts release/flush): its SGD bounds the step instead of
   * adding to it. Without this, more workers always looked faster to the planner, since each
   * shortens the compute while the apply, the same for any fleet, was added on top.
   */
  overlappedApply?: boolean;
  /** Other traffic on the coordinator's link the step does not wait for (probation shadows), bytes each way. */
  sideFlows?: { downBytes: number; upBytes: number }[];
}

export interface CoordinatorCost {
  /** Bytes/s its link carries into it (the sum of all uploads); Infinity or 0: not a limit. */
  upRate: number;
  /** Bytes/s its link carries out of it (the sum of all downloads). */
  downRate: number;
  /** Gradient bytes/s it folds (decode + sum), as measured: one shard's fold costs gradientBytes ÷ foldRate. */
  foldRate: number;
  /** fp32 bytes/s of SGD over the weights, once per step. */
  sgdRate: number;
  /** fp32 bytes/s of encoding what it broadcasts (the weights' frames, or the codec's update), once per step. */
  encodeRate: number;
}

/** One worker's part of a predicted step, in ms. */
export interface WorkerPrediction {
  worker: number;
  count: number;
  /** Its download: max(own link, its share of the coordinator's link). */
  downMs: number;
  computeMs: number;
  /** Its upload: max(own link, its share of the coordinator's link, the coordinator's folds). */
  upMs: number;
  /** When its shard is in, from the step's start (sequential) or in steady state (pipelined). */
  pathMs: number;
}

export interface StepPrediction {
  /** Predicted step time, ms. Workers without a measurement are left out of the max (their bytes are not). */
  stepMs: number;
  workers: WorkerPrediction[];
  /** SGD plus encode, once per step. */
  tailMs: number;
  /** All the coordinator's CPU work of the step: folds, SGD, encode. */
  coordinatorCpuMs: number;
  /** The worker whose path is longest, or 'coordinator' when its CPU sets the pace (pipelined). */
  limitedBy: number | 'coordinator' | null;
}

/** A rate that is not a limit: unknown coordinator rates are passed as Infinity (or 0). */
export const perSec = (bytes: number, rate: number) => (rate > 0 && rate !== Infinity ? bytes / rate : 0);

/** The model can price it: compute and both links measured. */
export function isMeasured(w: WorkerCost): boolean {
  return w.computeRate > 0 && w.upRate > 0 && w.downRate > 0;
}

/** Bytes worker w downloads before it can compute. */
export function downloadBytes(w: WorkerCost, run: RunCost): number {
  return w.behind <= 0 ? 0 : w.behind === 1 ? run.updateBytes : run.weightsBytes;
}

export interface Flow { down: number; up: number }

/**
 * Σ_f min(size_f, x): the bytes a link has moved when a flow of size x finishes under fair
 * sharing. Flows come in a few sizes (no download, the update, the weights): one sum per size.
 */
export function sharedBytes(sizes: number[]): (x: number) => number {
  const memo = new Map<number, number>();
  return (x) => {
    let s = memo.get(x);
    if (s === undefined) {
      s = 0;
      for (const v of sizes) s += Math.min(v, x);
      memo.set(x, s);
    }
    return s;
  };
}

/**
 * The fixed part A_i and per-example time r_i (seconds) of each worker in `set` when it computes
 * the step, with `others` (probes, kept-current benched workers, side flows) loading the
 * coordinator's link too.
 */
export function terms(set: WorkerCost[], others: Flow[], shards: number, run: RunCost, coord: CoordinatorCost) {
  const flows: Flow[] = [...set.map((w) => ({ down: downloadBytes(w, run), up: run.gradientBytes })), ...others];
  const downShared = sharedBytes(flows.map((f) => f.down)), upShared = sharedBytes(flows.map((f) => f.up));
  const fold = perSec(shards * run.gradientBytes, coord.foldRate);
  const tail = perSec(run.weightsBytes, coord.sgdRate) + perSec(run.weightsBytes, coord.encodeRate);
  const each = set.map((w) => workerTerms(w, downShared, upShared, fold, run, coord));
  return { each, fold, tail };
}

/** One worker's A_i and r_i, given the coordinator link's shared bytes and the step's folds. */
export function workerTerms(w: WorkerCost, downShared: (x: number) => number, upShared: (x: number) => number, fold: number, run: RunCost, coord: CoordinatorCost) {
  const delta = downloadBytes(w, run);
  const down = Math.max(perSec(delta, w.downRate), perSec(downShared(delta), coord.downRate));
  const up = Math.max(perSec(run.gradientBytes, w.upRate), perSec(upShared(run.gradientBytes), coord.upRate), fold);
  // A worker with no per-example cost at all would absorb the whole batch for free: floor it.
  const r = Math.max(1e-12, 1 / w.computeRate + perSec(run.exampleBytes, w.downRate));
  return { down, up, r, a: run.pipelined ? Math.max(down, up) : down + up };
}

/**
 * The model's prediction of a step in which each listed worker computes `count` examples.
 * Workers without a measurement still load the shared link with their bytes, but their own time
 * is unknown and left out of the max.
 */
export function predictStep(assignment: { worker: WorkerCost; count: number }[], run: RunCost, coord: CoordinatorCost, benched: WorkerCost[] = []): StepPrediction {
  const known = assignment.filter((x) => isMeasured(x.worker));
  const others = [
    ...assignment.filter((x) => !isMeasured(x.worker)).map((x) => ({ down: downloadBytes(x.worker, run), up: run.gradientBytes })),
    ...sideFlows(benched, run),
  ];
  const { each, fold, tail } = terms(known.map((x) => x.worker), others, assignment.length, run, coord);
  const workers = known.map((x, i) => {
    const e = each[i];
    return { worker: x.worker.id, count: x.count, downMs: 1000 * e.down, computeMs: (1000 * x.count) / x.worker.computeRate, upMs: 1000 * e.up, pathMs: 1000 * (e.a + x.count * e.r) };
  });
  let limitedBy: StepPrediction['limitedBy'] = null;
  let longest = 0;
  for (const w of workers) if (limitedBy === null || w.pathMs > longest) { longest = w.pathMs; limitedBy = w.worker; }
  const cpu = 1000 * (fold + tail);
  const stepMs = 1000 * stepSeconds(longest / 1000, fold, tail, run);
  if (stepMs > longest + (run.pipelined || run.overlappedApply ? 0 : 1000 * tail)) limitedBy = 'coordinator';
  return { stepMs, workers, tailMs: 1000 * tail, coordinatorCpuMs: cpu, limitedBy };
}

/**
 * A step's seconds from its longest worker path and the coordinator's once-a-step work: after the
 * path (sequential), or as a floor where that work runs while the workers compute (pipelined fp32:
 * the folds, SGD and encode; an overlapped apply: the SGD alone, beside the folds).
 */
export function stepSeconds(path: number, fold: number, tail: number, run: RunCost): number {
  if (run.pipelined) return Math.max(path, fold + tail);
  if (run.overlappedApply) return Math.max(path, tail);
  return path + tail;
}

/** Traffic the step does not wait for: benched workers kept current, and the run's side flows. */
export function sideFlows(benched: WorkerCost[], run: RunCost): Flow[] {
  return [
    ...benched.filter((w) => w.keptCurrent).map((w) => ({ down: downloadBytes(w, run), up: 0 })),
    ...(run.sideFlows ?? []).map((f) => ({ down: f.downBytes, up: f.upBytes })),
  ];
}

