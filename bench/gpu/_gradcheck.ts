import * as tf from '@tensorflow/tfjs-core';
import { getModel, initParams } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { setupNodeBackend } from '@tabtrain/client/node-worker';
import { loadFashionMnist } from '../../server/src/data';
const backend = process.argv[2] as 'webgpu' | 'cpu';
const model = process.argv[3] ?? 'vgg11-tiny';
const n = Number(process.argv[4] ?? 8);
const t0 = performance.now();
const r = await setupNodeBackend(backend);
console.log('setup', r, (performance.now() - t0).toFixed(0), 'ms', tf.getBackend());
console.log("A");const spec = getModel(model);
const net = new Net(spec);
console.log("B");net.setWeights(initParams(spec, 42));console.log("C");
const d = loadFashionMnist();console.log("D");
const out = new Float32Array(net.total);
for (let s = 0; s < 4; s++) {
  const t = performance.now();
  const st = await net.gradient(d.train.images, d.train.labels, n, 42, 0, 0, out);
  console.log('step', s, (performance.now() - t).toFixed(0), 'ms', st, tf.memory().numTensors);
}
const fs = await import('node:fs');
fs.writeFileSync(`/tmp/dx/grad-${backend}-${model}.bin`, Buffer.from(out.buffer));
process.exit(0);
