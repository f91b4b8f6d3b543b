// The dashboard's data, without the DOM: merging the event stream into one run view, and the
// columns the charts plot. Pure functions, so tests can use them too.
import { MAX_STEP_POINTS, thin, type EpochPoint, type RunHeader, type Snapshot, type StepPoint, type Update, type WorkerRow } from '@tabtrain/shared/dashboard-wire';

export { MAX_STEP_POINTS };

/** Steps the timeline shows: enough to see a pattern, few enough to read each bar. */
export const TIMELINE_STEPS = 120;

/** Steps in the moving average of examples/s. */
export const SPEED_WINDOW = 20;

export interface RunView {
  seq: number;
  header: RunHeader | null;
  workers: WorkerRow[];
  steps: StepPoint[];
  epochs: EpochPoint[];
  log: string[];
}

export const emptyView = (): RunView => ({ seq: -1, header: null, workers: [], steps: [], epochs: [], log: [] });


/** A snapshot replaces the view (the page connected or reconnected). */
export function applySnapshot(s: Snapshot, logLines = 200): RunView {
  const v: RunView = { seq: s.seq, header: s.header, workers: s.workers, steps: [...s.steps], epochs: [], log: s.log.slice(-logLines) };
  mergeEpochs(v, s.epochs);
  return v;
}

/** An update appends: steps after the last one held, epochs by number (the newest wins). */
export function applyUpdate(v: RunView, u: Update, logLines = 200): void {
  v.seq = u.seq;
  v.header = u.header;
  v.workers = u.workers;
  const last = v.steps.at(-1)?.step ?? -Infinity;
  for (const p of u.steps) if (p.step > last) v.steps.push(p);
  while (v.steps.length > MAX_STEP_POINTS) thin(v.steps);
  mergeEpochs(v, u.epochs);
  v.log.push(...u.log);
  if (v.log.length > logLines) v.log.splice(0, v.log.length - logLines);
}

function mergeEpochs(v: RunView, epochs: EpochPoint[]): void {
  for (const e of epochs) {
    const i = v.epochs.findIndex((x) => x.epoch === e.epoch);
    if (i >= 0) v.epochs[i] = e;
    else v.epochs.push(e);
  }
  v.epochs.sort((a, b) => a.epoch - b.epoch);
}

export type Column = (number | null)[];

/**
 * d2l's Animator: x in epochs; the per-step loss, and each epoch's train loss, train acc and test
 * acc at the x where the epoch ended. One x column for all (uPlot's aligned data), nulls between.
 */
export function curveData(v: RunView): [number[], Column, Column, Column, Column] {
  const perEpoch = v.header?.stepsPerEpoch ?? 1;
  const at = new Map<number, { loss?: number; e?: EpochPoint }>();
  for (const p of v.steps) at.set(p.step, { loss: p.loss });
  for (const e of v.epochs) {
    const step = (e.epoch - 1) * perEpoch + e.steps;
    at.set(step, { ...at.get(step), e });
  }
  const steps = [...at.keys()].sort((a, b) => a - b);
  const x = steps.map((s) => s / perEpoch);
  const get = (f: (r: { loss?: number; e?: EpochPoint }) => number | null | undefined): Column => steps.map((s) => f(at.get(s)!) ?? null);
  return [x, get((r) => r.loss), get((r) => r.e?.loss), get((r) => r.e?.trainAcc), get((r) => r.e?.testAcc)];
}

/** examples/s against seconds since the run started: each step's, and a moving average. */
export function speedData(v: RunView): [number[], Column, Column] {
  const t0 = v.header?.startedAt ?? v.steps[0]?.at ?? 0;
  const x = v.steps.map((p) => (p.at - t0) / 1000);
  const raw = v.steps.map((p) => p.examplesPerSec);
  const avg: Column = [];
  let examples = 0;
  let ms = 0;
  for (let i = 0; i < v.steps.length; i++) {
    examples += v.steps[i].examples;
    ms += v.steps[i].wallMs;
    if (i >= SPEED_WINDOW) {
      examples -= v.steps[i - SPEED_WINDOW].examples;
      ms -= v.steps[i - SPEED_WINDOW].wallMs;
    }
    avg.push(ms > 0 ? (examples * 1000) / ms : null);
  }
  return [x, raw, avg];
}

/** The phases of a step's wall time, bottom to top of the timeline's stacks. */
export const PHASES = [
  ['computeMs', 'compute'],
  ['uploadMs', 'upload'],
  ['waitMs', 'transfer + wait'],
  ['aggregateMs', 'aggregate'],
  ['applyMs', 'apply (SGD)'],
  ['broadcastMs', 'broadcast'],
] as const satisfies readonly (readonly [keyof StepPoint, string])[];

/**
 * The last TIMELINE_STEPS steps as stacked bars: column i is the sum of the phases up to i
 * (uPlot draws no stacks itself), and `parts` keeps each phase's own ms for the legend.
 */
export function timelineData(v: RunView): { data: [number[], ...number[][]]; parts: number[][] } {
  const recent = v.steps.slice(-TIMELINE_STEPS);
  const parts = PHASES.map(([k]) => recent.map((p) => p[k] as number));
  const stacked = parts.map((_, i) => recent.map((_, j) => parts.slice(0, i + 1).reduce((a, col) => a + col[j], 0)));
  return { data: [recent.map((p) => p.step), ...stacked], parts };
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

export function formatSeconds(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '–';
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Run states after which nothing changes. */
export const isTerminal = (state: string | undefined) => state === 'finished' || state === 'stopped' || state === 'failed';
