// The fp16 and int8 codecs in plain JavaScript: what runs where WebAssembly SIMD is missing, and
// the reference the SIMD kernels (simd-codecs.ts) are tested against bit for bit.
//
//   fp16     IEEE half floats, round to nearest even, saturating at ±65504
//   int8     per-segment pieces (segment ∩ parameter tensor), each with an fp32 scale:
//            body = fp32 scale per piece | one int8 code per float; value = fround(code · scale)
//
// int8 keeps error feedback on the worker: what a step's encoding lost is added to the next
// step's gradient, so nothing is dropped for good, only delayed (Karimireddy et al. 2019).
//
// Pure code: no Node or DOM imports.
import type { Segment } from './segment-plan';

// ---- fp16 ----

/** IEEE binary16 bits of x: round to nearest even; saturates at ±65504 (a gradient is never Inf). */
export function toHalf(x: number): number {
  F32[0] = x;
  return halfBits(U32[0]);
}
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function halfBits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const a = f & 0x7fffffff;
  if (a >= 0x477ff000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7bff); // NaN stays NaN; ≥ 65520 saturates
  if (a >= 0x38800000) return sign | ((a + 0xfff + ((a >>> 13) & 1) - 0x38000000) >>> 13);
  // Below 2^-14: a subnormal half, in units of 2^-24 (exact in double), ties to even.
  F32[0] = 0; U32[0] = a;
  const y = F32[0] * 16777216;
  let n = Math.round(y);
  if (n - y === 0.5 && (n & 1)) n -= 1;
  return sign | n;
}

let halfTable: Float32Array | null = null;
/** All 65,536 halves as fp32 (256 KiB, built once): decoding is one table load per float. */
export function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const e = (h >>> 10) & 0x1f, m = h & 0x3ff;
    const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
    t[h] = h & 0x8000 ? -v : v;
  }
  halfTable = t;
  return t;
}

// ---- encode and decode ----

export function encodeHalf(grad: Float32Array, offset: number, count: number, body: Uint8Array): void {
  const bits = new Uint32Array(grad.buffer, grad.byteOffset + 4 * offset, count);
  const out = new Uint16Array(body.buffer, body.byteOffset, count);
  for (let i = 0; i < count; i++) {
    const f = bits[i];
    const a = f & 0x7fffffff;
    const sign = (f >>> 16) & 0x8000;
    if (a >= 0x38800000 && a < 0x477ff000) {
      out[i] = sign | ((a + 0xfff + ((a >>> 13) & 1) - 0x38000000) >>> 13);
    } else if (a < 0x38800000) {
      // A subnormal half (a third of a typical gradient): units of 2^-24, ties to even, as halfBits.
      const v = grad[offset + i];
      const y = (v < 0 ? -v : v) * 16777216;
      let n = Math.round(y);
      if (n - y === 0.5 && n & 1) n -= 1;
      out[i] = sign | n;
    } else {
      out[i] = halfBits(f); // saturation and NaN
    }
  }
}

export function encodeInt8(s: Segment, grad: Float32Array, err: Float32Array, body: Uint8Array): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  s.pieces.forEach(([o, n], k) => {
    const scale = Math.fround(foldInt8(grad, err, o, o + n, 0) / 127);
    scales[k] = scale;
    codeInt8(err, codes, s.offset, o, o + n, scale, scale > 0 ? 1 / scale : 0);
  });
}

/** Pass 1 over [from, to): v = gradient + carried error (kept in err); the largest |v|, from `max` up. */
export function foldInt8(grad: Float32Array, err: Float32Array, from: number, to: number, max: number): number {
  for (let i = from; i < to; i++) {
    const v = grad[i] + err[i];
    err[i] = v;
    const m = v < 0 ? -v : v;
    if (m > max) max = m;
  }
  return max;
}

/** Pass 2 over [from, to): round to the nearest code (codes[i − first]); what rounding lost stays in err for the next step. */
export function codeInt8(err: Float32Array, codes: Int8Array, first: number, from: number, to: number, scale: number, inv: number): void {
  for (let i = from; i < to; i++) {
    const v = err[i];
    const q = Math.round(v * inv);
    codes[i - first] = q;
    err[i] = v - Math.fround(q * scale);
  }
}

export function decodeHalf(body: Uint8Array, n: number, out: Float32Array, at: number): boolean {
  const t = halfToFloatTable();
  const h = new Uint16Array(body.buffer, body.byteOffset, n);
  let bad = 0;
  for (let i = 0; i < n; i++) {
    const v = h[i];
    bad |= ~v & 0x7c00 ? 0 : 1; // exponent all ones: Inf or NaN
    out[at + i] = t[v];
  }
  return bad === 0;
}

/**
 * v[from, from + count) rounded in place to what an fp16 body of it decodes to (encodeHalf, then
 * decodeHalf): PowerSGD's fp16 factors, where the sender must use what the receivers get.
 * Saturates at ±65504 like encodeHalf; a NaN stays NaN (false), which every receiver refuses.
 */
export function roundToHalf(v: Float32Array, from: number, count: number): boolean {
  const body = new Uint8Array(2 * count);
  encodeHalf(v, from, count, body);
  return decodeHalf(body, count, v, from);
}

export function decodeInt8(s: Segment, body: Uint8Array, out: Float32Array, at: number): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  s.pieces.forEach(([o, n], k) => decodeCodes(codes, o - s.offset, n, scales[k], out, at + o - s.offset));
}

export function decodeCodes(codes: Int8Array, from: number, n: number, scale: number, out: Float32Array, at: number): void {
  for (let i = 0; i < n; i++) out[at + i] = codes[from + i] * scale;
}

/**
 * The plain-JavaScript fp16 and int8 codecs: what runs without WebAssembly SIMD, and the reference
 * the kernels are tested against bit for bit.
 */
export const scalarCodecs = { encodeHalf, encodeInt8, decodeHalf, decodeInt8 };
