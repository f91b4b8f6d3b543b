// --balance cost (cost-model.ts): the step goes to the workers that make it shortest. Functional,
// not timed: who gets train shards, not how fast the run is.
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLOSE } from '@tabtrain/shared';
import type { StepRecord } from '../../server/src/coordinator';
import { LOCAL_KEY_ENV } from '../../server/src/secrets';
import { BIN } from '../../server/src/spawn-worker';
import { paceLiar } from '../helpers/pace-liars';
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

/** A worker process as a stranger starts it: no --local, no local key in its environment (on probation). */
function remoteWorker(url: string, args: string[] = []): ChildProcess {
  const env = { ...process.env };
  delete env[LOCAL_KEY_ENV];
  return spawn(BIN, ['worker', '--url', url, '--backend', 'wasm', '--quiet', ...args], { stdio: 'pipe', env });
}

describe('cost-model scheduling with a remote worker', () => {
  it('a remote worker that passes probation joins the plan; spot-checked shards pinned to one worker get their second copy from the other (no freeze)', async () => {
    // --verify-shards 1: every shard is a spot check once two workers are established, so the
    // freeze of issue 24 (a pinned shard whose second copy nobody may take) shows at once.
    const { coord, url, lines } = await startCoordinator({ ...RUN, maxSteps: 24, minWorkers: 2, verifyShards: 1, probation: 2 });
    const local = workers(url, 1);
    const remote = remoteWorker(url);
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
      await coord.close();
      kill([...local, remote]);
    }
  });
});

describe('pace from the coordinator\'s clock (issue 24)', () => {
  it.each(['speed', 'cost'] as const)('--balance %s: a slow worker claiming computeMs 0 gets no more than its measured share; one that uploads in fragments with a ping before the last is measured at its real rate', async (balance) => {
    const { coord, url, lines } = await startCoordinator({ ...RUN, balance, batch: 32, maxSteps: 20, minWorkers: 4 });
    // Synthetic compute (a sleep per example, a fixed gradient) for all: the test times the coordinator's clock, not tfjs.
    const honest = workers(url, 2, ['--backend', 'wasm', '--synthetic-ms-per-example', '1']);
    // 20 ms per example: 50 examples/s at most, against hundreds for the honest two.
    const claimer = paceLiar(url, { msPerExample: 20, claim: { computeMs: 0, encodeMs: 0, sendMs: 0 } });
    const fragmenter = paceLiar(url, { msPerExample: 1, fragments: 6, fragmentGapMs: 60 });
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    try {
      const ids = await Promise.all([claimer.welcome, fragmenter.welcome]);
      await coord.train();
      const rows = coord.status().workers;
      const idOf = (workerId: string) => rows.find((w) => w.workerId === workerId)!.id;
      const [claimerId, fragmenterId] = ids.map((w) => idOf(w.workerId));
      const share = (id: number) => {
        const recent = steps.slice(-10);
        const mine = recent.reduce((a, s) => a + s.shards.filter((x) => x.worker === id).reduce((b, x) => b + x.count, 0), 0);
        return mine / recent.reduce((a, s) => a + s.examples, 0);
      };
      const claimerRow = rows.find((w) => w.id === claimerId)!;
      const honestRows = rows.filter((w) => w.id !== claimerId && w.id !== fragmenterId);
      const fragRow = rows.find((w) => w.id === fragmenterId)!;
      const realRate = fragmenter.upload.bytes / (fragmenter.upload.ms / 1000);
      console.log(`--balance ${balance}: claimer (computeMs 0, 20 ms/example) measured ${claimerRow.examplesPerSec.toFixed(0)} examples/s, share of the last 10 steps ${(100 * share(claimerId)).toFixed(1)}%; ` +
        `honest ${honestRows.map((w) => w.examplesPerSec.toFixed(0)).join(', ')} examples/s; fragmenter sent ${fragmenter.upload.bytes} bytes at ${(realRate / 1000).toFixed(0)} KB/s, measured ${(fragRow.upBytesPerSec / 1000).toFixed(0)} KB/s`);
      expect(lines.filter((l) => / caught: /.test(l)), 'nobody is punished: claiming less compute is no proof of a lie').toEqual([]);
      // Its measured speed is its own, far below the honest workers'; so is its share of the batch.
      for (const h of honestRows) expect(claimerRow.examplesPerSec).toBeLessThan(h.examplesPerSec / 2);
      expect(share(claimerId)).toBeLessThan(0.25);
      // The fragmented upload is timed from its first fragment: near the rate it really sent at.
      expect(fragRow.upBytesPerSec).toBeGreaterThan(0);
      expect(fragRow.upBytesPerSec).toBeLessThan(3 * realRate);
    } finally {
      coord.stop();
      await coord.close();
      claimer.close();
      fragmenter.close();
      kill(honest);
    }
  });
});

describe('deadlines from the coordinator\'s clock (issue 24)', () => {
  it('a token worker that stalls after being measured is closed at its measured deadline, and refused the third time, however it rejoins; one that claims impossible compute is caught', async () => {
    const TOKEN = 'pace-token';
    const DEADLINE = 1500;
    const { coord, url, lines } = await startCoordinator({ ...RUN, balance: 'equal', batch: 16, maxSteps: 100_000, token: TOKEN, minDeadlineMs: DEADLINE, newcomerDeadlineMs: DEADLINE });
    const honest = workers(url, 1, ['--backend', 'wasm', '--synthetic-ms-per-example', '1', '--token', TOKEN]);
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const run = coord.train();
    run.catch(() => {});
    const identity = { workerId: 'staller', kind: 'node' as const, backend: 'cpu', adapter: null, token: TOKEN };
    try {
      // It computes two shards honestly (measured), then holds every shard it gets; it rejoins with its secret each time.
      const codes: number[] = [];
      const t0 = performance.now();
      for (let k = 0; k < 5; k++) {
        const s = paceLiar(url, { msPerExample: 1, stallAfter: k === 0 ? 2 : 0, identity });
        codes.push((await s.closed).code);
      }
      const ms = performance.now() - t0;
      console.log(`staller: closes ${codes.join(',')} in ${ms.toFixed(0)} ms; ${lines.filter((l) => /deadline/.test(l)).slice(-3).join(' | ')}`);
      expect(codes).toEqual([CLOSE.timeout, CLOSE.timeout, CLOSE.untrusted, CLOSE.untrusted, CLOSE.untrusted]);
      expect(lines.some((l) => /caught: missed 3 shard deadlines/.test(l))).toBe(true);
      // Three stalls of one measured deadline each (the 1.5 s floor), not three unbounded ones.
      expect(ms).toBeLessThan(3 * DEADLINE + 20_000);

      // A claim of 10^9 ms of compute (the tiny speed that bought a 3.5-day deadline) contradicts the coordinator's clock.
      const claimer = paceLiar(url, { msPerExample: 1, claim: { computeMs: 1e9, encodeMs: 0, sendMs: 0 }, identity: { ...identity, workerId: 'slow-claimer', session: undefined } });
      expect((await claimer.closed).code).toBe(CLOSE.untrusted);
      expect(lines.some((l) => /caught: shard \d+\/\d+: it reported 1000000000 ms of compute/.test(l))).toBe(true);
      // The run goes on with the honest worker.
      const at = steps.length;
      expect(await new Promise<boolean>((r) => { const t = setInterval(() => { if (steps.length >= at + 3) { clearInterval(t); r(true); } }, 50); setTimeout(() => { clearInterval(t); r(false); }, 20_000); })).toBe(true);
    } finally {
      coord.stop();
      await run.catch(() => {});
      await coord.close();
      kill(honest);
    }
  });
});
