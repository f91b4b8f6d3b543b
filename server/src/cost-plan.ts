// The planner (issue 13, part 3): which workers compute a step and how many examples each, to make
// the step the cost model (cost-step.ts) predicts shortest. Pure and deterministic.
//
// ## The planner
//
// For a fixed S, the A_i := T − n_i·r_i terms of the model (cost-step.ts) are fixed, and min over
// n of max_i (A_i + n_i·r_i) with integer n_i ≥ 1 is solved exactly: worker i's k-th example
// "ends" at A_i + k·r_i; the best plan takes the B smallest of these slots, each worker's first one
// forced (slots of one worker increase with k, so the smallest slots are a prefix per worker). The
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
// the model's formula); the unit tests compare the result with every subset of small random fleets.
// The plan is the candidate with the fewest workers within minGain of the best, so that
// measurement noise does not swap workers in and out; ties go to the earlier worker.
//
// A worker the model cannot price (no compute or link measurement yet) gets a small probe shard
// so that it is measured; it is never benched unmeasured. A benched worker is re-measured by
// probeDue: every `probeEvery` steps one of them, in turn, is added to the step (with the shard
// the model gives it, so a probe costs exactly its reported penalty).
import { downloadBytes, isMeasured, perSec, sharedBytes, sideFlows, stepSeconds, terms, workerTerms, type CoordinatorCost, type RunCost, type WorkerCost } from './cost-step';
import { probeDue } from './cost-measure';

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

/** The best allocation over `set` (fixed order) and its predicted step, in seconds; null if it cannot take one example each. */
function bestFor(set: WorkerCost[], probes: { worker: WorkerCost; count: number }[], outside: WorkerCost[], budget: number, run: RunCost, coord: CoordinatorCost) {
  const others = [...probes.map((p) => ({ down: downloadBytes(p.worker, run), up: run.gradientBytes })), ...sideFlows(outside, run)];
  const { each, fold, tail } = terms(set, others, set.length + probes.length, run, coord);
  const counts = allocate(each.map((e) => e.a), each.map((e) => e.r), budget);
  if (!counts) return null;
  let t = 0;
  each.forEach((e, i) => { t = Math.max(t, e.a + counts[i] * e.r); });
  return { counts, seconds: stepSeconds(t, fold, tail, run) };
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
