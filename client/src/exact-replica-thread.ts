// The exact copy of a Node worker's weights in a worker_threads thread (exact-replica.ts): the
// coordinator's kernel and the hash run on another core while the main thread computes. This file
// is both sides: `threadReplica` (the main thread's) and, run as the thread, its entry.
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ThreadReplica, serveReplica, type ReplicaReply, type ReplicaRequest } from './exact-replica';
import { serveShare, type ShareInit } from '@tabtrain/shared/low-rank-pool';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';

/** Threads that apply each update to the exact copy by default: the cores but the one the main thread needs, at most 4 (the apply is memory-bound), at least 1. */
export const defaultReplicaThreads = () => Math.max(1, Math.min(4, availableParallelism() - 1));

/**
 * Starts the thread and returns the main thread's handle on it. The thread loads this file
 * through tsx, as bin/tabtrain loads the main thread (Node 20's --import hooks do not reach threads).
 */
export function threadReplica(plan: PowerSgdPlan, lr: number, corruptVersion?: number, threads = 1): ThreadReplica {
  const worker = thisFileInThread({ role: 'replica' });
  const host = new ThreadReplica(worker, () => { void worker.terminate(); }, plan, lr, corruptVersion, threads);
  worker.on('message', (m: ReplicaReply | { error: string }) => host.onMessage(m));
  worker.on('error', (e) => host.onMessage({ error: e.message }));
  return host;
}

/** This file run as a thread: the exact copy, or one of its helpers that apply a share of each update. */
type ThreadRole = { role: 'replica' } | ({ role: 'share' } & ShareInit);

function thisFileInThread(data: ThreadRole): Worker {
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const worker = new Worker(`import(${tsx}).then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}); })`, { eval: true, workerData: data });
  // The thread must not keep a finished worker's process alive.
  worker.unref();
  return worker;
}

if (!isMainThread && parentPort) {
  const role = workerData as ThreadRole;
  if (role?.role === 'share') serveShare(role);
  else {
    const port = parentPort;
    const serve = serveReplica((m, transfer) => port.postMessage(m, transfer ?? []), (init) => { thisFileInThread({ role: 'share', ...init }); return () => {}; });
    port.on('message', (r: ReplicaRequest) => serve(r));
  }
}
