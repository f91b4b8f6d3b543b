// A cost model of one synchronous step, and a planner that picks which workers compute it and
// how many examples each (issue 13, part 3). Pure: the coordinator measures, this decides.
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
//
// ## The planner
//
// For a fixed S, the A_i := T − n_i·r_i terms above are fixed, and min over n of max_i
// (A_i + n_i·r_i) with integer n_i ≥ 1 is solved exactly: worker i's k-th example "ends" at
// A_i + k·r_i; the best plan takes the B smallest of these slots, each worker's first one forced
// (slots of one worker increase with k, so the smallest slots are a prefix per worker). The
// continuous water level gives all but < |S| of them at once; the rest are taken one by one,
// ties to the earlier worker in the fixed order.
//
// Over S: a worker's value is the compute it adds, (T − A_i)/r_i examples at level T, while its
// bytes lengthen every worker's shared-link and fold terms. When every participant downloads the
// same bytes (the usual case) those shared terms depend only on k = |S|, so for each k the best
// k workers are the k that can take the most examples at the lowest level T, found by bisection
// on T. Every k from 1 to the fleet is tried, so no argument about the step being convex in k is
// needed: a fleet where the second worker does not pay but the third would is still found. What
// that leaves open (integer rounding; workers further behind than others, priced there as if
// all downloaded what they do) is closed by a local search over single swaps, additions and
// removals while the exact prediction drops. Every candidate is priced exactly (allocation and
// formula above); the unit tests compare the result with every subset of small random fleets.
// The plan is the candidate with the fewest workers within minGain of the best, so that
// measurement noise does not swap workers in and out; ties go to the earlier worker.
//
// A worker the model cannot price (no compute or link measurement yet) gets a small probe shard
// so that it is measured; it is never benched unmeasured. A benched worker is re-measured by
// probeDue: every `probeEvery` steps one of them, in turn, is added to the step (with the shard
// the model gives it, so a probe costs exactly its reported penalty).

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

export interface PlannedShard {
  /** Shard id: its index; the coordinator sums gradients in this order. */
  id: number;
  worker: number;
  /** First example's position in the global batch: shards are contiguous in the fixed worker order. */
  position: number;
  count: number;
  /** Given to measure the worker (not yet measured, or benched and due), not because the model chose it. */
  probe: boolean;
}

export interface StepPlan {
  shards: PlannedShard[];
  /** Predicted step, ms, of the plan as given (probes' bytes included); null when no worker is measured. */
  predictedMs: number | null;
  /** Measured workers the model chose, in the fixed order. */
  participants: number[];
  /** Workers given a probe shard. */
  probes: number[];
  /**
   * Measured workers left out, in the fixed order, and by how many ms adding each (with its best
   * shard) would lengthen the predicted step. Negative: it would shorten it by less than minGain.
   * Infinity: no example left for it.
   */
  benched: { worker: number; lengthensMs: number }[];
}

export interface PlanOptions {
  /** Shard size for a worker not yet measured. Default 8: enough examples to time, few enough to be cheap if it is slow. */
  probeExamples?: number;
  /** More workers must shorten the predicted step by this fraction, else the fewer are used. Default 0.01. */
  minGain?: number;
  /** The step's number and how often a benched worker is re-measured (0: never); see probeDue. */
  step?: number;
  probeEvery?: number;
}

export const PLAN_DEFAULTS = { probeExamples: 8, minGain: 0.01 } as const;

/** A rate that is not a limit: unknown coordinator rates are passed as Infinity (or 0). */
const perSec = (bytes: number, rate: number) => (rate > 0 && rate !== Infinity ? bytes / rate : 0);

/** The model can price it: compute and both links measured. */
export function isMeasured(w: WorkerCost): boolean {
  return w.computeRate > 0 && w.upRate > 0 && w.downRate > 0;
}

/** Bytes worker w downloads before it can compute. */
export function downloadBytes(w: WorkerCost, run: RunCost): number {
  return w.behind <= 0 ? 0 : w.behind === 1 ? run.updateBytes : run.weightsBytes;
}

interface Flow { down: number; up: number }

/**
 * Σ_f min(size_f, x): the bytes a link has moved when a flow of size x finishes under fair
 * sharing. Flows come in a few sizes (no download, the update, the weights): one sum per size.
 */
function sharedBytes(sizes: number[]): (x: number) => number {
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
function terms(set: WorkerCost[], others: Flow[], shards: number, run: RunCost, coord: CoordinatorCost) {
  const flows: Flow[] = [...set.map((w) => ({ down: downloadBytes(w, run), up: run.gradientBytes })), ...others];
  const downShared = sharedBytes(flows.map((f) => f.down)), upShared = sharedBytes(flows.map((f) => f.up));
  const fold = perSec(shards * run.gradientBytes, coord.foldRate);
  const tail = perSec(run.weightsBytes, coord.sgdRate) + perSec(run.weightsBytes, coord.encodeRate);
  const each = set.map((w) => workerTerms(w, downShared, upShared, fold, run, coord));
  return { each, fold, tail };
}

/** One worker's A_i and r_i, given the coordinator link's shared bytes and the step's folds. */
function workerTerms(w: WorkerCost, downShared: (x: number) => number, upShared: (x: number) => number, fold: number, run: RunCost, coord: CoordinatorCost) {
  const delta = downloadBytes(w, run);
  const down = Math.max(perSec(delta, w.downRate), perSec(downShared(delta), coord.downRate));
  const up = Math.max(perSec(run.gradientBytes, w.upRate), perSec(upShared(run.gradientBytes), coord.upRate), fold);
  // A worker with no per-example cost at all would absorb the whole batch for free: floor it.
  const r = Math.max(1e-12, 1 / w.computeRate + perSec(run.exampleBytes, w.downRate));
  return { down, up, r, a: run.pipelined ? Math.max(down, up) : down + up };
}

/**
 * The integer n_i ≥ 1, Σ n_i = total, minimising max_i (a_i + n_i·r_i): the `total` smallest slots
 * a_i + k·r_i with every worker's first slot taken. Null when total < the number of workers.
 */
export function allocate(a: number[], r: number[], total: number): number[] | null {
  const k = a.length;
  if (k === 0 || total < k || !Number.isInteger(total)) return null;
  // Continuous level T with Σ max(1, (T − a_i)/r_i) = total: raise T past breakpoints a_i + r_i.
  const order = a.map((_, i) => i).sort((x, y) => a[x] + r[x] - (a[y] + r[y]) || x - y);
  let level = a[order[0]] + r[order[0]];
  let sumInv = 0, sumAInv = 0;
  for (let m = 0; m < k; m++) {
    const i = order[m];
    sumInv += 1 / r[i];
    sumAInv += a[i] / r[i];
    const t = (total - (k - m - 1) + sumAInv) / sumInv;
    const next = m + 1 < k ? a[order[m + 1]] + r[order[m + 1]] : Infinity;
    if (t <= next) { level = Math.max(t, a[i] + r[i]); break; }
  }
  const n = a.map((ai, i) => Math.max(1, Math.floor((level - ai) / r[i])));
  let sum = n.reduce((x, y) => x + y, 0);
  // Rounding can overshoot by an example here and there: give back the latest-ending slots.
  while (sum > total) {
    let j = -1;
    for (let i = 0; i < k; i++) if (n[i] > 1 && (j < 0 || a[i] + n[i] * r[i] > a[j] + n[j] * r[j])) j = i;
    n[j]--; sum--;
  }
  // The rest, one by one, to the worker whose next example ends earliest (earlier worker on a tie).
  while (sum < total) {
    let j = 0;
    for (let i = 1; i < k; i++) if (a[i] + (n[i] + 1) * r[i] < a[j] + (n[j] + 1) * r[j]) j = i;
    n[j]++; sum++;
  }
  return n;
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
  let stepMs = longest + (run.pipelined ? 0 : 1000 * tail);
  if (run.pipelined && cpu > stepMs) { stepMs = cpu; limitedBy = 'coordinator'; }
  return { stepMs, workers, tailMs: 1000 * tail, coordinatorCpuMs: cpu, limitedBy };
}

/** Traffic the step does not wait for: benched workers kept current, and the run's side flows. */
function sideFlows(benched: WorkerCost[], run: RunCost): Flow[] {
  return [
    ...benched.filter((w) => w.keptCurrent).map((w) => ({ down: downloadBytes(w, run), up: 0 })),
    ...(run.sideFlows ?? []).map((f) => ({ down: f.downBytes, up: f.upBytes })),
  ];
}

/** The best allocation over `set` (fixed order) and its predicted step, in seconds; null if it cannot take one example each. */
function bestFor(set: WorkerCost[], probes: { worker: WorkerCost; count: number }[], outside: WorkerCost[], budget: number, run: RunCost, coord: CoordinatorCost) {
  const others = [...probes.map((p) => ({ down: downloadBytes(p.worker, run), up: run.gradientBytes })), ...sideFlows(outside, run)];
  const { each, fold, tail } = terms(set, others, set.length + probes.length, run, coord);
  const counts = allocate(each.map((e) => e.a), each.map((e) => e.r), budget);
  if (!counts) return null;
  let t = 0;
  each.forEach((e, i) => { t = Math.max(t, e.a + counts[i] * e.r); });
  t = run.pipelined ? Math.max(t, fold + tail) : t + tail;
  return { counts, seconds: t };
}

/**
 * Which workers compute this step and how many examples each, to make the predicted step
 * shortest. `workers` are the ones whose results the step may use, in the fixed order the
 * shards are laid out in. Deterministic: the same inputs give the same plan.
 */
export function planStep(workers: WorkerCost[], run: RunCost, coord: CoordinatorCost, opts: PlanOptions = {}): StepPlan {
  const B = run.batch;
  if (!Number.isInteger(B) || B < 1) throw new Error(`batch ${B} is not a positive integer`);
  if (new Set(workers.map((w) => w.id)).size !== workers.length) throw new Error('worker ids repeat');
  const probeExamples = Math.max(1, Math.floor(opts.probeExamples ?? PLAN_DEFAULTS.probeExamples));
  const minGain = opts.minGain ?? PLAN_DEFAULTS.minGain;
  const rank = new Map(workers.map((w, i) => [w.id, i]));
  const measured = workers.filter(isMeasured);
  const unknown = workers.filter((w) => !isMeasured(w));
  const counts = new Map<number, number>();
  const probeIds = new Set<number>();

  if (measured.length === 0) {
    // Nothing to price yet: an even split, as the first shards of a run always were.
    const n = Math.min(B, workers.length);
    for (let i = 0; i < n; i++) { counts.set(workers[i].id, Math.floor(B / n) + (i < B % n ? 1 : 0)); probeIds.add(workers[i].id); }
    return { shards: layout(workers, counts, probeIds), predictedMs: null, participants: [], probes: [...probeIds], benched: [] };
  }

  // Unmeasured workers are measured with a small shard; at least one example stays for the measured ones.
  const each = Math.min(probeExamples, Math.floor((B - 1) / Math.max(1, unknown.length)));
  const probed = (each >= 1 ? unknown : unknown.slice(0, B - 1)).map((w) => ({ worker: w, count: Math.max(1, each) }));
  for (const p of probed) { counts.set(p.worker.id, p.count); probeIds.add(p.worker.id); }
  const budget = B - probed.reduce((a, p) => a + p.count, 0);

  const inOrder = (ws: WorkerCost[]) => [...ws].sort((x, y) => rank.get(x.id)! - rank.get(y.id)!);
  const evaluate = (set: WorkerCost[]) => bestFor(set, probed, measured.filter((w) => !set.includes(w)), budget, run, coord);

  // Candidate sets, each priced exactly; the plan is chosen among them.
  const seen = new Map<string, Candidate>();
  const price = (ws: WorkerCost[]): Candidate | null => {
    const s = inOrder(ws);
    const key = s.map((w) => w.id).join(',');
    if (seen.has(key)) return seen.get(key)!;
    const r = evaluate(s);
    const c = r ? { set: s, seconds: r.seconds, counts: r.counts } : null;
    if (c) seen.set(key, c);
    return c;
  };
  // 1. Each worker alone: a plan always exists while one measured worker does.
  for (const w of measured) price([w]);
  // 2. For each size k, the k workers that give the most examples at the lowest water level.
  for (let k = 1; k <= Math.min(measured.length, budget); k++) {
    const s = atLevel(measured, k, probed, budget, run, coord);
    if (s) price(s);
  }
  // 3. From the best so far, single swaps, removals and additions while one shortens the step.
  let current = [...seen.values()].reduce((a, b) => (b.seconds < a.seconds ? b : a));
  for (let moves = 0, better = true; better && moves < 4 * measured.length; moves++) {
    better = false;
    const inSet = current.set, out = measured.filter((w) => !inSet.includes(w));
    const tries: WorkerCost[][] = [
      ...out.map((w) => [...inSet, w]),
      ...(inSet.length > 1 ? inSet.map((w) => inSet.filter((x) => x !== w)) : []),
      ...inSet.flatMap((w) => out.map((o) => [...inSet.filter((x) => x !== w), o])),
    ];
    for (const t of tries) {
      const c = price(t);
      if (c && c.seconds < current.seconds) { current = c; better = true; }
    }
  }
  // The fewest workers within minGain of the best: measurement noise must not swap workers in and out.
  const candidates = [...seen.values()];
  const fastest = Math.min(...candidates.map((c) => c.seconds));
  const chosen = candidates.filter((c) => c.seconds <= fastest * (1 + minGain))
    .reduce((a, b) => (b.set.length < a.set.length || (b.set.length === a.set.length && b.seconds < a.seconds) ? b : a));

  const benched = measured.filter((w) => !chosen.set.includes(w)).map((w) => {
    const r = evaluate(inOrder([...chosen.set, w]));
    return { worker: w.id, lengthensMs: r ? 1000 * (r.seconds - chosen.seconds) : Infinity };
  });

  let final: Candidate = chosen;
  const due = probeDue(opts.step ?? 0, benched.map((b) => b.worker), opts.probeEvery ?? 0);
  if (due !== null) {
    const s = inOrder([...chosen.set, measured.find((w) => w.id === due)!]);
    const r = evaluate(s);
    if (r) { final = { set: s, seconds: r.seconds, counts: r.counts }; probeIds.add(due); }
  }
  final.set.forEach((w, i) => counts.set(w.id, final.counts[i]));
  return {
    shards: layout(workers, counts, probeIds),
    predictedMs: 1000 * final.seconds,
    participants: chosen.set.map((w) => w.id),
    probes: workers.filter((w) => probeIds.has(w.id)).map((w) => w.id),
    benched,
  };
}

interface Candidate { set: WorkerCost[]; seconds: number; counts: number[] }

/**
 * The k workers that reach the batch at the lowest water level T when the step has k shards:
 * at level T worker i can take (T − A_i)/r_i examples, so the best k are the k that can take the
 * most, and T is raised (bisection) until those cover the batch with one example each at least.
 * A_i is priced as if the other k − 1 participants downloaded what i does: exact when every
 * participant downloads the same bytes (the usual case), an estimate when some are further behind
 * (the set it proposes is then priced exactly like every other candidate).
 */
function atLevel(measured: WorkerCost[], k: number, probes: { worker: WorkerCost; count: number }[], budget: number, run: RunCost, coord: CoordinatorCost): WorkerCost[] | null {
  const others = probes.map((p) => ({ down: downloadBytes(p.worker, run), up: run.gradientBytes }));
  const m = measured.length;
  const a = new Float64Array(m), r = new Float64Array(m), n = new Float64Array(m);
  const downOthers = sharedBytes(others.map((f) => f.down)), upOthers = sharedBytes(others.map((f) => f.up));
  const fold = perSec((k + probes.length) * run.gradientBytes, coord.foldRate);
  measured.forEach((w, i) => {
    // k flows of w's own sizes, plus the probes'.
    const delta = downloadBytes(w, run);
    const t = workerTerms(w, (x) => k * Math.min(delta, x) + downOthers(x), (x) => k * Math.min(run.gradientBytes, x) + upOthers(x), fold, run, coord);
    a[i] = t.a; r[i] = t.r;
  });
  // At `level`, can the k workers that take the most cover the batch, each taking one at least?
  const covers = (level: number) => {
    let valid = 0;
    for (let i = 0; i < m; i++) { const x = (level - a[i]) / r[i]; if (x >= 1) n[valid++] = x; }
    if (valid < k) return false;
    const top = n.subarray(0, valid).sort();
    let sum = 0;
    for (let i = valid - k; i < valid; i++) sum += top[i];
    return sum >= budget;
  };
  // Every worker can take the whole batch at this level (the margin absorbs rounding).
  let lo = 0, hi = 0;
  for (let i = 0; i < m; i++) hi = Math.max(hi, a[i] + budget * r[i]);
  hi *= 1 + 1e-9;
  if (!covers(hi)) return null;
  while (hi - lo > 1e-9 * hi) { const mid = (lo + hi) / 2; if (covers(mid)) hi = mid; else lo = mid; }
  // The k that take the most at that level; ties to the earlier worker.
  return measured.map((w, i) => ({ w, i, x: (hi - a[i]) / r[i] }))
    .filter((x) => x.x >= 1).sort((x, y) => y.x - x.x || x.i - y.i).slice(0, k).map((x) => x.w);
}

/** Shards in the fixed worker order, contiguous from position 0. */
function layout(workers: WorkerCost[], counts: Map<number, number>, probes: Set<number>): PlannedShard[] {
  const shards: PlannedShard[] = [];
  let position = 0;
  for (const w of workers) {
    const count = counts.get(w.id) ?? 0;
    if (count <= 0) continue;
    shards.push({ id: shards.length, worker: w.id, position, count, probe: probes.has(w.id) });
    position += count;
  }
  return shards;
}

/**
 * The benched worker to re-measure at this step, or null: every `every` steps one of them, in
 * turn (the k-th such step takes benched[k mod |benched|]). A worker's situation changes (its tab
 * goes to the foreground, the others leave, the link clears) and only a measurement shows it.
 */
export function probeDue(step: number, benched: number[], every: number): number | null {
  if (!(every >= 1) || benched.length === 0 || step % every !== 0) return null;
  return benched[Math.floor(step / every) % benched.length];
}

/**
 * How often to re-measure benched workers so that probes cost at most `budget` of the run's time:
 * a probe lengthens its step by `lengthensMs`, paid once every `every` steps of `stepMs`.
 */
export function probeInterval(lengthensMs: number, stepMs: number, budget = 0.05, min = 10, max = 1000): number {
  if (!(lengthensMs > 0)) return min;
  if (!(stepMs > 0) || !(budget > 0) || !Number.isFinite(lengthensMs)) return max;
  return Math.min(max, Math.max(min, Math.ceil(lengthensMs / (budget * stepMs))));
}

/**
 * A worker's own-link throughput, one direction, updated from one transfer of `sample` bytes/s.
 * While other transfers shared the coordinator's link and it ran near `capacity`, the sample is
 * the worker's share of a full shared link: it shows the worker's own link is at least that fast,
 * not how fast it is, so it can only raise the estimate. Otherwise it is an EMA.
 */
export function linkEstimate(prev: number, sample: number, shared: { flows: number; aggregate: number; capacity: number }, alpha = 0.3): number {
  if (!(sample > 0) || !Number.isFinite(sample)) return prev;
  if (!(prev > 0)) return sample;
  const saturated = shared.flows > 1 && shared.capacity > 0 && shared.aggregate >= 0.9 * shared.capacity;
  return saturated ? Math.max(prev, sample) : (1 - alpha) * prev + alpha * sample;
}
