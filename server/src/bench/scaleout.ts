// `tabtrain bench scaleout`: a real coordinator and N worker processes on loopback, N = 1, 2, 4, 8.
//
// Two kinds of compute:
//   synthetic  full-size model messages (AlexNet 187 MB, VGG-11 172 MB each way per worker per
//              step); the worker's compute is a sleep of --ms-per-example per example (default
//              d2l's V100, ~4,000 examples/s). Sleeping leaves the cores to communication, which is
//              what this measures. Same worker, protocol and coordinator code as a real run.
//   real       real tfjs-wasm compute on a small config (default alexnet-small); on a 2-core
//              machine this saturates at 2 workers, and the numbers say so.
// Strong scaling keeps the global batch at --batch (128); weak scaling keeps --per-worker-batch.
// Each run does --burn-in steps, then measures --steps steps from the coordinator's StepRecords.
import { loadavg, freemem } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { getModel, paramLayout } from '@tabtrain/shared';
import { planBytes, planSegments, type Compression } from '@tabtrain/shared/compress';
import { Coordinator, DEFAULTS, type StepRecord } from '../coordinator';
import { loadFashionMnist, type Dataset } from '../data';
import { spawnWorker } from '../cli';

export type Scaling = 'strong' | 'weak';
export type ComputeKind = 'synthetic' | 'real';

export interface ScaleoutOptions {
  kind: ComputeKind;
  models: string[];
  workers: number[];
  scaling: Scaling[];
  steps: number;
  burnIn: number;
  msPerExample: number;
  batch: number;
  perWorkerBatch: number;
  compress: Compression[];
  backend: string;
  log: (line: string) => void;
}

/** Means over the measured steps, in ms. */
export interface StepSplit {
  wall: number;
  /** Slowest shard's compute, as its worker measured it. */
  compute: number;
  /** Slowest shard's encode + send, as its worker measured it (send ends when its socket took the bytes). */
  upload: number;
  /** Coordinator time summing segments as they arrived (overlaps the upload) plus closing the sum. */
  aggregate: number;
  apply: number;
  /**
   * Encoding the new weights (end of step) plus shipping them and the shard (start of the next):
   * the part of the collect phase that is neither the straggler's compute nor its upload.
   */
  broadcast: number;
}

export interface ScaleoutRun {
  kind: ComputeKind;
  model: string;
  params: number;
  scaling: Scaling;
  compress: string;
  workers: number;
  batch: number;
  steps: number;
  examplesPerSec: number;
  /** examples/s ÷ (N × examples/s at N = 1) of the same series. */
  efficiency: number | null;
  split: StepSplit;
  /** Bytes the coordinator moved per step (in + out, all workers), measured at its sockets. */
  bytesPerStep: number;
  /** Gradient bytes one worker uploaded per step, measured. */
  uploadBytesPerWorker: number;
  /** Step time minus compute: what communication (and the coordinator's arithmetic) cost. */
  commMs: number;
  /** bytesPerStep at the memory-copy rate measured in this run: the floor for commMs. */
  boundMs: number;
  commOverBound: number;
  /**
   * CPU the coordinator's process used per step (user + system, the kernel's socket copies
   * included). With workers on other machines this, not the wall time, is what the coordinator costs.
   */
  coordinatorCpuMs: number;
  loadAvg: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** A plain memory copy of a model-sized vector, GB/s (best of 5): the physical limit of this run. */
export function memcpyGBs(floats: number): number {
  const a = new Float32Array(floats).fill(1), b = new Float32Array(floats);
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    b.set(a);
    const dt = performance.now() - t0;
    if (i > 0) best = Math.min(best, dt);
  }
  return (4 * floats) / (best / 1000) / 1e9;
}

export async function scaleout(o: ScaleoutOptions, data: Dataset = loadFashionMnist()): Promise<{ runs: ScaleoutRun[]; memcpyGBs: number }> {
  const copyRate = memcpyGBs(paramLayout(getModel(o.models[0])).total);
  o.log(`memory copy (same run): ${copyRate.toFixed(2)} GB/s`);
  const runs: ScaleoutRun[] = [];
  for (const model of o.models) {
    for (const compress of o.compress) {
      for (const scaling of o.scaling) {
        const series: ScaleoutRun[] = [];
        for (const n of o.workers) {
          const r = await runOne(o, data, model, compress, scaling, n, copyRate);
          r.efficiency = series.length && series[0].workers === 1 ? r.examplesPerSec / (n * series[0].examplesPerSec) : n === 1 ? 1 : null;
          series.push(r);
          runs.push(r);
          o.log(summaryLine(r));
        }
      }
    }
  }
  return { runs, memcpyGBs: copyRate };
}

export function summaryLine(r: ScaleoutRun): string {
  const s = r.split;
  return `${r.kind} ${r.model} ${r.compress} ${r.scaling} N=${r.workers}: ${r.examplesPerSec.toFixed(1)} examples/s` +
    `${r.efficiency === null ? '' : `, efficiency ${(100 * r.efficiency).toFixed(0)}%`}, batch ${r.batch}, step ${s.wall.toFixed(0)} ms = ` +
    `compute ${s.compute.toFixed(0)} + upload ${s.upload.toFixed(0)} + broadcast ${s.broadcast.toFixed(0)} + aggregate ${s.aggregate.toFixed(0)} + apply ${s.apply.toFixed(0)}; ` +
    `coordinator moved ${(r.bytesPerStep / 1e6).toFixed(0)} MB/step using ${r.coordinatorCpuMs.toFixed(0)} ms of CPU, comm ${r.commMs.toFixed(0)} ms = ${r.commOverBound.toFixed(1)}× the memory-copy bound`;
}

async function runOne(o: ScaleoutOptions, data: Dataset, model: string, compress: Compression, scaling: Scaling, n: number, copyRate: number): Promise<ScaleoutRun> {
  const spec = getModel(model);
  const { params, total } = paramLayout(spec);
  const batch = scaling === 'strong' ? o.batch : o.perWorkerBatch * n;
  const need = (n * 3 + 4) * 4 * total; // worker: gradient, weights, frames in flight; coordinator: sum, weights, frames, bodies
  if (freemem() < need) o.log(`warning: ${(freemem() / 2 ** 30).toFixed(1)} GiB free, this run may need ${(need / 2 ** 30).toFixed(1)} GiB`);
  const coord = new Coordinator({
    model, epochs: 1, batch, seed: 42, port: 0, host: '127.0.0.1', minWorkers: n, maxSteps: o.burnIn + o.steps,
    balance: 'equal', evalExamples: 1, helloTimeoutMs: 120_000, minDeadlineMs: 600_000, compress,
    log: () => {}, progress: () => {},
  }, data);
  const port = await coord.listen();
  const url = `ws://127.0.0.1:${port}/ws`;
  const args = o.kind === 'synthetic' ? ['--synthetic-ms-per-example', String(o.msPerExample)] : ['--backend', o.backend];
  const procs: ChildProcess[] = Array.from({ length: n }, () => spawnWorker(url, [...args, '--quiet'], 'pipe'));
  const errors: string[] = [];
  for (const p of procs) p.stderr?.on('data', (d: Buffer) => errors.push(d.toString()));
  const marks: { rec: StepRecord; t: number; bytes: number; up: number; cpu: number }[] = [];
  const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const bytesNow = () => coord.status().workers.reduce((a, w) => ({ all: a.all + w.bytesIn + w.bytesOut, up: a.up + w.bytesIn }), { all: 0, up: 0 });
  coord.events.on('step', (rec: StepRecord) => { const b = bytesNow(); marks.push({ rec, t: performance.now(), bytes: b.all, up: b.up, cpu: cpuMs() }); });
  const load = loadavg()[0];
  try {
    await coord.train();
  } finally {
    await coord.close();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  }
  if (marks.length < o.burnIn + o.steps) throw new Error(`${model} N=${n}: only ${marks.length} steps ran${errors.length ? `; worker said: ${errors.join('').slice(0, 400)}` : ''}`);
  const start = marks[o.burnIn - 1] ?? { t: marks[0].t - marks[0].rec.wallMs, bytes: 0, up: 0, cpu: marks[0].cpu };
  const measured = marks.slice(o.burnIn);
  const end = measured[measured.length - 1];
  const seconds = (end.t - start.t) / 1000;
  const examples = measured.reduce((a, m) => a + m.rec.examples, 0);
  const split: StepSplit = {
    wall: mean(measured.map((m) => m.rec.wallMs)),
    compute: mean(measured.map((m) => m.rec.computeMs)),
    upload: mean(measured.map((m) => m.rec.uploadMs)),
    aggregate: mean(measured.map((m) => m.rec.aggregateMs + (m.rec.foldMs ?? 0))),
    apply: mean(measured.map((m) => m.rec.applyMs)),
    broadcast: mean(measured.map((m) => m.rec.broadcastMs + Math.max(0, m.rec.collectMs - m.rec.computeMs - m.rec.uploadMs))),
  };
  const bytesPerStep = (end.bytes - start.bytes) / measured.length;
  const commMs = (seconds * 1000) / measured.length - split.compute;
  const boundMs = (bytesPerStep / (copyRate * 1e9)) * 1000;
  return {
    kind: o.kind, model, params: total, scaling, compress: compress.mode === 'powersgd' ? `powersgd-r${compress.rank}` : compress.mode, workers: n, batch,
    steps: measured.length, examplesPerSec: examples / seconds, efficiency: null, split, bytesPerStep,
    uploadBytesPerWorker: (end.up - start.up) / measured.length / n, commMs, boundMs, commOverBound: commMs / boundMs,
    coordinatorCpuMs: (end.cpu - start.cpu) / measured.length, loadAvg: load,
  };
}

/** Bytes per worker per step for each compression, from the plan (what the run measures at the socket). */
export function planBytesTable(model: string, modes: Compression[]): { mode: string; bytes: number; ratio: number }[] {
  const { params, total } = paramLayout(getModel(model));
  const fp32 = planBytes(planSegments(params, total, { mode: 'none', rank: 0 }), total);
  return modes.map((c) => { const b = planBytes(planSegments(params, total, c), total); return { mode: c.mode, bytes: b, ratio: b / fp32 }; });
}

export { DEFAULTS };
