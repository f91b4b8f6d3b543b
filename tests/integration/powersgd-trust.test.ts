// Probation under PowerSGD: two honest copies of a compressed train shard differ by each worker's
// own error feedback, so a newcomer's probation shards are computed in fp32 (assign.fp32), beside an
// fp32 check copy by an established worker, and compared float by float. A liar is caught there;
// an honest newcomer passes and then takes part in the compressed rounds.
//
// In-process (tests/helpers/in-process.ts): a real coordinator on the in-memory wire, the
// established workers real WorkerCores (wasm, the local key, each with its exact copy in this
// thread), the newcomer a real core whose frames are rewritten and sent through an Endpoint
// (peer-link.ts), validated by the transport's own receive(). Every check here is made above the
// wire; compressed runs over real sockets are shown by powersgd-run.test.ts and learning.test.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import { CLOSE, decodeFrame, encode, getModel, paramLayout } from '@tabtrain/shared';
import { parseCompression, planSegments } from '@tabtrain/shared/compress';
import { halfToFloatTable, toHalf } from '@tabtrain/shared/scalar-codecs';
import type { StepRecord } from '../../server/src/coordinator';
import type { Dataset } from '../../server/src/data';
import { setupNodeBackend } from '../../client/src/node-worker';
import { data, subset } from '../helpers/run';
import { WASM, startInProcess } from '../helpers/in-process';
import { afterShards, gradientBody, honest, liar, negatedCodes, scaledGradient, type Closed, type Tamper } from '../helpers/liars';

// One tfjs backend for every worker core in this process, established or new.
beforeAll(async () => { await setupNodeBackend('wasm'); });

const PROBATION = 3;
let DATA: Dataset;
const RUN = { model: 'alexnet-tiny', batch: 16, maxSteps: 12, seed: 31, balance: 'equal' as const, minWorkers: 2, probation: PROBATION, open: true, compress: parseCompression('powersgd', 2), verifyEvery: 3 };
/** Established honest workers (the local key); the delay keeps steps long enough for the newcomer to take part. */
const HONEST = { ...WASM, delayMsPerExample: 10 };

async function withNewcomer(tamper: Tamper, run: Partial<typeof RUN> = {}) {
  const r = await startInProcess({ ...RUN, ...run }, DATA);
  const { coord, lines } = r;
  await r.add(2, HONEST);
  let newcomer: ReturnType<typeof liar> | null = null;
  const steps: StepRecord[] = [];
  coord.events.on('step', (s: StepRecord) => {
    steps.push(s);
    if (s.step === 1) newcomer = liar(r, tamper);
  });
  try {
    const summary = await coord.train();
    const closed = await Promise.race([newcomer!.closed, new Promise<Closed>((res) => setTimeout(() => res({ code: -1, reason: 'still open after the run' }), 3000))]);
    return { summary, lines, steps, newcomer: newcomer!, closed, status: coord.status() };
  } finally {
    await r.close();
  }
}

describe('probation in a powersgd run', () => {
  beforeAll(() => { DATA = subset(data(), 320, 64); });

  it('a newcomer sending its gradient × 1000 is caught on its fp32 probation shards (4016), and the run is not touched', async () => {
    const out = await withNewcomer(scaledGradient(1000));
    console.log(`liar: sent ${out.newcomer.sent.train} train results, closed ${out.closed.code} (${out.closed.reason})`);
    expect(out.closed.code).toBe(CLOSE.untrusted);
    expect(out.closed.reason).toMatch(/probation train shard \d+\/\d+: gradients differ by/);
    expect(out.newcomer.sent.train).toBeLessThanOrEqual(PROBATION);
    expect(out.summary.steps).toBe(RUN.maxSteps);
    // Its copies were never summed: every step's shards are the two honest workers'.
    const id = out.status.caught[0].id;
    for (const s of out.steps) for (const sh of s.shards) expect(sh.worker).not.toBe(id);
    expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
  }, 180_000);

  it('an honest newcomer passes its fp32 probation and then computes compressed shards whose replicas stay bit-equal', async () => {
    const out = await withNewcomer(honest);
    expect(out.closed.code).toBe(-1); // still connected when the run ended
    const row = out.status.workers.find((w) => w.workerId === out.newcomer.workerId())!;
    expect(out.status.caught).toEqual([]);
    const after = out.steps.filter((s) => s.shards.some((sh) => sh.worker === row.id));
    console.log(`honest newcomer #${row.id}: ${out.newcomer.sent.train} train results, a shard of ${after.length} of ${out.steps.length} steps (from step ${after[0]?.step})`);
    // Three fp32 checks, then shards of its own in the compressed rounds.
    expect(after.length).toBeGreaterThanOrEqual(2);
    expect(out.newcomer.sent.train).toBeGreaterThanOrEqual(PROBATION + 2 * after.length);
    expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
  }, 180_000);

  it('a trusted worker whose last round-1 frame turns non-finite, after P-hat of the earlier matrices went out: closed 4009 (bad gradient), its shard redone, the replicas still bit-equal', async () => {
    // After probation it sends honest factors, except once: NaN in the last frame of a round 1
    // (the fp32 tensors' sums), by which time the matrices before it may have been broadcast.
    let poisoned = false;
    const nanOnce: Tamper = (f, m) => {
      if (poisoned || m.type !== 'gradient' || m.round !== 1) return [f];
      const g = gradientBody(f);
      if (m.offset + g.length !== m.total) return [f];
      poisoned = true;
      g[g.length - 1] = Number.NaN;
      return [encode(m, g)];
    };
    const out = await withNewcomer(nanOnce);
    expect(poisoned).toBe(true);
    expect(out.closed.code).toBe(CLOSE.badGradient);
    expect(out.closed.reason).toMatch(/non-finite|NaN/);
    expect(out.summary.steps).toBe(RUN.maxSteps);
    expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
    expect(out.status.workers.filter((w) => w.resyncs > 0)).toEqual([]);
    console.log(`NaN factor: closed ${out.closed.code} (${out.closed.reason}); early broadcast frames per step: ${out.steps.map((s) => s.earlySegments).join(' ')}`);
  }, 180_000);

  it('a trusted worker that scales its round-2 factors × 1000 after probation is caught before they are summed (4016); the run goes on, its loss bounded', async () => {
    // Honest through probation and two compressed shards (peers' frames build the yardstick), then × 1000.
    let honestRounds = 2;
    let scaled = 0;
    const later: Tamper = (f, m) => {
      if (m.type !== 'gradient' || m.round !== 2) return [f];
      if (m.offset === 0 && honestRounds-- > 0) return [f];
      if (honestRounds >= 0) return [f];
      const g = gradientBody(f);
      for (let i = 0; i < g.length; i++) g[i] *= 1000;
      scaled++;
      return [encode(m, g)];
    };
    const out = await withNewcomer(later);
    console.log(`scaled factors: ${scaled} frames sent, closed ${out.closed.code} (${out.closed.reason}); losses ${out.steps.map((s) => s.loss.toFixed(3)).join(' ')}`);
    expect(scaled).toBeGreaterThan(0);
    expect(out.closed.code).toBe(CLOSE.untrusted);
    expect(out.closed.reason).toMatch(/round-2 factor frame \d+ norm per √example is \d+× the recent median/);
    expect(out.summary.steps).toBe(RUN.maxSteps);
    expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
    // Summed, its × 1000 factors would have thrown the weights far off (lr 0.1) and the loss with them.
    const losses = out.steps.map((s) => s.loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(Math.max(...losses)).toBeLessThan(1.2 * losses[0]);
  }, 180_000);

  // A worker honest through probation that then scales every frame × 1000: int8 by its scales
  // (the codes stay), fp16 by re-encoding each half (saturating at 65504, still finite).
  for (const codec of ['int8', 'fp16'] as const) {
    it(`${codec}: a trusted worker that scales its ${codec} frames × 1000 after probation is caught before they are summed (4016)`, async () => {
      const { params, total } = paramLayout(getModel(RUN.model));
      const plan = planSegments(params, total, parseCompression(codec));
      const halves = halfToFloatTable();
      let honestShards = 2;
      let scaled = 0;
      const later: Tamper = (f, m) => {
        if (m.type !== 'gradient' || m.codec !== codec) return [f];
        if (m.offset === 0 && honestShards-- > 0) return [f];
        if (honestShards >= 0) return [f];
        const s = plan.find((x) => x.offset === m.offset)!;
        const body = decodeFrame(f).body.slice();
        if (codec === 'int8') {
          // The body starts with one fp32 scale per piece.
          const scales = new Float32Array(body.buffer, 0, s.pieces.length);
          for (let i = 0; i < scales.length; i++) scales[i] *= 1000;
        } else {
          const h = new Uint16Array(body.buffer, 0, s.count);
          for (let i = 0; i < h.length; i++) h[i] = toHalf(1000 * halves[h[i]]);
        }
        scaled++;
        return [encode(m, body)];
      };
      const out = await withNewcomer(later, { compress: parseCompression(codec) });
      console.log(`${codec} scaled: ${scaled} frames sent, closed ${out.closed.code} (${out.closed.reason})`);
      expect(scaled).toBeGreaterThan(0);
      expect(out.closed.code).toBe(CLOSE.untrusted);
      expect(out.closed.reason).toMatch(new RegExp(`${codec} segment \\d+ norm per √example is \\d+× the recent median`));
      expect(out.summary.steps).toBe(RUN.maxSteps);
      expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      expect(out.steps.every((s) => Number.isFinite(s.loss))).toBe(true);
    }, 180_000);
  }

  // Issue 24 §8: sign-flipping liars in compressed runs. Negated codes keep the frame's norm, so the
  // frame norm check cannot see them; a newly established worker's shards are spot-checked against a
  // local worker's copy of the same shard (scheduler.ts, newlyTrusted), compared decoded by direction
  // and length (reference.ts, codedDisagreement), before they are summed.
  for (const codec of ['int8', 'fp16'] as const) {
    it(`${codec}: a worker that negates its ${codec} frames once established is caught before any of them is summed; the local workers are untouched and the replicas bit-equal`, async () => {
      const { params, total } = paramLayout(getModel(RUN.model));
      const plan = planSegments(params, total, parseCompression(codec));
      const tamper = afterShards(PROBATION, negatedCodes(codec, (offset) => plan.find((x) => x.offset === offset)!.pieces.length));
      const out = await withNewcomer(tamper, { compress: parseCompression(codec) });
      const id = out.status.caught[0]?.id;
      const summed = out.steps.filter((s) => s.step - 1 >= tamper.lies.from && s.shards.some((sh) => sh.worker === id)).length;
      console.log(`${codec} negated: lying from step ${tamper.lies.from} (${tamper.lies.frames} frames), closed ${out.closed.code} (${out.closed.reason}); lies summed ${summed}`);
      expect(tamper.lies.frames).toBeGreaterThan(0);
      expect(out.closed.code).toBe(CLOSE.untrusted);
      expect(out.status.caught.map((x) => x.workerId)).toEqual([out.newcomer.workerId()]);
      expect(out.status.caught[0].why).toMatch(/recomputed by vouched worker #\d+: decoded gradients' cosine is -(0\.9|1\.0)/);
      expect(summed).toBe(0);
      expect(out.summary.steps).toBe(RUN.maxSteps);
      expect(out.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      expect(out.lines.filter((l) => / left \(/.test(l))).toEqual([]);
    }, 180_000);
  }
});
