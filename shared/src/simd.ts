// The WebAssembly SIMD kernels (kernels.wat, compiled into kernels.wasm.ts by `npm run
// build:kernels`), and the coordinator's arena for its hot loops. compress.ts runs its fp16 and
// int8 codecs on the same kernels.
//
// Scalar JS sums ~1 float per ns here (≈4 GB/s of gradient read); f32x4 reaches the memory system
// (measured by `tabtrain bench micro`). What each kernel computes, and why it is bit-identical to
// the plain loop it replaces, is written beside it in kernels.wat.
//
// Pure code: the page loads this too. The module (about 3 KB) is compiled synchronously, which
// Chromium allows on a page's main thread up to 8 MB (Debian's Chromium 156, measured).
import { KERNELS_SHARED_WASM, KERNELS_WASM } from './kernels.wasm';
import { sgdStep } from './sgd';

/** The kernels' exports; every pointer is a byte address into the memory they were given. */
export interface Kernels {
  add(dst: number, src: number, end: number): number;
  check(src: number, end: number): number;
  sumSquares(src: number, end: number): number;
  sgd(w: number, g: number, end: number, scale: number): void;
  // The fp16 and int8 codecs (compress.ts); these take any count n.
  halfEncode(src: number, dst: number, n: number): void;
  halfDecode(src: number, dst: number, n: number): number;
  int8Fold(g: number, e: number, n: number): number;
  int8Codes(e: number, codes: number, n: number, scale: number, inv: number): void;
  int8Decode(codes: number, dst: number, n: number, scale: number): void;
  // PowerSGD's update w −= k · P̂ Qᵀ over `rows` rows (powersgd.ts); any cols, rank ≥ 1.
  lowRankApply(w: number, rows: number, cols: number, p: number, pStride: number, q: number, rank: number, k: number): void;
  // A training step's max pool backward on tfjs's wasm heap (client/src/wasm-step-kernels.ts).
  maxPoolGrad(x: number, dy: number, acc: number, batch: number, inH: number, inW: number, c: number, outH: number, outW: number,
    sH: number, sW: number, fH: number, fW: number, padT: number, padL: number): void;
  demote(acc: number, dst: number, n: number): void;
}

const compiled: { plain?: WebAssembly.Module | null; shared?: WebAssembly.Module | null } = {};

/** The compiled kernels (once per process or page), or null where WebAssembly SIMD (shared: and threads) is missing. */
function kernelModule(shared = false): WebAssembly.Module | null {
  const key = shared ? 'shared' : 'plain';
  if (compiled[key] === undefined) {
    const bytes = Uint8Array.from(atob(shared ? KERNELS_SHARED_WASM : KERNELS_WASM), (c) => c.charCodeAt(0));
    compiled[key] = typeof WebAssembly === 'object' && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return compiled[key]!;
}

/** Whether threads can share kernel memory here (SharedArrayBuffer: Node, or a cross-origin isolated page). */
export function sharedKernelsAvailable(): boolean {
  return typeof SharedArrayBuffer === 'function' && kernelModule(true) !== null;
}

/** Whether the kernels run here (callers fall back to plain JavaScript where not). */
export function simdAvailable(): boolean {
  return kernelModule() !== null;
}

/** The kernels over `mem`, or null where WebAssembly SIMD is missing. */
export function instantiateKernels(mem: WebAssembly.Memory): Kernels | null {
  const m = kernelModule(typeof SharedArrayBuffer === 'function' && mem.buffer instanceof SharedArrayBuffer);
  return m && (new WebAssembly.Instance(m, { env: { mem } }).exports as unknown as Kernels);
}

/** A WebAssembly memory for `bytes` bytes (whole 64 KiB pages, fixed size, so views never detach). */
export function kernelMemory(bytes: number, shared = false): WebAssembly.Memory {
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  if (pages > 65536) throw new Error(`${bytes} bytes do not fit a 4 GiB WebAssembly memory`);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
}

/**
 * A memory of `floats` fp32 slots with the aggregation kernels over it. Falls back to scalar JS
 * where WebAssembly SIMD is missing (then `simd` is false), with the same results.
 */
export class SimdArena {
  readonly f32: Float32Array;
  readonly simd: boolean;
  private readonly k: Kernels | null;

  constructor(floats: number) {
    const mem = simdAvailable() ? kernelMemory(floats * 4) : null;
    this.k = mem && instantiateKernels(mem);
    this.f32 = mem ? new Float32Array(mem.buffer, 0, floats) : new Float32Array(floats);
    this.simd = this.k !== null;
  }

  /** f32[dst .. dst+n) += f32[src .. src+n); false if any result is not finite. */
  add(dst: number, src: number, n: number): boolean {
    const v = this.f32;
    const body = this.k ? n & ~15 : 0; // the kernel does 16 floats a turn; the tail is done here
    let ok = body === 0 || this.k!.add(4 * dst, 4 * src, 4 * (dst + body)) === 1;
    let bad = 0;
    for (let i = body; i < n; i++) { v[dst + i] += v[src + i]; const x = v[dst + i]; bad += x - x; }
    ok &&= bad === 0;
    return ok;
  }

  /**
   * w ← w − lr · g / batch over two arrays in this arena (views of f32), exactly as sgdStep does it.
   * Arrays elsewhere, or no SIMD: sgdStep itself.
   */
  sgd(w: Float32Array, g: Float32Array, lr: number, batch: number): void {
    if (!this.k || w.buffer !== this.f32.buffer || g.buffer !== this.f32.buffer || w.byteOffset % 16 || g.byteOffset % 16) return sgdStep(w, g, lr, batch);
    if (w.length !== g.length) throw new Error(`sgd: ${w.length} weights vs ${g.length} gradients`);
    const body = w.length & ~15;
    this.k.sgd(w.byteOffset, g.byteOffset, w.byteOffset + 4 * body, lr / batch);
    sgdStep(w.subarray(body), g.subarray(body), lr, batch); // the last < 16 floats
  }

  /** Whether every float of f32[at .. at+n) is finite. */
  check(at: number, n: number): boolean {
    const v = this.f32;
    const body = this.k ? n & ~15 : 0;
    let ok = body === 0 || this.k!.check(4 * at, 4 * (at + body)) === 1;
    let bad = 0;
    for (let i = body; i < n; i++) { const x = v[at + i]; bad += x - x; }
    ok &&= bad === 0;
    return ok;
  }
}

/**
 * A compressed (fp16, int8) run's replica of the weights and its decoded update, side by side in
 * one arena, so that SGD applies the update as one SIMD pass with sgdStep's bits (the coordinator
 * applies the same update with the same kernel; the replicas stay bit-equal to its weights).
 */
export class UpdateArena {
  private readonly arena: SimdArena;
  readonly replica: Float32Array;
  readonly update: Float32Array;

  constructor(total: number) {
    const stride = (total + 15) & ~15; // 64-byte aligned regions, as the kernel wants
    this.arena = new SimdArena(2 * stride);
    this.replica = this.arena.f32.subarray(0, total);
    this.update = this.arena.f32.subarray(stride, stride + total);
  }

  /** replica ← replica − lr · update / batch. */
  apply(lr: number, batch: number): void {
    this.arena.sgd(this.replica, this.update, lr, batch);
  }
}
