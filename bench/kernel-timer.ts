// Times every kernel of a tfjs backend, by wrapping its registered kernel functions: the CPU
// profile in Node (bench/worker-profile.ts, CPU time) and the page's threads benchmark
// (bench/page-threads-kit.ts, wall time: the kernel's threads work while the page's thread waits).
// tfjs-backend-wasm's kernels run synchronously, so the time between entry and return is the
// kernel's. Browser-safe: no Node import.
import * as tf from '@tensorflow/tfjs-core';
import type { KernelFunc } from '@tensorflow/tfjs-core';

export interface KernelTimerOptions {
  /** The clock, in milliseconds. */
  now: () => number;
  /** The name a call is recorded under (default: the kernel's name). */
  key?: (kernel: string, inputs: Record<string, tf.TensorInfo | undefined>) => string;
  /**
   * Also record the kernels that a kernel calls (ours call wasm's Conv2D, Transpose, … directly), as
   * 'Outer > Inner', one level deep. They are wrapped only if install() ran before the outer
   * kernel took its reference to them (before registerWasmKernels()).
   */
  nested?: boolean;
}

export class KernelTimer {
  /** Kernel key → [ms, calls] since the last take(). */
  private spent = new Map<string, [number, number]>();
  private readonly stack: string[] = [];
  private readonly wrapped = new WeakSet<KernelFunc>();
  /** Calls are recorded only while this is true. */
  recording = false;

  constructor(private readonly opts: KernelTimerOptions) {}

  /** Wraps every kernel now registered for `backend` that is not wrapped yet (call again after registering more). */
  install(backend: string): void {
    for (const k of tf.getKernelsForBackend(backend)) {
      if (this.wrapped.has(k.kernelFunc)) continue;
      const inner = k.kernelFunc;
      const timed: KernelFunc = (args) => {
        const depth = this.stack.length;
        if (!this.recording || depth > (this.opts.nested ? 1 : 0)) return inner(args);
        const name = this.opts.key?.(k.kernelName, args.inputs) ?? k.kernelName;
        this.stack.push(name);
        const t0 = this.opts.now();
        try {
          return inner(args);
        } finally {
          this.stack.pop();
          const key = depth === 0 ? name : `${this.stack[0]} > ${name}`;
          const e = this.spent.get(key) ?? [0, 0];
          e[0] += this.opts.now() - t0;
          e[1]++;
          this.spent.set(key, e);
        }
      };
      this.wrapped.add(timed);
      tf.unregisterKernel(k.kernelName, backend);
      tf.registerKernel({ ...k, kernelFunc: timed });
    }
  }

  /** What was recorded since the last take(), and starts afresh. */
  take(): Map<string, [number, number]> {
    const s = this.spent;
    this.spent = new Map();
    return s;
  }
}

export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}
