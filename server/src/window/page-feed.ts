// GET /api/events: what the dashboard pages get, as server-sent events: a snapshot, then updates
// that coalesce what happened since the last one (see dashboard-wire.ts). The coordinator's events
// only push here and arm one timer; at most one update per DASHBOARD.updateIntervalMs is built,
// serialised once and written to every page. The streams' caps are event-streams.ts's.
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  MAX_TRAIN_POINTS, MAX_WORKER_SAMPLES, thin,
  type EpochPoint, type RunHeader, type Snapshot, type StepPoint, type TrainPoint, type Update, type WorkerRow, type WorkerSample,
} from '@tabtrain/shared/dashboard-wire';
import type { Coordinator, EpochMetrics, StepRecord } from '../coordinator';
import { EventStreams, STREAM_LIMITS, type StreamLimits } from '../event-streams';
import { guarded } from '../guard';
import { json } from './http';
import { DASHBOARD, ms, round } from './settings';
import { epochEndPoint, type TrainCurve } from './train-curve';

/** The page's point of a step: its figures rounded, and where its wall time went. */
export function stepPoint(s: StepRecord): StepPoint {
  return {
    step: s.step, epoch: s.epoch, loss: round(s.loss), acc: round(s.acc), examples: s.examples,
    examplesPerSec: round(s.examples / Math.max(s.wallMs, 1e-3) * 1000), wallMs: ms(s.wallMs),
    computeMs: ms(s.computeMs), uploadMs: ms(s.uploadMs), waitMs: ms(Math.max(0, s.collectMs - s.computeMs - s.uploadMs)),
    aggregateMs: ms(s.aggregateMs), applyMs: ms(s.applyMs), broadcastMs: ms(s.broadcastMs), straggler: s.straggler, at: s.at,
  };
}

export class PageFeed {
  /** Updates serialised so far: one per update however many pages watch (tests read it). */
  serialisations = 0;
  private readonly streams: EventStreams;
  private readonly updateIntervalMs: number;
  private readonly steps: StepPoint[] = [];
  private readonly train: TrainPoint[] = [];
  private readonly logTail: string[] = [];
  private readonly samples: WorkerSample[] = [];
  private pending = { steps: [] as StepPoint[], epochs: [] as EpochPoint[], train: [] as TrainPoint[], log: [] as string[], samples: [] as WorkerSample[] };
  private seq = 0;
  private snapshotFrame: { seq: number; frame: Buffer } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private closed = false;

  /** `limits` shrink the stream caps and the update interval in tests; `onCount` hears the open streams' number. */
  constructor(
    private readonly coord: Coordinator,
    private readonly curve: TrainCurve,
    private readonly view: () => { header: RunHeader; workers: WorkerRow[] },
    limits: Partial<StreamLimits & { updateIntervalMs: number }>,
    onCount: (n: number) => void,
  ) {
    this.updateIntervalMs = limits.updateIntervalMs ?? DASHBOARD.updateIntervalMs;
    this.streams = new EventStreams({ ...STREAM_LIMITS, ...limits }, onCount, (name, fn) => guarded(coord.opts.log, name, fn));
  }

  // ---- what happened (on the training path: push, nothing more) ----

  addStep(p: StepPoint): void {
    this.pending.steps.push(p);
  }

  addSample(s: WorkerSample | null): void {
    if (s) this.pending.samples.push(s);
  }

  addTrain(p: TrainPoint | null): void {
    if (p) this.pending.train.push(p);
  }

  /** A resumed run's restored points go before the run's own. */
  restore(points: TrainPoint[]): void {
    this.pending.train.unshift(...points);
  }

  /** The epoch, and its last running point: the epoch's own figures at `end`, its last step. */
  endEpoch(e: EpochMetrics, end: number): void {
    // A partial epoch (a run cut short) ends off the sampling grid: its last point is the epoch's own figures.
    const last = this.pending.train.at(-1) ?? this.train.at(-1);
    if (e.steps > 0 && last?.step !== end) this.pending.train.push(epochEndPoint(e, end));
    this.pending.epochs.push({ ...e });
  }

  addLog(line: string): void {
    this.pending.log.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (this.pending.log.length > DASHBOARD.logLines) this.pending.log.shift();
  }

  // ---- the stream ----

  schedule(now = false): void {
    if (this.closed) return;
    if (now) {
      this.flush();
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, this.lastFlush + this.updateIntervalMs - performance.now());
    this.timer = setTimeout(guarded(this.coord.opts.log, 'dashboard flush', () => this.flush()), wait);
    this.timer.unref();
  }

  /** Publishes what happened since the last update: one object, one JSON.stringify, every page. */
  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.lastFlush = performance.now();
    const { steps, epochs, train, log, samples } = this.pending;
    this.pending = { steps: [], epochs: [], train: [], log: [], samples: [] };
    this.samples.push(...samples);
    if (this.samples.length > MAX_WORKER_SAMPLES) thin(this.samples);
    this.steps.push(...steps);
    if (this.steps.length > DASHBOARD.maxStepPoints) thin(this.steps);
    this.train.push(...train);
    if (this.train.length > MAX_TRAIN_POINTS) thin(this.train);
    this.logTail.push(...log);
    this.logTail.splice(0, Math.max(0, this.logTail.length - DASHBOARD.logLines));
    this.seq++;
    if (this.streams.size === 0) return;
    const { header, workers } = this.view();
    const update: Update = { seq: this.seq, header, workers, steps, epochs, train, log, samples };
    this.serialisations++;
    this.streams.send(Buffer.from(`event: update\ndata: ${JSON.stringify(update)}\n\n`));
  }

  /** The state as of the latest update, serialised once per update for every page that connects. */
  private snapshot(): Buffer {
    if (this.snapshotFrame?.seq !== this.seq) {
      const { header, workers } = this.view();
      // Epochs from the coordinator's history, which a resumed run restores from its checkpoint.
      // Before training starts, a resumed run's restored points are read off the coordinator.
      const train = this.curve.origin ? this.train : this.curve.restored();
      const s: Snapshot = { seq: this.seq, header, workers, steps: this.steps, epochs: this.coord.history, train, log: this.logTail, samples: this.samples };
      this.snapshotFrame = { seq: this.seq, frame: Buffer.from(`event: snapshot\ndata: ${JSON.stringify(s)}\n\n`) };
    }
    return this.snapshotFrame.frame;
  }

  open(req: IncomingMessage, res: ServerResponse): void {
    const address = req.socket.remoteAddress ?? '?';
    const refusal = this.closed ? 'the run is over' : this.streams.refusal(address);
    if (refusal) return json(res, 503, { error: refusal }, { 'retry-after': '5' });
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no', 'x-content-type-options': 'nosniff' });
    res.socket?.setNoDelay(true);
    // EventSource retries after this many ms when the coordinator restarts.
    res.write('retry: 2000\n\n');
    this.streams.add(res, address, this.snapshot());
  }

  /** Unsent bytes of all open event streams, and how many streams were closed for falling behind. */
  backlog(): { streams: number; bufferedBytes: number; dropped: number } {
    return { streams: this.streams.size, bufferedBytes: this.streams.bufferedBytes(), dropped: this.streams.dropped };
  }

  /** Sends the last update and ends every stream. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.streams.close();
  }
}
