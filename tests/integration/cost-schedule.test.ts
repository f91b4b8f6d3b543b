// --balance cost (cost-model.ts): the step goes to the workers that make it shortest. Functional,
// not timed: who gets train shards, not how fast the run is.
import { describe, expect, it } from 'vitest';
import type { StepRecord } from '../../server/src/coordinator';
import { kill, startCoordinator, workers } from '../helpers/run';

const RUN = { model: 'alexnet-tiny', batch: 16, seed: 3, balance: 'cost' as const, epochs: 1, evalExamples: 64 };

describe('cost-model scheduling', () => {
  it('a worker 50× slower than two others gets no train shard after the first steps, is shown benched, and takes the shards again when the others leave', async () => {
    const { coord, url } = await startCoordinator({ ...RUN, maxSteps: 1000, minWorkers: 3 });
    const fast = workers(url, 2, ['--backend', 'wasm', '--delay-ms', '2']);
    const slow = workers(url, 1, ['--backend', 'wasm', '--delay-ms', '100']);
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const run = coord.train();
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
      kill(fast);
      const at = steps.length;
      await until(() => steps.length > at + 3 && steps.slice(-2).every((s) => s.shards.some((x) => x.worker === slowId)), 'the benched worker to take the shards again');
      expect(coord.status().workers.find((w) => w.id === slowId)!.benched).toBe(false);
    } finally {
      coord.stop();
      await run.catch(() => {});
      await coord.close();
      kill([...fast, ...slow]);
    }
  });
});
