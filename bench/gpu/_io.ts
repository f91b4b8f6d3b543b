// webgpu (fast IO) vs cpu: several steps, weights changed every step (in-place writes), gradients compared.
import * as tf from '@tensorflow/tfjs';
import { getModel, initParams } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { setupNodeBackend } from '@tabtrain/client/node-worker';
import { loadFashionMnist } from '../../server/src/data';
import { writeFileSync } from 'node:fs';
const backend = process.argv[2] as 'webgpu' | 'cpu';
const model = process.argv[3] ?? 'vgg11-tiny';
await setupNodeBackend(backend);
let fastWrites = 0; const w0 = Net.io.write?.bind(Net.io); if (w0) Net.io.write = (v, p, f) => { const r = w0(v, p, f); fastWrites += r.filter(Boolean).length; return r; };
console.log('io', Net.io === undefined ? '?' : (Net.io as any).write ? 'fast' : 'default');
const spec = getModel(model);
const net = new Net(spec);
const d = loadFashionMnist().train;
const n = 8;
const all: Float32Array[] = [];
for (let s = 0; s < 4; s++) {
  const w = initParams(spec, 100 + s);
  net.setWeights(w);
  const out = new Float32Array(net.total);
  const st = await net.gradient(d.images.subarray(s * n * 784), d.labels.subarray(s * n), n, 3, s, 0, out);
  all.push(out);
  // weights read back must equal what was written
  if (s < 3) { console.log('step', s, st.lossSum.toFixed(5), 'fast writes so far', fastWrites); continue; }
  let wd = 0; for (let i = 0; i < net.vars.length; i++) { const a = await net.vars[i].data(); for (let j = 0; j < a.length; j++) wd = Math.max(wd, Math.abs(a[j] - w[net.params[i].offset + j])); }
  console.log('step', s, st.lossSum.toFixed(5), 'weights roundtrip maxdiff', wd, 'tensors', tf.memory().numTensors);
}
const flat = new Float32Array(all.length * net.total); all.forEach((a, i) => flat.set(a, i * net.total));
writeFileSync(`/tmp/dx/io-${backend}-${model}.bin`, flat);
process.exit(0);
