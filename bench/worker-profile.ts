// Where one wasm training step's time goes, kernel by kernel (issue 23's profile).
//   node --import tsx bench/worker-profile.ts [--shapes] [--batch 16] [--steps 5] [--out FILE] MODEL...
// Every wasm kernel is wrapped with a timer of the process's CPU time (wasm kernels run
// synchronously, so the CPU spent between entry and return is the kernel's; CPU time, not wall
// time, because the machine is shared and a wall clock counts the time another process had the core). What the kernels do not account for is tfjs's
// own work: dispatch, the gradient tape, allocation, dropout masks, inputs. The gradient's
// readback into the flat vector is timed apart. One thread (tfjs gives Node no wasm threads).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Net } from '@tabtrain/shared/net';
import { setupNodeBackend } from '../client/src/node-worker';
import { benchNet } from './bench-step';
import { KernelTimer, median } from './kernel-timer';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { shapes: { type: 'boolean', default: false }, batch: { type: 'string', default: '16' }, steps: { type: 'string', default: '5' }, out: { type: 'string' } },
});
const models = positionals.length ? positionals : ['alexnet-small', 'vgg11-small'];
const batch = Number(v.batch), steps = Number(v.steps);
await setupNodeBackend('wasm');

// Kernels that ours call directly (wasm's Conv2D inside our filter gradient) are counted inside
// their caller only: the timer is installed after our kernels took their references.
const timer = new KernelTimer({
  now: cpuNow,
  key: (kernel, inputs) => v.shapes ? `${kernel} ${Object.values(inputs).map((t) => JSON.stringify(t?.shape)).join(' ')}` : kernel,
});
timer.install('wasm');

/** CPU milliseconds (user + system) of this process: tfjs computes on this one thread. */
function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const results = [];
for (const name of models) {
  const { net, step: runStep } = benchNet(name, batch);
  const perStep: Map<string, [number, number]>[] = [];
  const stepTimes: number[] = [], readTimes: number[] = [];
  let readMs = 0;
  const realRead = Net.io.read;
  Net.io = { ...Net.io, read: async (ts, params, out) => { const t = cpuNow(); await realRead(ts, params, out); readMs += cpuNow() - t; } };
  for (let s = 0; s <= steps; s++) {
    timer.recording = s > 0; // step 0 is burn-in (kernel setup, XNNPACK packing)
    timer.take();
    readMs = 0;
    const t0 = cpuNow();
    await runStep(s);
    if (s === 0) continue;
    stepTimes.push(cpuNow() - t0);
    readTimes.push(readMs);
    perStep.push(timer.take());
  }
  timer.recording = false;
  Net.io = { ...Net.io, read: realRead };
  net.dispose();
  // Medians over the steps: the machine is shared, and a median shrugs off a step that lost the core.
  const kernels = [...perStep[0].keys()].map((kernel) => ({
    kernel, msPerStep: median(perStep.map((m) => m.get(kernel)?.[0] ?? 0)), callsPerStep: perStep[0].get(kernel)![1],
  })).sort((a, b) => b.msPerStep - a.msPerStep);
  const kernelMs = kernels.reduce((a, k) => a + k.msPerStep, 0);
  const step = median(stepTimes), read = median(readTimes);
  const r = { model: name, batch, steps, stepMs: step, examplesPerSec: (1000 * batch) / step, kernelMs, readbackMs: read, otherMs: step - kernelMs - read, kernels };
  results.push(r);
  console.log(`\n${name}, batch ${batch}: ${step.toFixed(1)} CPU ms/step (${r.examplesPerSec.toFixed(0)} ex per CPU s), kernels ${kernelMs.toFixed(1)} ms, readback ${read.toFixed(1)} ms, tfjs other ${r.otherMs.toFixed(1)} ms`);
  for (const k of kernels) console.log(`  ${k.kernel.padEnd(v.shapes ? 56 : 24)} ${k.msPerStep.toFixed(2).padStart(8)} ms ${(100 * k.msPerStep / step).toFixed(1).padStart(5)}%  ${k.callsPerStep} calls`);
}

if (v.out) writeFileSync(v.out, JSON.stringify({ machine: '2-core CPU, no GPU', date: new Date().toISOString(), results }, null, 2) + '\n');
