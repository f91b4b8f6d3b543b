// The exact copy of a browser tab's weights in a Web Worker (exact-replica.ts): the coordinator's
// kernel and the hash run beside the page's main thread, which drives the GPU. This file is both
// sides: `webWorkerReplica` (the page's) and, loaded as the Web Worker (Vite bundles it as one
// from the `new URL(…, import.meta.url)` below), its entry.
import { ThreadReplica, serveReplica, type ReplicaReply, type ReplicaRequest } from './exact-replica';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/** Starts the Web Worker and returns the page's handle on it. */
export function webWorkerReplica(plan: PowerSgdPlan, lr: number, corruptVersion?: number): ThreadReplica {
  const worker = new Worker(new URL('./exact-replica-webworker.ts', import.meta.url), { type: 'module' });
  const host = new ThreadReplica({ postMessage: (m, transfer) => worker.postMessage(m, transfer ?? []) }, () => worker.terminate(), plan, lr, corruptVersion);
  worker.onmessage = (e: MessageEvent<ReplicaReply | { error: string }>) => host.onMessage(e.data);
  worker.onerror = (e: ErrorEvent) => host.onMessage({ error: e.message || 'the Web Worker did not start' });
  return host;
}

/** In a Web Worker, `self` posts to the page. */
const scope = globalThis as unknown as { WorkerGlobalScope?: new () => unknown; postMessage(m: unknown, transfer: Transferable[]): void; onmessage: ((e: MessageEvent<ReplicaRequest>) => void) | null };
if (scope.WorkerGlobalScope !== undefined && globalThis instanceof scope.WorkerGlobalScope) {
  const serve = serveReplica((m, transfer) => scope.postMessage(m, transfer ?? []));
  scope.onmessage = (e) => serve(e.data);
}
