// --balance cost behind real (emulated) links: a worker on a slow line would lengthen every step
// by its transfers, so after it was measured it gets no train shard; workers on fast lines do the
// step. Network namespaces the test makes and removes (server/src/bench/netns.ts); needs root and
// iproute2 (CI has both); skipped, saying so, without.
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../server/src/coordinator';
import { NetLab, parseRate, payloadBytesPerSec, whyNoNamespaces } from '../../server/src/bench/netns';
import { cliWorker, runInLab } from '../../server/src/bench/linked';

const skip = whyNoNamespaces();
if (skip) console.warn(`netns-cost.test.ts skipped: ${skip}`);

// alexnet-small: 1.28 MB each way per worker per step, 2 s on a 5 Mbit/s line, milliseconds at 1 Gbit/s.
const RUN = { model: 'alexnet-small', epochs: 1, batch: 32, seed: 4, maxSteps: 14, balance: 'cost' as const, evalExamples: 32, verifyShards: 0 };

describe.skipIf(skip !== null)(`cost-model scheduling behind emulated links${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('a worker behind a 5 Mbit/s line is benched; the steps go to the workers behind 1 Gbit/s lines', async () => {
    const fast = { rateBits: parseRate('1gbit'), rttMs: 0 };
    const slowLine = { rateBits: parseRate('5mbit'), rttMs: 0 };
    const lab = NetLab.create({ workers: 3, worker: fast, links: [fast, fast, slowLine] });
    try {
      const run = await runInLab(lab, { ...RUN, minWorkers: 3, helloTimeoutMs: DEFAULTS.helloTimeoutMs, port: 0, host: lab.coordinator.ip }, 3, (url) => cliWorker(url, ['--backend', 'wasm', '--quiet']));
      expect(run.summary.steps).toBe(RUN.maxSteps);
      const last = run.marks[run.marks.length - 1];
      const slow = last.links.find((l) => l.remote === lab.workers[2].ip);
      expect(slow, 'the slow-line worker is connected to the end').toBeDefined();
      // Both its rates are the line's, not a copy into a kernel buffer (which read its upload at
      // 4× the line, 300× once TCP grew the buffer, and its download at 1000×): the upload timed
      // from first byte to last as it arrives, the download (1.28 MB, under one send buffer) to
      // the pong of a ping sent after it.
      const line = payloadBytesPerSec(slowLine.rateBits);
      console.log(`measured up / down MB/s: ${last.links.map((l) => `${l.remote} ${(l.upBytesPerSec / 1e6).toFixed(3)} / ${(l.downBytesPerSec / 1e6).toFixed(3)}`).join(', ')}; lines ${(payloadBytesPerSec(fast.rateBits) / 1e6).toFixed(1)} and ${(line / 1e6).toFixed(3)}`);
      for (const rate of [slow!.upBytesPerSec, slow!.downBytesPerSec]) {
        expect(rate, `measured ${rate} B/s, the line carries ${line}`).toBeGreaterThan(0.5 * line);
        expect(rate, `measured ${rate} B/s, the line carries ${line}`).toBeLessThan(1.5 * line);
      }
      // The last 5 steps' shards all went to the two fast-line workers.
      const recent = run.marks.slice(-5);
      const workersOf = (m: (typeof recent)[number]) => new Set(m.rec.shards.map((s) => s.worker));
      for (const m of recent) expect([...workersOf(m)].every((w) => w !== slow!.id), `step ${m.rec.step}: ${JSON.stringify(m.rec.shards)}`).toBe(true);
      // Which of the fast ones the model uses is its call (one may be enough for this small model).
      const fastIds = last.links.filter((l) => l.remote !== lab.workers[2].ip).map((l) => l.id);
      expect([...new Set(recent.flatMap((m) => [...workersOf(m)]))].every((w) => w !== null && fastIds.includes(w))).toBe(true);
    } finally {
      lab.destroySync();
    }
  });
});
