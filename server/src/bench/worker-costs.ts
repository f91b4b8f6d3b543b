// The workers of a scale-out run: the command each runs, and for synthetic worker machines
// (--worker-cpu sleep) the CPU work they sleep for, measured once on this machine.
import { spawn } from 'node:child_process';
import { getModel, paramLayout } from '@tabtrain/shared';
import { powerSgdPlanOf, type Compression } from '@tabtrain/shared/compress';
import { MACHINE_APPLY_THREADS, PCIE_BYTES_PER_MS, powerSgdMachineMs } from '@tabtrain/shared/device-costs';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import { cliWorker, ROOT, tsArgs, type Command } from './linked';
import { modesOf } from './scaleout-matrix';
import type { BenchCompression, ScaleoutOptions } from './scaleout-types';

/** The synthetic worker machine: shared/src/synthetic.ts run as a program. */
const SYNTHETIC = 'shared/src/synthetic.ts';

/** Measures, in a fresh process of its own, the worker CPU work of one configuration (synthetic.ts measure). */
export function measureWorkerCosts(model: string, c: Compression): Promise<WorkerCosts> {
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

/** The key of one (model, compression) configuration in the map of measured worker costs. */
export const costKey = (model: string, c: Compression) => `${model}/${c.mode}/${c.rank}`;

/** The measured costs a run's synthetic machines sleep for: its mode's, or with --compress auto every mode's; null: none measured (CPU work done for real). */
export function costsOf(costs: Map<string, WorkerCosts>, model: string, c: BenchCompression): WorkerCosts[] | null {
  const list = modesOf(c).map((m) => costs.get(costKey(model, m)));
  return list.every((x) => x !== undefined) ? list as WorkerCosts[] : null;
}

/**
 * A synthetic machine's own work per step, slept for its measured time. `pathMs` is what a step
 * waits for besides the GPU's compute: fp32, fp16, int8: its CPU work (copying or decoding and
 * applying what came, encoding, hashing every verifyEvery steps) and the upload of the new weights
 * to its GPU; powersgd: the next Q, the update on the GPU, the refresh amortised
 * (powerSgdMachineMs). `threadMs` (powersgd) is the exact copy's threads' work per step (the apply
 * over MACHINE_APPLY_THREADS threads, the hash): beside the step, it bounds the step only where longer.
 */
export function workerOwnMs(c: WorkerCosts, verifyEvery: number): { pathMs: number; threadMs: number } {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const { params, total } = paramLayout(getModel(c.model));
  const upload = (4 * total) / PCIE_BYTES_PER_MS;
  const psgd = powerSgdPlanOf(params, total, c.compress);
  if (psgd) {
    const m = powerSgdMachineMs(c, psgd, verifyEvery);
    return { pathMs: m.criticalMs, threadMs: m.threadMs };
  }
  if (c.compress.mode === 'none') return { pathMs: c.weightsMsPerFloat * total + sum(c.encodeMs) + upload, threadMs: 0 };
  return { pathMs: sum(c.encodeMs) + sum(c.decodeMs) + c.applyMs + c.warmStartMs + c.hashMs / verifyEvery + upload, threadMs: 0 };
}

export function describeCosts(w: WorkerCosts, total: number): string {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const parts = [`weights copy ${(w.weightsMsPerFloat * total).toFixed(1)} ms`, `gradient encode ${sum(w.encodeMs).toFixed(1)} ms`];
  if (w.compress.mode === 'powersgd') parts.push(`apply P̂Qᵀ ${w.applyMs.toFixed(1)} ms on one thread (the exact copy's, slept as ${(w.applyMs / MACHINE_APPLY_THREADS).toFixed(1)} ms over ${MACHINE_APPLY_THREADS} threads)`, `next Q ${w.warmStartMs.toFixed(1)} ms`, `hash ${w.hashMs.toFixed(1)} ms`);
  else if (w.compress.mode !== 'none') parts.push(`update decode ${sum(w.decodeMs).toFixed(1)} ms`, `apply ${w.applyMs.toFixed(1)} ms`, `hash ${w.hashMs.toFixed(1)} ms`);
  return `${parts.join(', ')} per step`;
}

/** The command of a worker on `url`: `tabtrain worker`, or a synthetic machine when --worker-cpu is sleep (one mode's costs, or every mode's for auto). */
export function workerCommand(o: ScaleoutOptions, url: string, costs: WorkerCosts[] | null): Command {
  if (o.kind === 'real') return cliWorker(url, ['--backend', o.backend, '--quiet']);
  if (!costs) return cliWorker(url, ['--synthetic-ms-per-example', String(o.msPerExample), '--quiet']);
  const which = costs.length === 1 ? { costs: costs[0] } : { costs: null, costsByMode: costs };
  return { cmd: process.execPath, args: tsArgs(SYNTHETIC, ['machine', JSON.stringify({ url, msPerExample: o.msPerExample, ...which })]) };
}
