// pace.ts: deadlines and speeds from the coordinator's own clock, never a worker's word (issue 24).
import { describe, expect, it } from 'vitest';
import { COMPUTE_SAMPLES, MAX_MISSED_DEADLINES, MAX_TIMER_MS, averageCompute, averageSpeed, deadlineMs, impossibleClaim, missedDeadline, shardPace } from '../../server/src/pace';

const S = { minMs: 120_000, firstMs: 120_000, newcomerMs: 10_000, maxMs: 1_800_000 };

describe('deadlines', () => {
  it('a measured worker gets 5× its predicted time, at least the floor, at most the ceiling', () => {
    expect(deadlineMs(S, 100, 10, [], 0)).toBe(120_000); // 50 s predicted: the floor
    expect(deadlineMs(S, 1000, 10, [], 0)).toBe(500_000);
    // The tiny speed that gave a 3.5-day deadline: capped.
    expect(deadlineMs(S, 128, 0.0021, [], 0)).toBe(1_800_000);
  });

  it('never beyond what setTimeout can wait, whatever the speed or the settings', () => {
    for (const speed of [1e-300, Number.MIN_VALUE, 1e-9, 1, 1e300, Infinity, NaN, -1, 0]) {
      for (const maxMs of [1_800_000, 1e15, Infinity]) {
        const ms = deadlineMs({ ...S, maxMs }, 128, speed, [1e-300, 5], 99);
        expect(ms, `speed ${speed}, max ${maxMs}`).toBeGreaterThanOrEqual(1);
        expect(ms, `speed ${speed}, max ${maxMs}`).toBeLessThanOrEqual(Math.min(MAX_TIMER_MS, maxMs));
        expect(Number.isInteger(ms)).toBe(true);
      }
    }
    expect(deadlineMs({ ...S, fixedMs: 4_500_000_000 }, 1, 1, [], 0)).toBe(MAX_TIMER_MS);
  });

  it('an unmeasured worker gets a bounded default from the fleet, doubled per missed deadline up to 16×', () => {
    expect(deadlineMs(S, 4, 0, [100], 0)).toBe(10_000);
    expect(deadlineMs(S, 4, 0, [100], 1)).toBe(20_000);
    expect(deadlineMs(S, 4, 0, [100], 9)).toBe(160_000);
    expect(deadlineMs(S, 4, 0, [], 0)).toBe(120_000); // nobody measured: the first deadline
  });

  it('the third missed deadline of an identity refuses it; the coordinator\'s own workers are only closed', () => {
    expect(MAX_MISSED_DEADLINES).toBe(3);
    expect([1, 2, 3, 4].map((n) => missedDeadline(n, false))).toEqual(['close', 'close', 'refuse', 'refuse']);
    expect(missedDeadline(10, true)).toBe('close');
  });
});

describe('speeds', () => {
  const timing = { count: 100, sentAt: 1000, firstAt: 2000, lastAt: 2500, bytes: 500_000, sentBytes: 0, downRate: 0 };

  it('speed is the whole shard, assign to last frame; compute the wait for the first byte; the upload first byte to last frame', () => {
    const p = shardPace(timing);
    expect(p.speed).toBe(100 / 1.5);
    expect(p.computeRate).toBe(100);
    expect(p.upRate).toBe(1_000_000);
  });

  it('the download is taken out at the measured rate, never more than half the wait', () => {
    expect(shardPace({ ...timing, sentBytes: 200_000, downRate: 1_000_000 }).computeRate).toBe(125);
    expect(shardPace({ ...timing, sentBytes: 1e9, downRate: 1_000_000 }).computeRate).toBe(200);
  });

  it('a worker that sends its first byte at once and then computes is not fast, only a slow uploader', () => {
    const p = shardPace({ ...timing, firstAt: 1001, lastAt: 2500 });
    expect(p.speed).toBe(100 / 1.5);
    expect(p.upRate).toBeLessThan(400_000);
    // Bytes that arrived before the assign was even sent time nothing.
    expect(shardPace({ ...timing, firstAt: 0 }).speed).toBe(100 / 1.5);
  });

  it('a worker that answers at once is still timed: at least 1 ms, no Infinity', () => {
    const p = shardPace({ ...timing, firstAt: 1000, lastAt: 1000 });
    expect(p.speed).toBe(100_000);
    expect(Number.isFinite(p.computeRate) && Number.isFinite(p.upRate)).toBe(true);
  });

  it('a compute sample the download dominated is rough: the whole weights with the assign, or a megabyte at an unknown rate', () => {
    expect(shardPace(timing).rough).toBe(false);
    expect(shardPace({ ...timing, sentBytes: 600_000, downRate: 0 }).rough).toBe(false); // powersgd's update: small
    expect(shardPace({ ...timing, sentBytes: 2e6, downRate: 0 }).rough).toBe(true);
    expect(shardPace({ ...timing, sentBytes: 2e6, downRate: 100e6 }).rough).toBe(false); // 20 ms of a 1,000 ms wait
    expect(shardPace({ ...timing, sentBytes: 187e6, downRate: 119e6 }).rough).toBe(true); // AlexNet's weights at 1 Gbit/s
  });

  it('the compute rate: the median of its last samples; a rough sample never drags a clean rate down, and the first clean one drops the rough', () => {
    const w = { computeRate: 0, computeRough: false, computeSamples: [] as number[] };
    averageCompute(w, 2, true); // eight workers catching up at 1 Gbit/s: 2 examples/s
    expect(w).toMatchObject({ computeRate: 2, computeRough: true });
    averageCompute(w, 3000, false);
    expect(w).toMatchObject({ computeRate: 3000, computeRough: false, computeSamples: [3000] });
    averageCompute(w, 2, true);
    expect(w.computeRate).toBe(3000);
    for (const x of [3200, 100, 3100, 2900]) averageCompute(w, x, false); // one stall among them
    expect(w.computeRate).toBe(3000);
    for (let i = 0; i < COMPUTE_SAMPLES; i++) averageCompute(w, 1000, false); // a worker that really slowed
    expect(w.computeRate).toBe(1000);
    for (const bad of [0, -1, NaN, Infinity]) averageCompute(w, bad, false);
    expect(w.computeSamples).toHaveLength(COMPUTE_SAMPLES);
    expect(w.computeRate).toBe(1000);
  });

  it('the average ignores samples that are not positive and finite', () => {
    expect(averageSpeed(0, 50)).toBe(50);
    expect(averageSpeed(100, 50)).toBe(85);
    for (const bad of [0, -1, NaN, Infinity]) expect(averageSpeed(100, bad)).toBe(100);
  });

  it('a claim of more compute than the clock allowed is a lie; claiming less is only ignored', () => {
    expect(impossibleClaim(1400, timing)).toBeNull();
    expect(impossibleClaim(20_000, timing)).toBeNull(); // within the slack: clock readings were seen off by 280 ms
    expect(impossibleClaim(0, timing)).toBeNull();
    expect(impossibleClaim(1e9, timing)).toMatch(/reported 1000000000 ms of compute for a shard whose gradient was in 1500 ms after its assign was sent/);
  });
});
