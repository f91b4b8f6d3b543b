// The synthetic worker machine of `bench scaleout --link` (shared/src/synthetic-machine.ts) models
// a powersgd worker's exact copy as threads beside its step: the apply, measured on one thread,
// takes 1/T of that over T threads (worker --apply-threads), and a round's factors wait only for
// what is left of it. Real coordinator in-process, real sleeps; what a step's record reports.
import { describe, expect, it } from 'vitest';
import { getModel, paramLayout } from '@tabtrain/shared';
import { parseCompression, powerSgdPlanOf } from '@tabtrain/shared/compress';
import { SyntheticMachine } from '@tabtrain/shared/synthetic-machine';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import type { StepRecord } from '../../server/src/run-options';
import { LOCAL_KEY } from '../../server/src/secrets';
import { startInProcess } from '../helpers/in-process';

const model = 'alexnet-tiny';
const compress = parseCompression('powersgd', 2);
/** One thread's apply of a whole update, ms: long enough that a loaded machine's timing noise is small beside it. */
const APPLY_MS = 400;

/** Costs where only the exact copy's apply takes time, APPLY_MS on one thread, spread over the matrices. */
function costs(): WorkerCosts {
  const { params, total } = paramLayout(getModel(model));
  const plan = powerSgdPlanOf(params, total, compress)!;
  return {
    model, compress, weightsMsPerFloat: 0, encodeMs: [], decodeMs: [], applyMs: APPLY_MS, hashMs: 0, warmStartMs: 0,
    applyPartMs: [0, ...plan.matrices.map(() => APPLY_MS / plan.matrices.length)],
  };
}

/** Median over steps 3–6 of the one shard's compute and upload (its encode + send of both rounds: the wait for the exact copy's threads is in it). */
async function run(applyThreads: number): Promise<{ computeMs: number; uploadMs: number }> {
  const r = await startInProcess({ model, batch: 8, maxSteps: 6, seed: 3, minWorkers: 1, compress, verifyEvery: 0 });
  const recs: StepRecord[] = [];
  r.coord.events.on('step', (rec: StepRecord) => recs.push(rec));
  try {
    const endpoint = r.wire.connect();
    const machine = new SyntheticMachine('synthetic-test', (f) => endpoint.send(f), { msPerExample: 0, costs: costs(), applyThreads, local: LOCAL_KEY });
    endpoint.onFrame = (f) => { machine.receive(f).catch((e: Error) => r.lines.push(`machine error: ${e.message}`)); };
    await endpoint.send(machine.hello());
    await r.coord.train();
  } finally {
    await r.close();
  }
  expect(r.lines.filter((l) => l.includes('error'))).toEqual([]);
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const measured = recs.filter((x) => x.step >= 3);
  return { computeMs: median(measured.map((x) => x.computeMs)), uploadMs: median(measured.map((x) => x.uploadMs)) };
}

describe('the synthetic machine, powersgd', () => {
  it('waits for its exact copy\'s apply split over its threads: 1/T of the one-thread time, outside its GPU compute', async () => {
    const one = await run(1), four = await run(4);
    console.log(`apply ${APPLY_MS} ms on one thread: waited ${one.uploadMs.toFixed(0)} ms a step with 1 thread, ${four.uploadMs.toFixed(0)} ms with 4 (compute ${one.computeMs.toFixed(0)}, ${four.computeMs.toFixed(0)} ms)`);
    // Sleeps only ever run long: a lower bound for one thread, a wide upper bound for four.
    expect(one.uploadMs).toBeGreaterThan(0.75 * APPLY_MS);
    expect(four.uploadMs).toBeLessThan(0.6 * APPLY_MS);
    expect(four.uploadMs).toBeGreaterThan(0);
    // The GPU's compute (no examples' time here, only its passes over the matrices) does not count the wait.
    for (const x of [one, four]) expect(x.computeMs).toBeLessThan(0.25 * APPLY_MS);
  }, 60_000);
});
