// What GET /api/status and the page's header and workers table show, read off the coordinator's
// status() when asked: the run header (state, position, ETA, d2l's line, bytes) and a row a worker.
import { stepsPerEpoch } from '@tabtrain/shared';
import { WORKER_STATE, type ControlMode, type RunHeader, type WorkerRow, type WorkerState } from '@tabtrain/shared/dashboard-wire';
import type { Checkpointer } from '../checkpoint';
import type { Coordinator } from '../coordinator';
import { DASHBOARD, ms, round } from './settings';

type WorkerStatus = ReturnType<Coordinator['status']>['workers'][number];

/** What the status needs besides the coordinator, from the other parts of the dashboard. */
export interface StatusSources {
  control: ControlMode;
  /** The --log file is being written (the page offers its full log). */
  fullLog: () => boolean;
  checkpoint: () => Checkpointer | null;
  /** Where this coordinator took the run up: its step and the training seconds before it (train-curve.ts). */
  origin: () => { step: number; seconds: number };
}

export function runConfig(coord: Coordinator): RunHeader['config'] {
  const o = coord.opts;
  return { epochs: o.epochs, batch: o.batch, lr: coord.run.lr, seed: o.seed, maxSteps: o.maxSteps ?? null, balance: o.balance, minWorkers: o.minWorkers, evalExamples: o.evalExamples };
}

export function perEpoch(coord: Coordinator): number {
  return stepsPerEpoch(coord.data.train.count, coord.opts.batch);
}

export function totalSteps(coord: Coordinator): number {
  return Math.min(coord.opts.maxSteps ?? Infinity, coord.opts.epochs * perEpoch(coord));
}

export class StatusView {
  private readonly recentWallMs: number[] = [];
  /**
   * Bytes per connection still in the status table, and the bytes of those it has forgotten
   * (it keeps the last 64 lost ones), so that the total stays a total in bounded memory.
   */
  private bytesByConn = new Map<number, number>();
  private bytesForgotten = 0;

  constructor(private readonly coord: Coordinator, private readonly from: StatusSources) {}

  /** A step's wall time, for the ETA (the mean of the last DASHBOARD.etaWindow). */
  stepDone(wallMs: number): void {
    this.recentWallMs.push(wallMs);
    if (this.recentWallMs.length > DASHBOARD.etaWindow) this.recentWallMs.shift();
  }

  view(status = this.coord.status()): { header: RunHeader; workers: WorkerRow[] } {
    const c = this.coord;
    const workers = status.workers.map((w) => this.row(w));
    const seen = new Map(workers.map((w) => [w.id, w.bytesIn + w.bytesOut]));
    for (const [id, bytes] of this.bytesByConn) if (!seen.has(id)) this.bytesForgotten += bytes;
    this.bytesByConn = seen;
    const live = workers.filter((w) => w.state !== WORKER_STATE.lost).length;
    const left = totalSteps(c) - c.step;
    const meanWall = this.recentWallMs.length ? this.recentWallMs.reduce((a, b) => a + b, 0) / this.recentWallMs.length : NaN;
    const moving = c.state === 'running' || c.state === 'evaluating';
    const now = Date.now();
    const origin = this.from.origin();
    const header: RunHeader = {
      model: c.run.model, modelHash: c.run.modelHash, paramCount: c.run.paramCount, config: runConfig(c),
      state: c.state, reason: c.stateReason, step: c.step, totalSteps: totalSteps(c), stepsPerEpoch: perEpoch(c),
      epoch: Math.min(c.epoch + 1, c.opts.epochs), startedAt: c.startedAt, elapsedSec: origin.seconds + (now - c.startedAt) / 1000,
      priorSec: origin.seconds, resumedFromStep: origin.step, fullLog: this.from.fullLog(),
      etaSec: moving && Number.isFinite(meanWall) ? (left * meanWall) / 1000 : null,
      totalBytes: this.bytesForgotten + [...seen.values()].reduce((a, b) => a + b, 0),
      line: this.d2lLine(live), control: this.from.control, now, checkpointProblem: this.from.checkpoint()?.problem() ?? '',
      compression: status.compression.text, compressionPrices: status.compression.prices, commShare: commShare(c.lastStep),
    };
    return { header, workers };
  }

  /** GET /api/status: the coordinator's status() (whatever it grows), the header, the table's rows. */
  status() {
    const s = this.coord.status();
    const { header, workers } = this.view(s);
    const raw = new Map(s.workers.map((w) => [w.id, w]));
    return {
      ...s,
      state: this.coord.state, reason: this.coord.stateReason, startedAt: this.coord.startedAt,
      header, lastStep: this.coord.lastStep, checkpoint: this.from.checkpoint()?.status() ?? null,
      workers: workers.map((w) => ({ ...raw.get(w.id), ...w })),
    };
  }

  private row(w: WorkerStatus): WorkerRow {
    // The coordinator keeps no 'joining' state: a worker joins until its first shard comes back.
    const state: WorkerState = w.state === 'lost' ? WORKER_STATE.lost
      : w.shardsDone === 0 ? WORKER_STATE.joining
      : w.state === 'working' ? WORKER_STATE.working : WORKER_STATE.idle;
    return {
      id: w.id, workerId: String(w.workerId).slice(0, 80), kind: w.kind, backend: String(w.backend).slice(0, 40), adapterName: adapterName(w.adapter),
      state, shardSize: w.shardSize, computeMs: ms(w.computeMs), uploadMs: ms(w.uploadMs), bytesIn: w.bytesIn, bytesOut: w.bytesOut,
      examplesPerSec: round(w.examplesPerSec), shardsDone: w.shardsDone, straggler: this.coord.lastStep?.straggler === w.id,
    };
  }

  /** d2l's train_ch6 line: loss, train acc, test acc, examples/sec; the epoch in progress if any. */
  private d2lLine(workers: number): string {
    const c = this.coord;
    const on = `on ${workers} worker${workers === 1 ? '' : 's'}`;
    const a = c.epochAcc;
    if (a.steps > 0) {
      const s = c.step - Math.floor((c.step - 1) / perEpoch(c)) * perEpoch(c);
      return `epoch ${c.epoch + 1}/${c.opts.epochs} step ${s}/${perEpoch(c)}: loss ${(a.lossSum / a.examples).toFixed(3)}, train acc ${(a.correct / a.examples).toFixed(3)}, ${(a.examples / Math.max(a.seconds, 1e-9)).toFixed(1)} examples/sec ${on}`;
    }
    const e = c.history.at(-1);
    if (!e) return '';
    return `epoch ${e.epoch}: loss ${e.loss.toFixed(3)}, train acc ${e.trainAcc.toFixed(3)}, test acc ${e.testAcc === null ? 'n/a' : e.testAcc.toFixed(3)}, ${e.examplesPerSec.toFixed(1)} examples/sec ${on}`;
  }
}

/** Share of a step not spent computing: 1 − the slowest shard's compute ÷ the step's wall time. */
function commShare(s: { wallMs: number; computeMs: number } | null): number | null {
  return s && s.wallMs > 0 ? round(Math.min(1, Math.max(0, 1 - s.computeMs / s.wallMs))) : null;
}

function adapterName(a: Record<string, unknown> | null): string {
  if (!a) return '';
  const s = (k: string) => (typeof a[k] === 'string' ? (a[k] as string) : '');
  const parts = [s('description') || [s('vendor'), s('architecture'), s('device')].filter(Boolean).join(' ')];
  if (s('backendType')) parts.push(s('backendType'));
  if (a.isFallbackAdapter === true) parts.push('fallback');
  return parts.filter(Boolean).join(', ').slice(0, 120);
}
