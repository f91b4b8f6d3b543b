// Issue 24: no stall without a reason, and verdicts that last the run. One run of alexnet-tiny
// walks through the ways a step waits, each of which must show its reason in /api/status within
// 2 s; a powersgd run loses a round-2 worker; a third run meets liars that come back (a caught
// one after 200 short connections, one that sends invalid frames and reconnects with its secret).
//
// In-process (tests/helpers/in-process.ts): a real coordinator and its dashboard on the in-memory
// wire, real WorkerCores (wasm) as the operator's workers, and the strangers and liars as peers
// on it (peer-link.ts): every frame they send goes through the transport's own validation. What
// is asserted lives above the wire: the scheduler's reasons (read from the object /api/status
// serves; the route itself is read by metrics and hostile-regressions), deadlines, verdicts. A
// worker that leaves here closes its connection with 1006, as a dead process's socket does; a
// real SIGKILL'd worker process is still shown by faults.test.ts ('a worker killed with SIGKILL mid-step').
import { beforeAll, describe, expect, it } from 'vitest';
import { CLOSE, MSG, decodeFrame, type Message } from '@tabtrain/shared';
import { parseCompression } from '@tabtrain/shared/compress';
import type { StepRecord } from '../../server/src/coordinator';
import { data, subset } from '../helpers/run';
import { WASM, startInProcess, type InProcessRun } from '../helpers/in-process';
import { badFrames, churn, colluder, hello, join, sleep } from '../helpers/liars';
import { setupNodeBackend } from '../../client/src/node-worker';

const TOKEN = 'trust-test-token';
const RUN = { model: 'alexnet-tiny', batch: 16, seed: 17, balance: 'equal' as const, maxSteps: 100_000, evalExamples: 64, open: true, token: TOKEN, probation: 1, verifyShards: 0 };
const HONEST = { ...WASM, delayMsPerExample: 20 };

// One tfjs backend for every worker core in this process.
beforeAll(async () => { await setupNodeBackend('wasm'); });

/** Polls the dashboard's status (what /api/status serves) until its reason matches; returns the state, the reason and how long it took. */
async function reasonWithin(run: InProcessRun, re: RegExp, ms = 5000): Promise<{ state: string; reason: string; ms: number }> {
  const t0 = performance.now();
  let s = { state: '', reason: '' };
  while (performance.now() - t0 < ms) {
    s = run.dashboard.status();
    if (re.test(s.reason)) break;
    await sleep(50);
  }
  return { ...s, ms: performance.now() - t0 };
}

describe('no stall without a reason', () => {
  it('only strangers, a silent established worker (a deadline), a leave during probation, a pause, no workers: each reason in /api/status within 2 s', async () => {
    const run = await startInProcess({ ...RUN, deadlineMs: 3000 }, subset(data(), 640, 64));
    const { coord, lines } = run;
    const training = coord.train();
    training.catch(() => {});
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const said: string[] = [];
    try {
      // Only a stranger: nobody may compute the step.
      const stranger = colluder(run, RUN.model);
      await stranger.welcome;
      const strangers = await reasonWithin(run, /needs an established worker/);
      said.push(`only probation: ${strangers.ms.toFixed(0)} ms`);
      expect(strangers.state).toBe('waiting');
      expect(strangers.ms).toBeLessThan(2000);
      // An established worker (the token) that takes its shard and never answers: the deadline's wait.
      const silent = join(run, hello({ token: TOKEN, workerId: 'silent' }));
      const w = await silent.welcome;
      const deadline = await reasonWithin(run, /waiting for worker #\d+'s train shard 0\/0; a shard not returned by its deadline goes to another worker/);
      said.push(`deadline: ${deadline.ms.toFixed(0)} ms`);
      expect(deadline.state).toBe('running');
      expect(deadline.ms).toBeLessThan(2000);
      expect(w.workerId).toBe('silent');
      expect((await silent.closed).code).toBe(CLOSE.timeout);
      // The operator's worker: the run goes on, and the stranger's fabricated shadow is caught.
      const honest = await run.add(1, HONEST);
      expect((await stranger.closed).code).toBe(CLOSE.untrusted);
      // A stranger that leaves with its probation shard in hand costs the step nothing.
      const leaver = join(run, hello({ workerId: 'leaver' }));
      const leftAt = new Promise<number>((resolve) => leaver.link.onFrame((d) => {
        if ((decodeFrame(d).header as Message).type === MSG.assign) { leaver.link.terminate(); resolve(coord.step); }
      }));
      const at = await leftAt;
      while (coord.step < at + 3) await sleep(20);
      const around = steps.filter((s) => s.step > at && s.step <= at + 2).map((s) => Math.round(s.wallMs));
      said.push(`steps after the leave: ${around.join(', ')} ms`);
      expect(Math.max(...around)).toBeLessThan(1500);
      expect(lines.filter((l) => /goes back to the queue/.test(l)).length, 'only the silent worker\'s shard was taken back').toBe(1);
      // A pause: its reason at once.
      coord.pause('paused by the test');
      const paused = await reasonWithin(run, /^paused by the test$/);
      expect([paused.state, paused.ms < 2000]).toEqual(['paused', true]);
      coord.resume();
      // Nobody left.
      for (const h of honest) h.leave();
      const none = await reasonWithin(run, /^no workers connected$/);
      said.push(`no workers: ${none.ms.toFixed(0)} ms`);
      expect([none.state, none.ms < 2000]).toEqual(['waiting', true]);
      console.log(`reasons shown after: ${said.join('; ')}`);
    } finally {
      await run.close();
    }
  }, 120_000);

  it('powersgd: a round-2 worker lost mid-step; its shard is recomputed by the other, and the wait says so', async () => {
    const run = await startInProcess({ ...RUN, compress: parseCompression('powersgd', 2), minWorkers: 2 }, subset(data(), 640, 64));
    const { coord, lines } = run;
    // A slow worker (its round 2 takes 3 s) and a faster one; the slow one dies (1006) as round 2 begins.
    const [slow] = await run.add(1, { ...WASM, delayMsPerExample: 400 });
    await run.add(1, { ...WASM, delayMsPerExample: 150 });
    const training = coord.train();
    training.catch(() => {});
    try {
      await new Promise<void>((r) => coord.events.on('round', () => r()));
      slow.leave();
      const r = await reasonWithin(run, /round 2 \(the worker of its round 1 left: recomputed from its examples\)/);
      console.log(`round 2 lost: "${r.reason}" after ${r.ms.toFixed(0)} ms`);
      expect(r.ms).toBeLessThan(2000);
      while (coord.step < 1) await sleep(50);
      expect(lines.some((l) => /round 2: worker #\d+ recomputes its gradient/.test(l))).toBe(true);
    } finally {
      await run.close();
    }
  }, 120_000);
});

describe('verdicts last the run', () => {
  it('a caught liar is still refused after 200 short connections; a worker closed three times for invalid frames is caught, and refused after', async () => {
    const run = await startInProcess(RUN, subset(data(), 640, 64));
    const { coord } = run;
    await run.add(1, HONEST);
    const training = coord.train();
    training.catch(() => {});
    try {
      // A colluder is caught on its first shadow; then 200 short connections push it out of the table.
      const c = colluder(run, RUN.model);
      const w = await c.welcome;
      expect((await c.closed).code).toBe(CLOSE.untrusted);
      await churn(run, 200);
      expect(coord.status().workers.some((r) => r.workerId === w.workerId)).toBe(false);
      const back = join(run, hello({ workerId: w.workerId, session: w.session }));
      const refused = await back.closed;
      expect(refused.code).toBe(CLOSE.untrusted);
      expect(refused.reason).toMatch(/rejected earlier in this run/);
      // With the token (established), a worker that answers every shard with a bad frame and
      // reconnects with its secret: three closes, then it is a liar and refused.
      const closes = await badFrames(run, 10, TOKEN);
      console.log(`bad frames: ${closes.map((x) => `${x.code} ${x.reason.slice(0, 60)}`).join(' | ')}`);
      expect(closes.slice(0, 3).map((x) => x.code)).toEqual([CLOSE.badGradient, CLOSE.badGradient, CLOSE.badGradient]);
      expect(closes.length).toBe(4);
      expect(closes[3].code).toBe(CLOSE.untrusted);
      expect(coord.status().caught.at(-1)!.why).toMatch(/3 connections closed for invalid frames/);
      const s0 = coord.step;
      while (coord.step < s0 + 2) await sleep(20);
    } finally {
      await run.close();
    }
  }, 120_000);
});
