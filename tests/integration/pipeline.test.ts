// The pipelined step (step.ts): fp32 AlexNet-size messages, so the gradient is many segments and
// the new weights' segments go out while later ones still arrive. It must give the bits of the
// whole-step apply, and a worker killed mid-upload must not leave a half-applied segment behind.
// Synthetic workers (shared/src/synthetic.ts): the real protocol and full-size messages, no tfjs
// compute; their gradient does not depend on the shard, so a recomputed shard is bit-identical.
import { describe, expect, it } from 'vitest';
import type { StepRecord } from '../../server/src/coordinator';
import { kill, startCoordinator, trainWith, workers } from '../helpers/run';

const RUN = { model: 'alexnet', batch: 6, maxSteps: 2, seed: 5, balance: 'equal' as const, evalExamples: 6, verifyShards: 0 };
const SYNTHETIC = ['--synthetic-ms-per-example', '0'];

describe('pipelined step', () => {
  it('at N = 1 the one worker is sent the new weights segment by segment while it uploads', async () => {
    // The segment a frame completes is applied and pushed from inside onGradient: the worker
    // delivering it must already count as uploading, or it is sent none of the step's segments.
    const steps: StepRecord[] = [];
    const { coord, url } = await startCoordinator({ ...RUN, minWorkers: 1 });
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const procs = workers(url, 1, SYNTHETIC);
    try {
      await coord.train();
      expect(steps).toHaveLength(RUN.maxSteps);
      expect(steps.map((s) => s.earlySegments).every((n) => n >= 10)).toBe(true);
    } finally {
      await coord.close();
      kill(procs);
    }
  });

  it('sends the new weights segment by segment during the upload, with the bits of the whole-step apply', async () => {
    const whole = await trainWith(2, { ...RUN, pipeline: false }, SYNTHETIC);
    const steps: StepRecord[] = [];
    const { coord, url } = await startCoordinator({ ...RUN, minWorkers: 2 });
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const procs = workers(url, 2, SYNTHETIC);
    try {
      const summary = await coord.train();
      expect(summary.weightsSha256).toBe(whole.summary.weightsSha256);
      // AlexNet is 23 fp32 segments; every step sent most of them before its last gradient frame.
      expect(steps.map((s) => s.earlySegments).every((n) => n >= 10)).toBe(true);
    } finally {
      await coord.close();
      kill(procs);
    }
  });

  it('a worker killed mid-upload after segments were applied: its shard is recomputed, applied segments are skipped, the weights are a clean run\'s', async () => {
    const clean = await trainWith(3, RUN, SYNTHETIC);
    const { coord, url, lines } = await startCoordinator({ ...RUN, minWorkers: 3 });
    // Known ids, so that the test can tell which process is still uploading.
    const procs = [0, 1, 2].flatMap((i) => workers(url, 1, [...SYNTHETIC, '--id', `pipe-${i}`]));
    let killed: string | null = null;
    // In the last step, once 5 segments of the new weights went out, a worker still uploading its shard dies.
    coord.events.on('segment', (index: number) => {
      if (killed || coord.step !== RUN.maxSteps - 1 || index !== 5) return;
      const uploading = coord.status().workers.find((w) => w.state === 'working');
      if (!uploading) return;
      killed = uploading.workerId;
      procs[Number(killed.split('-')[1])].kill('SIGKILL');
    });
    try {
      const summary = await coord.train();
      expect(summary.steps).toBe(RUN.maxSteps);
      expect(killed, 'a worker was still uploading when segment 5 went out').not.toBeNull();
      expect(lines.some((l) => /shard 1\/\d \(2 examples\) goes back to the queue/.test(l))).toBe(true);
      expect(summary.weightsSha256).toBe(clean.summary.weightsSha256);
    } finally {
      await coord.close();
      kill(procs);
    }
  });
});
