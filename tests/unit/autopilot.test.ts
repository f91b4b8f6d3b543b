// --compress auto's decisions (server/src/autopilot.ts), pure: fleets of measured rates in, the
// mode and its price out. The run-level switches are tested in tests/integration/auto-compress.test.ts.
import { describe, expect, it } from 'vitest';
import { IMAGE_BYTES, getModel, paramLayout } from '@tabtrain/shared';
import { Autopilot, FIRST_STREAK, HYSTERESIS, PRICE_EVERY, SETTLE_STEPS, STREAK, type Fleet } from '../../server/src/autopilot';
import type { WorkerCost } from '../../server/src/cost-model';

const GBIT = 119e6; // 1 Gbit/s Ethernet's TCP payload rate, bytes/s
const V100 = 4000; // d2l's V100 on AlexNet, examples/s

function pilot(model: string): Autopilot {
  const { params, total } = paramLayout(getModel(model));
  return new Autopilot({ params, total, pipeline: true, exampleBytes: IMAGE_BYTES + 1 }, 4);
}

function fleet(n: number, rate: number, opts: { compute?: number; coordinator?: number; cost?: boolean } = {}): Fleet {
  const workers: WorkerCost[] = Array.from({ length: n }, (_, i) => ({ id: i + 1, computeRate: opts.compute ?? V100, upRate: rate, downRate: rate, behind: 1 }));
  const c = opts.coordinator ?? rate;
  const counts = opts.cost ? null : workers.map((_, i) => Math.floor(128 / n) + (i < 128 % n ? 1 : 0));
  return { workers, link: { up: c, down: c }, batch: 128, counts };
}

/** The run's first choice: made at the second boundary with prices, when the gain held at both (FIRST_STREAK). */
function firstChoice(p: Autopilot, f: Fleet) {
  for (let s = 1; s < FIRST_STREAK; s++) expect(p.decide(f, s)?.switched ?? false).toBe(false);
  return p.decide(f, FIRST_STREAK)!;
}

/**
 * Runs `steps` steps over `f`, each taking `wall(mode, modelMs)`, deciding before each but the
 * first (as a run does: its first step measures the workers); returns the mode of each step.
 */
function drive(p: Autopilot, f: (step: number) => Fleet, steps: number, wall: (mode: string, modelMs: number, step: number) => number): string[] {
  const modes: string[] = [];
  for (let s = 1; s <= steps; s++) {
    if (s > 1) p.decide(f(s), s - 1);
    const price = p.price(f(s)).find((x) => x.compress.mode === p.current.mode)!;
    modes.push(p.current.mode);
    p.observed(wall(p.current.mode, price.modelMs, s));
  }
  return modes;
}

describe('autopilot: the first choice', () => {
  it('AlexNet, 4 V100 workers behind 1 Gbit/s: powersgd, with fp32 predicted seconds a step', () => {
    const p = pilot('alexnet');
    const c = firstChoice(p, fleet(4, GBIT));
    expect(c.switched).toBe(true);
    expect(c.compress).toEqual({ mode: 'powersgd', rank: 4 });
    const fp32 = c.prices.find((x) => x.compress.mode === 'none')!;
    const psgd = c.prices.find((x) => x.compress.mode === 'powersgd')!;
    console.log(c.why);
    // 4 × 187 MB each way through one 119 MB/s link: over 6 s; the factors, a few ms beyond compute.
    expect(fp32.ms).toBeGreaterThan(6000);
    expect(psgd.ms).toBeLessThan(100);
    expect(c.why).toMatch(/^compression powersgd r4: predicted \d+ ms a step against fp32's [\d,]+ ms with 4 workers; slowest link 119\.0 MB\/s$/);
  });

  it('the same with --balance cost: the planner prices each mode with the workers it would use', () => {
    const c = firstChoice(pilot('alexnet'), fleet(4, GBIT, { cost: true }));
    expect(c.compress.mode).toBe('powersgd');
    // fp32 through 1 Gbit/s: the planner benches all but one worker (their bytes cost more than their compute saves).
    expect(c.prices.find((x) => x.compress.mode === 'none')!.workers).toBe(1);
    expect(c.prices.find((x) => x.compress.mode === 'powersgd')!.workers).toBeGreaterThan(1);
  });

  it('with --balance cost, once settled, an unchanged fleet is priced every PRICE_EVERY steps; a change at once', () => {
    const p = pilot('alexnet');
    const f = fleet(8, GBIT, { cost: true });
    firstChoice(p, f);
    const before = p.pricings;
    for (let s = FIRST_STREAK + 1; s <= FIRST_STREAK + 4 * PRICE_EVERY; s++) { p.decide(f, s); p.observed(50); }
    expect(p.pricings - before).toBe(4);
    // A worker leaves: priced at the next boundary, whatever the cadence.
    const n = p.pricings;
    expect(p.decide(fleet(7, GBIT, { cost: true }), FIRST_STREAK + 4 * PRICE_EVERY + 1)).not.toBeNull();
    expect(p.pricings).toBe(n + 1);
    // Shards sized by the run (--balance speed or equal) are priced at every boundary: the model alone, no planner.
    const q = pilot('alexnet');
    const g = fleet(8, GBIT);
    firstChoice(q, g);
    const m = q.pricings;
    for (let s = FIRST_STREAK + 1; s <= FIRST_STREAK + 8; s++) { q.decide(g, s); q.observed(50); }
    expect(q.pricings - m).toBe(8);
  });

  it('loopback (no link limit), one worker, or a fast link with a small model: exact fp32', () => {
    for (const f of [fleet(4, Infinity), fleet(1, Infinity), fleet(2, 10 * GBIT)]) {
      const c = pilot('alexnet-small').decide(f, 1)!;
      expect(c.compress.mode).toBe('none');
      expect(c.switched).toBe(false);
    }
  });

  it('nothing measured yet: no choice, the run stays in fp32', () => {
    const p = pilot('alexnet');
    const f = fleet(2, GBIT);
    f.workers.forEach((w) => { w.computeRate = 0; });
    expect(p.decide(f, 1)).toBeNull();
    expect(p.current.mode).toBe('none');
  });
});

describe('autopilot: switching', () => {
  it('never flaps on noise: equal prices, step times ±40% at random for 300 steps', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const modes = drive(pilot('alexnet-small'), () => fleet(4, Infinity), 300, (_m, ms) => ms * (0.6 + 0.8 * random()));
    expect(new Set(modes)).toEqual(new Set(['none']));
  });

  it('a codec the model likes but that runs slow is priced as it ran: one try, never again', () => {
    // 0.3 Gbit/s: the model prefers powersgd; its steps take 5 s more than the model says (a slow codec).
    const modes = drive(pilot('alexnet'), () => fleet(4, 0.3 * GBIT), 60, (m, ms) => ms + (m === 'powersgd' ? 30_000 : 0));
    const runs = modes.filter((m, i) => i === 0 || modes[i - 1] !== m);
    console.log(runs.join(' → '));
    // FIRST_STREAK steps in fp32, then powersgd until SETTLE_STEPS have passed and STREAK boundaries agreed; never again.
    expect(runs.slice(0, 2)).toEqual(['none', 'powersgd']);
    expect(runs.filter((m) => m === 'powersgd')).toHaveLength(1);
    expect(modes.lastIndexOf('powersgd')).toBeLessThanOrEqual(FIRST_STREAK + Math.max(SETTLE_STEPS, STREAK));
    // Then the mode the model prices best among the rest (int8 at 0.3 Gbit/s), and no flapping.
    expect(runs).toEqual(['none', 'powersgd', 'int8']);
  });

  it('links that slow down and recover: fp32 → powersgd → fp32, each after STREAK boundaries', () => {
    const f = (s: number) => fleet(4, s > 10 && s <= 30 ? GBIT : Infinity);
    const modes = drive(pilot('alexnet'), f, 50, (_m, ms) => ms);
    expect(modes.filter((m, i) => i === 0 || modes[i - 1] !== m)).toEqual(['none', 'powersgd', 'none']);
    expect(modes.indexOf('powersgd')).toBeGreaterThanOrEqual(10 + STREAK - 1);
    expect(modes.indexOf('powersgd')).toBeLessThanOrEqual(10 + STREAK + SETTLE_STEPS);
    expect(modes.lastIndexOf('powersgd')).toBeLessThanOrEqual(30 + STREAK);
  });

  it('a mode that ran faster than its model does not make an untried one look free', () => {
    // fp32's steps ran in a third of its price (the workers' first rates measured low: 4.4 s
    // under it); powersgd's a little over. Priced at its model (3.2 s) plus that −4.4 s, int8,
    // never run, cost nothing and was tried: seconds a step in the middle of a powersgd run.
    const modes = drive(pilot('alexnet'), () => fleet(4, GBIT), 40, (m, ms) => (m === 'none' ? ms / 3 : ms + 20));
    expect(modes.filter((m, i) => i === 0 || modes[i - 1] !== m)).toEqual(['none', 'powersgd']);
  });

  it('a gain under the hysteresis does not switch between codecs', () => {
    const p = pilot('alexnet');
    firstChoice(p, fleet(4, GBIT));
    expect(p.current.mode).toBe('powersgd');
    // powersgd's steps run (1 − HYSTERESIS / 2)⁻¹ slower than int8 would at this link: not enough to leave it.
    const modes = drive(p, () => fleet(4, GBIT), 40, (m, ms) => ms);
    expect(new Set(modes)).toEqual(new Set(['powersgd']));
    expect(HYSTERESIS).toBeGreaterThan(0);
  });

  it('a worker that leaves (the fleet changes) makes a new choice, logged even when the mode stays', () => {
    const p = pilot('alexnet');
    firstChoice(p, fleet(4, GBIT));
    for (let s = 3; s < 6; s++) { expect(p.decide(fleet(4, GBIT), s)).toBeNull(); p.observed(100); }
    const c = p.decide(fleet(3, GBIT), 6)!;
    expect(c.switched).toBe(false);
    expect(c.why).toContain('with 3 workers');
  });
});
