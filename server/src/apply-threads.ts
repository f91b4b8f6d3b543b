// The coordinator's helper threads for applying a powersgd update (shared/src/low-rank-pool.ts):
// Node worker_threads, each running `serveShare` on the pool's shared memory. The thread loads the
// pool's module through tsx, as bin/tabtrain loads the main thread (Node 20's --import hooks do
// not reach threads).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { POOL_MIN_FLOATS, type ShareInit } from '@tabtrain/shared/low-rank-pool';

/**
 * Helper threads the coordinator applies each powersgd update with, by default: one a core, at
 * most 4 (the apply is memory-bound; more threads than memory channels only contend). The apply
 * runs while the workers compute the next step, when the event loop mostly waits for their
 * factors, so it gets every core: on this 2-core VM one helper applied AlexNet's update in 38–41 ms
 * and two in 25–32 ms, the floor of every powersgd step (bench scaleout, strong, 1 Gbit/s).
 */
export const defaultApplyThreads = () => Math.max(1, Math.min(4, availableParallelism()));

/** The coordinator's helper threads for a model of `total` weights: `requested` (--apply-threads), else the default from POOL_MIN_FLOATS up, none below. */
export const applyThreadsFor = (total: number, requested?: number) => requested ?? (total >= POOL_MIN_FLOATS ? defaultApplyThreads() : 0);

/** Starts one helper thread; it ends itself when its pool is disposed, and never keeps the process alive. */
export function startShareThread(init: ShareInit): () => void {
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const pool = JSON.stringify(import.meta.resolve('@tabtrain/shared/low-rank-pool'));
  const worker = new Worker(`import('node:worker_threads').then(async ({ workerData }) => { (await import(${tsx})).register(); (await import(${pool})).serveShare(workerData); });`, { eval: true, workerData: init });
  worker.unref();
  return () => {};
}
