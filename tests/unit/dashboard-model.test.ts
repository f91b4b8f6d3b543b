// The dashboard page's data functions, without a browser: TensorBoard's smoothing, d2l's running
// train curves on a fractional-epoch axis, the speed chart of a resumed run, and the CSV and JSONL
// the page downloads (quoting, what they hold, what they say about thinning).
import { describe, expect, it } from 'vitest';
import { MAX_STEP_POINTS, isTrainSample, trainEvery, type EpochPoint, type RunHeader, type StepPoint, type TrainPoint } from '@tabtrain/shared/dashboard-wire';
import {
  CSV_COLUMNS, applySnapshot, applyUpdate, curveData, downloadNote, emptyView, formatSeconds, metricsCsv, metricsJsonl, smooth, speedData, type RunView,
} from '../../client/src/dashboard-model';
import { storedSmoothing } from '../../client/src/dashboard-ui';
import { csvRows } from '../helpers/csv';

const PER = 20;

function header(over: Partial<RunHeader> = {}): RunHeader {
  return {
    model: 'vgg11-tiny', modelHash: 'abc', paramCount: 1000, config: { epochs: 10, batch: 32, lr: 0.05, seed: 1, maxSteps: null, balance: 'speed', minWorkers: 1, evalExamples: 320 },
    state: 'running', reason: '', step: 0, totalSteps: 200, stepsPerEpoch: PER, epoch: 1, startedAt: 1_000_000, elapsedSec: 0, etaSec: null, totalBytes: 0, line: '',
    control: 'read-only', now: 1_000_000, priorSec: 0, resumedFromStep: 0, fullLog: false, ...over,
  };
}

function step(n: number, over: Partial<StepPoint> = {}): StepPoint {
  return {
    step: n, epoch: Math.floor((n - 1) / PER) + 1, loss: 2 - n / 100, acc: (n % 7) / 7, examples: 32, examplesPerSec: 300 + (n % 5) * 10, wallMs: 100,
    computeMs: 50, uploadMs: 10, waitMs: 20, aggregateMs: 5, applyMs: 5, broadcastMs: 10, straggler: null, at: 1_000_000 + n * 100, ...over,
  };
}

function view(steps: StepPoint[], over: Partial<RunView> = {}, h: Partial<RunHeader> = {}): RunView {
  return { ...emptyView(), seq: 1, header: header({ step: steps.at(-1)?.step ?? 0, ...h }), steps, ...over };
}

describe('smooth (TensorBoard)', () => {
  it('is the raw curve at 0, debiased (its first point is the first value), and leaves gaps as gaps', () => {
    const ys = [1, 3, null, 2, Number.NaN, 5];
    expect(smooth(ys, 0)).toEqual([1, 3, null, 2, null, 5]);
    const s = smooth(ys, 0.6);
    expect(s[0]).toBeCloseTo(1, 12);
    // From 0: 0.4·1 = 0.4, then 0.6·0.4 + 0.4·3 = 1.44, debiased by 1 − 0.6² = 0.64: 2.25.
    expect(s[1]).toBeCloseTo((0.4 * 0.6 + 0.4 * 3) / (1 - 0.36), 12);
    expect(s[2]).toBeNull();
    expect(s[4]).toBeNull();
    // Smoother with a larger weight: less total variation.
    const noisy = Array.from({ length: 200 }, (_, i) => Math.sin(i) + i / 100);
    const tv = (c: (number | null)[]) => c.slice(1).reduce<number>((a, y, i) => a + Math.abs((y as number) - (c[i] as number)), 0);
    expect(tv(smooth(noisy, 0.9))).toBeLessThan(tv(smooth(noisy, 0.6)));
    expect(tv(smooth(noisy, 0.6))).toBeLessThan(tv(noisy));
  });

  it('reads a stored weight only when the slider can show it', () => {
    expect(storedSmoothing('0.9')).toBe(0.9);
    expect(storedSmoothing('0')).toBe(0);
    expect(storedSmoothing(null)).toBe(0.6);
    expect(storedSmoothing('')).toBe(0.6);
    expect(storedSmoothing('1.5')).toBe(0.6);
    expect(storedSmoothing('nope')).toBe(0.6);
  });
});

describe("d2l's running train curves", () => {
  it('samples every ceil(steps per epoch / 5) steps and at the epoch end', () => {
    expect(trainEvery(20)).toBe(4);
    expect(trainEvery(469)).toBe(94);
    expect(trainEvery(3)).toBe(1);
    const at = (per: number) => Array.from({ length: per }, (_, i) => i + 1).filter((s) => isTrainSample(s, per));
    expect(at(20)).toEqual([4, 8, 12, 16, 20]);
    expect(at(469)).toEqual([94, 188, 282, 376, 469]);
    expect(at(22)).toEqual([5, 10, 15, 20, 22]);
  });

  it('puts train points between epoch ends on a fractional-epoch x, and the test acc at the epoch end', () => {
    const steps = Array.from({ length: 24 }, (_, i) => step(i + 1));
    const train: TrainPoint[] = [4, 8, 12, 16, 20, 24].map((s) => ({ step: s, epoch: s > 20 ? 2 : 1, examples: 32 * (((s - 1) % 20) + 1), loss: 3 - s / 10, acc: s / 40 }));
    const epochs: EpochPoint[] = [{ epoch: 1, steps: 20, examples: 640, loss: 1, trainAcc: 0.5, testAcc: 0.45, examplesPerSec: 320, seconds: 2 }];
    const [x, loss, smoothed, trainLoss, trainAcc, testAcc] = curveData(view(steps, { train, epochs }), 0.6);
    expect(x).toEqual(steps.map((p) => p.step / PER));
    expect(loss).toEqual(steps.map((p) => p.loss));
    expect(smoothed).toEqual(smooth(loss, 0.6));
    const points = (c: (number | null)[]) => x.map((xi, i) => [xi, c[i]]).filter(([, y]) => y !== null);
    expect(points(trainAcc)).toEqual(train.map((t) => [t.step / PER, t.acc]));
    expect(points(trainLoss)).toEqual(train.map((t) => [t.step / PER, t.loss]));
    // Several running points in the first epoch, before its end (x < 1).
    expect(points(trainAcc).filter(([xi]) => xi! < 1).length).toBe(4);
    expect(points(testAcc)).toEqual([[1, 0.45]]);
  });

  it('merges train points from updates once each, in order', () => {
    const v = applySnapshot({ seq: 1, header: header(), workers: [], steps: [step(1)], epochs: [], train: [], log: [] });
    const t = (s: number): TrainPoint => ({ step: s, epoch: 1, examples: s * 32, loss: 1, acc: 0.5 });
    applyUpdate(v, { seq: 2, header: header(), workers: [], steps: [step(2)], epochs: [], train: [t(4)], log: [] });
    applyUpdate(v, { seq: 3, header: header(), workers: [], steps: [], epochs: [], train: [t(4), t(8)], log: [] });
    expect(v.train.map((p) => p.step)).toEqual([4, 8]);
  });
});

describe('the speed chart of a resumed run', () => {
  it("goes on from the checkpoint's time, with the restored epochs' d2l figures before it", () => {
    const startedAt = 5_000_000;
    const h = { resumedFromStep: 30, priorSec: 12.5, startedAt, step: 42 };
    const steps = Array.from({ length: 12 }, (_, i) => step(31 + i, { at: startedAt + 4000 + i * 100 }));
    const epochs: EpochPoint[] = [
      { epoch: 1, steps: 20, examples: 640, loss: 1, trainAcc: 0.5, testAcc: 0.45, examplesPerSec: 320, seconds: 8 },
      { epoch: 2, steps: 20, examples: 640, loss: 0.9, trainAcc: 0.55, testAcc: 0.5, examplesPerSec: 330, seconds: 6 },
    ];
    const [x, raw, smoothed, epoch] = speedData(view(steps, { epochs }, h), 0);
    // Epoch 1 was before the resume: placed by its training seconds. Epoch 2 ended at step 40, which the page holds.
    expect(x[0]).toBe(8);
    expect(raw[0]).toBeNull();
    expect(epoch[0]).toBe(320);
    // Epoch 2's test evaluation lies between steps 40 and 41: one gap (null) there, so no line crosses it (issue 22).
    const at = (p: StepPoint) => 12.5 + (p.at - startedAt) / 1000;
    const gap = 1 + steps.findIndex((p) => p.step === 41);
    expect(raw[gap]).toBeNull();
    expect(x[gap]).toBeGreaterThan(at(steps[gap - 2]));
    expect(x[gap]).toBeLessThan(at(steps[gap - 1]));
    const held = (col: unknown[]) => col.filter((_, i) => i > 0 && i !== gap);
    expect(held(x)).toEqual(steps.map(at));
    expect(x[1]).toBeGreaterThanOrEqual(h.priorSec);
    expect(held(raw)).toEqual(steps.map((p) => p.examplesPerSec));
    expect(smoothed).toEqual(raw);
    expect(epoch[1 + steps.findIndex((p) => p.step === 40)]).toBe(330);
  });
});

describe('downloads', () => {

  it('CSV: a header, every step, train point and epoch the page holds, empty cells where none applies', () => {
    const steps = Array.from({ length: 25 }, (_, i) => step(i + 1, { straggler: i % 2 ? 3 : null }));
    const train: TrainPoint[] = [4, 8, 12, 16, 20, 24].map((s) => ({ step: s, epoch: s > 20 ? 2 : 1, examples: 32, loss: 1.5, acc: 0.25 }));
    const epochs: EpochPoint[] = [{ epoch: 1, steps: 20, examples: 640, loss: 1, trainAcc: 0.5, testAcc: null, examplesPerSec: 320, seconds: 2 }];
    const v = view(steps, { train, epochs });
    const [head, ...rows] = csvRows(metricsCsv(v));
    expect(head).toEqual([...CSV_COLUMNS]);
    const col = (name: (typeof CSV_COLUMNS)[number]) => head.indexOf(name);
    const of = (type: string) => rows.filter((r) => r[col('type')] === type);
    expect(rows.every((r) => r.length === head.length)).toBe(true);
    expect(of('step').map((r) => Number(r[col('step')]))).toEqual(steps.map((p) => p.step));
    expect(of('step').map((r) => Number(r[col('loss')]))).toEqual(steps.map((p) => p.loss));
    expect(of('step').map((r) => r[col('straggler')])).toEqual(steps.map((p) => (p.straggler === null ? '' : String(p.straggler))));
    expect(of('train').map((r) => [Number(r[col('step')]), Number(r[col('x_epochs')]), Number(r[col('acc')])])).toEqual(train.map((t) => [t.step, t.step / PER, t.acc]));
    expect(of('epoch')).toHaveLength(1);
    expect(of('epoch')[0][col('test_acc')]).toBe('');
    expect(Number(of('epoch')[0][col('acc')])).toBe(0.5);
    expect(Number(of('epoch')[0][col('step')])).toBe(20);
  });

  it('JSONL: a meta line that says whether the steps were thinned and where the full record is', () => {
    const steps = Array.from({ length: 10 }, (_, i) => step(i + 1));
    const full = metricsJsonl(view(steps, {}, { fullLog: true }), 42).trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(full[0]).toMatchObject({ type: 'meta', model: 'vgg11-tiny', stepsHeld: 10, stepsRun: 10, thinned: false, fullLog: 'api/log', savedAt: 42 });
    expect(full.slice(1)).toEqual(steps.map((p) => ({ type: 'step', ...p })));
    // A page that held only half of what the coordinator ran says so, and how to get all of it.
    const half = view(steps.filter((_, i) => i % 2 === 0), {}, { step: 10 });
    const n = downloadNote(half);
    expect(n).toMatchObject({ stepsHeld: 5, stepsRun: 10, thinned: true });
    expect(n.note).toContain(String(MAX_STEP_POINTS));
    expect(n.note).toMatch(/--log FILE/);
    expect(JSON.parse(metricsJsonl(half).split('\n')[0])).toMatchObject({ thinned: true, fullLog: null });
    // A resumed run's page holds this coordinator's steps only.
    expect(downloadNote(view(steps.map((p) => ({ ...p, step: p.step + 30 })), {}, { step: 40, resumedFromStep: 30 }))).toMatchObject({ stepsRun: 10, thinned: false });
  });
});

describe('formatSeconds (page)', () => {
  it('rounds once, so never "60 s"', () => {
    expect(formatSeconds(59.6)).toBe('1 min 00 s');
    expect(formatSeconds(119.7)).toBe('2 min 00 s');
    expect(formatSeconds(3599.6)).toBe('1 h 00 min');
    expect(formatSeconds(null)).toBe('–');
  });
});
