// The matrix a scale-out bench runs: every model × compression × scaling is a series over the
// worker counts, in order, so that each run's efficiency is measured against N = 1 of its series.
import type { Compression } from '@tabtrain/shared/compress';
import type { ScaleoutOptions, ScaleoutRun, Scaling } from './scaleout-types';

/** Runs the matrix with `run` (loopback or through a lab's links), logging `line` of each run. */
export async function runMatrix(o: ScaleoutOptions, run: (model: string, compress: Compression, scaling: Scaling, n: number) => Promise<ScaleoutRun>, line: (r: ScaleoutRun) => string): Promise<ScaleoutRun[]> {
  const runs: ScaleoutRun[] = [];
  for (const model of o.models) {
    for (const compress of o.compress) {
      for (const scaling of o.scaling) {
        const series: ScaleoutRun[] = [];
        for (const n of o.workers) {
          const r = await run(model, compress, scaling, n);
          r.efficiency = series.length && series[0].workers === 1 ? r.examplesPerSec / (n * series[0].examplesPerSec) : n === 1 ? 1 : null;
          series.push(r);
          runs.push(r);
          o.log(line(r));
        }
      }
    }
  }
  return runs;
}
