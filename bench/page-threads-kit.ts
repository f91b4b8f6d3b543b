// The page that bench/page-threads.ts opens in headless Chromium: tfjs-backend-wasm with the
// worker page's kernels (registerWasmKernels) on ?threads=N threads (parsed as the worker page
// parses it), and Net.gradient, the step a tab computes for its shard. Bundled and served
// cross-origin isolated by tests/helpers/kernel-page-server.ts.
import * as tf from '@tensorflow/tfjs';
import * as wasm from '@tensorflow/tfjs-backend-wasm';
import { getModel, initParams } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { parseWasmThreads, startWasmThreads } from '../client/src/page-threads';
import { registerWasmKernels } from '../client/src/wasm-kernels';
import { KernelTimer, median } from './kernel-timer';

/** Wall clock: with threads, a kernel's time is the page thread's wait for them. */
const timer = new KernelTimer({ now: () => performance.now(), nested: true });

export interface StepTimes {
  /** Wall ms of each timed step (no kernel timing). */
  stepMs: number[];
  /** Median wall ms of a profiled step. */
  profiledStepMs: number;
  /** Kernel (or 'Outer > Inner') → median and least ms, and calls, per profiled step. */
  kernels: { kernel: string; ms: number; minMs: number; calls: number }[];
}

const kit = {
  /** Starts wasm on ?threads= threads; resolves to what tfjs started. */
  ready: (async () => {
    tf.env().set('PROD', true);
    const threads = parseWasmThreads(new URLSearchParams(location.search).get('threads'));
    wasm.setWasmPaths(Object.fromEntries(['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'].map((f) => [f, `/wasm/${f}`])));
    timer.install('wasm'); // before ours take their references to wasm's kernels: those are timed inside ours
    registerWasmKernels();
    timer.install('wasm'); // ours
    if (!(await startWasmThreads(wasm.setThreadsCount, threads, () => tf.setBackend('wasm')))) throw new Error('the wasm backend did not start');
    return {
      threads: wasm.getThreadsCount(), isolated: globalThis.crossOriginIsolated === true,
      multithread: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'), simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
      cores: navigator.hardwareConcurrency,
    };
  })(),

  /** `warmup` untimed steps, `steps` timed ones, then `steps` profiled ones, over the given examples in turn. */
  async run(model: string, batch: number, images: number[], labels: number[], warmup: number, steps: number): Promise<StepTimes> {
    const net = new Net(getModel(model));
    net.setWeights(initParams(net.spec, 1));
    const grad = new Float32Array(net.total);
    const x = Uint8Array.from(images), y = Uint8Array.from(labels);
    const batches = Math.floor(y.length / batch);
    const step = (s: number) => {
      const o = (s % batches) * batch;
      return net.gradient(x.subarray(o * 784, (o + batch) * 784), y.subarray(o, o + batch), batch, 1, s, 0, grad);
    };
    const stepMs: number[] = [], profiledMs: number[] = [], profiles: Map<string, [number, number]>[] = [];
    for (let s = 0; s < warmup + 2 * steps; s++) {
      const profiled = s >= warmup + steps;
      timer.recording = profiled;
      timer.take();
      const t0 = performance.now();
      await step(s);
      const ms = performance.now() - t0;
      if (profiled) { profiledMs.push(ms); profiles.push(timer.take()); } else if (s >= warmup) stepMs.push(ms);
    }
    timer.recording = false;
    net.dispose();
    const names = [...new Set(profiles.flatMap((p) => [...p.keys()]))];
    const kernels = names.map((kernel) => ({
      kernel, ms: median(profiles.map((p) => p.get(kernel)?.[0] ?? 0)), minMs: Math.min(...profiles.map((p) => p.get(kernel)?.[0] ?? 0)), calls: profiles[0].get(kernel)?.[1] ?? 0,
    })).sort((a, b) => b.ms - a.ms);
    return { stepMs, profiledStepMs: median(profiledMs), kernels };
  },
};
(globalThis as unknown as { kit: typeof kit }).kit = kit;
export type PageThreadsKit = typeof kit;
