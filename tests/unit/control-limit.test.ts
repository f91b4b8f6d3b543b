// Wrong admin tokens per address (issue 24 §8): a few at once, then one a second, the rest waits;
// the log gets the first refusal at once and one line per interval summing up the others.
import { describe, expect, it } from 'vitest';
import { CONTROL_LIMIT, ControlLimit } from '../../server/src/control-limit';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ControlLimit', () => {
  it('lets an address try `burst` times, then answers with a wait; other addresses are not affected; one line per interval', async () => {
    const lines: string[] = [];
    const limit = new ControlLimit((l) => lines.push(l), { ...CONTROL_LIMIT, logIntervalMs: 100 });
    const waits: number[] = [];
    for (let i = 0; i < 20; i++) {
      const wait = limit.retryAfter('10.0.0.1');
      waits.push(wait);
      if (wait === 0) limit.refuse('10.0.0.1');
    }
    expect(waits.filter((w) => w === 0)).toHaveLength(CONTROL_LIMIT.burst);
    expect(waits.slice(CONTROL_LIMIT.burst).every((w) => w === 1)).toBe(true);
    expect(limit.retryAfter('10.0.0.2')).toBe(0);
    expect(lines).toEqual(['dashboard: refused control 1 time (missing or wrong admin token) from 10.0.0.1']);
    await sleep(150);
    expect(lines[1]).toBe('dashboard: refused control 4 times (missing or wrong admin token) from 10.0.0.1; 15 more answered 429 (over 5 tries, then 1 a second, per address)');
    // A second later the bucket has one try again.
    await sleep(1000);
    expect(limit.retryAfter('10.0.0.1')).toBe(0);
    limit.close();
    expect(lines).toHaveLength(2);
  });

  it('remembers at most maxAddresses addresses', () => {
    const limit = new ControlLimit(() => {}, { ...CONTROL_LIMIT, maxAddresses: 3 });
    for (const a of ['a', 'b', 'c', 'd']) for (let i = 0; i < CONTROL_LIMIT.burst; i++) limit.refuse(a);
    expect(limit.retryAfter('a')).toBe(0); // forgotten: the oldest went when d came
    expect(limit.retryAfter('d')).toBeGreaterThan(0);
    limit.close();
  });
});
