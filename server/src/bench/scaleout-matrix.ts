// The matrix a scale-out bench runs: every model × compression × scaling is a series over the
// worker counts, in order, so that each run's efficiency is measured against N = 1 of its series.
import { NO_COMPRESSION, parseCompression, type Compression, type FactorCodec } from '@tabtrain/shared/compress';
import type { BenchCompression, ScaleoutOptions, ScaleoutRun, Scaling } from './scaleout-types';

/** The modes --compress auto chooses among (autopilot.ts), each measured for the synthetic machines. */
export function modesOf(c: BenchCompression): Compression[] {
  if (c.mode !== 'auto') return [c];
  return [NO_COMPRESSION, { mode: 'fp16', rank: 0 }, { mode: 'int8', rank: 0 }, parseCompression('powersgd', c.rank, c.factors)];
}

/** What the coordinator is given: a fixed compression, or auto's rank (and factors). */
export function coordinatorCompression(c: BenchCompression): { compress: Compression; autoRank?: number; autoFactors?: FactorCodec } {
  return c.mode === 'auto' ? { compress: NO_COMPRESSION, autoRank: c.rank, ...(c.factors ? { autoFactors: c.factors } : {}) } : { compress: c };
}

/** A row's name for its compression: none, fp16, int8, powersgd-r4, powersgd-r4-fp16 (fp16 factors), auto, auto-fp16. */
export function benchName(c: BenchCompression): string {
  const f = c.factors === 'fp16' ? '-fp16' : '';
  return c.mode === 'powersgd' ? `powersgd-r${c.rank}${f}` : c.mode === 'auto' ? `auto${f}` : c.mode;
}

/** The modes the measured steps ran in, in order, each once ('none, powersgd-r4' across a switch). */
export function chosenModes(modes: (string | undefined)[]): string {
  return modes.filter((m, i) => m !== undefined && m !== modes[i - 1]).join(', ');
}

/** Runs the matrix with `run` (loopback or through a lab's links), logging `line` of each run. */
export async function runMatrix(o: ScaleoutOptions, run: (model: string, compress: BenchCompression, scaling: Scaling, n: number) => Promise<ScaleoutRun>, line: (r: ScaleoutRun) => string): Promise<ScaleoutRun[]> {
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
