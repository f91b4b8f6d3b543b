// The dashboard's columns for runs side by side (`tabtrain view`) and for the per-worker charts,
// and the x-axis choice (step, epoch, wall time) every curve follows. Pure functions, no DOM.
import type { WorkerSample } from '@tabtrain/shared/dashboard-wire';
import { runSeconds, smooth, type RunView } from './dashboard-model';

/** What the curves' x is: the step, the epoch (step ÷ steps per epoch) or seconds of the run. */
export type XAxis = 'step' | 'epoch' | 'wall';
export const X_AXES: Record<XAxis, string> = { step: 'step', epoch: 'epoch', wall: 'seconds of the run' };

/**
 * Where a step lies on the x-axis. Wall time: the step's own end if the run holds it, else
 * interpolated between the held steps around it (a thinned or restored step).
 */
export function xOf(v: RunView, axis: XAxis): (step: number) => number {
  const per = v.header?.stepsPerEpoch ?? 1;
  if (axis === 'step') return (s) => s;
  if (axis === 'epoch') return (s) => s / per;
  const steps = v.steps.map((p) => p.step);
  const secs = v.steps.map((p) => runSeconds(v.header, p.at));
  return (s) => {
    if (steps.length === 0) return 0;
    let hi = steps.findIndex((x) => x >= s);
    if (hi < 0) hi = steps.length - 1;
    if (steps[hi] === s || hi === 0) return secs[hi];
    const lo = hi - 1;
    return secs[lo] + ((secs[hi] - secs[lo]) * (s - steps[lo])) / Math.max(1, steps[hi] - steps[lo]);
  };
}

/** A column of aligned data: undefined where the series has no point (uPlot draws across it), null a gap (it breaks the line). */
export type Sparse = (number | null | undefined)[];

/**
 * Several series, each its own [x, y] points, on one shared x column (uPlot's aligned data):
 * undefined where a series has no point at another series' x, so that its line goes on; its own
 * nulls stay gaps (an evaluation, a rate not measured).
 */
export function align(series: [number, number | null][][]): [number[], ...Sparse[]] {
  const xs = [...new Set(series.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const cols = series.map((s) => {
    const col: Sparse = xs.map(() => undefined);
    for (const [x, y] of s) col[index.get(x)!] = y;
    return col;
  });
  return [xs, ...cols];
}

export interface NamedRun { name: string; view: RunView }

/** Per run: its step loss, smoothed with weight `smoothing` (the raw curves of several runs hide each other). */
export function lossSeries(runs: NamedRun[], axis: XAxis, smoothing: number): [number, number | null][][] {
  return runs.map(({ view }) => {
    const x = xOf(view, axis);
    const ys = smooth(view.steps.map((p) => p.loss), smoothing);
    return view.steps.map((p, i) => [x(p.step), ys[i]] as [number, number | null]);
  });
}

/** Per run: each epoch's test accuracy where the epoch ended (partial epochs have none). */
export function testAccSeries(runs: NamedRun[], axis: XAxis): [number, number | null][][] {
  return runs.map(({ view }) => {
    const x = xOf(view, axis);
    const per = view.header?.stepsPerEpoch ?? 1;
    return view.epochs.filter((e) => e.testAcc !== null).map((e) => [x((e.epoch - 1) * per + e.steps), e.testAcc] as [number, number | null]);
  });
}

/**
 * Per run: examples/s of each step, smoothed, with a gap (null) where an epoch's test evaluation
 * came between two steps, so that no line is drawn across it.
 */
export function speedSeries(runs: NamedRun[], axis: XAxis, smoothing: number): [number, number | null][][] {
  return runs.map(({ view }) => {
    const x = xOf(view, axis);
    const ys = smooth(view.steps.map((p) => p.examplesPerSec), smoothing);
    const out: [number, number | null][] = [];
    view.steps.forEach((p, i) => {
      const prev = view.steps[i - 1];
      if (prev && prev.epoch !== p.epoch) out.push([(x(prev.step) + x(p.step)) / 2, null]);
      out.push([x(p.step), ys[i]]);
    });
    return out;
  });
}

/** The per-worker charts: what each plots of a sample's worker, its unit, and a scale for the axis. */
export const WORKER_METRICS = {
  computeMs: { title: 'Compute per shard', unit: 'ms', scale: 1 },
  upBytesPerSec: { title: 'Measured upload rate (worker → coordinator)', unit: 'MB/s', scale: 1e-6 },
  downBytesPerSec: { title: 'Measured download rate (coordinator → worker)', unit: 'MB/s', scale: 1e-6 },
  shardSize: { title: 'Shard size', unit: 'examples', scale: 1 },
  tensorBytes: { title: 'Memory in tensors on its backend', unit: 'MB', scale: 1e-6 },
} as const;
export type WorkerMetric = keyof typeof WORKER_METRICS;

/** A worker's series name: its id (a long one cut to 8 characters: a UUID's first 8 are as good as all 36) and backend, and the run's name when runs are overlaid. */
export function workerName(w: WorkerSample['workers'][number], run?: string): string {
  const id = w.workerId.length > 16 ? `${w.workerId.slice(0, 8)}…` : w.workerId;
  return `${run ? `${run}/` : ''}${id} (${w.backend})`;
}

/**
 * One series per worker (by worker id and backend) of `metric` over the run, from the samples;
 * a rate not measured yet or memory not reported yet (0) is a gap, not a fall to zero.
 */
export function workerSeries(runs: NamedRun[], metric: WorkerMetric, axis: XAxis): { labels: string[]; points: [number, number | null][][] } {
  // Keyed by the whole identity: two workers whose names cut alike stay two lines.
  const byWorker = new Map<string, { label: string; points: [number, number | null][] }>();
  // 0 is "not yet": a rate not measured, memory not reported (a worker reports it after its first shard).
  const unknownAtZero = metric === 'upBytesPerSec' || metric === 'downBytesPerSec' || metric === 'tensorBytes';
  for (const { name, view } of runs) {
    const x = axis === 'wall' ? (s: WorkerSample) => runSeconds(view.header, s.at) : ((f) => (s: WorkerSample) => f(s.step))(xOf(view, axis));
    for (const s of view.samples) {
      for (const w of s.workers) {
        const key = JSON.stringify([name, w.workerId, w.backend]);
        if (!byWorker.has(key)) byWorker.set(key, { label: workerName(w, runs.length > 1 ? name : undefined), points: [] });
        const y = w[metric] * WORKER_METRICS[metric].scale;
        byWorker.get(key)!.points.push([x(s), unknownAtZero && w[metric] === 0 ? null : y]);
      }
    }
  }
  const lines = [...byWorker.values()];
  return { labels: lines.map((l) => l.label), points: lines.map((l) => l.points) };
}
