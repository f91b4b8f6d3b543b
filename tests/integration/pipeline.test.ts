// The pipelined step (step.ts): fp32 AlexNet-size messages, so the gradient is many segments and
// the new weights' segments go out while later ones still arrive. It must give the bits of the
// whole-step apply, and a worker killed mid-upload must not leave a half-applied segment behind.
// Synthetic workers (shared/src/synthetic.ts): the real protocol and full-size messages, no tfjs
// compute; their gradient does not depend on the shard, so a recomputed shard is bit-identical.
// What is checked is the coordinator's scheduling and arithmetic, so the coordinator and its
// workers run in this process (helpers/in-process.ts): the step's segments are pushed from inside
// the coordinator's handling of gradient frames, whatever carries them.
import { describe, expect, it } from 'vitest';
import type { StepRecord } from '../../server/src/coordinator';
import { SYNTHETIC, startInProcess, trainInProcess, type InProcessWorker } from '../helpers/in-process';

const RUN = { model: 'alexnet', batch: 6, maxSteps: 2, seed: 5, balance: 'equal' as const, evalExamples: 6, verifyShards: 0 };

describe('pipelined step', () => {
  it('at N = 1 the one worker is sent the new weights segment by segment while it uploads', async () => {
    // The segment a frame completes is applied and pushed from inside onGradient: the worker
    // delivering it must already count as uploading, or it is sent none of the step's segments.
    const steps: StepRecord[] = [];
    const run = await startInProcess({ ...RUN, minWorkers: 1 });
    run.coord.events.on('step', (s: StepRecord) => steps.push(s));
    try {
      await run.add(1, SYNTHETIC);
      await run.coord.train();
      expect(steps).toHaveLength(RUN.maxSteps);
      expect(steps.map((s) => s.earlySegments).every((n) => n >= 10)).toBe(true);
    } finally {
      await run.close();
    }
  });

  it('sends the new weights segment by segment during the upload, with the bits of the whole-step apply', async () => {
    const whole = await trainInProcess(2, { ...RUN, pipeline: false }, SYNTHETIC);
    const steps: StepRecord[] = [];
    const run = await startInProcess({ ...RUN, minWorkers: 2 });
    run.coord.events.on('step', (s: StepRecord) => steps.push(s));
    try {
      await run.add(2, SYNTHETIC);
      const summary = await run.coord.train();
      expect(summary.weightsSha256).toBe(whole.summary.weightsSha256);
      // AlexNet is 23 fp32 segments; every step sent most of them before its last gradient frame.
      expect(steps.map((s) => s.earlySegments).every((n) => n >= 10)).toBe(true);
    } finally {
      await run.close();
    }
  });

  it('a worker killed mid-upload after segments were applied: its shard is recomputed, applied segments are skipped, the weights are a clean run\'s', async () => {
    const clean = await trainInProcess(3, RUN, SYNTHETIC);
    const run = await startInProcess({ ...RUN, minWorkers: 3 });
    const { coord, lines } = run;
    const workers: InProcessWorker[] = [];
    let killed: string | null = null;
    // In the last step, once 5 segments of the new weights went out, a worker still uploading its
    // shard dies: its connection ends without a close frame (1006), as when its process is killed,
    // and it has sent no more of its shard than the coordinator has taken (the in-memory wire's
    // send resolves on delivery). A real SIGKILL of a worker process mid-step: faults.test.ts.
    coord.events.on('segment', (index: number) => {
      if (killed || coord.step !== RUN.maxSteps - 1 || index !== 5) return;
      const uploading = coord.status().workers.find((w) => w.state === 'working');
      if (!uploading) return;
      killed = uploading.workerId;
      workers[Number(killed.split('-')[1])].leave();
    });
    try {
      // Known ids, so that the test can tell which worker is still uploading.
      for (const i of [0, 1, 2]) workers.push(...(await run.add(1, { ...SYNTHETIC, workerId: `pipe-${i}` })));
      const summary = await coord.train();
      expect(summary.steps).toBe(RUN.maxSteps);
      expect(killed, 'a worker was still uploading when segment 5 went out').not.toBeNull();
      expect(lines.some((l) => /shard 1\/\d \(2 examples\) goes back to the queue/.test(l))).toBe(true);
      expect(summary.weightsSha256).toBe(clean.summary.weightsSha256);
    } finally {
      await run.close();
    }
  });
});
