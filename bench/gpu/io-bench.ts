// Weight upload and gradient readback alone, for a model's full parameter set, through tfjs's
// own paths ('tfjs': assign / data()) and through client/src/webgpu-io.ts ('fast').
//
//   node --import tsx bench/gpu/io-bench.ts [--reps 5] [--json FILE] MODEL...
//
// upload   = Net.setWeights(flat) + a one-element kernel on every variable (tfjs uploads lazily)
// readback = Net.io.read of GPU-resident tensors shaped like the gradients into one flat array
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { getModel, initParams } from '@tabtrain/shared';
import { Net, type TensorIO } from '@tabtrain/shared/net';
import { setupDawn } from '../../client/src/dawn';
import { webgpuTensorIO } from '../../client/src/webgpu-io';

const { values: v, positionals } = parseArgs({ allowPositionals: true, options: { reps: { type: 'string', default: '5' }, json: { type: 'string' } } });
const reps = Number(v.reps);
const { adapter } = await setupDawn();
const ios: Record<string, TensorIO> = { tfjs: { async read(ts, params, out) { for (let i = 0; i < ts.length; i++) out.set(await ts[i].data() as Float32Array, params[i].offset); } }, fast: webgpuTensorIO() };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results: Record<string, unknown>[] = [];
console.log(`webgpu on ${adapter.backendType} ${adapter.device || adapter.description}`);
for (const name of positionals.length ? positionals : ['alexnet', 'vgg11']) {
  const spec = getModel(name);
  const row: Record<string, unknown> = { model: name };
  for (const [label, io] of Object.entries(ios)) {
    Net.io = io;
    const net = new Net(spec);
    const out = new Float32Array(net.total);
    const up: number[] = [], down: number[] = [];
    for (let r = 0; r <= reps; r++) {
      const w = initParams(spec, r);
      const t0 = performance.now();
      net.setWeights(w);
      // Touch every variable on the GPU (this is when tfjs uploads) with a one-element gather,
      // then wait for the queue: reading the last result waits for every earlier write and copy.
      const probes = net.vars.map((x) => tf.tidy(() => tf.gather(tf.reshape(x, [-1]), [x.size - 1])));
      const last = await probes[probes.length - 1].data();
      tf.dispose(probes);
      if (last[0] !== w[net.total - 1]) throw new Error(`${label}: upload mismatch`);
      const t1 = performance.now();
      const grads = net.vars.map((x) => tf.mul(x, 2)); // GPU-resident, gradient-shaped
      await grads[grads.length - 1].data(); // queue drained before timing the readback
      // (that read cached the last one on the CPU; the first ones are still GPU-only)
      const t2 = performance.now();
      await io.read(grads, net.params, out);
      const t3 = performance.now();
      if (out[0] !== 2 * w[0] || out[net.total - 1] !== 2 * w[net.total - 1]) throw new Error(`${label}: readback mismatch`);
      tf.dispose(grads);
      if (r > 0) { up.push(t1 - t0); down.push(t3 - t2); }
    }
    net.dispose();
    const mb = (net.total * 4) / 1e6;
    row[label] = { uploadMs: +median(up).toFixed(1), readbackMs: +median(down).toFixed(1), readbackGBs: +(mb / median(down)).toFixed(2), megabytes: +mb.toFixed(1) };
    console.log(`${name.padEnd(10)} ${label.padEnd(5)} upload ${median(up).toFixed(1)} ms, readback ${median(down).toFixed(1)} ms (${(mb / median(down)).toFixed(2)} GB/s) for ${mb.toFixed(1)} MB, median of ${reps}`);
  }
  results.push(row);
}
if (v.json) writeFileSync(v.json, JSON.stringify({ date: new Date().toISOString(), adapter, results }, null, 2) + '\n');
process.exit(0);
