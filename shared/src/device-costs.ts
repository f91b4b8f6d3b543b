// What a synthetic V100 machine's device work costs (synthetic-machine.ts sleeps it): the host → GPU link,
// the GPU's memory bandwidth, and the passes over the weights that a powersgd worker's working copy
// takes on the GPU (client/src/device-update.ts). Pure constants and arithmetic.
import { DEFAULT_REFRESH_EVERY, type PowerSgdPlan } from './powersgd';

/**
 * A V100's memory bandwidth (HBM2, 900 GB/s), in bytes per ms. PowerSGD's rank-r products on the
 * worker's GPU are memory-bound (a few flops per float of M), so a synthetic machine sleeps for
 * the passes over its matrices each round takes at this rate.
 */
export const V100_BYTES_PER_MS = 900e6;
/**
 * Host → GPU copy rate, bytes per ms (PCIe 3.0 x16, ~12 GB/s in practice): a worker machine that
 * made new weights on its CPU (a whole copy received, or an update applied to its replica) uploads
 * them to its GPU before the next shard; a synthetic machine sleeps for it.
 */
export const PCIE_BYTES_PER_MS = 12e6;
/**
 * Passes over the weights when a powersgd update is applied to the working copy on the GPU
 * (client/src/device-update.ts, tfjs ops unfused): matMul writes P̂Qᵀ, mul reads and writes it,
 * sub reads it and w and writes w.
 */
const DEVICE_UPDATE_PASSES = 6;
/** Passes over the weights in a refresh's drift (refreshOnDevice): sub reads both copies and writes, abs and max read. */
const REFRESH_PASSES = 5;

/** The update on the working copy: the factors over PCIe, then DEVICE_UPDATE_PASSES over the weights on the GPU. */
export function deviceUpdateMs(plan: PowerSgdPlan): number {
  return (4 * (plan.round1Floats + plan.round2Floats)) / PCIE_BYTES_PER_MS + (DEVICE_UPDATE_PASSES * 4 * plan.total) / V100_BYTES_PER_MS;
}

/** A refresh on a V100 machine: the exact weights over PCIe, then the drift's passes at memory bandwidth. */
export const refreshMs = (total: number) => (4 * total) / PCIE_BYTES_PER_MS + (REFRESH_PASSES * 4 * total) / V100_BYTES_PER_MS;

/**
 * Threads a synthetic worker machine applies each update to its exact copy with (worker
 * --apply-threads: the exact copy's thread and 3 helpers). A V100 server has the cores; the apply
 * is memory-bound, so T threads take 1/T of one thread's time only while the machine's memory
 * bandwidth scales with them: 4 threads of AlexNet's apply at rank 4 move ~375 MB in ~9 ms, 42 GB/s,
 * which a server's memory gives (a 2-core VM's does not: measured here, see docs/BENCHMARKS.md).
 */
export const MACHINE_APPLY_THREADS = 4;

/**
 * powersgd: what a synthetic machine spends per step besides the GPU's forward and backward, as
 * SyntheticMachine sleeps it, from its WorkerCosts (worker-costs.ts): on the step's path
 * (`criticalMs`: the next Q, the update on the GPU, the refresh amortised over K), and in the exact
 * copy's threads (`threadMs`: the update with the coordinator's kernel over `applyThreads` threads,
 * the hash, on one, every verifyEvery versions), which bounds the step only where it is longer
 * than the step itself.
 */
export function powerSgdMachineMs(c: { warmStartMs: number; applyMs: number; hashMs: number }, plan: PowerSgdPlan, verifyEvery: number, refreshEvery = DEFAULT_REFRESH_EVERY, applyThreads = MACHINE_APPLY_THREADS): { criticalMs: number; threadMs: number } {
  return { criticalMs: c.warmStartMs + deviceUpdateMs(plan) + refreshMs(plan.total) / refreshEvery, threadMs: c.applyMs / applyThreads + c.hashMs / verifyEvery };
}
