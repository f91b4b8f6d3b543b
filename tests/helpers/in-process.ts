// In-process runs for tests: the in-process counterparts of run.ts's startCoordinator, workers
// and trainWith. A real Coordinator (with its Dashboard, as the CLI builds it) on the in-memory
// wire (server/src/memory-wire.ts) and N real WorkerCores (client/src/core.ts, the worker logic
// of the page and the Node worker) in this process: no socket, no child process, no TypeScript
// start per worker. Everything above the wire runs as in production; what only a real socket or
// process can show (a SIGKILL, framing, link timing) stays with run.ts.
//
// The tfjs backend is this process's, shared by its workers: `cpu` by default (plain IEEE-754
// JavaScript, the golden runs' bits), or `wasm`. Tests in a file run one at a time, so a run may
// set another backend than the last.
import { randomUUID } from 'node:crypto';
import { CLOSE, type Progress } from '@tabtrain/shared';
import { Coordinator, DEFAULTS, type Summary } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import type { Dataset } from '../../server/src/data';
import type { Conn } from '../../server/src/membership';
import { MemoryWire, type Endpoint } from '../../server/src/memory-wire';
import { LOCAL_KEY } from '../../server/src/secrets';
import { WorkerCore, type WorkerIdentity } from '../../client/src/core';
import { setupNodeBackend } from '../../client/src/node-worker';
import type { ReplicaHostFactory } from '../../client/src/exact-replica';
import { data, type TestRunOptions } from './run';

/** How an in-process worker computes: what `tabtrain worker`'s flags say for a process. */
export interface InProcessWorkerOptions {
  /** tfjs backend for real gradients (default cpu); ignored by synthetic workers. */
  backend?: 'cpu' | 'wasm';
  /** A synthetic worker (shared/src/synthetic.ts): no tfjs compute, this long per example. */
  syntheticMsPerExample?: number;
  workerId?: string;
  delayMsPerExample?: number;
  corruptVersion?: number;
  /** Joins without the local key: a stranger, on probation in an --open run. */
  stranger?: boolean;
  refreshEvery?: number;
  /** powersgd: where the exact copy runs; default this thread (LocalReplica: the same arithmetic as the Node worker's thread). */
  exactReplica?: ReplicaHostFactory;
}

/** The workers the tests use: tfjs cpu (bit-identical across CPUs: the golden runs), wasm (faster), synthetic (no tfjs). */
export const CPU: InProcessWorkerOptions = { backend: 'cpu' };
export const WASM: InProcessWorkerOptions = { backend: 'wasm' };
export const SYNTHETIC: InProcessWorkerOptions = { syntheticMsPerExample: 0 };

export interface InProcessWorker {
  /** The id it said hello with (the coordinator may give another; core.status and the coordinator's rows have it). */
  readonly workerId: string;
  readonly core: WorkerCore;
  /** What the worker logged (a Node worker's stdout): joins, refreshes, resync requests. */
  readonly log: string[];
  /** The progress messages it was sent (the worker page shows them). */
  readonly progress: Progress[];
  /** Resolves with the close code and reason once its connection is closed, by either side. */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Closes its connection from the worker's side, as a worker that leaves or dies does (default 1006: gone without a close frame). */
  leave(code?: number, reason?: string): void;
}

export interface InProcessRun {
  coord: Coordinator;
  dashboard: Dashboard;
  wire: MemoryWire<Conn>;
  /** The coordinator's log, and any worker's error. */
  lines: string[];
  workers: InProcessWorker[];
  /** Connects n more workers (mid-run too: an elastic test's newcomers). */
  add(n: number, opts?: InProcessWorkerOptions): Promise<InProcessWorker[]>;
  /** Closes the coordinator, then waits for every worker to hear it and let go of its tensors (once; later calls wait for the same). */
  close(): Promise<void>;
}

/** A coordinator on the in-memory wire, with startCoordinator's defaults (run.ts), and no workers yet. */
export async function startInProcess(opts: TestRunOptions, d: Dataset = data()): Promise<InProcessRun> {
  const lines: string[] = [];
  let wire: MemoryWire<Conn> | null = null;
  const coord = new Coordinator({
    epochs: 1, batch: 16, seed: 7, balance: 'equal', port: 0, host: '127.0.0.1', minWorkers: 1, evalExamples: 1000,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {}, ...opts,
    // The coordinator's own log (printable, 'log' events), as the transport gets it; asked for
    // only once the constructor that calls this factory has returned.
    // Emulated links (opts.links) slow the memory wire's frames as they say, not only the cost model's prices.
    wire: (handler) => (wire = new MemoryWire({ helloTimeoutMs: opts.helloTimeoutMs ?? DEFAULTS.helloTimeoutMs, log: (l) => coord.opts.log(l), linkRate: () => opts.links?.()?.worker ?? Infinity }, handler)),
  }, d);
  // As the CLI does: the dashboard's listeners run on the training path (its routes are not served).
  const dashboard = new Dashboard(coord);
  await coord.listen();
  let closing: Promise<void> | null = null;
  const run: InProcessRun = {
    coord, dashboard, wire: wire!, lines, workers: [],
    add: async (n, w = CPU) => {
      const added: InProcessWorker[] = [];
      for (let i = 0; i < n; i++) added.push(await connectWorker(run, w));
      return added;
    },
    close: () => (closing ??= (async () => {
      await coord.close();
      await Promise.all(run.workers.map((w) => w.closed));
    })()),
  };
  return run;
}

/** Trains to the end with `n` in-process workers; returns the summary, a copy of the weights and the log (trainWith, in-process). */
export async function trainInProcess(n: number, opts: TestRunOptions, w: InProcessWorkerOptions = CPU, d?: Dataset): Promise<{ summary: Summary; weights: Float32Array; lines: string[]; workers: InProcessWorker[] }> {
  const run = await startInProcess({ minWorkers: n, ...opts }, d);
  try {
    await run.add(n, w);
    const summary = await run.coord.train();
    return { summary, weights: run.coord.weights.slice(), lines: run.lines, workers: run.workers };
  } finally {
    await run.close();
  }
}

/** One WorkerCore on a new in-memory connection, driven as node-worker.ts's session() drives it on a socket. */
async function connectWorker(run: InProcessRun, w: InProcessWorkerOptions): Promise<InProcessWorker> {
  const synthetic = w.syntheticMsPerExample !== undefined;
  const backend = synthetic ? 'synthetic' : (await setupNodeBackend(w.backend ?? 'cpu')).backend;
  const identity: WorkerIdentity = { workerId: w.workerId ?? randomUUID(), kind: 'node', backend, adapter: null, local: w.stranger ? undefined : LOCAL_KEY };
  const tag = `[worker ${identity.workerId.slice(0, 8)}]`;
  const log: string[] = [];
  const progress: Progress[] = [];
  const endpoint: Endpoint = run.wire.connect();
  const core = new WorkerCore(identity, (frame) => endpoint.send(frame), {
    delayMsPerExample: w.delayMsPerExample, corruptVersion: w.corruptVersion, syntheticMsPerExample: w.syntheticMsPerExample,
    refreshEvery: w.refreshEvery, exactReplica: w.exactReplica, log: (l) => log.push(l), onProgress: (p) => progress.push(p),
  });
  let handled: Promise<void> = Promise.resolve();
  let failed: unknown = null;
  endpoint.onFrame = (frame) => {
    handled = core.receive(frame).catch((e: Error) => {
      // The core's frames are one chain: the frames queued behind a failure reject with it too.
      if (e === failed) return;
      failed = e;
      // Surfaced into the run's log, never swallowed; the worker closes as a Node worker does.
      run.lines.push(`${tag} error${endpoint.closed ? ' after its connection closed' : ''}: ${e.message}`);
      endpoint.close(CLOSE.unexpected, e.message.slice(0, 120));
    });
  };
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    endpoint.onClose = (code, reason) => {
      core.close();
      // Its tensors go once the frame in hand is done with them, or after 5 s as the page does
      // (page-socket.ts): a frame stuck on its exact copy's thread must not keep the run open for ever.
      let late: ReturnType<typeof setTimeout> | undefined;
      void Promise.race([handled, new Promise((r) => { late = setTimeout(r, 5000); })]).finally(() => { clearTimeout(late); core.dispose(); resolve({ code, reason }); });
    };
  });
  const worker: InProcessWorker = { workerId: identity.workerId, core, log, progress, closed, leave: (code = 1006, reason = '') => endpoint.close(code, reason) };
  run.workers.push(worker);
  await endpoint.send(core.hello());
  return worker;
}
