// ?threads=N: how many threads tfjs-backend-wasm's XNNPACK ops run on in the page.
//
// tfjs loads its threaded wasm binary only in a cross-origin-isolated page (the coordinator sends
// COOP/COEP for index.html) and then picks max(1, cores / 2) threads itself: 1 on a 2-core
// machine. The count is fixed when the backend starts, so it is set before tf.setBackend('wasm').
// tfjs also caps an asked-for count at navigator.hardwareConcurrency / 2 (it counts two
// hyperthreads a core), so ?threads=2 started 1 thread on a 2-core machine: see startWasmThreads.
// Only XNNPACK's ops (convolutions, matrix products, pools) use the threads; tfjs's C loops
// (Transpose, Slice, elementwise ops) and our JavaScript kernels run on the page's own thread.

/** The most ?threads= takes: the threaded glue starts a pool of 8 Web Workers up front. */
export const MAX_WASM_THREADS = 8;

/** ?threads= as a number, undefined when absent; throws an error that names the bad value and the fix. */
export function parseWasmThreads(value: string | null): number | undefined {
  if (value === null) return undefined;
  if (/^[1-9]\d*$/.test(value) && Number(value) <= MAX_WASM_THREADS) return Number(value);
  throw new Error(`?threads=${value.slice(0, 16)} is not a whole number from 1 to ${MAX_WASM_THREADS}: give the number of threads ` +
    `for the WebAssembly backend (e.g. ?threads=2), or leave it out to let TensorFlow.js choose (half the cores)`);
}

/** What the page says about threads it was asked for but cannot have (''  when it got them). */
export function threadsShortfall(asked: number | undefined, got: number, isolated: boolean): string {
  if (asked === undefined || asked === got) return '';
  if (!isolated) {
    return ` ?threads=${asked} asked for ${asked} threads, but this page is not cross-origin isolated (it needs the coordinator's ` +
      'Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy headers), so WebAssembly runs on one thread.';
  }
  return ` ?threads=${asked} asked for ${asked} threads; TensorFlow.js started ${got}.`;
}

/**
 * Runs `start` (which calls tf.setBackend('wasm')) with tfjs set to `threads` threads. tfjs's C
 * side caps the count at navigator.hardwareConcurrency / 2 when the backend starts; a machine
 * without hyperthreads (this project's 2-core development machines, many laptops) would get half
 * what it asked for. So while the backend starts, the page reports at least 2 × threads logical
 * cores, and the real figure again once it has.
 */
export async function startWasmThreads<T>(setThreadsCount: (n: number) => void, threads: number | undefined, start: () => Promise<T>): Promise<T> {
  if (threads === undefined) return start();
  setThreadsCount(threads);
  const nav = globalThis.navigator;
  if (!nav || nav.hardwareConcurrency >= 2 * threads) return start();
  Object.defineProperty(nav, 'hardwareConcurrency', { configurable: true, get: () => 2 * threads });
  try {
    return await start();
  } finally {
    Reflect.deleteProperty(nav, 'hardwareConcurrency'); // the prototype's getter answers again
  }
}
