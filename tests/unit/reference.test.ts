// The trusted reference (reference.ts) and the frame norm window's verdicts (verify.ts, FrameNorms)
// on synthetic gradients: a shared descent direction plus per-shard noise, as honest shards are.
import { describe, expect, it } from 'vitest';
import { REFERENCE, SPOT_RAMP, codedDisagreement, measure, spotCheckRate, suspicion, type ShardGradient } from '../../server/src/reference';
import { FrameNorms } from '../../server/src/verify';

/** mulberry32 + Box-Muller: reproducible Gaussians. */
function gaussians(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

const N = 20_000;
const rnd = gaussians(3);
const descent = Float32Array.from({ length: N }, () => rnd());
/** An honest shard: the descent direction plus noise `noise` times as long. */
const shard = (noise: number): Float32Array => Float32Array.from(descent, (d) => d + noise * rnd());
const map = (g: Float32Array, f: (x: number, i: number) => number) => Float32Array.from(g, f);

describe('the trusted reference', () => {
  const vouched: ShardGradient[] = [0, 1].map(() => ({ count: 8, vouched: true, g: shard(3) }));
  const verdict = (g: Float32Array) => {
    const m = measure([...vouched, { count: 8, vouched: false, g }]);
    expect(m).toHaveLength(1);
    return { ...m[0], why: suspicion(m[0]) };
  };

  it('passes an honest shard, and suspects a negated, a × 3 and a random one of the same norm', () => {
    const honest = shard(3);
    const h = verdict(honest);
    expect(h.why).toBeNull();
    expect(h.cosine).toBeGreaterThan(0.1);
    expect(h.normRatio).toBeGreaterThan(0.8);
    expect(h.normRatio).toBeLessThan(1.25);
    expect(verdict(map(honest, (x) => -x)).why).toMatch(/cosine with the vouched workers' sum of the step is -0\.\d+/);
    expect(verdict(map(honest, (x) => 3 * x)).why).toMatch(/norm per √example is [23]\.\d\d× the vouched workers' median/);
    // A random direction of the honest shard's norm.
    const noise = gaussians(11);
    const random = Float32Array.from({ length: N }, () => noise());
    const scale = Math.sqrt(honest.reduce((a, x) => a + x * x, 0) / random.reduce((a, x) => a + x * x, 0));
    const rv = verdict(map(random, (x) => x * scale));
    expect(Math.abs(rv.cosine)).toBeLessThan(REFERENCE.minCosine + 0.02);
    expect(rv.cosine).toBeLessThan(REFERENCE.minCosine);
    expect(rv.why).toMatch(/cosine/);
  });

  it('early in training, when even the vouched shards point apart, an honest shard that points a little away is not recomputed', () => {
    // No shared direction yet: each shard is its own noise, and one shard's surplus is the others' shortfall.
    const noise = gaussians(5);
    const anti = Float32Array.from({ length: N }, () => noise());
    const apart: ShardGradient[] = [1, -1].map((k) => ({ count: 8, vouched: true, g: Float32Array.from(anti, (x) => 0.3 * k * x + noise()) }));
    const x = Float32Array.from({ length: N }, () => noise());
    const ref = Float32Array.from(apart[0].g, (v, i) => v + apart[1].g[i]);
    const away = Float32Array.from(x, (v, i) => v - 0.05 * ref[i]);
    const [m] = measure([...apart, { count: 8, vouched: false, g: away }]);
    expect(m.cosine).toBeLessThan(0);
    expect(m.threshold).toBeLessThan(m.cosine);
    expect(suspicion(m)).toBeNull();
  });

  it('measures nothing without a vouched shard in the step, or without an unvouched one', () => {
    expect(measure([{ count: 8, vouched: false, g: shard(3) }, { count: 8, vouched: false, g: shard(3) }])).toEqual([]);
    expect(measure(vouched)).toEqual([]);
  });

  it('compressed copies of one shard agree by direction and length, and a negated or rescaled one does not', () => {
    const g = shard(3);
    // Two workers' encodings differ by their error feedback: a small residual each.
    const a = map(g, (x) => x + 0.05 * rnd()), b = map(g, (x) => x + 0.05 * rnd());
    expect(codedDisagreement(a, b)).toBeNull();
    expect(codedDisagreement(a, map(b, (x) => -x))).toMatch(/cosine is -(0\.9|1\.0)/);
    expect(codedDisagreement(a, map(b, (x) => 3 * x))).toMatch(/norms differ 3\.\d\d×/);
    expect(codedDisagreement(a, map(b, () => rnd()))).toMatch(/cosine is -?0\.0/);
  });
});

describe('the spot-check ramp after probation', () => {
  it("checks every one of a new worker's first shards, then fewer, never below --verify-shards", () => {
    for (let n = 0; n < SPOT_RAMP; n++) expect(spotCheckRate(n, 0.05)).toBe(1);
    expect(spotCheckRate(2 * SPOT_RAMP - 1, 0.05)).toBeCloseTo(0.5);
    expect(spotCheckRate(10_000, 0.05)).toBe(0.05);
    // Expected recomputations over a worker's first 80 shards: the ramp's cost to an honest worker.
    const first80 = Array.from({ length: 80 }, (_, n) => spotCheckRate(n, 0.05)).reduce((a, b) => a + b, 0);
    expect(first80).toBeGreaterThan(20);
    expect(first80).toBeLessThan(30);
  });
});

describe('the frame norm window (FrameNorms)', () => {
  it("never refuses a vouched worker's frame, logs it, and follows it; refuses an unvouched outlier on the norm", () => {
    const notes: string[] = [];
    const f = new FrameNorms((l) => notes.push(l));
    for (let i = 0; i < 16; i++) expect(f.check('round-2 factor frame 3', 1, 1, true)).toBeNull();
    // The honest jump of a powersgd run (26× the median at step 6,391), from both local workers.
    expect(f.check('round-2 factor frame 3', 26 ** 2, 1, true)).toBeNull();
    expect(f.check('round-2 factor frame 3', 26 ** 2, 1, true)).toBeNull();
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/a vouched worker's round-2 factor frame 3: norm per √example is 26× the recent median .*summed/);
    expect(f.check('round-2 factor frame 3', 1000 ** 2, 1, false)).toMatch(/its round-2 factor frame 3 norm per √example is 1000× the recent median/);
    // The window takes the vouched frames in: once the gradient has grown, an unvouched frame of its size is plausible.
    for (let i = 0; i < 64; i++) f.check('round-2 factor frame 3', 26 ** 2, 1, true);
    expect(f.check('round-2 factor frame 3', 30 ** 2, 1, false)).toBeNull();
  });
});
