// The runs of `bench scaleout` on loopback: a coordinator in this process and N worker processes,
// the step measured from its StepRecords, communication against this machine's memory-copy rate.
import { loadavg, freemem } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { getModel, paramLayout } from '@tabtrain/shared';
import { uploadBytes, type Compression } from '@tabtrain/shared/compress';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import { Coordinator, type StepRecord } from '../coordinator';
import type { Dataset } from '../data';
import { spawnWorker } from '../spawn-worker';
import { ROOT } from './linked';
import { benchName, chosenModes, coordinatorCompression } from './scaleout-matrix';
import type { BenchCompression, ScaleoutOptions, ScaleoutRun, Scaling, StepSplit } from './scaleout-types';
import { workerCommand } from './worker-costs';

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

export function summaryLine(r: ScaleoutRun): string {
  const s = r.split;
  return `${r.kind} ${r.model} ${r.compress}${r.chose !== undefined ? ` (chose ${r.chose})` : ''} ${r.scaling} N=${r.workers}: ${r.examplesPerSec.toFixed(1)} examples/s` +
    `${r.efficiency === null ? '' : `, efficiency ${(100 * r.efficiency).toFixed(0)}%`}, batch ${r.batch}, step ${s.wall.toFixed(0)} ms = ` +
    `compute ${s.compute.toFixed(0)} + upload ${s.upload.toFixed(0)} + broadcast ${s.broadcast.toFixed(0)} + aggregate ${s.aggregate.toFixed(0)} + apply ${s.apply.toFixed(0)}; ` +
    `coordinator moved ${(r.bytesPerStep / 1e6).toFixed(0)} MB/step using ${r.coordinatorCpuMs.toFixed(0)} ms of CPU, comm ${r.commMs.toFixed(0)} ms = ${r.commOverBound.toFixed(1)}× the memory-copy bound`;
}

/** One loopback run: N worker processes on a coordinator in this process, burn-in, then the measured steps. */
export async function runLoopback(o: ScaleoutOptions, data: Dataset, model: string, compress: BenchCompression, scaling: Scaling, n: number, copyRate: number, costs: WorkerCosts[] | null): Promise<ScaleoutRun> {
  const spec = getModel(model);
  const { params, total } = paramLayout(spec);
  const batch = scaling === 'strong' ? o.batch : o.perWorkerBatch * n;
  const need = (n * 3 + 4) * 4 * total; // worker: gradient, weights, frames in flight; coordinator: sum, weights, frames, bodies
  if (freemem() < need) o.log(`warning: ${(freemem() / 2 ** 30).toFixed(1)} GiB free, this run may need ${(need / 2 ** 30).toFixed(1)} GiB`);
  const coord = new Coordinator({
    model, epochs: 1, batch, seed: 42, port: 0, host: '127.0.0.1', minWorkers: n, maxSteps: o.burnIn + o.steps,
    balance: o.balance, applyThreads: o.applyThreads, evalExamples: 1, helloTimeoutMs: 120_000, minDeadlineMs: 600_000, ...coordinatorCompression(compress),
    // --compress auto's choices are the one thing of the coordinator's log a row needs to be read.
    log: (line) => { if (line.startsWith('compression ')) o.log(`  ${model} N=${n}: ${line}`); }, progress: () => {},
  }, data);
  const port = await coord.listen();
  const url = `ws://127.0.0.1:${port}/ws`;
  const args = o.kind === 'synthetic' ? ['--synthetic-ms-per-example', String(o.msPerExample)] : ['--backend', o.backend];
  const procs: ChildProcess[] = Array.from({ length: n }, () => costs
    ? spawn(process.execPath, workerCommand(o, url, costs).args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
    : spawnWorker(url, [...args, '--quiet'], 'pipe'));
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
    kind: o.kind, model, params: total, scaling, compress: benchName(compress), ...(compress.mode === 'auto' ? { chose: chosenModes(measured.map((m) => m.rec.mode)) } : {}), workers: n, batch,
    steps: measured.length, examplesPerSec: examples / seconds, efficiency: null, split, bytesPerStep,
    uploadBytesPerWorker: (end.up - start.up) / measured.length / n, commMs, boundMs, commOverBound: commMs / boundMs,
    coordinatorCpuMs: (end.cpu - start.cpu) / measured.length, loadAvg: load, workerCpu: o.kind === 'synthetic' ? o.workerCpu : undefined,
  };
}

/** Bytes per worker per step for each compression, from the plan (what the run measures at the socket). */
export function planBytesTable(model: string, modes: Compression[]): { mode: string; bytes: number; ratio: number }[] {
  const { params, total } = paramLayout(getModel(model));
  const fp32 = uploadBytes(params, total, { mode: 'none', rank: 0 });
  return modes.map((c) => { const b = uploadBytes(params, total, c); return { mode: c.mode, bytes: b, ratio: b / fp32 }; });
}
