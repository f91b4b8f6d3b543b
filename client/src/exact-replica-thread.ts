// The exact copy of a Node worker's weights in a worker_threads thread (exact-replica.ts): the
// coordinator's kernel and the hash run on another core while the main thread computes. This file
// is both sides: `threadReplica` (the main thread's) and, run as the thread, its entry.
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { ThreadReplica, serveReplica, type ReplicaReply, type ReplicaRequest } from './exact-replica';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/** Starts the thread (it inherits tsx's loader through execArgv) and returns the main thread's handle on it. */
export function threadReplica(plan: PowerSgdPlan, lr: number, corruptVersion?: number): ThreadReplica {
  const worker = new Worker(new URL(import.meta.url));
  // The thread must not keep a finished worker's process alive.
  worker.unref();
  const host = new ThreadReplica(worker, () => { void worker.terminate(); }, plan, lr, corruptVersion);
  worker.on('message', (m: ReplicaReply | { error: string }) => host.onMessage(m));
  worker.on('error', (e) => host.onMessage({ error: e.message }));
  return host;
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const serve = serveReplica((m, transfer) => port.postMessage(m, transfer ?? []));
  port.on('message', (r: ReplicaRequest) => serve(r));
}
