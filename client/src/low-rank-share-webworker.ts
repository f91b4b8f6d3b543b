// A helper of the page's exact copy (exact-replica-webworker.ts): a Web Worker, started by that
// one, that applies its share of each powersgd update over the pool's shared memory
// (shared/src/low-rank-pool.ts). It takes one message, the ShareInit, then blocks in serveShare.
import { serveShare, type ShareInit } from '@tabtrain/shared/low-rank-pool';

const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<ShareInit>) => void) | null };
scope.onmessage = (e) => {
  scope.onmessage = null;
  serveShare(e.data);
};
