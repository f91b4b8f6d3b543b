// (c) of the GPU comparison: a real run. An in-process coordinator on real Fashion-MNIST, N worker
// processes (Dawn webgpu by default) on this machine, for as many steps as fit in --seconds from
// the first step; then the run is stopped after its current step. Reports the loss per step and
// examples/s (whole steps: compute, gradient transfer, aggregation, SGD, weight broadcast).
//
//   node --import tsx bench/gpu/train-bench.ts [--model alexnet] [--batch 128] [--workers 2]
//        [--seconds 240] [--backend webgpu] [--data DIR] [--worker-entry FILE.mjs] [--json FILE]
//
// --worker-entry: a bundled `tabtrain worker` (the GPU kit's tabtrain-worker.mjs), run with this same node;
// without it workers are started from source (client/src/worker-cli.ts through tsx).
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Coordinator, DEFAULTS, type StepRecord } from '../../server/src/coordinator';
import { DEFAULT_DATA_DIR, loadFashionMnist } from '../../server/src/data';

// Not cli.ts's spawnWorker: importing cli.ts into a bundle would run its main() (a bundle has one
// import.meta.url for all its modules, and cli.ts runs main when that is the entry script).
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const { values: v } = parseArgs({
  options: {
    model: { type: 'string', default: 'alexnet' }, batch: { type: 'string', default: '128' }, workers: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '240' }, backend: { type: 'string', default: 'webgpu' }, data: { type: 'string', default: DEFAULT_DATA_DIR },
    'worker-entry': { type: 'string' }, json: { type: 'string' }, balance: { type: 'string', default: 'speed' }, 'max-steps': { type: 'string' },
  },
});
const nWorkers = Number(v.workers), seconds = Number(v.seconds), batch = Number(v.batch);
const t0 = performance.now();
const since = () => ((performance.now() - t0) / 1000).toFixed(1).padStart(6);
const log = (line: string) => console.log(`[${since()} s] ${line}`);

const coord = new Coordinator({
  model: v.model!, epochs: 100, batch, seed: DEFAULTS.seed, port: 0, host: '127.0.0.1', minWorkers: nWorkers,
  balance: v.balance as 'speed' | 'equal', evalExamples: 1000, helloTimeoutMs: 60_000, maxSteps: v['max-steps'] ? Number(v['max-steps']) : undefined,
  log, progress: () => {},
}, loadFashionMnist(v.data));
const port = await coord.listen();
const url = `ws://127.0.0.1:${port}/ws`;
log(`coordinator: ${coord.spec.name}, ${coord.run.paramCount.toLocaleString('en-US')} parameters, batch ${batch}, lr ${coord.run.lr}; ${nWorkers} ${v.backend} workers on ${url}`);

const procs: ChildProcess[] = [];
const stderrs: string[] = [];
for (let i = 0; i < nWorkers; i++) {
  const args = ['--backend', v.backend!, '--id', `bench-${i}`];
  const entry = v['worker-entry'] ? [v['worker-entry']] : ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), join(ROOT, 'client/src/worker-cli.ts')];
  const p = spawn(process.execPath, [...entry, 'worker', '--url', url, ...args], { stdio: 'pipe' });
  stderrs.push('');
  p.stdout!.on('data', (d) => process.stdout.write(`  [worker ${i}] ${d}`));
  p.stderr!.on('data', (d) => { stderrs[i] = (stderrs[i] + d).slice(-4000); process.stderr.write(`  [worker ${i}] ${d}`); });
  p.on('exit', (code) => { if (code !== 0 && code !== null && !done) { log(`worker ${i} exited with code ${code}; stopping`); coord.stop(`worker ${i} died`); } });
  procs.push(p);
}

const steps: StepRecord[] = [];
let firstStepAt = 0;
let done = false;
coord.events.on('step', (r: StepRecord) => {
  if (!firstStepAt) firstStepAt = performance.now() - r.wallMs;
  steps.push(r);
  const elapsed = (performance.now() - firstStepAt) / 1000;
  if (steps.length <= 5 || steps.length % 10 === 0) {
    log(`step ${r.step}: loss ${r.loss.toFixed(4)}, ${((1000 * r.examples) / r.wallMs).toFixed(1)} examples/s (wall ${r.wallMs.toFixed(0)} ms: compute ${r.computeMs.toFixed(0)}, upload ${r.uploadMs.toFixed(0)}, broadcast ${r.broadcastMs.toFixed(0)})`);
  }
  if (elapsed >= seconds) coord.stop(`benchmark time (${seconds} s) is up`);
});
// Safety net: no worker ever joins or a step hangs.
const guard = setTimeout(() => { log('no progress in time: closing'); void coord.close(); }, (seconds + 300) * 1000);

let summary;
let workerInfo: Record<string, unknown>[] = [];
try {
  summary = await coord.train();
} finally {
  done = true;
  clearTimeout(guard);
  const workers = coord.status().workers;
  await coord.close();
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  workerInfo = workers.map((w) => ({ backend: w.backend, adapter: w.adapter, shardsDone: w.shardsDone, examplesPerSec: w.examplesPerSec }));
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const k = Math.min(10, Math.floor(steps.length / 2));
const steady = steps.slice(Math.min(3, steps.length - 1));
const result = {
  date: new Date().toISOString(), model: coord.spec.name, params: coord.run.paramCount, batch, lr: coord.run.lr, workers: nWorkers, backend: v.backend,
  seconds, steps: steps.length, examples: steps.reduce((a, r) => a + r.examples, 0),
  trainSeconds: steps.reduce((a, r) => a + r.wallMs, 0) / 1000,
  examplesPerSec: (1000 * steps.reduce((a, r) => a + r.examples, 0)) / Math.max(1, steps.reduce((a, r) => a + r.wallMs, 0)),
  steadyExamplesPerSec: (1000 * steady.reduce((a, r) => a + r.examples, 0)) / Math.max(1, steady.reduce((a, r) => a + r.wallMs, 0)),
  lossFirst: k ? mean(steps.slice(0, k).map((r) => r.loss)) : null, lossLast: k ? mean(steps.slice(-k).map((r) => r.loss)) : null, lossWindow: k,
  medianStep: steps.length ? (() => { const s = [...steps].sort((a, b) => a.wallMs - b.wallMs)[Math.floor(steps.length / 2)]; return { wallMs: s.wallMs, computeMs: s.computeMs, uploadMs: s.uploadMs, collectMs: s.collectMs, applyMs: s.applyMs, broadcastMs: s.broadcastMs }; })() : null,
  workerInfo, stoppedBy: summary?.stoppedBy,
  lossPerStep: steps.map((r) => +r.loss.toFixed(4)),
};
log(`${result.steps} steps in ${result.trainSeconds.toFixed(1)} s: ${result.examplesPerSec.toFixed(1)} examples/s (steady ${result.steadyExamplesPerSec.toFixed(1)}); ` +
  `loss ${result.lossFirst?.toFixed(4)} (first ${k} steps) → ${result.lossLast?.toFixed(4)} (last ${k})`);
if (v.json) writeFileSync(v.json, JSON.stringify(result, null, 2) + '\n');
if (!steps.length) { console.error(`no step completed. Worker stderr tails:\n${stderrs.map((s, i) => `--- worker ${i}\n${s}`).join('\n')}`); process.exit(1); }
process.exit(0);
