// The exact copy of a browser tab's weights in a Web Worker (exact-replica.ts): the coordinator's
// kernel and the hash run beside the page's main thread, which drives the GPU. This file is both
// sides: `webWorkerReplica` (the page's) and, loaded as the Web Worker (Vite bundles it as one
// from the `new URL(…, import.meta.url)` below), its entry.
import { ThreadReplica, serveReplica, type ReplicaReply, type ReplicaRequest } from './exact-replica';
import { POOL_MIN_FLOATS, type ShareInit } from '@tabtrain/shared/low-rank-pool';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/**
 * Threads that apply each update to the page's exact copy: its Web Worker and helpers sharing its
 * memory, the cores but the page's own, at most 4; 1 where memory cannot be shared (a page that is
 * not cross-origin isolated has no SharedArrayBuffer).
 */
function replicaThreads(): number {
  if (!globalThis.crossOriginIsolated || typeof SharedArrayBuffer !== 'function') return 1;
  return Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1));
}

/** Starts the Web Worker and returns the page's handle on it; `threads` > 1 only where memory can be shared (the pool falls back to one otherwise). */
export function webWorkerReplica(plan: PowerSgdPlan, lr: number, corruptVersion?: number, threads = plan.total >= POOL_MIN_FLOATS ? replicaThreads() : 1): ThreadReplica {
  const worker = new Worker(new URL('./exact-replica-webworker.ts', import.meta.url), { type: 'module' });
  const host = new ThreadReplica({ postMessage: (m, transfer) => worker.postMessage(m, transfer ?? []) }, () => worker.terminate(), plan, lr, corruptVersion, threads);
  worker.onmessage = (e: MessageEvent<ReplicaReply | { error: string }>) => host.onMessage(e.data);
  worker.onerror = (e: ErrorEvent) => host.onMessage({ error: e.message || 'the Web Worker did not start' });
  return host;
}

/** In a Web Worker, `self` posts to the page. */
const scope = globalThis as unknown as { WorkerGlobalScope?: new () => unknown; postMessage(m: unknown, transfer: Transferable[]): void; onmessage: ((e: MessageEvent<ReplicaRequest>) => void) | null };
if (scope.WorkerGlobalScope !== undefined && globalThis instanceof scope.WorkerGlobalScope) {
  // Its helpers are Web Workers of its own (where this worker may start them); they end with it.
  const startShare = typeof Worker === 'function' ? (init: ShareInit) => {
    const helper = new Worker(new URL('./low-rank-share-webworker.ts', import.meta.url), { type: 'module' });
    helper.postMessage(init);
    return () => helper.terminate();
  } : undefined;
  const serve = serveReplica((m, transfer) => scope.postMessage(m, transfer ?? []), startShare);
  scope.onmessage = (e) => serve(e.data);
}
