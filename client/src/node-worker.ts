// `tabtrain worker`: a headless worker in Node. Backend setup and the socket live here; the
// arithmetic and the protocol live in core.ts, shared with the browser page.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import * as tf from '@tensorflow/tfjs-core';
import { CLOSE, CLOSE_NAMES, MAX_FRAME_BYTES } from '@tabtrain/shared';
import { WorkerCore } from './core';

export interface NodeWorkerOptions {
  url: string;
  backend: 'wasm' | 'cpu' | 'webgpu';
  token?: string;
  workerId?: string;
  /** Extra milliseconds per example, to simulate a slow GPU in straggler tests. */
  delayMsPerExample?: number;
  /** Fault injection for tests: perturb the weights after applying this version's update. */
  corruptVersion?: number;
  /** Benchmark stand-in for a GPU: no tfjs compute, sleep this long per example (synthetic.ts). */
  syntheticMsPerExample?: number;
  quiet?: boolean;
  /** Independent worker sessions in this one process (load tests); default 1. */
  instances?: number;
}

/** Codes after which reconnecting cannot help. */
const FATAL = new Set<number>([CLOSE.finished, CLOSE.protocolMismatch, CLOSE.modelMismatch, CLOSE.unauthorized, CLOSE.replaced]);

export async function setupNodeBackend(backend: NodeWorkerOptions['backend']): Promise<{ backend: string; adapter: Record<string, unknown> | null }> {
  // PROD silences tfjs's console advice ("install tfjs-node") that cannot apply here.
  tf.env().set('PROD', true);
  if (backend === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
    const { registerWasmKernels } = await import('./wasm-kernels');
    registerWasmKernels();
  } else if (backend === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
  } else {
    const { setupDawn } = await import('./dawn');
    return setupDawn();
  }
  if (!(await tf.setBackend(backend))) throw new Error(`could not initialise the ${backend} backend`);
  await tf.ready();
  return { backend, adapter: null };
}

/** Runs until the coordinator ends the run (resolves) or refuses us for good (rejects). */
export async function runNodeWorker(opts: NodeWorkerOptions): Promise<void> {
  const { backend, adapter } = opts.syntheticMsPerExample !== undefined ? { backend: 'synthetic', adapter: null } : await setupNodeBackend(opts.backend);
  const instances = opts.instances ?? 1;
  // Several instances share one process and backend: lightweight workers for load tests.
  await Promise.all(Array.from({ length: instances }, (_, i) =>
    runInstance(opts, instances > 1 ? `${opts.workerId ?? randomUUID()}-${i}` : opts.workerId ?? randomUUID(), backend, adapter)));
}

async function runInstance(opts: NodeWorkerOptions, workerId: string, backend: string, adapter: Record<string, unknown> | null): Promise<void> {
  const log = (line: string) => { if (!opts.quiet) console.log(`[worker ${workerId.slice(0, 8)}] ${line}`); };
  log(`backend ${backend}${adapter ? ` on ${JSON.stringify(adapter)}` : ''}; connecting to ${opts.url}`);
  let delay = 250;
  for (;;) {
    const outcome = await session(opts, workerId, backend, adapter, log);
    if (outcome.code === CLOSE.finished) { log(`run finished: ${outcome.reason}`); return; }
    if (FATAL.has(outcome.code)) throw new Error(`coordinator refused this worker: ${CLOSE_NAMES[outcome.code] ?? outcome.code} (${outcome.code}) ${outcome.reason}`);
    if (outcome.joined) delay = 250;
    log(`disconnected (${CLOSE_NAMES[outcome.code] ?? outcome.code}${outcome.reason ? `: ${outcome.reason}` : ''}); retrying in ${delay} ms`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

function session(opts: NodeWorkerOptions, workerId: string, backend: string, adapter: Record<string, unknown> | null, log: (l: string) => void): Promise<{ code: number; reason: string; joined: boolean }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(opts.url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
    let joined = false;
    const send = (frame: Uint8Array) => new Promise<void>((res, rej) => ws.send(frame, (err) => (err ? rej(err) : res())));
    const core = new WorkerCore({ workerId, kind: 'node', backend, adapter, token: opts.token }, send, { delayMsPerExample: opts.delayMsPerExample, corruptVersion: opts.corruptVersion, syntheticMsPerExample: opts.syntheticMsPerExample, log });
    ws.on('open', () => { ws.send(core.hello()); });
    ws.on('message', (data: Buffer) => {
      joined = true;
      core.receive(data).catch((e) => {
        console.error(`[worker ${workerId.slice(0, 8)}] error: ${(e as Error).message}`);
        ws.close(CLOSE.unexpected, String((e as Error).message).slice(0, 120));
      });
    });
    ws.on('error', (e) => log(`socket error: ${e.message}`));
    ws.on('close', (code, reason) => {
      core.dispose();
      resolve({ code, reason: reason.toString(), joined });
    });
  });
}
