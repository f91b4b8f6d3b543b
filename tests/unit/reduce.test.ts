import { describe, expect, it } from 'vitest';
import { dropoutMask, epochOrder, planShards, sgdStep, stepsPerEpoch } from '@tabtrain/shared';
import { firstNonFinite, sumInOrder } from '../../server/src/aggregate';

function naiveSum(grads: Float32Array[], n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const g of grads) s = Math.fround(s + g[i]);
    out[i] = s;
  }
  return out;
}

function randomVec(n: number, seed: number): Float32Array {
  let x = seed;
  return Float32Array.from({ length: n }, () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 10);
}

describe('aggregation', () => {
  for (const senders of [0, 1, 2, 4, 7, 33]) {
    it(`sums ${senders} senders in shard order, equal to a naive fp32 fold`, () => {
      const n = 1001; // odd on purpose
      const grads = Array.from({ length: senders }, (_, k) => randomVec(n, k + 1));
      const out = sumInOrder(grads, new Float32Array(n).fill(123));
      expect(out).toEqual(naiveSum(grads, n));
    });
  }

  it('refuses a gradient of the wrong length and finds NaN/Inf', () => {
    expect(() => sumInOrder([new Float32Array(3)], new Float32Array(4))).toThrow(/3 floats, expected 4/);
    expect(firstNonFinite(new Float32Array([0, 1, -2]))).toBe(-1);
    expect(firstNonFinite(new Float32Array([0, NaN, 1]))).toBe(1);
    expect(firstNonFinite(new Float32Array([0, 1, -Infinity]))).toBe(2);
  });

  it('applies SGD to the batch mean', () => {
    const w = new Float32Array([1, 2]);
    sgdStep(w, new Float32Array([4, -8]), 0.5, 4);
    expect(Array.from(w)).toEqual([0.5, 3]);
  });
});

describe('shard planning', () => {
  it('splits a batch exactly, evenly with equal speeds, in contiguous positions', () => {
    const plan = planShards(20, [1, 1, 1]);
    expect(plan.map((s) => s.count)).toEqual([7, 7, 6]);
    expect(plan.map((s) => s.position)).toEqual([0, 7, 14]);
  });

  it('sizes shards in proportion to speed, keeping the global batch and at least one example each', () => {
    const plan = planShards(128, [100, 300, 0.0001]);
    expect(plan.reduce((a, s) => a + s.count, 0)).toBe(128);
    expect(plan[1].count).toBeGreaterThan(2.8 * plan[0].count);
    expect(plan[2].count).toBe(1);
    expect(planShards(2, [1, 1, 1, 1]).length).toBe(2);
    expect(planShards(5, [])).toEqual([]);
  });

  it('keeps the last partial batch like d2l', () => {
    expect(stepsPerEpoch(60_000, 128)).toBe(469);
  });
});

describe('seeded randomness', () => {
  it('epoch orders are permutations, different per epoch, equal per seed', () => {
    const a = epochOrder(1000, 1, 0);
    expect(Array.from(a).sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(epochOrder(1000, 1, 0)).toEqual(a);
    expect(epochOrder(1000, 1, 1)).not.toEqual(a);
  });

  it('dropout masks depend on the example\'s batch position, not on how the batch is split', () => {
    const whole = dropoutMask(3, 5, 9, 0, 10, 64, 0.5);
    const tail = dropoutMask(3, 5, 9, 4, 6, 64, 0.5);
    expect(tail).toEqual(whole.subarray(4 * 64));
    const kept = whole.filter((x) => x > 0).length / whole.length;
    expect(kept).toBeGreaterThan(0.4);
    expect(kept).toBeLessThan(0.6);
    expect(new Set(whole)).toEqual(new Set([0, 2]));
  });
});
