import * as tf from '@tensorflow/tfjs';
import { setupDawn } from '@tabtrain/client/dawn';
await setupDawn();
const be = tf.backend() as any;
const device: GPUDevice = be.device;
const n = 46764746 / 16 | 0; // one chunk ~ 11.7 MB; 16 of them
const bufs = Array.from({ length: 16 }, () => device.createBuffer({ size: n * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }));
const stg = Array.from({ length: 16 }, () => device.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
const out = new Float32Array(n * 16);
for (let rep = 0; rep < 4; rep++) {
  let t0 = performance.now();
  const enc = device.createCommandEncoder();
  bufs.forEach((b, i) => enc.copyBufferToBuffer(b, 0, stg[i], 0, n * 4));
  device.queue.submit([enc.finish()]);
  await Promise.all(stg.map((s) => s.mapAsync(GPUMapMode.READ)));
  const t1 = performance.now();
  stg.forEach((s, i) => { out.set(new Float32Array(s.getMappedRange()), i * n); s.unmap(); });
  const t2 = performance.now();
  console.log('copy+map', (t1 - t0).toFixed(1), 'ms; getMappedRange+set', (t2 - t1).toFixed(1), 'ms; total GB/s', (n * 64 / (t2 - t0) / 1e6).toFixed(2));
}
const a = new Float32Array(n * 16), b = new Float32Array(n * 16);
let t = performance.now(); b.set(a); console.log('plain memcpy 187MB', (performance.now() - t).toFixed(1), 'ms');
t = performance.now(); const c = a.buffer.slice(0); console.log('slice 187MB', (performance.now() - t).toFixed(1), 'ms', c.byteLength);
process.exit(0);
