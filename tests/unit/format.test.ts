// What the coordinator prints: durations that never read "1m60s", and counted nouns.
import { describe, expect, it } from 'vitest';
import { formatSeconds, plural } from '../../server/src/format';

describe('formatSeconds', () => {
  it('rounds once, then splits: no 60 in the last place', () => {
    expect(formatSeconds(0)).toBe('0s');
    expect(formatSeconds(59.4)).toBe('59s');
    expect(formatSeconds(59.6)).toBe('1m00s');
    expect(formatSeconds(119.7)).toBe('2m00s');
    expect(formatSeconds(61)).toBe('1m01s');
    expect(formatSeconds(3599.6)).toBe('1h00m');
    expect(formatSeconds(3600 + 59.5 * 60)).toBe('2h00m');
    expect(formatSeconds(7325)).toBe('2h02m');
    expect(formatSeconds(Infinity)).toBe('?');
    expect(formatSeconds(Number.NaN)).toBe('?');
  });
});

describe('plural', () => {
  it('says 1 worker, 2 workers, 0 examples', () => {
    expect(plural(1, 'worker')).toBe('1 worker');
    expect(plural(2, 'worker')).toBe('2 workers');
    expect(plural(0, 'example')).toBe('0 examples');
    expect(plural(3750, 'step')).toBe('3,750 steps');
  });
});
