// Three WebAssembly SIMD kernels for the coordinator's hot loops, hand-assembled (no toolchain):
//
//   add(dst, src, end) → 1 if every result is finite: f32 dst[i] += src[i] for dst ≤ i < end
//   check(src, end)    → 1 if every float in [src, end) is finite
//   sgd(w, g, end, k)  → f32 w[i] = fround(w[i] − k · g[i]), the products and differences in f64
//
// sgd is sgdStep's loop bit for bit: JavaScript evaluates `w[i] -= k * g[i]` in doubles and rounds
// once on the store, and so does this (f64x2 lanes, then demote), so replicas that apply the same
// update with the plain loop (workers, pages) stay bit-equal to the coordinator.
//
// Both take byte addresses into one memory and walk 64 bytes (16 floats) per iteration; callers do
// the tail. Scalar JS sums ~1 float per ns here (≈4 GB/s of gradient read); f32x4 reaches the
// memory system (measured by `tabtrain bench micro`). Adds are IEEE fp32, like a Float32Array
// `+=`, so results are bit-identical to the scalar fold. The finiteness test is on the bits
// (exponent all ones), OR-ed into one vector, so it costs no extra pass.

import { sgdStep } from '@tabtrain/shared';

const leb = (n: number): number[] => { const o: number[] = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; o.push(b); } while (n); return o; };
const sleb = (n: number): number[] => {
  const o: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) { o.push(b); return o; }
    o.push(b | 0x80);
  }
};
const section = (id: number, bytes: number[]) => [id, ...leb(bytes.length), ...bytes];
const name = (s: string) => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];

// Opcodes used below.
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const tee = (i: number) => [0x22, i];
const i32 = (n: number) => [0x41, ...sleb(n)];
const I32_ADD = 0x6a, I32_GE_U = 0x4f, I32_EQZ = 0x45, BR = 0x0c, BR_IF = 0x0d, END = 0x0b;
const load = (off: number) => [0xfd, 0x00, 0x04, ...leb(off)];
const store = (off: number) => [0xfd, 0x0b, 0x04, ...leb(off)];
const F32X4_ADD = [0xfd, 0xe4, 0x01], V128_AND = [0xfd, 0x4e], V128_OR = [0xfd, 0x50], I32X4_EQ = [0xfd, 0x37], ANY_TRUE = [0xfd, 0x53];
const SPLAT_I32X4 = [0xfd, 0x11];
const SPLAT_F64X2 = [0xfd, 0x14], PROMOTE_LOW = [0xfd, 0x5f], DEMOTE_ZERO = [0xfd, 0x5e], F64X2_SUB = [0xfd, 0xf1, 0x01], F64X2_MUL = [0xfd, 0xf2, 0x01];
const shuffle = (lanes: number[]) => [0xfd, 0x0d, ...lanes];
/** Bytes 8..15 of a vector moved to 0..7 (the high two floats, ready for PROMOTE_LOW). */
const HIGH_HALF = shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
/** The low two floats of each of two vectors, side by side. */
const JOIN_LOWS = shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);
const V128 = 0x7b;

const LANES = [0, 16, 32, 48];
/** Loop over [p0, end) 64 bytes at a time; `per(off)` is one 16-byte lane group; `step` advances pointers. */
function kernel(params: number, endParam: number, per: (off: number) => number[], step: number[]): number[] {
  // locals after the params: bad (v128), tmp (v128), mask (v128)
  const bad = params, mask = params + 2;
  return [
    1, 3, V128,
    ...i32(0x7f800000), ...SPLAT_I32X4, ...set(mask),
    0x02, 0x40, 0x03, 0x40,
    ...get(0), ...get(endParam), I32_GE_U, BR_IF, 1,
    ...LANES.flatMap(per),
    ...step,
    BR, 0, END, END,
    ...get(bad), ...ANY_TRUE, I32_EQZ,
    END,
  ];
}
/** OR into `bad` the lanes of `value` (on the stack → tmp) whose exponent is all ones. */
const flagNonFinite = (bad: number, tmp: number, mask: number) => [...set(tmp), ...get(bad), ...get(tmp), ...get(mask), ...V128_AND, ...get(mask), ...I32X4_EQ, ...V128_OR, ...set(bad)];
const advance = (p: number) => [...get(p), ...i32(64), I32_ADD, ...set(p)];

function module(): Uint8Array<ArrayBuffer> {
  // add(dst=0, src=1, end=2): locals bad=3 tmp=4 mask=5
  const add = kernel(3, 2, (o) => [
    ...get(0), ...get(0), ...load(o), ...get(1), ...load(o), ...F32X4_ADD, ...tee(4), ...store(o),
    ...get(4), ...flagNonFinite(3, 4, 5),
  ], [...advance(0), ...advance(1)]);
  // check(src=0, end=1): locals bad=2 tmp=3 mask=4
  const check = kernel(2, 1, (o) => [...get(0), ...load(o), ...flagNonFinite(2, 3, 4)], advance(0));
  // sgd(w=0, g=1, end=2, k=3 f64): locals W=4 G=5 K=6 (v128). One half: W − K·G in f64, demoted.
  const lanes = (v: number, high: boolean) => (high ? [...get(v), ...get(v), ...HIGH_HALF] : get(v));
  const half = (high: boolean) => [...lanes(4, high), ...PROMOTE_LOW, ...lanes(5, high), ...PROMOTE_LOW, ...get(6), ...F64X2_MUL, ...F64X2_SUB, ...DEMOTE_ZERO];
  const sgd = [
    1, 3, V128,
    ...get(3), ...SPLAT_F64X2, ...set(6),
    0x02, 0x40, 0x03, 0x40,
    ...get(0), ...get(2), I32_GE_U, BR_IF, 1,
    ...LANES.flatMap((o) => [
      ...get(0), ...get(0), ...load(o), ...set(4), ...get(1), ...load(o), ...set(5),
      ...half(false), ...half(true), ...JOIN_LOWS, ...store(o),
    ]),
    ...advance(0), ...advance(1),
    BR, 0, END, END,
    END,
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [3, 0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7f, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7c, 0]),
    ...section(2, [1, ...name('env'), ...name('mem'), 0x02, 0x00, 0x01]),
    ...section(3, [3, 0, 1, 2]),
    ...section(7, [3, ...name('add'), 0, 0, ...name('check'), 0, 1, ...name('sgd'), 0, 2]),
    ...section(10, [3, ...leb(add.length), ...add, ...leb(check.length), ...check, ...leb(sgd.length), ...sgd]),
  ]);
}

/**
 * A memory of `floats` fp32 slots with the two kernels over it. Falls back to scalar JS where
 * WebAssembly SIMD is missing (then `simd` is false), with the same results.
 */
export class SimdArena {
  readonly f32: Float32Array;
  readonly simd: boolean;
  private readonly kAdd: ((dst: number, src: number, end: number) => number) | null = null;
  private readonly kCheck: ((src: number, end: number) => number) | null = null;
  private readonly kSgd: ((w: number, g: number, end: number, scale: number) => void) | null = null;

  constructor(floats: number) {
    const bytes = module();
    const pages = Math.max(1, Math.ceil((floats * 4) / 65536));
    if (pages > 65536) throw new Error(`${floats} floats do not fit a 4 GiB WebAssembly memory`);
    let f32: Float32Array;
    if (WebAssembly.validate(bytes)) {
      const mem = new WebAssembly.Memory({ initial: pages, maximum: pages });
      const ex = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { mem } }).exports as Record<string, CallableFunction>;
      this.kAdd = ex.add as (d: number, s: number, e: number) => number;
      this.kCheck = ex.check as (s: number, e: number) => number;
      this.kSgd = ex.sgd as (w: number, g: number, e: number, k: number) => void;
      f32 = new Float32Array(mem.buffer, 0, floats);
    } else {
      f32 = new Float32Array(floats);
    }
    this.f32 = f32;
    this.simd = this.kAdd !== null;
  }

  /** f32[dst .. dst+n) += f32[src .. src+n); false if any result is not finite. */
  add(dst: number, src: number, n: number): boolean {
    const v = this.f32;
    const body = this.kAdd ? n & ~15 : 0;
    let ok = body === 0 || this.kAdd!(4 * dst, 4 * src, 4 * (dst + body)) === 1;
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
    if (!this.kSgd || w.buffer !== this.f32.buffer || g.buffer !== this.f32.buffer || w.byteOffset % 16 || g.byteOffset % 16) return sgdStep(w, g, lr, batch);
    if (w.length !== g.length) throw new Error(`sgd: ${w.length} weights vs ${g.length} gradients`);
    const body = w.length & ~15;
    this.kSgd(w.byteOffset, g.byteOffset, w.byteOffset + 4 * body, lr / batch);
    sgdStep(w.subarray(body), g.subarray(body), lr, batch); // the last < 16 floats
  }

  /** Whether every float of f32[at .. at+n) is finite. */
  check(at: number, n: number): boolean {
    const v = this.f32;
    const body = this.kCheck ? n & ~15 : 0;
    let ok = body === 0 || this.kCheck!(4 * at, 4 * (at + body)) === 1;
    let bad = 0;
    for (let i = body; i < n; i++) { const x = v[at + i]; bad += x - x; }
    ok &&= bad === 0;
    return ok;
  }
}
