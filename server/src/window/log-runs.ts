// A --log JSONL file read back as the dashboard's snapshot of its run, for `tabtrain view`
// (view.ts): the run record gives the header, the step records the step points and the running
// train curve (as train-curve.ts makes them live), the epoch records the epochs, the state records
// the state and the log, the workers records the per-worker samples.
//
// The file is untrusted input like any other: a line that is not JSON, not an object, of an unknown
// type or with a field of the wrong type is reported as FILE:LINE and skipped; the rest still draws.
import {
  MAX_STEP_POINTS, MAX_TRAIN_POINTS, MAX_WORKER_SAMPLES, isTrainSample, thin,
  type EpochPoint, type RunHeader, type Snapshot, type StepPoint, type TrainPoint, type WorkerSample,
} from '@tabtrain/shared/dashboard-wire';
import type { EpochMetrics, StepRecord } from '../run-options';
import { stepPoint } from './page-feed';
import { epochEndPoint } from './train-curve';
import { round } from './settings';

/** A line longer than this is refused: a record is a few hundred bytes (a workers record a few kB). */
export const MAX_LINE_BYTES = 1 << 20;
/** Problems kept per file (the count says how many there were). */
const MAX_PROBLEMS = 50;

export interface LogRun {
  snapshot: Snapshot;
  /** "FILE:LINE: why" for each line skipped (the first MAX_PROBLEMS). */
  problems: string[];
  problemCount: number;
}

type Rec = Record<string, unknown>;
const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const nonneg = (v: unknown) => num(v) && (v as number) >= 0;
const int = (v: unknown, min = 0) => Number.isSafeInteger(v) && (v as number) >= min;
/** JSON has no NaN: a diverged loss was written as null. */
const numOrNull = (v: unknown) => v === null || num(v);
const str = (v: unknown, max = 500) => typeof v === 'string' && v.length <= max;
const obj = (v: unknown): v is Rec => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why a record cannot be used, or null. */
function invalid(r: Rec): string | null {
  const need = (ok: boolean, field: string, what: string) => (ok ? null : `${String(r.type)}.${field} must be ${what}`);
  switch (r.type) {
    case 'run': {
      const c = r.config;
      return need(str(r.model, 100), 'model', 'a string')
        ?? need(obj(c) && int(c.epochs, 1) && int(c.batch, 1) && nonneg(c.lr) && int(c.seed), 'config', '{epochs, batch, lr, seed, …}')
        ?? need(int(r.stepsPerEpoch, 1), 'stepsPerEpoch', 'a whole number ≥ 1') ?? need(int(r.totalSteps), 'totalSteps', 'a whole number');
    }
    case 'step':
      for (const f of ['step', 'epoch'] as const) if (!int(r[f], 1)) return `step.${f} must be a whole number ≥ 1`;
      for (const f of ['examples', 'wallMs', 'collectMs', 'computeMs', 'uploadMs', 'aggregateMs', 'applyMs', 'broadcastMs', 'at'] as const) if (!nonneg(r[f])) return `step.${f} must be a number ≥ 0`;
      return need(numOrNull(r.loss) && numOrNull(r.acc), 'loss', 'a number (or null)') ?? need(r.straggler === null || int(r.straggler), 'straggler', 'a connection id or null');
    case 'epoch':
      for (const f of ['epoch', 'steps'] as const) if (!int(r[f], f === 'epoch' ? 1 : 0)) return `epoch.${f} must be a whole number`;
      for (const f of ['examples', 'examplesPerSec', 'seconds'] as const) if (!nonneg(r[f])) return `epoch.${f} must be a number ≥ 0`;
      return need(numOrNull(r.loss) && numOrNull(r.trainAcc) && numOrNull(r.testAcc), 'testAcc', 'a number or null');
    case 'state':
      return need(str(r.state, 40), 'state', 'a short string') ?? need(str(r.reason), 'reason', 'a string');
    case 'workers':
      return need(Array.isArray(r.workers) && r.workers.length <= 1000 && r.workers.every((w) => obj(w) && int(w.id) && str(w.workerId, 200) && str(w.backend, 100)
        && ['shardSize', 'computeMs', 'upBytesPerSec', 'downBytesPerSec', 'tensorBytes', 'examplesPerSec'].every((k) => nonneg(w[k]))), 'workers', 'a list of worker samples');
    default:
      return `unknown record type ${JSON.stringify(String(r.type)).slice(0, 40)}`;
  }
}

/** Reads one --log file's text into the dashboard's snapshot of its run. `name` prefixes problems. */
export function readLog(text: string, name: string): LogRun {
  const problems: string[] = [];
  let problemCount = 0;
  const problem = (line: number, why: string) => { if (problemCount++ < MAX_PROBLEMS) problems.push(`${name}:${line}: ${why}`); };
  let run: Rec | null = null;
  let startedAt = 0;
  let lastAt = 0;
  let state = { state: 'running', reason: 'the log ends here (a run still going, or one that was killed)' };
  const steps: StepPoint[] = [];
  const train: TrainPoint[] = [];
  const epochs = new Map<number, EpochPoint>();
  const samples: WorkerSample[] = [];
  const log: string[] = [];
  let open = { epoch: 0, examples: 0, lossSum: 0, correct: 0 };
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const n = i + 1;
    if (raw.trim() === '') return;
    if (raw.length > MAX_LINE_BYTES) return problem(n, `a line of ${raw.length} characters (at most ${MAX_LINE_BYTES})`);
    let r: unknown;
    try { r = JSON.parse(raw); } catch (e) { return problem(n, `not JSON (${(e as Error).message.slice(0, 80)})`); }
    if (!obj(r)) return problem(n, 'not a JSON object');
    const why = invalid(r);
    if (why) return problem(n, why);
    const at = nonneg(r.at) ? (r.at as number) : lastAt;
    lastAt = Math.max(lastAt, at);
    switch (r.type) {
      case 'run':
        run = r;
        if (!startedAt) startedAt = at;
        return;
      case 'state':
        state = { state: r.state as string, reason: r.reason as string };
        log.push(`${new Date(at).toISOString()} ${state.state}${state.reason ? `: ${state.reason}` : ''}`);
        return;
      case 'workers':
        samples.push({ at, step: steps.at(-1)?.step ?? 0, workers: r.workers as WorkerSample['workers'] });
        if (samples.length > MAX_WORKER_SAMPLES) thin(samples);
        return;
      case 'epoch': {
        const e = r as unknown as EpochMetrics;
        const point: EpochPoint = { epoch: e.epoch, steps: e.steps, examples: e.examples, loss: round(e.loss ?? NaN), trainAcc: round(e.trainAcc ?? NaN), testAcc: e.testAcc === null ? null : round(e.testAcc), examplesPerSec: round(e.examplesPerSec), seconds: round(e.seconds) };
        epochs.set(e.epoch, point);
        const per = (run?.stepsPerEpoch as number | undefined) ?? 1;
        const end = (e.epoch - 1) * per + e.steps;
        if (e.steps > 0 && train.at(-1)?.step !== end) train.push(epochEndPoint(e, end));
        return;
      }
      case 'step': {
        const s = { ...r, loss: r.loss ?? NaN, acc: r.acc ?? NaN } as unknown as StepRecord;
        // A resumed run's log holds the steps after its checkpoint twice: the later ones win.
        while (steps.length && steps.at(-1)!.step >= s.step) steps.pop();
        while (train.length && train.at(-1)!.step >= s.step) train.pop();
        steps.push(stepPoint(s));
        if (steps.length > MAX_STEP_POINTS) thin(steps);
        const per = (run?.stepsPerEpoch as number | undefined) ?? 1;
        if (open.epoch !== s.epoch) open = { epoch: s.epoch, examples: 0, lossSum: 0, correct: 0 };
        open.examples += s.examples;
        open.lossSum += s.loss * s.examples;
        open.correct += s.acc * s.examples;
        if (isTrainSample(s.step - (s.epoch - 1) * per, per)) {
          train.push({ step: s.step, epoch: s.epoch, examples: open.examples, loss: round(open.lossSum / open.examples), acc: round(open.correct / open.examples) });
          if (train.length > MAX_TRAIN_POINTS) thin(train);
        }
        return;
      }
    }
  });
  return { snapshot: snapshotOf(run, { startedAt, lastAt, state, steps, train, epochs: [...epochs.values()].sort((a, b) => a.epoch - b.epoch), samples, log }), problems, problemCount };
}

function snapshotOf(run: Rec | null, r: {
  startedAt: number; lastAt: number; state: { state: string; reason: string }; steps: StepPoint[]; train: TrainPoint[]; epochs: EpochPoint[]; samples: WorkerSample[]; log: string[];
}): Snapshot {
  const c = (run?.config ?? {}) as Rec;
  const last = r.steps.at(-1);
  const e = r.epochs.at(-1);
  const header: RunHeader = {
    model: String(run?.model ?? '?'), modelHash: String(run?.modelHash ?? ''), paramCount: Number(run?.paramCount ?? 0),
    config: {
      epochs: Number(c.epochs ?? 0), batch: Number(c.batch ?? 0), lr: Number(c.lr ?? 0), seed: Number(c.seed ?? 0), maxSteps: typeof c.maxSteps === 'number' ? c.maxSteps : null,
      balance: String(c.balance ?? ''), minWorkers: Number(c.minWorkers ?? 0), evalExamples: Number(c.evalExamples ?? 0),
    },
    state: r.state.state, reason: r.state.reason, step: last?.step ?? 0, totalSteps: Number(run?.totalSteps ?? 0), stepsPerEpoch: Number(run?.stepsPerEpoch ?? 1),
    epoch: last?.epoch ?? e?.epoch ?? 1, startedAt: r.startedAt, elapsedSec: (r.lastAt - r.startedAt) / 1000, priorSec: 0, resumedFromStep: 0, fullLog: false, etaSec: null,
    totalBytes: 0, line: e ? `epoch ${e.epoch}: loss ${e.loss.toFixed(3)}, train acc ${e.trainAcc.toFixed(3)}, test acc ${e.testAcc === null ? 'n/a' : e.testAcc.toFixed(3)}, ${e.examplesPerSec.toFixed(1)} examples/sec` : '',
    control: 'read-only', now: r.lastAt,
  };
  return { seq: 0, header, workers: [], steps: r.steps, epochs: r.epochs, train: r.train, log: r.log.slice(-200), samples: r.samples };
}
