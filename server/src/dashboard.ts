// The coordinator's window for people and for monitoring: the live dashboard's data, the status
// API, Prometheus metrics, run control and the JSONL metrics log. One Dashboard per Coordinator;
// it only listens to the coordinator's events and reads its status, so training never waits on it.
//
//   GET  /dashboard      the page (client/dashboard.html, built by Vite into the static folder)
//   GET  /api/status     JSON: the coordinator's status() plus the run header and the workers table
//   GET  /api/events     server-sent events: a snapshot, then coalesced updates (see dashboard-wire.ts)
//   GET  /metrics        Prometheus text format (prom-client, a registry of this coordinator's own)
//   GET  /api/log        the --log JSONL file as written so far (every step, never thinned); 404 without --log
//   POST /api/control    {"action": "pause" | "resume" | "stop" | "export"}, `Authorization: Bearer <--admin-token>`
//
// Why the stream costs training nothing: event listeners only push to arrays and arm one timer;
// at most one update per DASHBOARD.updateIntervalMs is built, serialised once and written to every
// page; a page that cannot keep up is dropped (its EventSource reconnects and gets a snapshot), and
// the streams are capped in number and in unsent bytes (event-streams.ts).
//
// Each job has its module in window/: page-feed.ts (the event stream), train-curve.ts (the running
// train curve, a resumed run's origin), status.ts (/api/status, the header and workers table),
// metrics.ts (Prometheus), control.ts (/api/control), run-log.ts (--log). This class wires them to
// the coordinator's events and routes.
import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resolve } from 'node:path';
import type { ControlMode } from '@tabtrain/shared/dashboard-wire';
import type { Checkpointer } from './checkpoint';
import type { StreamLimits } from './event-streams';
import type { Coordinator, EpochMetrics, RunState, StepRecord } from './coordinator';
import { DEFAULT_STATIC_DIR } from './static';
import { RunControl } from './window/control';
import { json, methodNotAllowed } from './window/http';
import { RunMetrics } from './window/metrics';
import { PageFeed, stepPoint } from './window/page-feed';
import { RunLog } from './window/run-log';
import { TERMINAL } from './window/settings';
import { StatusView, perEpoch, runConfig, totalSteps } from './window/status';
import { TrainCurve } from './window/train-curve';
import { WorkerSamples } from './window/worker-samples';

export { DASHBOARD } from './window/settings';

export class Dashboard {
  readonly registry: RunMetrics['registry'];
  readonly control: ControlMode;
  /** The run's checkpoints (--checkpoint), for /api/status's `checkpoint` and the page's warning. */
  checkpoint: Checkpointer | null = null;
  private readonly metrics = new RunMetrics();
  private readonly curve: TrainCurve;
  private readonly statusView: StatusView;
  private readonly feed: PageFeed;
  private readonly runControl: RunControl;
  private readonly runLog: RunLog;
  private readonly samples: WorkerSamples;
  private closed = false;
  private readonly listeners: [string, Parameters<Coordinator['events']['on']>[1]][];

  /** `limits` shrink the stream caps and the update interval in tests. */
  constructor(private readonly coord: Coordinator, limits: Partial<StreamLimits & { updateIntervalMs: number }> = {}) {
    this.control = coord.opts.adminToken ? 'admin' : 'read-only';
    this.registry = this.metrics.registry;
    this.curve = new TrainCurve(coord);
    this.statusView = new StatusView(coord, {
      control: this.control, fullLog: () => this.runLog.writing, checkpoint: () => this.checkpoint, origin: () => this.curve.base(),
    });
    this.feed = new PageFeed(coord, this.curve, () => this.statusView.view(), limits, (n) => this.metrics.streams(n));
    this.runControl = new RunControl(coord);
    this.runLog = new RunLog(coord);
    this.samples = new WorkerSamples(coord);
    const r = coord.run;
    this.runLog.write({ type: 'run', model: r.model, modelHash: r.modelHash, paramCount: r.paramCount, config: runConfig(coord), stepsPerEpoch: perEpoch(coord), totalSteps: totalSteps(coord) });
    this.listeners = [
      ['step', (s: StepRecord) => this.onStep(s)],
      ['epoch', (e: EpochMetrics) => this.onEpoch(e)],
      ['log', (line: string) => this.onLog(line)],
      ['state', (s: RunState) => this.onState(s)],
      ['workers', () => this.feed.schedule()],
    ];
    for (const [name, fn] of this.listeners) coord.events.on(name, fn);
    coord.addRoutes((req, res, path) => this.handle(req, res, path));
    coord.events.once('close', () => this.close());
  }

  /** Updates serialised so far: one per update however many pages watch (tests read it). */
  get serialisations(): number {
    return this.feed.serialisations;
  }

  // ---- events (on the training path: push and arm a timer, nothing more) ----

  private onStep(s: StepRecord): void {
    // train() changes state before its first step; this is for a coordinator driven otherwise.
    if (!this.curve.origin) this.fix(s.step - 1);
    this.feed.addTrain(this.curve.add(s));
    const p = stepPoint(s);
    this.feed.addStep(p);
    this.statusView.stepDone(s.wallMs);
    this.metrics.step(s, p.examplesPerSec);
    this.runLog.write({ type: 'step', ...s });
    this.sample(s.at);
    this.feed.schedule();
  }

  /** The workers, for the per-worker charts: to the pages and the --log file (so `view` draws them too). */
  private sample(at: number, force = false): void {
    const sample = this.samples.take(at, force);
    if (!sample) return;
    this.feed.addSample(sample);
    this.runLog.write({ type: 'workers', at: sample.at, workers: sample.workers });
  }

  private onEpoch(e: EpochMetrics): void {
    this.feed.endEpoch(e, (e.epoch - 1) * perEpoch(this.coord) + e.steps);
    this.metrics.epoch(e);
    this.runLog.write({ type: 'epoch', ...e });
    this.feed.schedule();
  }

  private onLog(line: string): void {
    this.feed.addLog(line);
    this.feed.schedule();
  }

  private onState(state: RunState): void {
    if (!this.curve.origin) this.fix(this.coord.step);
    // The run's last word on its workers: a short run still has a sample to draw.
    if (TERMINAL.includes(state)) this.sample(Date.now(), true);
    this.runLog.write({ type: 'state', state, reason: this.coord.stateReason });
    // The final state goes out at once: the coordinator may close right after it.
    this.feed.schedule(TERMINAL.includes(state));
  }

  /** The origin, fixed from now on; a resumed run's restored epochs become points of the running curves. */
  private fix(step: number): void {
    this.feed.restore(this.curve.fix(step));
  }

  /** Unsent bytes of all open event streams, and how many streams were closed for falling behind. */
  streamBacklog(): { streams: number; bufferedBytes: number; dropped: number } {
    return this.feed.backlog();
  }

  /** GET /api/status: the coordinator's status() (whatever it grows), the header, the table's rows. */
  status() {
    return this.statusView.status();
  }

  // ---- HTTP ----

  /** Answers the dashboard's routes; false for any other path (the coordinator serves those). */
  handle(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const get = req.method === 'GET' || req.method === 'HEAD';
    switch (path) {
      case '/api/status':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        json(res, 200, this.status());
        return true;
      case '/api/events':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        // HEAD gets the stream's headers and no body: a stream that never ends has no HEAD.
        if (req.method === 'HEAD') { res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' }); res.end(); return true; }
        this.feed.open(req, res);
        return true;
      case '/metrics':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        this.metrics.serve(res, this.statusView.view());
        return true;
      case '/api/log':
        if (!get) return methodNotAllowed(res, 'GET, HEAD');
        this.runLog.serve(req, res);
        return true;
      case '/api/control':
        if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
        this.runControl.handle(req, res).catch((e: Error) => { if (!res.headersSent) json(res, 500, { error: e.message }); else res.destroy(); });
        return true;
      case '/dashboard/':
        // The page's asset URLs are relative: they resolve from /dashboard, not /dashboard/.
        res.writeHead(301, { location: '/dashboard' });
        res.end();
        return true;
      case '/dashboard': {
        const root = this.coord.opts.staticDir ?? DEFAULT_STATIC_DIR;
        if (existsSync(resolve(root, 'dashboard.html'))) return false;
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`the dashboard page is not built: run \`npm run build:client\` (looked in ${root}). /api/status and /metrics work without it.\n`);
        return true;
      }
      default:
        return false;
    }
  }

  /** Sends the last update, ends every stream and closes the log. The coordinator calls it on close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.feed.close();
    for (const [name, fn] of this.listeners) this.coord.events.off(name, fn);
    this.runControl.close();
    this.runLog.close();
  }
}
