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
//
// Split by job: scaleout-types.ts (options and rows), worker-costs.ts (the workers' commands and
// slept CPU work), loopback-run.ts, linked-series.ts with link-figures.ts (--link), and
// scaleout-matrix.ts (the series). This module runs them and is what callers import.
import { getModel, paramLayout } from '@tabtrain/shared';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import { DEFAULTS } from '../coordinator';
import { loadFashionMnist, type Dataset } from '../data';
import { linkedSeries } from './linked-series';
import { memcpyGBs, runLoopback, summaryLine } from './loopback-run';
import { modesOf, runMatrix } from './scaleout-matrix';
import type { ScaleoutOptions, ScaleoutResult } from './scaleout-types';
import { costKey, costsOf, describeCosts, measureWorkerCosts } from './worker-costs';

export type { BenchCompression, ComputeKind, LinkConfig, LinkFigures, ScaleoutOptions, ScaleoutResult, ScaleoutRun, Scaling, StepSplit, WorkerCpu } from './scaleout-types';
export { CPU_BOUND_SHARE, MACHINE_BUSY, linkFigures, linkLine } from './link-figures';
export { memcpyGBs, planBytesTable, summaryLine } from './loopback-run';
export { describeCosts, workerOwnMs } from './worker-costs';

export async function scaleout(o: ScaleoutOptions, data: Dataset = loadFashionMnist()): Promise<ScaleoutResult> {
  const copyRate = memcpyGBs(paramLayout(getModel(o.models[0])).total);
  o.log(`memory copy (same run): ${copyRate.toFixed(2)} GB/s`);
  const costs = new Map<string, WorkerCosts>();
  if (o.kind === 'synthetic' && o.workerCpu === 'sleep') {
    for (const model of o.models) for (const c of o.compress.flatMap(modesOf)) {
      if (costs.has(costKey(model, c))) continue;
      const w = await measureWorkerCosts(model, c);
      costs.set(costKey(model, c), w);
      o.log(`worker CPU work measured on this machine (${model}, ${c.mode}), slept by each synthetic worker: ${describeCosts(w, paramLayout(getModel(model)).total)}`);
    }
  }
  if (o.links) return { runs: await linkedSeries(o, costs), memcpyGBs: copyRate, workerCosts: [...costs.values()] };
  const runs = await runMatrix(o, (model, compress, scaling, n) => runLoopback(o, data, model, compress, scaling, n, copyRate, costsOf(costs, model, compress)), summaryLine);
  return { runs, memcpyGBs: copyRate, workerCosts: [...costs.values()] };
}

export { DEFAULTS };
