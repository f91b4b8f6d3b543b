// --compress auto (server/src/autopilot.ts) through the real system: a real coordinator and real
// WorkerCores on the in-memory wire (helpers/in-process.ts), with emulated link rates given to the
// cost model (the memory wire times nothing). As the links slow down and speed up again the run
// goes fp32 → powersgd → fp32; every switch keeps every replica bit-equal to the coordinator's
// weights: the assigns carry the replica hash at every version in compressed modes (verifyEvery 1),
// and at the end each worker's whole weights are compared with the coordinator's.
import { describe, expect, it } from 'vitest';
import { replicaHash } from '@tabtrain/shared';
import { STREAK } from '../../server/src/autopilot';
import { WARM_STEPS } from '../../server/src/training-step';
import { SYNTHETIC, WASM, startInProcess, trainInProcess, type InProcessRun } from '../helpers/in-process';

const MODEL = 'alexnet-small';
/** A synthetic V100-like worker here: 1 ms an example, so compute is priced and links matter. */
const WORKER = { ...SYNTHETIC, syntheticMsPerExample: 1 };
// The memory wire emulates each connection's link, not a coordinator's link shared by all: the
// model is told the coordinator's is no limit (helpers/in-process.ts, MemoryWire's linkRate).
const FAST = { worker: 1e12, coordinator: Infinity };
/** 2 MB/s: alexnet-small's fp32 weights (1.3 MB) each way take about a second a worker, its rank-4 factors (76 KB) 40 ms. */
const SLOW = { worker: 2e6, coordinator: Infinity };

/** The mode each step ran in, from the coordinator's 'step' events and its Step. */
function modes(run: InProcessRun): string[] {
  const seen: string[] = [];
  run.coord.events.on('step', () => seen.push(run.coord.auto!.pilot.current.mode));
  return seen;
}

/**
 * The coordinator's weights' hash at every version (taken as each step ends), and a check of every
 * worker's whole replica against the hash of the version it holds, once the frames in flight are
 * in (fp32 and coded modes keep a whole replica; powersgd's is its exact copy, hash-checked by the
 * assigns). Returns how many replicas were compared.
 */
function versionHashes(run: InProcessRun): () => Promise<number> {
  const hashes = new Map<number, string>();
  run.coord.events.on('step', () => hashes.set(run.coord.version, replicaHash(run.coord.weights)));
  return async () => {
    await new Promise((r) => setTimeout(r, 200));
    let compared = 0;
    for (const w of run.workers) {
      const core = w.core as unknown as { version: number; replica: Float32Array | null; rounds: unknown };
      if (w.core.status.state === 'closed' || core.version < 1 || !core.replica || core.rounds) continue;
      expect(replicaHash(core.replica), `worker ${w.workerId.slice(0, 8)} at v${core.version}`).toBe(hashes.get(core.version));
      compared++;
    }
    return compared;
  };
}

describe('--compress auto', () => {
  it('goes fp32 → powersgd → fp32 as the links slow down and recover, replicas bit-equal throughout', async () => {
    let links = FAST;
    const run = await startInProcess({ model: MODEL, batch: 32, maxSteps: 26, seed: 5, minWorkers: 3, autoRank: 4, verifyEvery: 1, links: () => links });
    const seen = modes(run);
    const replicasEqual = versionHashes(run);
    run.coord.events.on('step', (r: { step: number }) => { links = r.step >= 14 ? FAST : r.step >= 5 ? SLOW : FAST; });
    try {
      await run.add(3, WORKER);
      const summary = await run.coord.train();
      expect(summary.steps).toBe(26);
      const choices = run.lines.filter((l) => l.startsWith('compression '));
      console.log(choices.join('\n'));
      console.log(seen.join(' '));
      // fp32 first (fast links), powersgd while slow, fp32 again once fast: two switches, no flapping.
      const runs = seen.filter((m, i) => i === 0 || seen[i - 1] !== m);
      expect(runs).toEqual(['none', 'powersgd', 'none']);
      expect(choices.filter((l) => l.includes('Switched'))).toHaveLength(2);
      // What each switch cost in steps: from the links' change to the step run in the new mode.
      const into = seen.indexOf('powersgd'), back = seen.lastIndexOf('powersgd') + 1;
      console.log(`switch costs: powersgd from step ${into + 1} (links slow from step 6), fp32 from step ${back + 1} (links fast from step 15)`);
      // The summary says which modes ran at which steps: three spans covering steps 1..26 in order.
      expect(summary.config.auto).toBe(true);
      expect(summary.modes.map((m) => m.mode)).toEqual(['none', 'powersgd-r4', 'none']);
      expect(summary.modes.map((m) => [m.firstStep, m.lastStep])).toEqual([[1, into], [into + 1, back], [back + 1, 26]]);
      expect(summary.modes.reduce((a, m) => a + m.steps, 0)).toBe(26);
      // In: the slow links' first step is priced at once, and the gain must hold at STREAK boundaries.
      expect(into).toBeLessThanOrEqual(5 + STREAK + 1);
      // Back: powersgd's price also carries its measured overhead, the median of its last steady steps.
      expect(back).toBeLessThanOrEqual(14 + STREAK + 5);
      // Every hash check passed; nobody resynced or was dropped.
      expect(run.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      expect(run.coord.status().workers.map((w) => w.resyncs)).toEqual([0, 0, 0]);
      expect(run.coord.status().workers.filter((w) => w.state === 'lost')).toEqual([]);
      expect(await replicasEqual()).toBeGreaterThanOrEqual(3);
      // What it chose and why, as /api/status and the dashboard's header say it.
      const status = run.dashboard.status();
      expect(status.compression).toMatchObject({ auto: true, mode: 'fp32' });
      expect(status.compression.prices.map((p) => p.mode)).toEqual(['fp32', 'fp16', 'int8', 'powersgd r4']);
      expect(status.header.compression).toMatch(/^fp32 \(auto: predicted \d+ ms a step /);
      expect(status.header.commShare).toBeGreaterThanOrEqual(0);
      expect(status.header.commShare).toBeLessThanOrEqual(1);
    } finally {
      await run.close();
    }
  }, 120_000);
});

describe('--compress auto with --balance cost', () => {
  it('workers benched in fp32 compute again once the run is in powersgd, though they fell behind', async () => {
    // After the run's first WARM_STEPS (every worker computes), the links are 30 MB/s (the memory
    // wire slows each worker's frames to it; the model shares the coordinator's among them): in
    // fp32 a second and third worker's 1.3 MB each way then cost more than the compute they save,
    // so they are benched and, not kept current, fall versions behind; in powersgd (76 KB) all
    // three pay. Priced as downloading the whole weights on every step it rejoined
    // (paid once), it was left out of the first powersgd step here, and of every measured step of
    // `bench scaleout --balance cost` through real links; now every worker computes the first
    // WARM_STEPS steps after a switch (the stale one catching up once).
    let links = FAST;
    const run = await startInProcess({ model: MODEL, batch: 32, maxSteps: 34, seed: 7, minWorkers: 3, autoRank: 4, verifyEvery: 1, balance: 'cost', links: () => links });
    const seen = modes(run);
    const computing: number[] = [];
    run.coord.events.on('step', (r: { step: number; shards: { worker: number | null; count: number }[] }) => {
      computing.push(new Set(r.shards.filter((s) => s.count > 0).map((s) => s.worker)).size);
      if (r.step === WARM_STEPS + 1) links = { worker: 30e6, coordinator: 30e6 };
    });
    try {
      await run.add(3, WORKER);
      await run.coord.train();
      console.log(`modes: ${seen.join(' ')}\nworkers computing: ${computing.join(' ')}`);
      const into = seen.indexOf('powersgd');
      // fp32 for at least two steps with a worker benched before the switch: it fell behind.
      expect(computing.slice(WARM_STEPS + 2, into).filter((n) => n < 3).length).toBeGreaterThanOrEqual(2);
      // The memory wire does not share one coordinator link among the workers as the model does,
      // so the autopilot may move on to another mode later; the powersgd span's steps say it.
      const span = seen.map((m, i) => (m === 'powersgd' ? i : -1)).filter((i) => i >= 0);
      expect(span.length).toBeGreaterThanOrEqual(WARM_STEPS);
      // The switch's first WARM_STEPS steps: every worker, the stale one caught up once (after
      // them the plan may bench one again on its own measurements).
      expect(span.slice(0, WARM_STEPS).map((i) => computing[i])).toEqual(Array(WARM_STEPS).fill(3));
      expect(run.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
    } finally {
      await run.close();
    }
  }, 120_000);
});

describe('--compress auto with workers coming and going', () => {
  it('a worker lost mid-step and late joiners on both sides of a switch: the run goes on, replicas bit-equal', async () => {
    // The memory wire moves bytes at memory speed whatever the emulated rates say, so the steps
    // do not slow with the links: the run starts on fast links, where the model and the steps agree.
    let links = FAST;
    const run = await startInProcess({ model: MODEL, batch: 32, maxSteps: 30, seed: 9, minWorkers: 3, autoRank: 4, verifyEvery: 1, links: () => links });
    const seen = modes(run);
    const replicasEqual = versionHashes(run);
    const joins: Promise<unknown>[] = [];
    let lostInRound2 = false, lostInFp32 = false;
    // powersgd once the links slow down: a worker is lost as a round 2 begins, one joins.
    run.coord.events.on('round', (r: { step: number }) => {
      if (r.step < 9 || lostInRound2) return;
      lostInRound2 = true;
      run.workers[0].leave();
      joins.push(run.add(1, WORKER));
    });
    run.coord.events.on('step', (r: { step: number }) => {
      if (r.step === 2) links = SLOW;
      if (r.step === 14) links = FAST;
      // Joins right after the switch back to fp32, and a worker lost while the next step's weights stream out.
      if (seen.length > 1 && seen[seen.length - 1] === 'none' && seen[seen.length - 2] === 'powersgd') joins.push(run.add(1, WORKER));
    });
    run.coord.events.on('segment', () => {
      if (lostInFp32 || run.coord.auto!.pilot.current.mode !== 'none' || !seen.includes('powersgd')) return;
      lostInFp32 = true;
      run.workers[1].leave();
    });
    try {
      await run.add(3, WORKER);
      const summary = await run.coord.train();
      await Promise.all(joins);
      expect(summary.steps).toBe(30);
      console.log(run.lines.filter((l) => l.startsWith('compression ') || l.includes(' left') || l.includes('joined')).join('\n'));
      console.log(seen.join(' '));
      expect(lostInRound2 && lostInFp32).toBe(true);
      expect(seen.filter((m, i) => i === 0 || seen[i - 1] !== m)).toEqual(['none', 'powersgd', 'none']);
      expect(run.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      const live = run.coord.status().workers.filter((w) => w.state !== 'lost');
      expect(live).toHaveLength(3);
      expect(live.map((w) => w.resyncs)).toEqual([0, 0, 0]);
      expect(await replicasEqual()).toBeGreaterThanOrEqual(3);
    } finally {
      await run.close();
    }
  }, 120_000);
});

describe('--compress auto on loopback', () => {
  it('a small model with real (wasm) workers chooses fp32, and its weights are bit-equal to --compress none at equal shards', async () => {
    const opts = { model: 'alexnet-tiny', batch: 16, maxSteps: 4, seed: 11, balance: 'equal' as const, evalExamples: 100 };
    const auto = await trainInProcess(2, { ...opts, autoRank: 4 }, WASM);
    const none = await trainInProcess(2, opts, WASM);
    const choices = auto.lines.filter((l) => l.startsWith('compression '));
    console.log(choices.join('\n'));
    expect(choices.length).toBeGreaterThanOrEqual(1);
    expect(choices.every((l) => l.startsWith('compression fp32:'))).toBe(true);
    expect(choices[0]).toContain('no link limit measured');
    expect(auto.summary.weightsSha256).toBe(none.summary.weightsSha256);
  }, 120_000);
});
