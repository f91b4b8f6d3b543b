// Issue 23's table: PyTorch (one thread) beside tabtrain's wasm worker (one thread), batch 16,
// interleaved model by model so that both see the same load on a shared machine, `--rounds` times.
//   node --import tsx bench/cpu-compare.ts [--rounds 2] [--steps N] [--profile] [--baseline DIR] [--tag NAME] [MODEL...]
// --baseline DIR also runs DIR's bench/worker-speed.ts (another checkout, e.g. before a change) in
// the same interleaving, so that before and after see the same load.
// Writes bench/results/cpu-compare[-TAG].json (and -profile with --profile: both profilers' tables
// for one step of each model). Needs Debian's python3-torch (`apt-get install python3-torch`).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { getModel } from '@tabtrain/shared';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '2' }, steps: { type: 'string' }, batch: { type: 'string', default: '16' },
    profile: { type: 'boolean', default: false }, from: { type: 'string' }, baseline: { type: 'string' }, tag: { type: 'string' }, help: { type: 'boolean', default: false },
  },
});
if (v.help) {
  console.log('node --import tsx bench/cpu-compare.ts [--rounds 2] [--steps N] [--batch 16] [--profile] [--tag NAME] [MODEL...]\n' +
    '--steps: timed steps per run (default 200 for the small models, past V8\'s warm-up; 3 at 224×224).\n' +
    'PyTorch vs tabtrain wasm, one thread each, interleaved; JSON in bench/results/. Default models: alexnet-small vgg11-small.\n' +
    '--baseline DIR: also time DIR\'s worker (another checkout) in the same interleaving.');
  process.exit(0);
}
const models = positionals.length ? positionals : ['alexnet-small', 'vgg11-small'];
// Default steps: enough for a steady state. A small model's first seconds carry V8's compiler
// threads (2.5–3.9 CPU ms a step beyond the wall clock over 9 steps, about none over 200:
// docs/BENCHMARKS.md §7), which a ratio per CPU second would charge to wasm; a full-size step is
// seconds long, its warm-up one step among few.
const stepsFor = (model: string) => v.steps ?? (getModel(model).input >= 224 ? '3' : '200');
const common = (model: string) => ['--batch', v.batch!, '--steps', stepsFor(model)];
const PYTHON = '/usr/bin/python3';

function torch(mode: 'speed' | 'profile', model: string): Record<string, unknown> {
  try {
    return JSON.parse(execFileSync(PYTHON, ['bench/torch-step.py', mode, ...common(model), model], { encoding: 'utf8' }));
  } catch (e) {
    throw new Error(`PyTorch run failed (${(e as Error).message.split('\n')[0]}): install it with \`apt-get install python3-torch\``);
  }
}

function wasm(script: 'worker-speed' | 'worker-profile', model: string, cwd = process.cwd()): Record<string, unknown> {
  const out = `/tmp/tabtrain-cpu-compare-${process.pid}.json`;
  execFileSync(process.execPath, ['--import', 'tsx', `bench/${script}.ts`, ...common(model), '--out', out, model], { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
  return JSON.parse(execFileSync('cat', [out], { encoding: 'utf8' })).results[0];
}

// --from FILE: print a saved --profile run's tables again, without running anything.
const saved = v.from ? JSON.parse(readFileSync(v.from, 'utf8')).rows : null;
const rows = saved ?? [];
for (let round = 1; !saved && round <= Number(v.rounds); round++) {
  for (const model of models) {
    const load = loadavg()[0];
    const pt = v.profile ? torch('profile', model) : torch('speed', model);
    const base = v.baseline ? wasm(v.profile ? 'worker-profile' : 'worker-speed', model, v.baseline) : null;
    const tj = v.profile ? wasm('worker-profile', model) : wasm('worker-speed', model);
    // Examples per CPU second: both run one thread, and CPU time barely moves with the machine's
    // load where wall time does (another process holding the core counts in the wall clock only).
    const ptRate = v.profile ? (1000 * Number(v.batch)) / Number(pt.cpuMsPerStep) : Number(pt.examplesPerCpuSec);
    const tjRate = v.profile ? Number(tj.examplesPerSec) : Number(tj.examplesPerCpuSec);
    const wall = v.profile ? null : Number(tj.examplesPerSec) / Number(pt.examplesPerSec);
    const baseRatio = base ? Number(v.profile ? base.examplesPerSec : base.examplesPerCpuSec) / ptRate : null;
    rows.push({ round, model, load1: load, pytorch: pt, wasm: tj, ratio: tjRate / ptRate, wallRatio: wall, ...(base ? { baseline: base, baselineRatio: baseRatio } : {}) });
    console.log(`round ${round} ${model.padEnd(14)} pytorch ${ptRate.toFixed(0).padStart(6)} ex/CPU s  wasm ${tjRate.toFixed(0).padStart(6)} ex/CPU s  ratio ${(100 * tjRate / ptRate).toFixed(1)}%` +
      `${wall === null ? '' : `  (wall-clock ratio ${(100 * wall).toFixed(1)}%)`}` +
      `${baseRatio === null ? '' : `  baseline ${(baseRatio * ptRate).toFixed(0)} ex/CPU s = ${(100 * baseRatio).toFixed(1)}%`}  (load ${load.toFixed(2)})`);
  }
}
if (v.profile || saved) {
  for (const r of rows) {
    if (r.baseline) console.log(`\n${r.model} (round ${r.round}), CPU ms per step, baseline (--baseline):\n${profileTable(r.pytorch, r.baseline)}`);
    console.log(`\n${r.model} (round ${r.round}), CPU ms per step:\n${profileTable(r.pytorch, r.wasm)}`);
  }
}

/** One step's time by kind of work, tfjs kernels and PyTorch ops side by side (the docs' table). */
function profileTable(pt: Record<string, unknown>, tj: Record<string, unknown>): string {
  const kinds: [string, RegExp, RegExp][] = [
    ['conv forward', /^Conv2D$|^FusedConv2D$/, /mkldnn_convolution|aten::_convolution$|thnn_conv/],
    ['conv input gradient', /^Conv2DBackpropInput$/, /$^/],
    ['conv filter gradient', /^Conv2DBackpropFilter$/, /$^/],
    ['conv gradients (PyTorch: one op)', /$^/, /convolution_backward/],
    ['dense (matmul)', /^BatchMatMul$|^_FusedMatMul$/, /aten::mm$|aten::addmm$/],
    ['max pool + its gradient', /^MaxPool$|^MaxPoolGrad$/, /max_pool2d/],
  ];
  const tOps = (tj.kernels as { kernel: string; msPerStep: number }[]).map((k) => ({ name: k.kernel, ms: k.msPerStep }));
  const pOps = (pt.ops as { op: string; selfMsPerStep: number }[]).map((o) => ({ name: o.op, ms: o.selfMsPerStep }));
  const tStep = Number(tj.stepMs), pStep = Number(pt.cpuMsPerStep);
  // torch.profiler's self times are wall clock, which another process's turn on the core inflates;
  // its ops (the autograd engine's included) are scaled to add up to the step's CPU time.
  const pScale = pStep / pOps.reduce((a, o) => a + o.ms, 0);
  for (const o of pOps) o.ms *= pScale;
  const lines = ['| work | PyTorch ms | share | tfjs wasm ms | share |', '|---|--:|--:|--:|--:|'];
  const row = (label: string, p: number, t: number) => lines.push(`| ${label} | ${p.toFixed(2)} | ${(100 * p / pStep).toFixed(0)}% | ${t.toFixed(2)} | ${(100 * t / tStep).toFixed(0)}% |`);
  const take = (ops: { name: string; ms: number }[], re: RegExp) => ops.filter((o) => re.test(o.name)).reduce((a, o) => a + o.ms, 0);
  let pSeen = 0, tSeen = 0;
  for (const [label, tRe, pRe] of kinds) {
    const p = take(pOps, pRe), t = take(tOps, tRe);
    pSeen += p; tSeen += t;
    row(label, p, t);
  }
  const tKernels = Number(tj.kernelMs), pOpsMs = pStep;
  row('every other op (elementwise, reductions, copies, dropout, SGD; PyTorch: its autograd engine too)', pOpsMs - pSeen, tKernels - tSeen);
  row('gradient readback into the flat vector', 0, Number(tj.readbackMs));
  lines.push(`| framework: dispatch, tape, allocation, GC (step − ops) | in the ops above | | ${Number(tj.otherMs).toFixed(2)} | ${(100 * Number(tj.otherMs) / tStep).toFixed(0)}% |`);
  row('**step**', pStep, tStep);
  return lines.join('\n');
}

if (saved) process.exit(0);
const name = `bench/results/cpu-compare${v.profile ? '-profile' : ''}${v.tag ? `-${v.tag}` : ''}.json`;
writeFileSync(name, JSON.stringify({ machine: '2-core Intel Xeon (AVX-512), shared', date: new Date().toISOString(), batch: Number(v.batch), threads: 1, rows }, null, 2) + '\n');
console.log(`wrote ${name}`);
