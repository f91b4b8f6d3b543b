// `tabtrain bench scaleout`: a real coordinator and N worker processes, N = 1, 2, 4, 8, on loopback
// or (--link RATE) each in its own network namespace behind an emulated link (netns.ts, linked.ts).
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
//
// Workers' own CPU work (--worker-cpu): 'real' (loopback's default) runs `tabtrain worker
// --synthetic-ms-per-example`, whose copies, encodes and decodes are real work on this machine's
// cores; 'sleep' (the default with --link) runs synthetic worker machines (shared/src/synthetic.ts)
// that sleep for that work, for as long as it took when measured once here, so that N workers
// stand for N machines instead of contending with the coordinator for two cores.
import { loadavg, freemem } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { getModel, paramLayout } from '@tabtrain/shared';
import { uploadBytes, type Compression } from '@tabtrain/shared/compress';
import { PCIE_BYTES_PER_MS } from '@tabtrain/shared/device-costs';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import { Coordinator, DEFAULTS, type StepRecord } from '../coordinator';
import { loadFashionMnist, type Dataset } from '../data';
import { spawnWorker } from '../spawn-worker';
import { NetLab, formatRate, payloadBytesPerSec, TCP_PAYLOAD_FRACTION } from './netns';
import { cliWorker, probeLink, ROOT, runInLab, tsArgs, type Command, type Probe, type StepMark } from './linked';
import type { HostOptions } from './coord-host';

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
  /** Synthetic workers: their CPU work done for real ('real') or slept for its measured time ('sleep'). */
  workerCpu: WorkerCpu;
  /** Emulated links, one series of runs each; null: loopback. */
  links: LinkConfig[] | null;
  /** How the coordinator splits each step: even shards over every worker, or the cost model's plan (--balance cost). */
  balance: 'equal' | 'cost';
  log: (line: string) => void;
}

export type WorkerCpu = 'real' | 'sleep';

/** The synthetic worker machine: shared/src/synthetic.ts run as a program. */
const SYNTHETIC = 'shared/src/synthetic.ts';

/** Measures, in a fresh process of its own, the worker CPU work of one configuration (synthetic.ts measure). */
function measureWorkerCosts(model: string, c: Compression): Promise<WorkerCosts> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, tsArgs(SYNTHETIC, ['measure', model, c.mode, String(c.rank)]), { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    p.once('error', reject);
    p.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`measuring the worker's CPU work for ${model}/${c.mode} failed (exit ${code})`));
      resolve(JSON.parse(out.trim().split('\n').pop()!) as WorkerCosts);
    });
  });
}

export interface LinkConfig {
  /** Each worker's link, bits/s. */
  workerBits: number;
  /** The coordinator's link, shared by all workers, bits/s. */
  coordinatorBits: number;
  rttMs: number;
}

/** Figures of a run through emulated links (medians over the measured steps). */
export interface LinkFigures {
  workerBits: number;
  coordinatorBits: number;
  rttMs: number;
  /** netem delayed the packets (false where the kernel has no netem: rate only). */
  rttApplied: boolean;
  /** TCP between the coordinator's and worker 0's namespaces, measured before the series. */
  probe: Probe;
  /** Median time between consecutive steps. */
  stepMs: number;
  /** Median of the slowest shard's compute (as its worker measured it): the compute bound. */
  computeMs: number;
  /** Payload bytes per step through the coordinator's link, into and out of the coordinator. */
  coordinatorInBytes: number;
  coordinatorOutBytes: number;
  /** The same for the worker whose link carried the most in either direction. */
  workerInBytes: number;
  workerOutBytes: number;
  /** Each direction's bytes ÷ the link's TCP payload rate; a link's bound is its busier direction. */
  coordinatorInMs: number;
  coordinatorOutMs: number;
  workerInMs: number;
  workerOutMs: number;
  /** max(coordinator link, busiest worker link): the link bound (a full-duplex link moves both directions at once). */
  linkBoundMs: number;
  /** max(compute bound, link bound). */
  boundMs: number;
  overBound: number;
  /** Synthetic machines: their own per-step work, slept (workerOwnMs), and the step ÷ max(compute + it, link). */
  workerOwnMs?: number;
  overOwnBound?: number;
  /**
   * compute + the busiest link's bytes in + out ÷ its rate: the floor of a step that overlaps
   * neither the two directions nor compute with communication (as this protocol's steps don't).
   */
  serialMs: number;
  overSerial: number;
  /** Coordinator process CPU (user + system) per step, median, and its share of the step. */
  coordinatorCpuMs: number;
  coordinatorCpuShare: number;
  /** This machine's CPUs busy over the measured steps (all processes, other users' too, and the kernel), 0–1. */
  machineBusy: number;
  /** The coordinator's CPU was ≥ 80% busy over the step: it, not the link, set the pace. */
  coordinatorCpuBound: boolean;
  /**
   * The machine's CPUs were ≥ 90% busy and the step ≥ 1.5× its serial floor: the processes of the
   * run waited for CPU (this machine's cores are shared with every worker, and with other users).
   */
  machineCpuBound: boolean;
  /** CPU of all worker processes per step, summed (median): their network work, and whatever of theirs is not slept. */
  workersCpuMs: number;
  /**
   * Of the bytes the coordinator's interface sent per step, the share that went out while gradients
   * were coming in (linked.ts Overlap; median over the measured steps): ~0 when the two directions
   * take turns, near 1 − 1/segments when a pipelined step overlaps them. Absent where not sampled.
   */
  sentDuringUpShare?: number;
  /** Coordinator log lines of workers that closed during the run (the row is flagged). */
  lost?: string[];
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
  /** Runs through emulated links (--link). */
  link?: LinkFigures;
  /** What the synthetic workers did with their own CPU work. */
  workerCpu?: WorkerCpu;
}

/** A row whose coordinator was at least this busy is flagged: its CPU, not the link, was the limit. */
export const CPU_BOUND_SHARE = 0.8;
/** A row whose machine was at least this busy, and whose step was far from its floor, is flagged too. */
export const MACHINE_BUSY = 0.9;

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

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

export interface ScaleoutResult {
  runs: ScaleoutRun[];
  memcpyGBs: number;
  /** Per (model, compression): the worker CPU work the synthetic machines slept for (--worker-cpu sleep). */
  workerCosts: WorkerCosts[];
}

export async function scaleout(o: ScaleoutOptions, data: Dataset = loadFashionMnist()): Promise<ScaleoutResult> {
  const copyRate = memcpyGBs(paramLayout(getModel(o.models[0])).total);
  o.log(`memory copy (same run): ${copyRate.toFixed(2)} GB/s`);
  const costs = new Map<string, WorkerCosts>();
  if (o.kind === 'synthetic' && o.workerCpu === 'sleep') {
    for (const model of o.models) for (const c of o.compress) {
      const w = await measureWorkerCosts(model, c);
      costs.set(costKey(model, c), w);
      o.log(`worker CPU work measured on this machine (${model}, ${c.mode}), slept by each synthetic worker: ${describeCosts(w, paramLayout(getModel(model)).total)}`);
    }
  }
  if (o.links) return { runs: await linkedSeries(o, costs), memcpyGBs: copyRate, workerCosts: [...costs.values()] };
  const runs: ScaleoutRun[] = [];
  for (const model of o.models) {
    for (const compress of o.compress) {
      for (const scaling of o.scaling) {
        const series: ScaleoutRun[] = [];
        for (const n of o.workers) {
          const r = await runOne(o, data, model, compress, scaling, n, copyRate, costs.get(costKey(model, compress)) ?? null);
          r.efficiency = series.length && series[0].workers === 1 ? r.examplesPerSec / (n * series[0].examplesPerSec) : n === 1 ? 1 : null;
          series.push(r);
          runs.push(r);
          o.log(summaryLine(r));
        }
      }
    }
  }
  return { runs, memcpyGBs: copyRate, workerCosts: [...costs.values()] };
}

const costKey = (model: string, c: Compression) => `${model}/${c.mode}/${c.rank}`;

/**
 * A synthetic machine's own work per step, slept for its measured time: its CPU work (copying or
 * decoding and applying what came, making the next Q, encoding, hashing every verifyEvery steps)
 * and the upload of the new weights to its GPU. A step waits for it besides the GPU's compute.
 */
export function workerOwnMs(c: WorkerCosts, total: number, verifyEvery: number): number {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const upload = (4 * total) / PCIE_BYTES_PER_MS;
  if (c.compress.mode === 'none') return c.weightsMsPerFloat * total + sum(c.encodeMs) + upload;
  return sum(c.encodeMs) + sum(c.decodeMs) + c.applyMs + c.warmStartMs + c.hashMs / verifyEvery + upload;
}

export function describeCosts(w: WorkerCosts, total: number): string {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const parts = [`weights copy ${(w.weightsMsPerFloat * total).toFixed(1)} ms`, `gradient encode ${sum(w.encodeMs).toFixed(1)} ms`];
  if (w.compress.mode === 'powersgd') parts.push(`apply P̂Qᵀ ${w.applyMs.toFixed(1)} ms`, `next Q ${w.warmStartMs.toFixed(1)} ms`, `hash ${w.hashMs.toFixed(1)} ms`);
  else if (w.compress.mode !== 'none') parts.push(`update decode ${sum(w.decodeMs).toFixed(1)} ms`, `apply ${w.applyMs.toFixed(1)} ms`, `hash ${w.hashMs.toFixed(1)} ms`);
  return `${parts.join(', ')} per step`;
}

/** The command of a worker on `url`: `tabtrain worker`, or a synthetic machine when --worker-cpu is sleep. */
function workerCommand(o: ScaleoutOptions, url: string, costs: WorkerCosts | null): Command {
  if (o.kind === 'real') return cliWorker(url, ['--backend', o.backend, '--quiet']);
  if (!costs) return cliWorker(url, ['--synthetic-ms-per-example', String(o.msPerExample), '--quiet']);
  return { cmd: process.execPath, args: tsArgs(SYNTHETIC, ['machine', JSON.stringify({ url, msPerExample: o.msPerExample, costs })]) };
}

/** One lab per link configuration, sized for the largest N; every run of the matrix goes through it. */
async function linkedSeries(o: ScaleoutOptions, costs: Map<string, WorkerCosts>): Promise<ScaleoutRun[]> {
  const runs: ScaleoutRun[] = [];
  const most = Math.max(...o.workers);
  for (const l of o.links!) {
    const lab = NetLab.create({ workers: most, worker: { rateBits: l.workerBits, rttMs: l.rttMs }, coordinator: { rateBits: l.coordinatorBits, rttMs: l.rttMs } });
    try {
      const rttNote = l.rttMs > 0 ? (lab.netem ? `RTT ${l.rttMs} ms by netem (RTT/4 on each of the 4 qdiscs of a round trip)` : `RTT ${l.rttMs} ms NOT applied: this kernel has no netem (CONFIG_NET_SCH_NETEM), links are shaped for rate only`) : 'no added RTT';
      o.log(`links: ${most} workers, each on its own ${formatRate(l.workerBits)} link, coordinator on one ${formatRate(l.coordinatorBits)} link shared by all (tbf both ways); ${rttNote}; namespaces ${lab.prefix}-*`);
      // About a second at the slower of the two rates: long enough to see the rate, short enough to be cheap.
      const slower = Math.min(l.workerBits, l.coordinatorBits);
      const bytes = Math.round(Math.min(512e6, Math.max(16e6, slower / 8)));
      const probe = await probeLink(lab, lab.workers[0], bytes);
      o.log(`link check, coordinator ↔ worker 0, one TCP stream, ${(bytes / 1e6).toFixed(0)} MB: ${probe.downMBs.toFixed(1)} MB/s down, ${probe.upMBs.toFixed(1)} MB/s up, against ${(payloadBytesPerSec(slower) / 1e6).toFixed(1)} MB/s of TCP payload at ${formatRate(slower)} (${(100 * TCP_PAYLOAD_FRACTION).toFixed(1)}% of the line rate); RTT ${probe.rttMs.toFixed(3)} ms measured${l.rttMs > 0 ? `, ${l.rttMs} ms configured` : ''}`);
      for (const model of o.models) {
        for (const compress of o.compress) {
          for (const scaling of o.scaling) {
            const series: ScaleoutRun[] = [];
            for (const n of o.workers) {
              const r = await runLinked(o, lab, l, probe, model, compress, scaling, n, costs.get(costKey(model, compress)) ?? null);
              r.efficiency = series.length && series[0].workers === 1 ? r.examplesPerSec / (n * series[0].examplesPerSec) : n === 1 ? 1 : null;
              series.push(r);
              runs.push(r);
              o.log(linkLine(r));
            }
          }
        }
      }
    } finally {
      lab.destroySync();
    }
  }
  return runs;
}

export function linkLine(r: ScaleoutRun): string {
  const k = r.link!;
  return `${r.kind} ${r.model} ${r.compress} ${r.scaling} N=${r.workers} @ ${formatRate(k.workerBits)}${k.coordinatorBits !== k.workerBits ? ` (coordinator ${formatRate(k.coordinatorBits)})` : ''}: ` +
    `${r.examplesPerSec.toFixed(1)} examples/s${r.efficiency === null ? '' : `, efficiency ${(100 * r.efficiency).toFixed(0)}%`}; step ${k.stepMs.toFixed(0)} ms (median) against ` +
    `compute ${k.computeMs.toFixed(0)} ms, link ${k.linkBoundMs.toFixed(0)} ms (coordinator in ${k.coordinatorInMs.toFixed(0)} / out ${k.coordinatorOutMs.toFixed(0)}, busiest worker in ${k.workerInMs.toFixed(0)} / out ${k.workerOutMs.toFixed(0)}): ` +
    `${k.overBound.toFixed(2)}× the bound, ${k.overSerial.toFixed(2)}× compute + in + out${k.workerOwnMs === undefined ? '' : `, ${k.overOwnBound!.toFixed(2)}× max(compute + the worker's own ${k.workerOwnMs.toFixed(0)} ms, link)`}; ${k.sentDuringUpShare === undefined ? '' : `${(100 * k.sentDuringUpShare).toFixed(0)}% of the coordinator's sent bytes went out while gradients came in; `}coordinator CPU ${k.coordinatorCpuMs.toFixed(0)} ms/step (${(100 * k.coordinatorCpuShare).toFixed(0)}%), workers ${k.workersCpuMs.toFixed(0)} ms/step, machine ${(100 * k.machineBusy).toFixed(0)}% busy` +
    `${k.coordinatorCpuBound ? ' — COORDINATOR CPU-BOUND' : ''}${k.machineCpuBound ? ' — MACHINE CPU-BOUND' : ''}${k.lost?.length ? ` — LOST ${k.lost.length} WORKER(S)` : ''}`;
}

async function runLinked(o: ScaleoutOptions, lab: NetLab, l: LinkConfig, probe: Probe, model: string, compress: Compression, scaling: Scaling, n: number, costs: WorkerCosts | null): Promise<ScaleoutRun> {
  const { total } = paramLayout(getModel(model));
  const batch = scaling === 'strong' ? o.batch : o.perWorkerBatch * n;
  const burnIn = Math.max(1, o.burnIn);
  const host: HostOptions = {
    model, epochs: 1, batch, seed: 42, port: 0, host: lab.coordinator.ip, minWorkers: n, maxSteps: burnIn + o.steps,
    balance: o.balance, evalExamples: 1, helloTimeoutMs: 120_000, minDeadlineMs: 600_000, compress,
    // Every shard computed once: no --verify-shards spot checks (a 5% chance per shard of a second copy).
    verifyShards: 0,
  };
  const load = loadavg()[0];
  const t0 = performance.now();
  const { marks, log } = await runInLab(lab, host, n, (url) => workerCommand(o, url, costs), (m) => {
    if (m.rec.step <= burnIn + o.steps) o.log(`  ${model} ${scaling} N=${n} step ${m.rec.step}${m.rec.step <= burnIn ? ' (burn-in)' : ''}: ${m.rec.wallMs.toFixed(0)} ms (collect ${m.rec.collectMs.toFixed(0)}: compute ${m.rec.computeMs.toFixed(0)}, upload ${m.rec.uploadMs.toFixed(0)}; ${m.rec.earlySegments} segments of the new weights staged during the upload${m.overlap ? `; coordinator sent ${(m.overlap.sentBytes / 1e6).toFixed(0)} MB, ${(m.overlap.sentDuringUpBytes / 1e6).toFixed(0)} MB of it while gradients came in` : ''}), ${((performance.now() - t0) / 1000).toFixed(0)} s into the run`);
  });
  if (marks.length < burnIn + o.steps) throw new Error(`${model} N=${n}: only ${marks.length} steps ran`);
  const r = linkFigures(o, l, lab.netem, probe, model, total, scaling, n, batch, marks.slice(burnIn - 1, burnIn + o.steps), compress, load, costs ? 'sleep' : undefined);
  if (costs) {
    const k = r.link!;
    k.workerOwnMs = workerOwnMs(costs, total, DEFAULTS.verifyEvery);
    k.overOwnBound = k.stepMs / Math.max(k.computeMs + k.workerOwnMs, k.linkBoundMs);
  }
  // A worker that closed mid-run makes the row a different run than it says: flagged, with the reason.
  r.link!.lost = log.filter((line) => / closed: /.test(line));
  for (const line of r.link!.lost) o.log(`  LOST A WORKER: ${line}`);
  return r;
}

/** Figures of one linked run from its step marks; `marks[0]` is the last unmeasured step. */
export function linkFigures(o: Pick<ScaleoutOptions, 'kind' | 'workerCpu'>, l: LinkConfig, rttApplied: boolean, probe: Probe, model: string, params: number, scaling: Scaling, n: number, batch: number, marks: StepMark[], compress: Compression, load: number, workerCpu?: WorkerCpu): ScaleoutRun {
  const first = marks[0], last = marks[marks.length - 1];
  const measured = marks.slice(1);
  const steps = measured.length;
  const stepMs = median(measured.map((m, i) => m.t - marks[i].t));
  const cpu = measured.map((m, i) => m.cpuMs - marks[i].cpuMs);
  // Bytes per worker link in each measured step, by remote address (one namespace, one address);
  // medians over the steps, so that an occasional extra shard (a spot check) does not count.
  const stepLinks = measured.map((m, i) => {
    const perLink = new Map<string, { in: number; out: number }>();
    for (const c of m.links) {
      const before = marks[i].links.find((b) => b.id === c.id);
      const e = perLink.get(c.remote) ?? { in: 0, out: 0 };
      e.in += c.bytesIn - (before?.bytesIn ?? 0);
      e.out += c.bytesOut - (before?.bytesOut ?? 0);
      perLink.set(c.remote, e);
    }
    const links = [...perLink.values()];
    return {
      in: links.reduce((a, x) => a + x.in, 0), out: links.reduce((a, x) => a + x.out, 0),
      wIn: Math.max(0, ...links.map((x) => x.in)), wOut: Math.max(0, ...links.map((x) => x.out)),
    };
  });
  const coordIn = median(stepLinks.map((x) => x.in)), coordOut = median(stepLinks.map((x) => x.out));
  const busiest = { in: median(stepLinks.map((x) => x.wIn)), out: median(stepLinks.map((x) => x.wOut)) };
  const coordRate = payloadBytesPerSec(l.coordinatorBits) / 1000, workerRate = payloadBytesPerSec(l.workerBits) / 1000; // bytes per ms
  const computeMs = median(measured.map((m) => m.rec.computeMs));
  const f = {
    coordinatorInMs: coordIn / coordRate, coordinatorOutMs: coordOut / coordRate,
    workerInMs: busiest.in / workerRate, workerOutMs: busiest.out / workerRate,
  };
  const linkBoundMs = Math.max(f.coordinatorInMs, f.coordinatorOutMs, f.workerInMs, f.workerOutMs);
  const boundMs = Math.max(computeMs, linkBoundMs);
  const serialMs = computeMs + Math.max(f.coordinatorInMs + f.coordinatorOutMs, f.workerInMs + f.workerOutMs);
  const jiffies = last.machine.total - first.machine.total;
  const coordinatorCpuMs = median(cpu);
  const link: LinkFigures = {
    workerBits: l.workerBits, coordinatorBits: l.coordinatorBits, rttMs: l.rttMs, rttApplied: rttApplied && l.rttMs > 0, probe,
    stepMs, computeMs, coordinatorInBytes: coordIn, coordinatorOutBytes: coordOut, workerInBytes: busiest.in, workerOutBytes: busiest.out, ...f,
    linkBoundMs, boundMs, overBound: stepMs / boundMs, serialMs, overSerial: stepMs / serialMs,
    coordinatorCpuMs, coordinatorCpuShare: coordinatorCpuMs / stepMs, machineBusy: jiffies > 0 ? (last.machine.busy - first.machine.busy) / jiffies : NaN,
    coordinatorCpuBound: coordinatorCpuMs / stepMs >= CPU_BOUND_SHARE,
    machineCpuBound: jiffies > 0 && (last.machine.busy - first.machine.busy) / jiffies >= MACHINE_BUSY && stepMs / serialMs >= 1.5,
    workersCpuMs: median(measured.map((m, i) => m.workersCpuMs - marks[i].workersCpuMs)),
    ...(measured.every((m) => m.overlap && m.overlap.sentBytes > 0) ? { sentDuringUpShare: median(measured.map((m) => m.overlap!.sentDuringUpBytes / m.overlap!.sentBytes)) } : {}),
  };
  const recs = measured.map((m) => m.rec);
  const split: StepSplit = {
    wall: median(recs.map((r) => r.wallMs)),
    compute: computeMs,
    upload: median(recs.map((r) => r.uploadMs)),
    aggregate: median(recs.map((r) => r.aggregateMs + (r.foldMs ?? 0))),
    apply: median(recs.map((r) => r.applyMs)),
    broadcast: median(recs.map((r) => r.broadcastMs + Math.max(0, r.collectMs - r.computeMs - r.uploadMs))),
  };
  return {
    kind: o.kind, model, params, scaling, compress: compress.mode === 'powersgd' ? `powersgd-r${compress.rank}` : compress.mode, workers: n, batch, steps,
    examplesPerSec: (batch * 1000) / stepMs, efficiency: null, split, bytesPerStep: coordIn + coordOut, uploadBytesPerWorker: coordIn / n,
    commMs: stepMs - computeMs, boundMs, commOverBound: stepMs / boundMs, coordinatorCpuMs, loadAvg: load, link, workerCpu,
  };
}

export function summaryLine(r: ScaleoutRun): string {
  const s = r.split;
  return `${r.kind} ${r.model} ${r.compress} ${r.scaling} N=${r.workers}: ${r.examplesPerSec.toFixed(1)} examples/s` +
    `${r.efficiency === null ? '' : `, efficiency ${(100 * r.efficiency).toFixed(0)}%`}, batch ${r.batch}, step ${s.wall.toFixed(0)} ms = ` +
    `compute ${s.compute.toFixed(0)} + upload ${s.upload.toFixed(0)} + broadcast ${s.broadcast.toFixed(0)} + aggregate ${s.aggregate.toFixed(0)} + apply ${s.apply.toFixed(0)}; ` +
    `coordinator moved ${(r.bytesPerStep / 1e6).toFixed(0)} MB/step using ${r.coordinatorCpuMs.toFixed(0)} ms of CPU, comm ${r.commMs.toFixed(0)} ms = ${r.commOverBound.toFixed(1)}× the memory-copy bound`;
}

async function runOne(o: ScaleoutOptions, data: Dataset, model: string, compress: Compression, scaling: Scaling, n: number, copyRate: number, costs: WorkerCosts | null): Promise<ScaleoutRun> {
  const spec = getModel(model);
  const { params, total } = paramLayout(spec);
  const batch = scaling === 'strong' ? o.batch : o.perWorkerBatch * n;
  const need = (n * 3 + 4) * 4 * total; // worker: gradient, weights, frames in flight; coordinator: sum, weights, frames, bodies
  if (freemem() < need) o.log(`warning: ${(freemem() / 2 ** 30).toFixed(1)} GiB free, this run may need ${(need / 2 ** 30).toFixed(1)} GiB`);
  const coord = new Coordinator({
    model, epochs: 1, batch, seed: 42, port: 0, host: '127.0.0.1', minWorkers: n, maxSteps: o.burnIn + o.steps,
    balance: o.balance, evalExamples: 1, helloTimeoutMs: 120_000, minDeadlineMs: 600_000, compress,
    log: () => {}, progress: () => {},
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
    kind: o.kind, model, params: total, scaling, compress: compress.mode === 'powersgd' ? `powersgd-r${compress.rank}` : compress.mode, workers: n, batch,
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

export { DEFAULTS };
