// Real runs for tests: a real coordinator on port 0, real worker processes, real Fashion-MNIST.
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Coordinator, DEFAULTS, type CoordinatorOptions, type Summary } from '../../server/src/coordinator';
import { loadFashionMnist, type Dataset } from '../../server/src/data';
import { Dashboard } from '../../server/src/dashboard';
import { spawnWorker } from '../../server/src/spawn-worker';

let dataset: Dataset | null = null;
/** The real dataset, loaded once per test file. */
export function data(): Dataset {
  dataset ??= loadFashionMnist();
  return dataset;
}

export type TestRunOptions = Partial<CoordinatorOptions> & { model: string };

export async function startCoordinator(opts: TestRunOptions): Promise<{ coord: Coordinator; port: number; url: string; lines: string[]; dashboard: Dashboard }> {
  const lines: string[] = [];
  const coord = new Coordinator({
    epochs: 1, batch: 16, seed: 7, balance: 'equal', port: 0, host: '127.0.0.1', minWorkers: 1, evalExamples: 1000,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {}, ...opts,
  }, data());
  // As the CLI does: /api/status, /metrics and /api/control come with the dashboard.
  const dashboard = new Dashboard(coord);
  const port = await coord.listen();
  return { coord, port, url: `ws://127.0.0.1:${port}/ws`, lines, dashboard };
}

export function workers(url: string, n: number, args: string[] = ['--backend', 'wasm']): ChildProcess[] {
  return Array.from({ length: n }, () => spawnWorker(url, [...args, '--quiet'], 'pipe'));
}

export function kill(procs: ChildProcess[]): void {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
}

/** Trains to the end with `n` local worker processes; returns the summary and a copy of the weights. */
export async function trainWith(n: number, opts: TestRunOptions, workerArgs?: string[]): Promise<{ summary: Summary; weights: Float32Array; lines: string[] }> {
  const { coord, url, lines } = await startCoordinator({ minWorkers: n, ...opts });
  const procs = workers(url, n, workerArgs);
  try {
    const summary = await coord.train();
    return { summary, weights: coord.weights.slice(), lines };
  } finally {
    await coord.close();
    kill(procs);
  }
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The first `train` training and `test` test images: real data, shorter epochs (20 steps of 32 for 640). */
export function subset(d: Dataset, train: number, test: number): Dataset {
  const cut = (s: Dataset['train'], n: number) => ({ images: s.images.subarray(0, n * 784), labels: s.labels.subarray(0, n), count: n });
  return { dir: d.dir, train: cut(d.train, train), test: cut(d.test, test) };
}

/** A port nobody listens on now (for a coordinator started as a process, which must be told its port). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}
