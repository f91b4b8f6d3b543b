// The columns of runs side by side and of the per-worker charts (client/src/dashboard-runs.ts):
// the x-axis choice, the evaluation gap in the speed curve, rates not measured yet as gaps.
import { describe, expect, it } from 'vitest';
import type { StepPoint, WorkerSample } from '@tabtrain/shared/dashboard-wire';
import { emptyView, type RunView } from '../../client/src/dashboard-model';
import { align, speedSeries, testAccSeries, workerSeries, xOf } from '../../client/src/dashboard-runs';

const step = (n: number, at: number): StepPoint => ({
  step: n, epoch: n <= 2 ? 1 : 2, loss: 1, acc: 0.5, examples: 16, examplesPerSec: 100 + n, wallMs: 10, computeMs: 5, uploadMs: 1, waitMs: 1,
  aggregateMs: 1, applyMs: 1, broadcastMs: 1, straggler: null, at,
});
const worker = (up: number): WorkerSample['workers'][number] => ({ id: 1, workerId: 'w1', backend: 'webgpu', shardSize: 16, computeMs: 40, upBytesPerSec: up, downBytesPerSec: 0, tensorBytes: 4e6, examplesPerSec: 300 });

function run(): RunView {
  const v = emptyView();
  v.header = { stepsPerEpoch: 2, startedAt: 1000, priorSec: 0 } as RunView['header'];
  v.steps = [step(1, 2000), step(2, 3000), step(4, 7000)];
  v.epochs = [{ epoch: 1, steps: 2, examples: 32, loss: 1, trainAcc: 0.5, testAcc: 0.4, examplesPerSec: 10, seconds: 2 }];
  v.samples = [{ at: 2000, step: 1, workers: [worker(0)] }, { at: 7000, step: 4, workers: [worker(2e6)] }];
  return v;
}

describe('runs side by side', () => {
  it('puts a step on the chosen x-axis: its number, its epoch, or the run\'s seconds (interpolated where the step is not held)', () => {
    const v = run();
    expect(xOf(v, 'step')(3)).toBe(3);
    expect(xOf(v, 'epoch')(3)).toBe(1.5);
    expect(xOf(v, 'wall')(2)).toBe(2);
    expect(xOf(v, 'wall')(3)).toBe(4); // halfway between step 2 (2 s) and step 4 (6 s)
  });

  it('breaks the speed curve at an epoch\'s evaluation and places the test accuracy at the epoch\'s end', () => {
    const runs = [{ name: 'a', view: run() }];
    expect(speedSeries(runs, 'step', 0)[0]).toEqual([[1, 101], [2, 102], [3, null], [4, 104]]);
    expect(testAccSeries(runs, 'epoch')[0]).toEqual([[1, 0.4]]);
  });

  it('aligns runs on one x column with gaps, and draws a rate not measured yet as a gap', () => {
    // No point at another series' x: undefined (the line goes on); a series' own null stays a gap.
    expect(align([[[1, 5], [3, 6]], [[2, 7], [3, null]]])).toEqual([[1, 2, 3], [5, undefined, 6], [undefined, 7, null]]);
    const up = workerSeries([{ name: 'a', view: run() }], 'upBytesPerSec', 'step');
    expect(up.labels).toEqual(['w1 (webgpu)']);
    expect(up.points[0]).toEqual([[1, null], [4, 2]]);
    const two = workerSeries([{ name: 'a', view: run() }, { name: 'b', view: run() }], 'tensorBytes', 'step');
    expect(two.labels).toEqual(['a/w1 (webgpu)', 'b/w1 (webgpu)']);
    // A long id is cut for the legend, yet two ids that cut alike stay two lines.
    const v = run();
    v.samples = [{ at: 2000, step: 1, workers: [{ ...worker(1), workerId: 'f9bd7c49-0ef5-aaaa' }, { ...worker(1), id: 2, workerId: 'f9bd7c49-0ef5-bbbb' }] }];
    expect(workerSeries([{ name: 'a', view: v }], 'computeMs', 'step').labels).toEqual(['f9bd7c49… (webgpu)', 'f9bd7c49… (webgpu)']);
  });
});
