import { getModel, paramLayout } from '@tabtrain/shared';
import { GradientEncoder, parseCompression, planSegments, decodeInto } from '@tabtrain/shared/compress';
import { fillGradient } from '@tabtrain/client/synthetic';
const { params, total } = paramLayout(getModel(process.argv[2] ?? 'alexnet'));
const grad = new Float32Array(total); fillGradient(grad, 1);
const cp = new Float32Array(total);
for (const m of ['fp16', 'int8', 'powersgd']) {
  const p = planSegments(params, total, parseCompression(m));
  const enc = new GradientEncoder(p, total, 1);
  const bodies = p.map((s) => new Uint8Array(s.bytes));
  for (let r = 0; r < 2; r++) {
    let t = performance.now(); cp.set(grad); const tc = performance.now() - t;
    const t0 = performance.now();
    p.forEach((s, i) => enc.encode(s, grad, bodies[i]));
    const t1 = performance.now();
    const out = new Float32Array(total);
    p.forEach((s, i) => decodeInto(s, bodies[i], out));
    const t2 = performance.now();
    console.log(m, 'memcpy', tc.toFixed(0), 'encode', (t1 - t0).toFixed(0), 'decode', (t2 - t1).toFixed(0));
  }
}
