// The progress message (run-progress.ts): every worker hears after each step where the run stands
// (the coordinator's step numbers, from 1) and its own part; a newcomer's first message carries the
// loss curve so far. In-process: a real coordinator and real WorkerCores on the memory wire.
import { describe, expect, it } from 'vitest';
import { ProtocolError, validate, type Progress } from '@tabtrain/shared';
import { SYNTHETIC, startInProcess, type InProcessWorker } from '../helpers/in-process';

const STEPS = 6;

describe('progress messages', () => {
  it('tell each worker the step, the loss and its share; a newcomer gets the curve so far', async () => {
    const run = await startInProcess({ model: 'vgg11-tiny', minWorkers: 2, maxSteps: STEPS, batch: 16 });
    try {
      const [a, b] = await run.add(2, SYNTHETIC);
      let late: Promise<InProcessWorker[]> | null = null;
      run.coord.events.on('step', (s: { step: number }) => { if (s.step === 2) late = run.add(1, SYNTHETIC); });
      const summary = await run.coord.train();
      expect(summary.steps).toBe(STEPS);
      const [c] = await late!;
      await run.close(); // every frame sent has been handled
      const steps = (w: InProcessWorker) => w.progress.filter((p) => p.state === 'running' && p.loss !== undefined).map((p) => p.step);
      // After each step, each worker that was in it hears of it, numbered as the coordinator's log (1..STEPS).
      for (const w of [a, b]) for (let k = 1; k <= STEPS; k++) expect(steps(w)).toContain(k);
      const last = (w: InProcessWorker) => w.progress.at(-1)!;
      for (const w of [a, b, c]) {
        const p = last(w);
        expect(p.step).toBe(STEPS);
        expect(p.totalSteps).toBe(STEPS);
        expect(p.epoch).toBe(1);
        expect(p.role).toBe('established');
        expect(Number.isFinite(p.loss)).toBe(true);
      }
      // Their examples are every example the run computed, and their shares of the last steps add up to 1.
      const sum = (f: (p: Progress) => number) => [a, b, c].reduce((t, w) => t + f(last(w)), 0);
      expect(sum((p) => p.examples)).toBe(STEPS * 16);
      expect(sum((p) => p.share)).toBeCloseTo(1, 6);
      expect(last(a).examples).toBeGreaterThan(0);
      // The first two heard of the run before their first shard, without a curve (there was none).
      expect(a.progress[0].step).toBe(0);
      expect(a.progress[0].curve).toBeUndefined();
      // The newcomer's first message: the loss of every step so far, in order, as [step, loss] pairs.
      const first = c.progress[0];
      expect(first.step).toBeGreaterThanOrEqual(2);
      const curve = first.curve!;
      expect(curve.filter((_, i) => i % 2 === 0)).toEqual(Array.from({ length: first.step }, (_, i) => i + 1));
      expect(c.progress.slice(1).every((p) => p.curve === undefined)).toBe(true);
      console.log(`progress: ${a.progress.length} messages to the first worker; shares ${[a, b, c].map((w) => last(w).share.toFixed(2)).join(' / ')}; newcomer joined after step ${first.step}`);
    } finally {
      await run.close();
    }
  });

  it('tells a stranger in an --open run that it is on probation, and why', async () => {
    const run = await startInProcess({ model: 'vgg11-tiny', minWorkers: 2, maxSteps: 2, batch: 16, open: true, probation: 2 });
    try {
      const [established] = await run.add(1, SYNTHETIC);
      const [stranger] = await run.add(1, { ...SYNTHETIC, stranger: true });
      await run.coord.train();
      await run.close();
      expect(established.progress.at(-1)!.role).toBe('established');
      const p = stranger.progress.at(-1)!;
      expect(p.role).toBe('probation');
      expect(p.why).toMatch(/^probation \(train \d\/2, eval \d\/2\): its first shards are also computed by an established worker and compared/);
      // Its shadow copies are not the step's: it has computed nothing the run applied.
      expect(p.examples).toBe(0);
    } finally {
      await run.close();
    }
  });

  it('is validated like every message: a curve of odd length or a share over 1 is refused', () => {
    const ok: Progress = { type: 'progress', state: 'running', reason: '', step: 3, totalSteps: 9, epoch: 1, epochs: 1, examples: 48, share: 0.5, shareSteps: 3, role: 'established', why: '', loss: 2.3, curve: [1, 2.3, 2, 2.2] };
    expect(validate(ok)).toEqual(ok);
    for (const bad of [{ curve: [1, 2, 3] }, { share: 1.5 }, { loss: Number.NaN }, { role: 'boss' }, { curve: [1.5, 2] }, { step: -1 }]) {
      expect(() => validate({ ...ok, ...bad })).toThrow(ProtocolError);
    }
  });
});
