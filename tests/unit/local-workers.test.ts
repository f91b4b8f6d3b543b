// --local-workers: a count, or 'cores' (the default: one worker process per core, as tfjs gives Node no wasm threads).
import { describe, it, expect } from 'vitest';
import { availableParallelism } from 'node:os';
import { localWorkerCount, SERVE_HELP } from '../../server/src/cli';

describe('--local-workers', () => {
  it("'cores' (the default) is one worker per core; a number is that many", () => {
    expect(localWorkerCount('cores')).toBe(availableParallelism());
    expect(localWorkerCount('3')).toBe(3);
    expect(localWorkerCount('0')).toBe(0);
    expect(localWorkerCount(undefined)).toBe(availableParallelism());
  });

  it('anything else is refused with a message naming both forms', () => {
    for (const bad of ['-1', '2.5', 'all', '']) {
      expect(() => localWorkerCount(bad)).toThrow(/--local-workers must be a count ≥ 0 or 'cores'/);
    }
  });

  it('the help says what cores means here', () => {
    expect(SERVE_HELP).toContain(`default 'cores': one per core`);
    expect(SERVE_HELP).toContain(`(${availableParallelism()} here)`);
  });
});
