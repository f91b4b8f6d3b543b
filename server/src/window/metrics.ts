// GET /metrics: the run in Prometheus text format (prom-client), from a registry of this
// coordinator's own. Step and epoch figures are set as they happen; the rest (state, workers,
// bytes) is read off the coordinator's view at scrape time, not on the training path.
import type { ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { WORKER_STATE, type RunHeader, type WorkerRow } from '@tabtrain/shared/dashboard-wire';
import type { EpochMetrics, RunState, StepRecord } from '../coordinator';

export class RunMetrics {
  readonly registry = new Registry();
  private readonly m;

  constructor() {
    this.m = makeMetrics(this.registry);
  }

  /** A step: counters, the latest step's figures, where its wall time went. */
  step(s: StepRecord, examplesPerSec: number): void {
    const m = this.m;
    m.steps.inc();
    m.examples.inc(s.examples);
    m.stepSeconds.observe(s.wallMs / 1000);
    m.loss.set(s.loss);
    m.acc.set(s.acc);
    m.examplesPerSec.set(examplesPerSec);
    for (const phase of ['collect', 'compute', 'upload', 'aggregate', 'apply', 'broadcast'] as const) {
      m.phase.set({ phase }, s[`${phase}Ms`] / 1000);
    }
  }

  epoch(e: EpochMetrics): void {
    this.m.epochLoss.set(e.loss);
    this.m.epochAcc.set(e.trainAcc);
    if (e.testAcc !== null) this.m.testAcc.set(e.testAcc);
    this.m.epochExamplesPerSec.set(e.examplesPerSec);
  }

  /** Dashboard pages connected to /api/events. */
  streams(n: number): void {
    this.m.streams.set(n);
  }

  /** Answers a scrape: the gauges read off `view` now, then the registry's text. */
  serve(res: ServerResponse, view: { header: RunHeader; workers: WorkerRow[] }): void {
    this.refreshGauges(view);
    this.registry.metrics().then(
      (text) => { res.writeHead(200, { 'content-type': this.registry.contentType, 'cache-control': 'no-store' }); res.end(text); },
      (e: Error) => { res.writeHead(500, { 'content-type': 'text/plain' }); res.end(`metrics failed: ${e.message}\n`); },
    );
  }

  /** Sets the gauges that are read off the coordinator at scrape time, not on the training path. */
  private refreshGauges({ header, workers }: { header: RunHeader; workers: WorkerRow[] }): void {
    const m = this.m;
    m.step.set(header.step);
    m.epoch.set(header.epoch);
    for (const s of ['waiting', 'running', 'paused', 'evaluating', 'finished', 'stopped', 'failed'] satisfies RunState[]) m.state.set({ state: s }, s === header.state ? 1 : 0);
    for (const s of Object.values(WORKER_STATE)) m.workers.set({ state: s }, workers.filter((w) => w.state === s).length);
    m.bytes.set({ direction: 'in' }, workers.reduce((a, w) => a + w.bytesIn, 0));
    m.bytes.set({ direction: 'out' }, workers.reduce((a, w) => a + w.bytesOut, 0));
    m.bytes.set({ direction: 'total' }, header.totalBytes);
    m.compressionPredicted.reset();
    for (const p of header.compressionPrices ?? []) m.compressionPredicted.set({ mode: p.mode }, p.ms / 1000);
    m.compression.reset();
    if (header.compression) m.compression.set({ mode: header.compression.split(' (')[0] }, 1);
    if (header.commShare !== undefined && header.commShare !== null) m.commShare.set(header.commShare);
    const per = [m.wExamplesPerSec, m.wComputeSec, m.wUploadSec, m.wShard, m.wBytesIn, m.wBytesOut, m.wShards, m.wStraggler];
    // Lost workers leave the per-worker series: tabs come and go, series must not pile up.
    for (const g of per) g.reset();
    for (const w of workers) {
      if (w.state === WORKER_STATE.lost) continue;
      const l = { worker: String(w.id), worker_id: w.workerId, kind: w.kind, backend: w.backend };
      m.wExamplesPerSec.set(l, w.examplesPerSec);
      m.wComputeSec.set(l, w.computeMs / 1000);
      m.wUploadSec.set(l, w.uploadMs / 1000);
      m.wShard.set(l, w.shardSize);
      m.wBytesIn.set(l, w.bytesIn);
      m.wBytesOut.set(l, w.bytesOut);
      m.wShards.set(l, w.shardsDone);
      m.wStraggler.set(l, w.straggler ? 1 : 0);
    }
  }
}

function makeMetrics(registry: Registry) {
  const registers = [registry];
  // Process CPU, memory and event-loop lag: the lag shows whether the coordinator keeps up.
  collectDefaultMetrics({ register: registry });
  const workerLabels = ['worker', 'worker_id', 'kind', 'backend'] as const;
  return {
    steps: new Counter({ name: 'tabtrain_steps_total', help: 'Training steps completed by this coordinator process', registers }),
    step: new Gauge({ name: 'tabtrain_step', help: 'Position in the run: steps done since step 0 (a resumed run starts at its checkpoint)', registers }),
    epoch: new Gauge({ name: 'tabtrain_epoch', help: 'Epoch in progress, 1-based', registers }),
    examples: new Counter({ name: 'tabtrain_examples_total', help: 'Training examples processed by this coordinator process', registers }),
    examplesPerSec: new Gauge({ name: 'tabtrain_examples_per_second', help: 'Examples per second of the latest step (examples / step wall time)', registers }),
    epochExamplesPerSec: new Gauge({ name: 'tabtrain_epoch_examples_per_second', help: "Examples per second of the latest epoch, d2l's figure", registers }),
    loss: new Gauge({ name: 'tabtrain_train_loss', help: 'Mean training loss of the latest step', registers }),
    acc: new Gauge({ name: 'tabtrain_train_accuracy', help: 'Training accuracy of the latest step', registers }),
    epochLoss: new Gauge({ name: 'tabtrain_epoch_train_loss', help: 'Mean training loss of the latest epoch', registers }),
    epochAcc: new Gauge({ name: 'tabtrain_epoch_train_accuracy', help: 'Training accuracy of the latest epoch', registers }),
    testAcc: new Gauge({ name: 'tabtrain_test_accuracy', help: 'Test accuracy at the end of the latest full epoch', registers }),
    stepSeconds: new Histogram({ name: 'tabtrain_step_seconds', help: 'Wall time of one step', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers }),
    phase: new Gauge({ name: 'tabtrain_step_phase_seconds', help: "Where the latest step's wall time went (collect spans compute and upload)", labelNames: ['phase'] as const, registers }),
    state: new Gauge({ name: 'tabtrain_run_state', help: 'Run state: 1 for the current one', labelNames: ['state'] as const, registers }),
    workers: new Gauge({ name: 'tabtrain_workers', help: 'Workers by state', labelNames: ['state'] as const, registers }),
    bytes: new Gauge({ name: 'tabtrain_bytes', help: 'Bytes moved to and from every worker that ever joined', labelNames: ['direction'] as const, registers }),
    compression: new Gauge({ name: 'tabtrain_compression', help: 'How gradients travel now: 1 for the mode in use (fp32, fp16, int8, powersgd rR)', labelNames: ['mode'] as const, registers }),
    compressionPredicted: new Gauge({ name: 'tabtrain_compression_predicted_step_seconds', help: "--compress auto: each mode's predicted step at the last choice (cost model plus what the mode's steps took beyond it)", labelNames: ['mode'] as const, registers }),
    commShare: new Gauge({ name: 'tabtrain_step_comm_share', help: 'Share of the latest step not spent computing (moving bytes, the coordinator\'s arithmetic): 1 - compute / wall', registers }),
    streams: new Gauge({ name: 'tabtrain_dashboard_streams', help: 'Dashboard pages connected to /api/events', registers }),
    wExamplesPerSec: new Gauge({ name: 'tabtrain_worker_examples_per_second', help: "A worker's measured training examples per second (EMA; sizes its shards)", labelNames: workerLabels, registers }),
    wComputeSec: new Gauge({ name: 'tabtrain_worker_compute_seconds', help: "A worker's compute time on its latest shard", labelNames: workerLabels, registers }),
    wUploadSec: new Gauge({ name: 'tabtrain_worker_upload_seconds', help: "A worker's encode + send time on its latest shard", labelNames: workerLabels, registers }),
    wShard: new Gauge({ name: 'tabtrain_worker_shard_size', help: "Examples in a worker's latest shard", labelNames: workerLabels, registers }),
    wBytesIn: new Gauge({ name: 'tabtrain_worker_received_bytes', help: 'Bytes the coordinator received from a worker', labelNames: workerLabels, registers }),
    wBytesOut: new Gauge({ name: 'tabtrain_worker_sent_bytes', help: 'Bytes the coordinator sent to a worker', labelNames: workerLabels, registers }),
    wShards: new Gauge({ name: 'tabtrain_worker_shards', help: 'Shards a worker has returned', labelNames: workerLabels, registers }),
    wStraggler: new Gauge({ name: 'tabtrain_worker_straggler', help: '1 for the worker the latest step waited for', labelNames: workerLabels, registers }),
  };
}
