// Where a GPU step goes, kernel by kernel, each figure beside its bound (part of bench/gpu/run.sh):
//
//   node --import tsx bench/gpu/layer-bench.ts [--batch 128] [--peak-size 4096] [--bw-mb 256]
//        [--reps 5] [--budget-ms 3000] [--rank 4] [--parts peak,layers,split] [--data DIR] [--json FILE] MODEL...
//
// 1. The adapter's own ceilings (bench/gpu/wgsl-peak.ts): our tiled fp32 matmul's best GFLOP/s
//    (square --peak-size, several tile shapes) and upload / readback / on-device copy GB/s.
// 2. Every conv and dense layer of each MODEL at --batch: forward, input-gradient and
//    filter-gradient time (median of up to --reps runs, each alone with the queue drained), every
//    variant the page or the worker may run (input gradient: tfjs's naive and matmul-based kernels;
//    filter gradient: tfjs's and the split-K one); GFLOP/s = 2·MACs / time, and as a share of 1.
// 3. A step's split on the GPU, per model: compute (forward + backward, gradients left on the
//    device), readback of the gradient (fp32 mode) or of the PowerSGD factors, the update applied on
//    the device (client/src/device-update.ts), and the refresh (upload of the exact weights), each
//    beside its bound: compute at the matmul peak, transfers at the measured bandwidths.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { getModel, initParams, IMAGE_BYTES, type ParamInfo } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { powerSgdPlan } from '@tabtrain/shared/powersgd';
import { setupNodeBackend } from '../../client/src/node-worker';
import { applyOnDevice, refreshOnDevice } from '../../client/src/device-update';
import { DEFAULT_DATA_DIR, loadFashionMnist } from '../../server/src/data';
import { forwardBackward } from './fwdbwd';
import { describeLayer, modelLayers } from './layers';
import { settle, timeLayer, type LayerTiming } from './layer-timing';
import { layerSection, type LayerBenchJson } from './report-layers';
import { bandwidth, matmulPeak } from './wgsl-peak';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    batch: { type: 'string', default: '128' }, 'peak-size': { type: 'string', default: '4096' }, 'bw-mb': { type: 'string', default: '256' },
    reps: { type: 'string', default: '5' }, 'budget-ms': { type: 'string', default: '3000' }, rank: { type: 'string', default: '4' },
    parts: { type: 'string', default: 'peak,layers,split' }, data: { type: 'string', default: DEFAULT_DATA_DIR }, json: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false },
  },
});
if (v.help) {
  console.log('layer-bench: per-layer kernel times, the adapter\'s matmul peak and bandwidths, and a step\'s split on the GPU.\n' +
    'usage: layer-bench [--batch 128] [--peak-size 4096] [--bw-mb 256] [--reps 5] [--budget-ms 3000] [--rank 4] [--parts peak,layers,split] [--data DIR] [--json FILE] MODEL...');
  process.exit(0);
}
const models = positionals.length ? positionals : ['alexnet', 'vgg11'];
const batch = Number(v.batch), reps = Number(v.reps), budgetMs = Number(v['budget-ms']), rank = Number(v.rank);
for (const [k, x] of Object.entries({ batch, reps, 'budget-ms': budgetMs, rank, 'peak-size': Number(v['peak-size']), 'bw-mb': Number(v['bw-mb']) })) {
  if (!(x > 0)) { console.error(`layer-bench: --${k} must be a positive number, got '${String(x)}'`); process.exit(2); }
}
const parts = new Set(v.parts!.split(','));
for (const p of parts) if (!['peak', 'layers', 'split'].includes(p)) { console.error(`layer-bench: --parts takes peak, layers and split, got '${p}'`); process.exit(2); }
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const t0 = performance.now();
const say = (s: string) => console.log(`[layer-bench ${((performance.now() - t0) / 1000).toFixed(0)}s] ${s}`);

const setup = await setupNodeBackend('webgpu');
const device = (tf.backend() as unknown as { device: GPUDevice }).device;
say(`webgpu on ${JSON.stringify(setup.adapter)}`);

const peak = parts.has('peak') ? await matmulPeak(device, Number(v['peak-size'])) : { size: 0, best: null, tiles: [], checkError: null };
if (parts.has('peak')) say(`matmul peak at ${peak.size}²: ${peak.tiles.map((t) => `${t.tile}: ${t.gflops ?? t.skipped} GFLOP/s`).join('; ')}; best ${peak.best?.gflops} GFLOP/s (check error ${peak.checkError?.toExponential(1)})`);
// The split's transfer bounds need the bandwidths.
const bw = parts.has('peak') || parts.has('split') ? await bandwidth(device, Number(v['bw-mb'])) : null;
if (bw) say(`bandwidth (${bw.megabytes} MB): upload ${bw.uploadGBs} GB/s, readback ${bw.readbackGBs} GB/s, on-device copy ${bw.deviceCopyGBs} GB/s`);
const peakGflops = peak.best?.gflops ?? null;

const layers: LayerTiming[] = [];
const split: Record<string, unknown>[] = [];
// Written after every layer and model: a run cut short by run.sh's timeout still reports what it measured.
const save = () => { if (v.json) writeFileSync(v.json, JSON.stringify({ date: new Date().toISOString(), adapter: setup.adapter, batch, peak, bandwidth: bw, layers, split }, null, 2) + '\n'); };
save();
for (const model of parts.has('layers') ? models : []) {
  for (const g of modelLayers(model, batch)) {
    const t = await timeLayer(g, { reps, budgetMs });
    layers.push(t);
    save();
    const gf = (ms: number | null | undefined) => (ms ? `${ms.toFixed(2)} ms (${((2 * g.macs) / ms / 1e6).toFixed(1)} GFLOP/s${peakGflops ? `, ${((200 * g.macs) / ms / 1e6 / peakGflops).toFixed(0)}%` : ''})` : '—');
    say(`${g.name.padEnd(15)} ${describeLayer(g).padEnd(38)} ${Object.entries(t.ms).map(([k, ms]) => `${k} ${gf(ms)}`).join('; ')}`);
  }
}

const data = loadFashionMnist(v.data).train;
for (const model of bw && parts.has('split') ? models : []) {
  const link = bw!; // set whenever the split runs
  const spec = getModel(model);
  const net = new Net(spec);
  net.setWeights(initParams(spec, 1));
  const plan = powerSgdPlan(net.params, net.total, rank);
  const timeIt = async (f: () => Promise<unknown>) => {
    await f(); // first run: pipelines, staging buffers
    const ts: number[] = [];
    for (let r = 0; r < reps; r++) { const a = performance.now(); await f(); await settle(); ts.push(performance.now() - a); }
    return +median(ts).toFixed(2);
  };
  const images = data.images.subarray(0, batch * IMAGE_BYTES), labels = data.labels.subarray(0, batch);
  const computeMs = await timeIt(() => forwardBackward(net, images, labels, batch, 1));
  // Gradient-shaped and factor-shaped tensors resident on the device, read as a worker reads them.
  const grads = net.vars.map((x) => tf.mul(x, 2));
  const gradOut = new Float32Array(net.total);
  const gradReadMs = await timeIt(() => Net.io.read(grads, net.params, gradOut));
  const factorShapes = [...plan.matrices.map((m) => [rank, m.rows]), ...plan.dense.map((d) => [d.count]), ...plan.matrices.map((m) => [rank, m.cols])];
  let at = 0;
  const factorParams = factorShapes.map((shape) => { const size = shape.reduce((a, b) => a * b, 1); const p = { offset: at, size, shape }; at += size; return p as unknown as ParamInfo; });
  const factors = factorShapes.map((shape) => tf.randomUniform(shape, -1, 1));
  const factorOut = new Float32Array(at);
  const factorReadMs = await timeIt(() => Net.io.read(factors, factorParams, factorOut));
  tf.dispose([...grads, ...factors]);
  const round1 = Float32Array.from({ length: plan.round1Floats }, (_, i) => Math.sin(i) * 1e-3), round2 = Float32Array.from({ length: plan.round2Floats }, (_, i) => Math.cos(i) * 1e-3);
  const updateMs = await timeIt(async () => applyOnDevice(net, plan, round1, round2, spec.lr, batch));
  const exact = initParams(spec, 2);
  const refreshMs = await timeIt(() => refreshOnDevice(net, exact));
  const uploadMs = await timeIt(async () => net.setWeights(exact));
  net.dispose();
  // Bounds: the step's matmul work at our kernel's peak; bytes over the measured bandwidths.
  const flops = modelLayers(model, batch).reduce((s, g) => s + 2 * g.macs * (g.first ? 2 : 3), 0);
  const mb = (floats: number) => (4 * floats) / 1e6;
  const row = {
    model, batch, rank, params: net.total, factorFloats: at, gflopPerStep: +(flops / 1e9).toFixed(2),
    computeMs, computeBoundMs: peakGflops ? +(flops / peakGflops / 1e6).toFixed(2) : null,
    gradientReadbackMs: gradReadMs, gradientReadbackBoundMs: +(mb(net.total) / link.readbackGBs).toFixed(2),
    factorReadbackMs: factorReadMs, factorReadbackBoundMs: +(mb(at) / link.readbackGBs).toFixed(3),
    updateOnDeviceMs: updateMs, updateBoundMs: +((2 * mb(net.total)) / link.deviceCopyGBs).toFixed(2),
    refreshMs, uploadMs, refreshBoundMs: +(mb(net.total) / link.uploadGBs).toFixed(2),
  };
  split.push(row);
  save();
  say(`${model} step split: compute ${computeMs} ms (bound ${row.computeBoundMs}), gradient readback ${gradReadMs} (${row.gradientReadbackBoundMs}), ` +
    `factor readback ${factorReadMs} (${row.factorReadbackBoundMs}), update on device ${updateMs} (${row.updateBoundMs}), refresh ${refreshMs} / upload ${uploadMs} (${row.refreshBoundMs})`);
}

console.log(['', ...layerSection({ batch, peak, bandwidth: bw, layers, split } as unknown as LayerBenchJson)].join('\n'));
say('done');
process.exit(0);
