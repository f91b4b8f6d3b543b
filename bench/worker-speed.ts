// Forward+backward examples/s of one Node worker (the same Net.gradient a run calls), per model.
//   node --import tsx bench/worker-speed.ts [--backend wasm|cpu] [--batch 16] [--steps 3] [--out FILE] MODEL...
// Burns in one step (kernel setup, XNNPACK packing), then times --steps steps; prints one line per
// model and writes JSON. CPU time beside wall time: on a shared machine the CPU time is the steadier. One wasm worker uses one core (tfjs disables wasm threads in Node).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { setupNodeBackend } from '../client/src/node-worker';
import { benchNet } from './bench-step';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { backend: { type: 'string', default: 'wasm' }, batch: { type: 'string', default: '16' }, steps: { type: 'string', default: '3' }, out: { type: 'string' } },
});
const models = positionals.length ? positionals : ['alexnet-small', 'vgg11-small', 'alexnet', 'vgg11'];
const batch = Number(v.batch), steps = Number(v.steps);
await setupNodeBackend(v.backend as 'wasm' | 'cpu');
const results = [];
for (const name of models) {
  const { net, step } = benchNet(name, batch);
  const times: number[] = [], cpu: number[] = [];
  for (let s = 0; s <= steps; s++) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    await step(s);
    const c = process.cpuUsage(c0);
    if (s > 0) { times.push(performance.now() - t0); cpu.push((c.user + c.system) / 1000); } // step 0 is burn-in
  }
  net.dispose();
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const median = med(times), cpuMedian = med(cpu);
  const r = { model: name, backend: tf.getBackend(), batch, steps, medianStepMs: median, msPerExample: median / batch, examplesPerSec: (1000 * batch) / median, medianCpuMs: cpuMedian, examplesPerCpuSec: (1000 * batch) / cpuMedian, tensorsLeft: tf.memory().numTensors };
  results.push(r);
  console.log(`${name.padEnd(14)} ${r.backend} batch ${batch}: ${r.examplesPerSec.toFixed(1)} examples/s (${r.msPerExample.toFixed(1)} ms/example, median of ${steps} steps); ${r.examplesPerCpuSec.toFixed(1)} per CPU second`);
}
if (v.out) writeFileSync(v.out, JSON.stringify({ machine: '2-core CPU, no GPU', date: new Date().toISOString(), results }, null, 2) + '\n');
