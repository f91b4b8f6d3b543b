// What `tabtrain bench scaleout` is asked (ScaleoutOptions) and what each of its runs reports: a
// row (ScaleoutRun) with its step split, and through emulated links its LinkFigures.
import type { Compression, FactorCodec } from '@tabtrain/shared/compress';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import type { Probe } from './linked';

export type Scaling = 'strong' | 'weak';
/** A fixed compression, or --compress auto (the coordinator chooses at each step, PowerSGD at `rank`, its factors in `factors`). */
export type BenchCompression = Compression | { mode: 'auto'; rank: number; factors?: FactorCodec };
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
  compress: BenchCompression[];
  backend: string;
  /** Synthetic workers: their CPU work done for real ('real') or slept for its measured time ('sleep'). */
  workerCpu: WorkerCpu;
  /** Emulated links, one series of runs each; null: loopback. */
  links: LinkConfig[] | null;
  /** How the coordinator splits each step (serve's --balance): even shards, the cost model's plan, or shards by measured speed. */
  balance: Balance;
  /** powersgd: the coordinator's helper threads for each update (CoordinatorOptions.applyThreads); undefined: its default. */
  applyThreads?: number;
  log: (line: string) => void;
}

export type WorkerCpu = 'real' | 'sleep';

/** bench scaleout's --balance choices (serve's). */
export const BALANCES = ['equal', 'cost', 'speed'] as const;
export type Balance = (typeof BALANCES)[number];

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
  /**
   * Synthetic machines: their own per-step work on the step's path, slept (workerOwnMs: pathMs), the
   * exact copy's threads' work beside it (powersgd; threadMs), and the step ÷ max(compute + path, threads, link).
   */
  workerOwnMs?: number;
  workerThreadMs?: number;
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
  /** powersgd: the coordinator's own apply of each update (median applyMs) was ≥ 80% of the step: this machine's cores and memory, not the link or the workers, set the pace. */
  coordinatorApplyBound?: boolean;
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
  /** --compress auto: the modes its measured steps ran in, in order ('powersgd-r4', or 'none, powersgd-r4' across a switch). */
  chose?: string;
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

export interface ScaleoutResult {
  runs: ScaleoutRun[];
  memcpyGBs: number;
  /** Per (model, compression): the worker CPU work the synthetic machines slept for (--worker-cpu sleep). */
  workerCosts: WorkerCosts[];
}
