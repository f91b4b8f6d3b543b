// The exact copy of a Node worker's weights in a worker_threads thread (exact-replica.ts): the
// coordinator's kernel and the hash run on another core while the main thread computes. This file
// is both sides: `threadReplica` (the main thread's) and, run as the thread, its entry.
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { ThreadReplica, serveReplica, type ReplicaReply, type ReplicaRequest } from './exact-replica';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/**
 * Starts the thread and returns the main thread's handle on it. The thread loads this file
 * through tsx, as bin/tabtrain loads the main thread (Node 20's --import hooks do not reach threads).
 */
export function threadReplica(plan: PowerSgdPlan, lr: number, corruptVersion?: number): ThreadReplica {
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const worker = new Worker(`import(${tsx}).then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}); })`, { eval: true });
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
