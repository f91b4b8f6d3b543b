// Merges the GPU comparison's JSON files into one, and prints the markdown section that
// docs/BENCHMARKS.md gets (run.sh appends it).
//
//   node --import tsx bench/gpu/report.ts --gpu NAME [--torch F] [--probe F] [--worker F] [--io F]
//        [--train F] [--layers F] [--json OUT.json] [--note TEXT]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { layerSection } from './report-layers';

const { values: v } = parseArgs({
  options: {
    gpu: { type: 'string', default: 'unknown GPU' }, torch: { type: 'string' }, probe: { type: 'string' }, worker: { type: 'string' },
    io: { type: 'string' }, train: { type: 'string' }, json: { type: 'string' }, note: { type: 'string' }, variants: { type: 'string' }, layers: { type: 'string' },
  },
});
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const load = (f?: string): Any => (f && existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : null);
const torch = load(v.torch), probe = load(v.probe), worker = load(v.worker), io = load(v.io), train = load(v.train), layers = load(v.layers);
// --variants name=file,...: the same worker bench with one setting changed (run.sh's A/B runs).
const variants = Object.fromEntries((v.variants ?? '').split(',').filter(Boolean).map((kv) => { const [name, f] = kv.split('='); return [name, load(f)]; }).filter(([, j]) => j));
const fmt = (x: number | null | undefined, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : '—');
// A tabtrain model is compared with PyTorch's of its family ('alexnet-tiny' → 'alexnet': smoke runs only).
const family = (m: string) => m.split('-')[0];
const tr = (model: string, mode: string, what: string): number | null => torch?.results?.find((r: Any) => r.model === family(model) && r.mode === mode && r.what === what)?.examplesPerSec ?? null;
const wk = (model: string, mode: 'noread' | 'read'): number | null => worker?.results?.find((r: Any) => r.model === model)?.[mode]?.examplesPerSec ?? null;
const ratio = (a: number | null, b: number | null) => (a && b ? a / b : null);

const lines: string[] = [];
const date = new Date().toISOString().slice(0, 10);
lines.push(`### Same-GPU comparison on ${v.gpu} (${date})`, '');
const adapter = worker?.results?.[0]?.adapter ?? probe?.adapter;
if (adapter) lines.push(`tabtrain WebGPU worker: Dawn (npm webgpu) ${adapter.backendType} backend, adapter ${[adapter.vendor, adapter.architecture, adapter.device, adapter.description].filter(Boolean).join(' / ')}${adapter.isFallbackAdapter ? ' (fallback adapter)' : ''}.`);
if (torch) lines.push(`PyTorch ${torch.torch} (CUDA ${torch.cuda}, cuDNN ${torch.cudnn}) on ${torch.gpu}.`);
if (v.note) lines.push(v.note);
lines.push('', `Examples/s at batch ${worker?.batch ?? 128} (PyTorch ${torch?.results?.[0]?.batch ?? '—'}), fp32, 224×224 Fashion-MNIST. PyTorch "fp32" = TF32 off (true fp32 like WebGPU shaders), cudnn.benchmark on; "default" = PyTorch defaults as d2l runs them (cuDNN convs may use TF32). tabtrain "fwd+bwd" leaves the gradients on the GPU; "+ readback" is Net.gradient as a worker runs it (gradient copied into one flat fp32 array).`, '');
lines.push('| model | PyTorch fp32 train | PyTorch fp32 fwd+bwd | PyTorch default train | tabtrain WebGPU fwd+bwd | tabtrain + readback | WebGPU fwd+bwd ÷ PyTorch fp32 fwd+bwd | ÷ PyTorch default train |');
lines.push('|---|--:|--:|--:|--:|--:|--:|--:|');
const ratios: Record<string, number | null> = {};
for (const m of worker?.results?.map((r: Any) => r.model as string) ?? ['alexnet', 'vgg11']) {
  const r1 = ratio(wk(m, 'noread'), tr(m, 'fp32', 'fwdbwd'));
  ratios[m] = r1;
  lines.push(`| ${m} | ${fmt(tr(m, 'fp32', 'train'))} | ${fmt(tr(m, 'fp32', 'fwdbwd'))} | ${fmt(tr(m, 'default', 'train'))} | ${fmt(wk(m, 'noread'))} | ${fmt(wk(m, 'read'))} | ${r1 === null ? '—' : `${(100 * r1).toFixed(1)}%`} | ${(() => { const r = ratio(wk(m, 'noread'), tr(m, 'default', 'train')); return r === null ? '—' : `${(100 * r).toFixed(1)}%`; })()} |`);
}
if (worker?.results?.length) {
  lines.push('');
  for (const r of worker.results) {
    lines.push(`- tabtrain ${r.model}: first step (shader compiles) ${fmt(r.noread?.firstStepMs, 0)} ms; median step ${fmt(r.noread?.medianStepMs, 1)} ms without readback, ${fmt(r.read?.medianStepMs, 1)} ms with; ` +
      `pipelines compiled during timed steps: ${r.noread?.pipelinesCompiledWhileTimed ?? '—'}/${r.read?.pipelinesCompiledWhileTimed ?? '—'}; tensors leaked: ${r.read?.tensorsLeaked ?? '—'}.` +
      (r.profile ? (r.profile.top.some((t: Any) => t.ms > 0)
        ? ` Top kernels by GPU time (one step, timestamp queries): ${r.profile.top.slice(0, 8).map((t: Any) => `${t.kernel} ${t.ms} ms ×${t.count}`).join(', ')}.`
        : ` No timestamp queries on this adapter: kernel counts only (${r.profile.kernels} kernels a step).`) : ''));
  }
}
const VARIANT_TEXT: Record<string, string> = {
  'tfjs-dW': "tfjs's own Conv2DBackpropFilter (one thread per weight)",
  'mm-dX': "tfjs's matmul-based Conv2DBackpropInput (TABTRAIN_WEBGPU_DX=mm)",
  'naive-dX': "tfjs's naive Conv2DBackpropInput (TABTRAIN_WEBGPU_DX=naive)",
};
const defaultKernels = adapter?.kernels ? `weight-gradient kernel ${adapter.kernels}, input gradient ${adapter.inputGradient ?? 'naive'}` : 'defaults';
for (const [name, j] of Object.entries(variants) as [string, Any][]) {
  for (const r of j.results ?? []) {
    const base = worker?.results?.find((b: Any) => b.model === r.model)?.noread;
    lines.push(`- A/B ${r.model}, fwd+bwd with ${VARIANT_TEXT[name] ?? name}: ${fmt(r.noread?.examplesPerSec)} examples/s (the run above, ${defaultKernels}: ${fmt(base?.examplesPerSec)}).`);
  }
}
if (io?.results?.length) {
  for (const r of io.results) {
    lines.push(`- ${r.model} weights upload / gradient readback (${fmt(r.fast?.megabytes, 1)} MB): tfjs's own path ${fmt(r.tfjs?.uploadMs)} / ${fmt(r.tfjs?.readbackMs)} ms, tabtrain's webgpu-io ${fmt(r.fast?.uploadMs)} / ${fmt(r.fast?.readbackMs)} ms (${fmt(r.fast?.readbackGBs, 2)} GB/s).`);
  }
}
if (train) {
  lines.push('', `Real run (coordinator + ${train.workers} Dawn ${train.backend} workers on this one GPU, ${train.model}, batch ${train.batch}, lr ${train.lr}, real Fashion-MNIST, ${train.seconds} s budget): ` +
    `${train.steps} steps, ${fmt(train.examplesPerSec)} examples/s over the run (${fmt(train.steadyExamplesPerSec)} after the first 3 steps); ` +
    `loss ${fmt(train.lossFirst, 3)} (mean of the first ${train.lossWindow} steps) → ${fmt(train.lossLast, 3)} (last ${train.lossWindow}).` +
    (train.medianStep ? ` Median step ${fmt(train.medianStep.wallMs, 0)} ms: worker compute ${fmt(train.medianStep.computeMs, 0)}, gradient upload ${fmt(train.medianStep.uploadMs, 0)}, SGD ${fmt(train.medianStep.applyMs, 0)}, broadcast ${fmt(train.medianStep.broadcastMs, 0)} ms.` : ''));
}
if (layers) lines.push('', '#### Where a GPU step goes (bench/gpu/layer-bench.ts)', '', ...layerSection(layers));
lines.push('');
const md = lines.join('\n');
console.log(md);
if (v.json) writeFileSync(v.json, JSON.stringify({ gpu: v.gpu, date: new Date().toISOString(), ratios, probe, torch, worker, variants, io, train, layers, markdown: md }, null, 2) + '\n');
