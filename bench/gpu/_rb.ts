import * as tf from '@tensorflow/tfjs';
import { setupDawn } from '@tabtrain/client/dawn';
import { getModel, paramLayout } from '@tabtrain/shared';
await setupDawn();
const { params, total } = paramLayout(getModel(process.argv[2] ?? 'alexnet'));
const out = new Float32Array(total);
for (let rep = 0; rep < 3; rep++) {
  for (const mode of ['seq', 'par']) {
    const ts = params.map((p) => tf.tidy(() => tf.mul(tf.ones(p.shape), 2))); // GPU-resident
    await ts[ts.length - 1].data(); // sync
    const t0 = performance.now();
    if (mode === 'seq') { for (let i = 0; i < params.length; i++) out.set(await ts[i].data() as Float32Array, params[i].offset); }
    else { const r = ts.map((t) => t.data()); for (let i = 0; i < params.length; i++) out.set(await r[i] as Float32Array, params[i].offset); }
    const ms = performance.now() - t0;
    console.log(mode, total, 'floats', ms.toFixed(1), 'ms', ((total * 4) / ms / 1e6).toFixed(2), 'GB/s');
    tf.dispose(ts);
  }
}
process.exit(0);
