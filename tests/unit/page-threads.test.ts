// ?threads= for the page's wasm backend (client/src/page-threads.ts): what it accepts, and what the
// page says when it did not get the threads it asked for. The page itself starting 2 threads on
// this 2-core machine is tests/browser/worker-page.test.ts (the fallback test's ?threads=2 case).
import { describe, expect, it } from 'vitest';
import { MAX_WASM_THREADS, parseWasmThreads, threadsShortfall } from '../../client/src/page-threads';

describe('?threads=', () => {
  it('takes a whole number from 1 to the pool size, and nothing when absent', () => {
    expect(parseWasmThreads(null)).toBeUndefined();
    expect(parseWasmThreads('1')).toBe(1);
    expect(parseWasmThreads('4')).toBe(4);
    expect(parseWasmThreads(String(MAX_WASM_THREADS))).toBe(MAX_WASM_THREADS);
  });

  it('refuses anything else with a message naming the value and the fix', () => {
    for (const bad of ['', '0', '-2', '2.5', '02', 'two', '9', '1e1', ' 2']) {
      expect(() => parseWasmThreads(bad), JSON.stringify(bad)).toThrow(`?threads=${bad} is not a whole number from 1 to ${MAX_WASM_THREADS}`);
    }
    expect(() => parseWasmThreads('x')).toThrow(/e\.g\. \?threads=2\), or leave it out/);
    // A huge or multi-byte value is named by its start, not echoed whole.
    expect(() => parseWasmThreads('9'.repeat(5000))).toThrow(/^\?threads=9{16} is not/);
    expect(() => parseWasmThreads('２')).toThrow('?threads=２ is not a whole number');
  });

  it('says why a page got fewer threads than it asked for', () => {
    expect(threadsShortfall(undefined, 1, true)).toBe('');
    expect(threadsShortfall(2, 2, true)).toBe('');
    expect(threadsShortfall(2, 1, false)).toMatch(/\?threads=2 asked for 2 threads, but this page is not cross-origin isolated .*one thread/);
    expect(threadsShortfall(4, 3, true)).toBe(' ?threads=4 asked for 4 threads; TensorFlow.js started 3.');
  });
});
