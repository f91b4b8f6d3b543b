// The pipelined step through an emulated link (bench scaleout --link): at N = 1, fp32 AlexNet
// through 1 Gbit/s, the coordinator sends the new weights while the gradient is still coming in.
// Measured at the coordinator's interface (linked.ts Overlap), not from the coordinator's own
// bookkeeping. Needs root and iproute2; skipped, saying so, without.
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../server/src/coordinator';
import { NetLab, whyNoNamespaces } from '../../server/src/bench/netns';
import { runInLab, tsArgs } from '../../server/src/bench/linked';

const skip = whyNoNamespaces();
if (skip) console.warn(`netns-pipeline.test.ts skipped: ${skip}`);

describe.skipIf(skip !== null)(`the pipelined step through a 1 Gbit/s link${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('N = 1: most of the new weights leave the coordinator while the gradient still arrives', async () => {
    const lab = NetLab.create({ workers: 1, worker: { rateBits: 1e9, rttMs: 0 } });
    try {
      const host = {
        model: 'alexnet', epochs: 1, batch: 128, seed: 42, port: 0, host: lab.coordinator.ip, minWorkers: 1, maxSteps: 3, balance: 'equal' as const,
        evalExamples: 1, helloTimeoutMs: DEFAULTS.helloTimeoutMs, minDeadlineMs: 600_000, verifyShards: 0,
      };
      // A synthetic worker machine (shared/src/synthetic.ts): V100-speed compute slept, no CPU work.
      const machine = (url: string) => ({ cmd: process.execPath, args: tsArgs('shared/src/synthetic.ts', ['machine', JSON.stringify({ url, msPerExample: 0.25, costs: null })]) });
      const run = await runInLab(lab, host, 1, machine);
      expect(run.marks).toHaveLength(3);
      // Steps 2 and 3: the first step also carries the initial weights, sent before any gradient.
      for (const m of run.marks.slice(1)) {
        expect(m.overlap).toBeDefined();
        const { sentBytes, sentDuringUpBytes } = m.overlap!;
        console.log(`step ${m.rec.step}: ${m.rec.wallMs.toFixed(0)} ms, coordinator sent ${(sentBytes / 1e6).toFixed(0)} MB, ${(sentDuringUpBytes / 1e6).toFixed(0)} MB while the gradient came in`);
        expect(sentBytes).toBeGreaterThan(150e6); // the new weights, 187 MB
        expect(sentDuringUpBytes / sentBytes).toBeGreaterThan(0.5); // 22 of 23 segments at best; 0 when the directions take turns
      }
    } finally {
      lab.destroySync();
    }
    expect(lab.existing()).toEqual([]);
  }, 120_000);
});
