// --balance cost (cost-model.ts): the step goes to the workers that make it shortest. Functional,
// not timed: who gets train shards, not how fast the run is.
//
// In-process (tests/helpers/in-process.ts): a real coordinator on the in-memory wire and real
// WorkerCores (wasm), so the plan is made from what the coordinator measures of their compute.
// alexnet-tiny's weights are under a frame that can time a link, so the plan prices no link time
// (coordinator.ts, planTrain) and the in-memory wire, which times none, changes nothing here.
// Link rates priced from real sockets are shown by netns-cost.test.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import type { StepRecord } from '../../server/src/coordinator';
import { setupNodeBackend } from '../../client/src/node-worker';
import { WASM, startInProcess } from '../helpers/in-process';
import { honest, liar } from '../helpers/liars';

const RUN = { model: 'alexnet-tiny', batch: 16, seed: 3, balance: 'cost' as const, epochs: 1, evalExamples: 64 };

// One tfjs backend for every worker core in this process.
beforeAll(async () => { await setupNodeBackend('wasm'); });

describe('cost-model scheduling', () => {
  it('a worker 50× slower than two others gets no train shard after the first steps, is shown benched, and takes the shards again when the others leave', async () => {
    const run = await startInProcess({ ...RUN, maxSteps: 1000, minWorkers: 3 });
    const { coord } = run;
    const fast = await run.add(2, { ...WASM, delayMsPerExample: 2 });
    await run.add(1, { ...WASM, delayMsPerExample: 100 });
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const training = coord.train();
    try {
      const until = async (ok: () => boolean, what: string, ms = 120_000) => {
        for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 100))) if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      };
      await until(() => steps.length >= 12, '12 steps');
      const slowId = coord.status().workers.find((w) => w.state !== 'lost' && !steps.slice(-6).some((s) => s.shards.some((x) => x.worker === w.id)))?.id;
      expect(slowId, 'a worker without train shards in the last 6 steps').toBeDefined();
      const row = coord.status().workers.find((w) => w.id === slowId)!;
      expect(row.benched).toBe(true);
      expect(row.benchedByMs === undefined || row.benchedByMs > 0).toBe(true);
      // It is the slow one: the fast two did every recent shard.
      const recent = new Set(steps.slice(-6).flatMap((s) => s.shards.map((x) => x.worker)));
      expect(recent.size).toBe(2);
      // The fast two leave (their connections gone without a close frame, as a dead process's).
      for (const w of fast) w.leave();
      const at = steps.length;
      await until(() => steps.length > at + 3 && steps.slice(-2).every((s) => s.shards.some((x) => x.worker === slowId)), 'the benched worker to take the shards again');
      expect(coord.status().workers.find((w) => w.id === slowId)!.benched).toBe(false);
    } finally {
      coord.stop();
      await training.catch(() => {});
      await run.close();
    }
  });
});

describe('cost-model scheduling with a remote worker', () => {
  it('a remote worker that passes probation joins the plan; spot-checked shards pinned to one worker get their second copy from the other (no freeze)', async () => {
    // --verify-shards 1: every shard is a spot check once two workers are established, so the
    // freeze of issue 24 (a pinned shard whose second copy nobody may take) shows at once.
    const run = await startInProcess({ ...RUN, maxSteps: 24, minWorkers: 2, verifyShards: 1, probation: 2, open: true });
    const { coord, lines } = run;
    await run.add(1, WASM);
    // The remote worker: an honest worker core without the local key or the token, as a stranger starts it (on probation).
    const remote = liar(run, honest);
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    try {
      const finished = await Promise.race([coord.train().then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 60_000))]);
      const passed = lines.some((l) => /passed probation for train shards/.test(l));
      expect(passed, lines.slice(-20).join('\n')).toBe(true);
      expect(finished, `stuck at step ${coord.step}:\n${lines.slice(-15).join('\n')}`).toBe(true);
      expect(steps.length).toBe(24);
      // The plan used it once established: it computed train shards of the last steps.
      const remoteId = Number(/worker #(\d+) joined: .*on probation/.exec(lines.join('\n'))?.[1]);
      expect(steps.slice(-5).some((s) => s.shards.some((x) => x.worker === remoteId))).toBe(true);
    } finally {
      coord.stop();
      remote.link.terminate();
      await run.close();
    }
  });
});
