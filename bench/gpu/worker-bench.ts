// (b) of the GPU comparison: tabtrain's worker arithmetic alone — forward + backward of one batch
// through the real Net (shared/src/net.ts), no coordinator, no socket.
//
//   node --import tsx bench/gpu/worker-bench.ts [--backend webgpu|wasm|cpu] [--batch 128] [--steps 10]
//        [--warmup 2] [--profile] [--json FILE] MODEL...
//   ... --probe: only print the adapter (JSON) and exit.
//
// Modes, per model:
//   noread  forward + backward, gradients left on the device; only the loss scalar is read back
//           (that read waits for every queued kernel: WebGPU runs a queue in order).
//   read    Net.gradient exactly as a worker runs it: the gradient SUM read back variable by
//           variable into one flat Float32Array.
// Reported: median step ms and examples/s, the first (compiling) step, how many GPU pipelines the
// timed steps compiled (0 = no per-step shader recompiles), and the tensors left (0 = no leak).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { getModel, initParams, IMAGE_BYTES, paramLayout } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { setupNodeBackend } from '../../client/src/node-worker';
import { DEFAULT_DATA_DIR, loadFashionMnist } from '../../server/src/data';
import { forwardBackward } from './fwdbwd';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    backend: { type: 'string', default: 'webgpu' }, batch: { type: 'string', default: '128' }, steps: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' }, profile: { type: 'boolean', default: false }, json: { type: 'string' }, data: { type: 'string', default: DEFAULT_DATA_DIR },
    modes: { type: 'string', default: 'noread,read' }, probe: { type: 'boolean', default: false },
  },
});
const models = positionals.length ? positionals : ['alexnet', 'vgg11'];
const batch = Number(v.batch), steps = Number(v.steps), warmup = Number(v.warmup);
const modes = v.modes!.split(',') as Mode[];
type Mode = 'noread' | 'read';

const setup = await setupNodeBackend(v.backend as 'webgpu' | 'wasm' | 'cpu');
if (v.probe) {
  // --probe: which adapter this machine gives, as JSON on stdout; nothing else.
  console.log(JSON.stringify({ backend: setup.backend, adapter: setup.adapter }));
  if (v.json) writeFileSync(v.json, JSON.stringify({ backend: setup.backend, adapter: setup.adapter }, null, 2) + '\n');
  process.exit(0);
}
const data = loadFashionMnist(v.data).train;
const pipelines = () => Object.keys((tf.backend() as unknown as { pipelineCache?: object }).pipelineCache ?? {}).length;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results: Record<string, unknown>[] = [];
console.log(`backend ${setup.backend}${setup.adapter ? ` on ${JSON.stringify(setup.adapter)}` : ''}; batch ${batch}, ${warmup} warm-up + ${steps} timed steps per mode`);
for (const name of models) {
  const spec = getModel(name);
  const net = new Net(spec);
  net.setWeights(initParams(spec, 1));
  const grad = new Float32Array(net.total);
  const images = (s: number) => data.images.subarray(((s * batch) % 50_000) * IMAGE_BYTES, (((s * batch) % 50_000) + batch) * IMAGE_BYTES);
  const labels = (s: number) => data.labels.subarray((s * batch) % 50_000, ((s * batch) % 50_000) + batch);
  const row: Record<string, unknown> = { model: name, params: paramLayout(spec).total, input: spec.input, batch, backend: setup.backend, adapter: setup.adapter };
  for (const mode of modes) {
    const run = async (s: number) => mode === 'read'
      ? (await net.gradient(images(s), labels(s), batch, 1, s, 0, grad)).lossSum
      : forwardBackward(net, images(s), labels(s), batch, s);
    const t0 = performance.now();
    let loss = await run(0);
    const firstMs = performance.now() - t0;
    for (let s = 1; s < warmup; s++) loss = await run(s);
    const before = pipelines();
    const tensors = tf.memory().numTensors;
    const times: number[] = [];
    for (let s = 0; s < steps; s++) {
      const t = performance.now();
      loss = await run(warmup + s);
      times.push(performance.now() - t);
    }
    const ms = median(times);
    const r = {
      firstStepMs: +firstMs.toFixed(1), medianStepMs: +ms.toFixed(2), minStepMs: +Math.min(...times).toFixed(2), examplesPerSec: +((1000 * batch) / ms).toFixed(1),
      pipelinesCompiledWhileTimed: pipelines() - before, tensorsLeaked: tf.memory().numTensors - tensors, lastLossPerExample: +(loss / batch).toFixed(4),
    };
    row[mode] = r;
    console.log(`${name.padEnd(12)} ${mode.padEnd(6)} ${String(r.examplesPerSec).padStart(8)} examples/s  (median ${r.medianStepMs} ms/step of ${steps}; first step ${r.firstStepMs} ms; ` +
      `${r.pipelinesCompiledWhileTimed} pipelines compiled while timed; ${r.tensorsLeaked} tensors leaked; loss/example ${r.lastLossPerExample})`);
  }
  if (v.profile) {
    // Where the time goes, kernel by kernel (GPU times need the 'timestamp-query' feature; without
    // it kernelTimeMs is 0 and only the wall time and counts are meaningful).
    const info = await tf.profile(async () => { await forwardBackward(net, images(999), labels(999), batch, 999); });
    const byKernel = new Map<string, { n: number; ms: number }>();
    for (const k of info.kernels) {
      const e = byKernel.get(k.name) ?? { n: 0, ms: 0 };
      e.n++;
      e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      byKernel.set(k.name, e);
    }
    const top = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms || b[1].n - a[1].n).slice(0, 15).map(([k, e]) => ({ kernel: k, count: e.n, ms: +e.ms.toFixed(2) }));
    row.profile = { kernels: info.kernels.length, peakBytes: info.peakBytes, top };
    console.log(`${name} profile: ${info.kernels.length} kernels, peak ${(info.peakBytes / 2 ** 20).toFixed(0)} MiB; top by GPU time: ${top.map((t) => `${t.kernel}×${t.count} ${t.ms} ms`).join(', ')}`);
  }
  net.dispose();
  results.push(row);
}
if (v.json) writeFileSync(v.json, JSON.stringify({ date: new Date().toISOString(), batch, steps, warmup, results }, null, 2) + '\n');
process.exit(0);
