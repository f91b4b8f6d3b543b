// Faster wasm kernels for the backward pass of a training step (issue 23's profile, docs/BENCHMARKS.md §6).
//
// - BatchMatMul: wasm's XNNPACK path takes neither transpose; with transposeA or transposeB it
//   falls to a naive C loop, 10-15× slower at the dense layers' gradient shapes (16×256 · 256×256).
//   We transpose explicitly (cheap at these sizes) and always hand XNNPACK the smaller operand as
//   the one it packs (b), since a gradient's b is a fresh tensor that it packs on every call.
// - MaxPoolGrad: wasm's C kernel took 2 ms where the forward pool takes 0.04 ms. Ours finds each
//   window's first maximum (as the cpu backend does) and adds dy there, straight on the wasm heap:
//   kernels.wat's SIMD maxPoolGrad, run over tfjs's own memory (1.1 ms of an alexnet-small step
//   in JavaScript), or the plain loop below where a shape or the platform does not suit it.
// - Identity: the engine clones every tensor that the gradient tape saves (75 a vgg11-small step),
//   and wasm's Identity copies the data each time. tfjs tensors are immutable and nothing here
//   writes the wasm heap in place, so the clone shares the data by reference count, as wasm's
//   Reshape and the cpu backend's Identity already do.
//
// All are registered by registerWasmKernels() (wasm-kernels.ts), in the page and in Node alike.
import * as tf from '@tensorflow/tfjs-core';
import { instantiateKernels, type Kernels } from '@tabtrain/shared/simd';
import type { BatchMatMulAttrs, KernelBackend, KernelConfig, KernelFunc, MaxPoolGradAttrs, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';

/** The parts of tfjs-backend-wasm's BackendWasm that our kernels and the direct step (wasm-train-step.ts) use. */
export interface WasmHeap extends KernelBackend {
  incRef(dataId: object): void;
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array;
}

/** Replaces `name`'s wasm kernel with `make(original)`, keeping its setupFunc (the fallbacks need it bound). */
function wrap(name: string, make: (original: KernelFunc) => KernelFunc): void {
  const original = tf.getKernel(name, 'wasm');
  if (!original) throw new Error(`wasm kernel ${name} is not registered: import '@tensorflow/tfjs-backend-wasm' first`);
  tf.unregisterKernel(name, 'wasm');
  const replacement: KernelConfig = { ...original, kernelFunc: make(original.kernelFunc) };
  tf.registerKernel(replacement);
}

export function registerWasmStepKernels(): void {
  const transpose = tf.getKernel(tf.Transpose, 'wasm')!.kernelFunc;
  const call = (fn: KernelFunc, backend: KernelBackend, inputs: Record<string, TensorInfo>, attrs: object) =>
    fn({ inputs, backend, attrs: attrs as unknown as NamedAttrMap }) as TensorInfo;

  wrap(tf.BatchMatMul, (original) => (args) => {
    const backend = args.backend as KernelBackend;
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs;
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
    const m = transposeA ? a.shape[1] : a.shape[0];
    const n = transposeB ? b.shape[0] : b.shape[1];
    const free: TensorInfo[] = [];
    // op(a)·op(b), or (op(b)ᵀ·op(a)ᵀ)ᵀ when b would be the larger operand to pack.
    const swap = m < n && (transposeA || transposeB);
    const operand = (t: TensorInfo, wantTransposed: boolean): TensorInfo => {
      if (!wantTransposed) return t;
      const out = call(transpose, backend, { x: t }, { perm: [1, 0] });
      free.push(out);
      return out;
    };
    try {
      if (!swap) {
        if (!transposeA && !transposeB) return original(args);
        return call(original, backend, { a: operand(a, transposeA), b: operand(b, transposeB) }, { transposeA: false, transposeB: false });
      }
      // (op(a)·op(b))ᵀ = op(b)ᵀ·op(a)ᵀ: b's operand is op(a)ᵀ, the smaller of the two.
      const product = call(original, backend, { a: operand(b, !transposeB), b: operand(a, !transposeA) }, { transposeA: false, transposeB: false });
      free.push(product);
      return call(transpose, backend, { x: product }, { perm: [1, 0] });
    } finally {
      for (const t of free) backend.disposeData(t.dataId);
    }
  });

  wrap(tf.Identity, (original) => (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype === 'string') return original(args);
    (args.backend as WasmHeap).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });

  wrap(tf.MaxPoolGrad, (original) => (args) => {
    const backend = args.backend as WasmHeap;
    const { dy, input } = args.inputs as { dy: TensorInfo; input: TensorInfo };
    const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as MaxPoolGradAttrs;
    const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
    if (input.dtype !== 'float32' || info.dilationHeight !== 1 || info.dilationWidth !== 1) return original(args);
    const out = backend.makeOutput(input.shape, 'float32');
    const k = heapKernels(backend);
    if (k && info.inChannels % 4 === 0) {
      // kernels.wat's maxPoolGrad, four channels a turn, into f64 sums that demote rounds once.
      const n = out.shape.reduce((a, b) => a * b, 1);
      const sums = backend.makeOutput([2 * n], 'float32'); // n 8-byte slots
      try {
        const at = (t: TensorInfo) => backend.typedArrayFromHeap(t).byteOffset;
        new Uint8Array(backend.typedArrayFromHeap(sums).buffer, at(sums), 8 * n).fill(0);
        const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth, padInfo } = info;
        k.maxPoolGrad(at(input), at(dy), at(sums), batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth, padInfo.top, padInfo.left);
        k.demote(at(sums), at(out), n);
      } finally {
        backend.disposeData(sums.dataId);
      }
      return out;
    }
    // Views after the allocation: makeOutput may grow (and so detach) the heap.
    const dx = backend.typedArrayFromHeap(out);
    dx.fill(0);
    // Windows that never overlap (VGG's 2/2) give each input at most one term: straight into dx.
    if (info.strideHeight >= info.filterHeight && info.strideWidth >= info.filterWidth) {
      maxPoolBackprop(backend.typedArrayFromHeap(input), backend.typedArrayFromHeap(dy), dx, info);
      return out;
    }
    // Overlapping windows (AlexNet's 3/2) sum in float64, rounded once, as the cpu backend does:
    // the two agree bit for bit.
    if (sums.length < dx.length) sums = new Float64Array(dx.length);
    const acc = sums.subarray(0, dx.length);
    acc.fill(0);
    maxPoolBackprop(backend.typedArrayFromHeap(input), backend.typedArrayFromHeap(dy), acc, info);
    dx.set(acc);
    return out;
  });
}

/** The WebAssembly.Memory behind a wasm backend's heap: exported by the plain build, kept on the module by the threaded one. */
interface EmscriptenModule { wasmMemory?: WebAssembly.Memory; asm?: { memory?: WebAssembly.Memory } }

const heapKernelsOf = new WeakMap<object, Kernels | null>();
/**
 * kernels.wat instantiated over the backend's own heap (so they read and write tensors in place),
 * once per backend; null where WebAssembly SIMD is missing or the heap's memory cannot be found.
 */
export function heapKernels(backend: KernelBackend): Kernels | null {
  if (!heapKernelsOf.has(backend)) {
    const mod = (backend as unknown as { wasm: EmscriptenModule }).wasm;
    const memory = mod.wasmMemory ?? mod.asm?.memory;
    let kernels: Kernels | null = null;
    try {
      kernels = memory instanceof WebAssembly.Memory ? instantiateKernels(memory) : null;
    } catch {
      // A memory the kernels cannot import (a build whose limits differ): the plain loop serves.
    }
    heapKernelsOf.set(backend, kernels);
  }
  return heapKernelsOf.get(backend)!;
}

/**
 * W'[kh-1-i, kw-1-j, co, ci] = W[i, j, ci, co]: the filter of the input gradient as a convolution
 * (wasm-kernels.ts). Flipping both spatial axes reverses the order of the kh·kw taps, so it is
 * wasm's Transpose of each tap's ci×co matrix, then the taps copied back in reverse (a memcpy
 * each). wasm's Reverse took 1-4 ms for a 3×3×96×96 filter, 40× its Transpose; a JavaScript loop
 * over the heap took 0.66 ms of an alexnet-small step.
 */
export function flippedFilter(backend: KernelBackend, filter: TensorInfo): TensorInfo {
  const heap = backend as WasmHeap;
  const [kh, kw, ci, co] = filter.shape;
  const taps = kh * kw, plane = ci * co;
  const transpose = tf.getKernel(tf.Transpose, 'wasm')!.kernelFunc;
  const t = transpose({ inputs: { x: { dataId: filter.dataId, shape: [taps, ci, co], dtype: 'float32' } }, backend, attrs: { perm: [0, 2, 1] } as unknown as NamedAttrMap }) as TensorInfo;
  try {
    const out = heap.makeOutput([kh, kw, co, ci], 'float32');
    // Views after the allocation: makeOutput may grow (and so detach) the heap.
    const dst = heap.typedArrayFromHeap(out), src = heap.typedArrayFromHeap(t);
    for (let k = 0; k < taps; k++) dst.set(src.subarray(k * plane, (k + 1) * plane), (taps - 1 - k) * plane);
    return out;
  } finally {
    backend.disposeData(t.dataId);
  }
}

/** MaxPoolGrad's float64 accumulator, kept across calls (a step's largest pool input). */
let sums = new Float64Array(0);

/**
 * dx[argmax of each window] += dy[window], NHWC. The argmax is the window's first maximum in
 * row-major order, as the cpu backend picks it (a window of NaN or -Infinity passes nothing on);
 * padding is never a maximum.
 */
function maxPoolBackprop(x: Float32Array, dy: Float32Array, dx: Float32Array | Float64Array, info: tf.backend_util.Conv2DInfo): void {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth, padInfo } = info;
  const rowStride = inWidth * c;
  let o = 0;
  for (let b = 0; b < batchSize; b++) {
    const base = b * inHeight * rowStride;
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = oh * strideHeight - padInfo.top;
      const hStart = Math.max(0, h0), hEnd = Math.min(inHeight, h0 + filterHeight);
      for (let ow = 0; ow < outWidth; ow++) {
        const w0 = ow * strideWidth - padInfo.left;
        const wStart = Math.max(0, w0), wEnd = Math.min(inWidth, w0 + filterWidth);
        for (let ch = 0; ch < c; ch++, o++) {
          let best = -Infinity, at = -1;
          for (let h = hStart; h < hEnd; h++) {
            let i = base + h * rowStride + wStart * c + ch;
            for (let w = wStart; w < wEnd; w++, i += c) {
              if (x[i] > best) { best = x[i]; at = i; }
            }
          }
          if (at >= 0) dx[at] += dy[o];
        }
      }
    }
  }
}
