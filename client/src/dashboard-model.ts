// The dashboard's data, without the DOM: merging the event stream into one run view, and the
// columns the charts plot. Pure functions, so tests can use them too.
import {
  MAX_STEP_POINTS, MAX_TRAIN_POINTS, MAX_WORKER_SAMPLES, thin,
  type EpochPoint, type RunHeader, type Snapshot, type StepPoint, type TrainPoint, type Update, type WorkerRow, type WorkerSample,
} from '@tabtrain/shared/dashboard-wire';

export { MAX_STEP_POINTS };

/** Steps the timeline shows: enough to see a pattern, few enough to read each bar. */
export const TIMELINE_STEPS = 120;

/** The smoothing slider: TensorBoard's exponential moving average weight, 0 (raw) to 0.99. */
export const SMOOTHING = { min: 0, max: 0.99, step: 0.01, default: 0.6 } as const;

export interface RunView {
  seq: number;
  header: RunHeader | null;
  workers: WorkerRow[];
  steps: StepPoint[];
  epochs: EpochPoint[];
  /** The epochs' running train loss and accuracy (d2l's Animator), in step order. */
  train: TrainPoint[];
  log: string[];
  /** The workers sampled over the run (the per-worker charts). */
  samples: WorkerSample[];
}

export const emptyView = (): RunView => ({ seq: -1, header: null, workers: [], steps: [], epochs: [], train: [], log: [], samples: [] });


/** A snapshot replaces the view (the page connected or reconnected). */
export function applySnapshot(s: Snapshot, logLines = 200): RunView {
  const v: RunView = { seq: s.seq, header: s.header, workers: s.workers, steps: [...s.steps], epochs: [], train: [...(s.train ?? [])], log: s.log.slice(-logLines), samples: [...(s.samples ?? [])] };
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
  const lastTrain = v.train.at(-1)?.step ?? -Infinity;
  for (const p of u.train ?? []) if (p.step > lastTrain) v.train.push(p);
  while (v.train.length > MAX_TRAIN_POINTS) thin(v.train);
  v.samples.push(...(u.samples ?? []));
  while (v.samples.length > MAX_WORKER_SAMPLES) thin(v.samples);
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
 * TensorBoard's smoothing: an exponential moving average with weight `w` (0 = the raw curve),
 * debiased so that its first points are not pulled towards 0. Gaps (null, NaN) stay gaps and do
 * not move the average.
 */
export function smooth(ys: Column, w: number): Column {
  const weight = Math.min(Math.max(w, 0), 0.999);
  let last = 0;
  let n = 0;
  return ys.map((y) => {
    if (y === null || !Number.isFinite(y)) return null;
    last = last * weight + (1 - weight) * y;
    n++;
    return weight === 0 ? y : last / (1 - weight ** n);
  });
}

/** The columns of the loss and accuracy chart; one x column for all (uPlot's aligned data), nulls between. */
export type CurveData = [x: number[], stepLoss: Column, smoothedLoss: Column, trainLoss: Column, trainAcc: Column, testAcc: Column];

/**
 * d2l's Animator, x in epochs: the per-step loss (raw, and smoothed with weight `smoothing`), the
 * epoch's running train loss and train acc several times an epoch (the train points), and each
 * epoch's test acc where the epoch ended.
 */
export function curveData(v: RunView, smoothing = 0): CurveData {
  const perEpoch = v.header?.stepsPerEpoch ?? 1;
  interface Row { loss?: number; t?: TrainPoint; e?: EpochPoint }
  const at = new Map<number, Row>();
  const row = (step: number) => { let r = at.get(step); if (!r) at.set(step, (r = {})); return r; };
  for (const p of v.steps) row(p.step).loss = p.loss;
  for (const t of v.train) row(t.step).t = t;
  for (const e of v.epochs) row((e.epoch - 1) * perEpoch + e.steps).e = e;
  const steps = [...at.keys()].sort((a, b) => a - b);
  const x = steps.map((s) => s / perEpoch);
  const get = (f: (r: Row) => number | null | undefined): Column => steps.map((s) => f(at.get(s)!) ?? null);
  const loss = get((r) => r.loss);
  // A partial epoch's train point is its end, and epochs restored without points still show theirs.
  const trainLoss = get((r) => r.t?.loss ?? r.e?.loss);
  const trainAcc = get((r) => r.t?.acc ?? r.e?.trainAcc);
  return [x, loss, smooth(loss, smoothing), trainLoss, trainAcc, get((r) => r.e?.testAcc)];
}

/** Seconds of the run at wall clock `at` (ms): a resumed run goes on from its checkpoint's time. */
export function runSeconds(h: RunHeader | null, at: number): number {
  return (h?.priorSec ?? 0) + (at - (h?.startedAt ?? at)) / 1000;
}

/** The columns of the speed chart: x in seconds of the run. */
export type SpeedData = [x: number[], perStep: Column, smoothed: Column, epochAverage: Column];

/**
 * examples/s against the run's seconds (a resumed run's steps start at its checkpoint's time, not
 * at 0): each step's, smoothed with weight `smoothing`, and each epoch's d2l figure where the epoch
 * ended. A restored epoch's end is placed by its training seconds (its steps are not kept).
 */
export function speedData(v: RunView, smoothing = 0): SpeedData {
  const h = v.header;
  const perEpoch = h?.stepsPerEpoch ?? 1;
  const resumed = h?.resumedFromStep ?? 0;
  const rows: { x: number; raw: number | null; epoch: number | null }[] = v.steps.map((p) => ({ x: runSeconds(h, p.at), raw: p.examplesPerSec, epoch: null }));
  // An epoch's test evaluation lies between its last step and the next epoch's first: a gap, not a line.
  const gaps = v.steps.flatMap((p, i) => (i > 0 && v.steps[i - 1].epoch !== p.epoch ? [{ x: (rows[i - 1].x + rows[i].x) / 2, raw: null, epoch: null }] : []));
  const stepIndex = new Map(v.steps.map((p, i) => [p.step, i]));
  let cumulative = 0;
  for (const e of v.epochs) {
    cumulative += e.seconds;
    const end = (e.epoch - 1) * perEpoch + e.steps;
    const i = stepIndex.get(end);
    if (i !== undefined) rows[i].epoch = e.examplesPerSec;
    else if (end <= resumed) rows.push({ x: cumulative, raw: null, epoch: e.examplesPerSec });
  }
  rows.push(...gaps);
  rows.sort((a, b) => a.x - b.x);
  const raw = rows.map((r) => r.raw);
  return [rows.map((r) => r.x), raw, smooth(raw, smoothing), rows.map((r) => r.epoch)];
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
  s = Math.round(s); // once, before splitting: never "60 s" or "1 min 60 s"
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Run states after which nothing changes. */
export const isTerminal = (state: string | undefined) => state === 'finished' || state === 'stopped' || state === 'failed';

// ---- downloads: what the page holds, as CSV and as JSONL ----

/** What a download holds against what the run did: the page thins its steps past MAX_STEP_POINTS. */
export function downloadNote(v: RunView): { stepsHeld: number; stepsRun: number; thinned: boolean; note: string } {
  const h = v.header;
  const stepsHeld = v.steps.length;
  const stepsRun = h ? h.step - h.resumedFromStep : stepsHeld;
  const thinned = stepsHeld < stepsRun;
  const full = h?.fullLog ? 'GET /api/log (the --log file) has every step' : 'start the coordinator with --log FILE to keep every step';
  const note = thinned
    ? `${stepsHeld} of the ${stepsRun} steps this coordinator ran: past ${MAX_STEP_POINTS} points the older half is thinned to every other step; ${full}`
    : `every step this coordinator ran (${stepsRun})${h && h.resumedFromStep > 0 ? `; the steps before the resume (1–${h.resumedFromStep}) are not held: their epochs are` : ''}`;
  return { stepsHeld, stepsRun, thinned, note };
}

/** The CSV's columns; a row is a step, a running train point or an epoch (`type`), cells empty where they do not apply. */
export const CSV_COLUMNS = [
  'type', 'step', 'epoch', 'x_epochs', 'loss', 'acc', 'test_acc', 'examples', 'examples_per_sec', 'seconds',
  'wall_ms', 'compute_ms', 'upload_ms', 'wait_ms', 'aggregate_ms', 'apply_ms', 'broadcast_ms', 'straggler', 'at',
] as const;

type CsvRow = Partial<Record<(typeof CSV_COLUMNS)[number], string | number | null>>;

function csvCell(v: string | number | null | undefined): string {
  if (v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * RFC 4180 CSV: one header line, then the steps (`type` step: loss and acc of that step), the
 * running train points (`train`: the epoch's means so far, d2l's Animator) and the epochs
 * (`epoch`: acc is the train acc, seconds the epoch's training seconds). No comment lines, so
 * any CSV reader takes it; what it holds against the run is in the JSONL's first line and on the page.
 */
export function metricsCsv(v: RunView): string {
  const per = v.header?.stepsPerEpoch ?? 1;
  const x = (step: number) => Number((step / per).toFixed(6));
  const rows: CsvRow[] = [
    ...v.steps.map((p): CsvRow => ({
      type: 'step', step: p.step, epoch: p.epoch, x_epochs: x(p.step), loss: p.loss, acc: p.acc, examples: p.examples, examples_per_sec: p.examplesPerSec,
      wall_ms: p.wallMs, compute_ms: p.computeMs, upload_ms: p.uploadMs, wait_ms: p.waitMs, aggregate_ms: p.aggregateMs, apply_ms: p.applyMs, broadcast_ms: p.broadcastMs,
      straggler: p.straggler, at: p.at,
    })),
    ...v.train.map((t): CsvRow => ({ type: 'train', step: t.step, epoch: t.epoch, x_epochs: x(t.step), loss: t.loss, acc: t.acc, examples: t.examples })),
    ...v.epochs.map((e): CsvRow => {
      const step = (e.epoch - 1) * per + e.steps;
      return { type: 'epoch', step, epoch: e.epoch, x_epochs: x(step), loss: e.loss, acc: e.trainAcc, test_acc: e.testAcc, examples: e.examples, examples_per_sec: e.examplesPerSec, seconds: e.seconds };
    }),
  ];
  return [CSV_COLUMNS.join(','), ...rows.map((r) => CSV_COLUMNS.map((c) => csvCell(r[c])).join(','))].join('\r\n') + '\r\n';
}

/**
 * JSONL: a `meta` line (the run, and what the file holds against it: thinned or not, where the
 * full record is), then one line per step, running train point and epoch, each the wire object
 * plus its `type`.
 */
export function metricsJsonl(v: RunView, savedAt = Date.now()): string {
  const h = v.header;
  const n = downloadNote(v);
  const meta = {
    type: 'meta', model: h?.model, modelHash: h?.modelHash, paramCount: h?.paramCount, config: h?.config, stepsPerEpoch: h?.stepsPerEpoch,
    totalSteps: h?.totalSteps, step: h?.step, resumedFromStep: h?.resumedFromStep ?? 0, state: h?.state,
    stepsHeld: n.stepsHeld, stepsRun: n.stepsRun, thinned: n.thinned, note: n.note, fullLog: h?.fullLog ? 'api/log' : null, savedAt,
  };
  const lines = [meta, ...v.steps.map((p) => ({ type: 'step', ...p })), ...v.train.map((t) => ({ type: 'train', ...t })), ...v.epochs.map((e) => ({ type: 'epoch', ...e }))];
  return lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
}

/** A file name for the downloads: tabtrain-MODEL-stepN.EXT. */
export function downloadName(v: RunView, ext: string): string {
  const model = (v.header?.model ?? 'run').replace(/[^\w.-]/g, '_');
  return `tabtrain-${model}-step${v.header?.step ?? 0}.${ext}`;
}
