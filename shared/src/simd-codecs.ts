// The fp16 and int8 codecs as WebAssembly SIMD kernels (kernels.wat, through simd.ts), where
// WebAssembly SIMD exists; scalar-codecs.ts elsewhere. Both give the same bits, so a page, a Node
// worker and the coordinator agree whichever runs where (tests/unit/simd.test.ts).
//
// A kernel sees only its own memory, and neither the gradient (the worker's Float32Array) nor a
// frame body is in it. So they pass through in blocks of BLOCK floats, small enough to stay in the
// CPU's L2 cache between the copy and the kernel: each copy costs about one read or one write of
// the data from memory, not two. The int8 residual lives in the encoder's memory for good. The
// kernels take whole groups of 16 floats; the plain loops (scalar-codecs.ts) do the last < 16 of
// a piece.
//
// Pure code: no Node or DOM imports.
import { codeInt8, decodeCodes, decodeHalf, encodeHalf, foldInt8, halfToFloatTable } from './scalar-codecs';
import type { Segment } from './segment-plan';
import { instantiateKernels, kernelMemory, simdAvailable, type Kernels } from './simd';

const BLOCK = 16384;
const FLOATS_AT = 0; // BLOCK fp32
const SMALL_AT = 4 * BLOCK; // BLOCK halves or int8 codes
const RESIDUAL_AT = 6 * BLOCK;

export interface CodecMemory { k: Kernels; bytes: Uint8Array; floats: Float32Array; residual: Float32Array }

/** A memory for the codec kernels with `residual` floats of error feedback; null without SIMD. */
export function codecMemory(residual: number): CodecMemory | null {
  if (!simdAvailable()) return null;
  const mem = kernelMemory(RESIDUAL_AT + 4 * residual);
  const k = instantiateKernels(mem)!;
  return { k, bytes: new Uint8Array(mem.buffer), floats: new Float32Array(mem.buffer, FLOATS_AT, BLOCK), residual: new Float32Array(mem.buffer, RESIDUAL_AT, residual) };
}

let decoder: CodecMemory | null | undefined;
/** Decoding keeps no state, so one memory serves every call. */
export function decodeMemory(): CodecMemory | null {
  if (decoder === undefined) decoder = codecMemory(0);
  return decoder;
}

export function encodeHalfSimd(m: CodecMemory, grad: Float32Array, offset: number, count: number, body: Uint8Array): void {
  for (let i = 0; i < count; i += BLOCK) {
    const n = Math.min(BLOCK, count - i), whole = n & ~15;
    m.floats.set(grad.subarray(offset + i, offset + i + whole));
    m.k.halfEncode(FLOATS_AT, SMALL_AT, whole);
    body.set(m.bytes.subarray(SMALL_AT, SMALL_AT + 2 * whole), 2 * i);
    if (whole < n) encodeHalf(grad, offset + i + whole, n - whole, body.subarray(2 * (i + whole)));
  }
}

/**
 * Σ x² of an fp16 body's `count` values, in f64, without keeping them (the verifier's
 * plausibility check, server/src/verify.ts): decoded block by block and squared in the kernels,
 * or through the half table where WebAssembly SIMD is missing. Not finite if a half is Inf or NaN.
 */
export function halfNormSq(body: Uint8Array, count: number): number {
  const m = decodeMemory();
  let sum = 0;
  const from = m ? halfBlocks(m, body, count, (f) => { sum += m.k.sumSquares(FLOATS_AT, FLOATS_AT + 4 * f.length); }).decoded : 0;
  const t = halfToFloatTable();
  const h = new Uint16Array(body.buffer, body.byteOffset, count);
  for (let i = from; i < count; i++) sum += t[h[i]] * t[h[i]];
  return sum;
}

/**
 * Σ x² of fp32 values, in f64 (the verifier's norms of fp32 gradients, server/src/verify.ts):
 * copied into the kernel memory block by block and squared there (the quick start's coordinator:
 * 0.25 ms a step, against 0.78 ms for the plain loop); the last < 16 values, and everything where
 * WebAssembly SIMD is missing, by the loop. Not finite if a value is Inf or NaN.
 */
export function floatNormSq(x: Float32Array): number {
  const m = decodeMemory();
  const whole = m ? x.length & ~15 : 0;
  let sum = 0;
  for (let i = 0; i < whole; i += BLOCK) {
    const n = Math.min(BLOCK, whole - i);
    m!.floats.set(x.subarray(i, i + n));
    sum += m!.k.sumSquares(FLOATS_AT, FLOATS_AT + 4 * n);
  }
  for (let i = whole; i < x.length; i++) sum += x[i] * x[i];
  return sum;
}

/**
 * Decodes the first count − count mod 16 halves of an fp16 body in the kernels, a block at a
 * time, handing each block's floats (a view of the kernel memory, good until the next block) to
 * `take` with the index of its first value. Returns how many it decoded and whether all were finite.
 */
function halfBlocks(m: CodecMemory, body: Uint8Array, count: number, take: (floats: Float32Array, first: number) => void): { decoded: number; finite: boolean } {
  const decoded = count & ~15;
  let finite = true;
  for (let i = 0; i < decoded; i += BLOCK) {
    const whole = Math.min(BLOCK, decoded - i);
    m.bytes.set(body.subarray(2 * i, 2 * (i + whole)), SMALL_AT);
    finite = m.k.halfDecode(SMALL_AT, FLOATS_AT, whole) === 1 && finite;
    take(whole === BLOCK ? m.floats : m.floats.subarray(0, whole), i);
  }
  return { decoded, finite };
}

export function decodeHalfSimd(m: CodecMemory, body: Uint8Array, count: number, out: Float32Array, at: number): boolean {
  const { decoded, finite } = halfBlocks(m, body, count, (floats, first) => out.set(floats, at + first));
  return (decoded === count || decodeHalf(body.subarray(2 * decoded), count - decoded, out, at + decoded)) && finite;
}

/** encodeInt8 with its two passes over each piece in kernels; the residual is m.residual. */
export function encodeInt8Simd(m: CodecMemory, s: Segment, grad: Float32Array, body: Uint8Array): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  const err = m.residual;
  s.pieces.forEach(([o, n], k) => {
    let max = 0;
    for (let i = o; i < o + n; i += BLOCK) {
      const len = Math.min(BLOCK, o + n - i), whole = len & ~15;
      m.floats.set(grad.subarray(i, i + whole));
      const blockMax = m.k.int8Fold(FLOATS_AT, RESIDUAL_AT + 4 * i, whole);
      if (blockMax > max) max = blockMax;
      if (whole < len) max = foldInt8(grad, err, i + whole, i + len, max);
    }
    const scale = Math.fround(max / 127);
    scales[k] = scale;
    const inv = scale > 0 ? 1 / scale : 0;
    for (let i = o; i < o + n; i += BLOCK) {
      const len = Math.min(BLOCK, o + n - i), whole = len & ~15;
      m.k.int8Codes(RESIDUAL_AT + 4 * i, SMALL_AT, whole, scale, inv);
      codes.set(new Int8Array(m.bytes.buffer, SMALL_AT, whole), i - s.offset);
      if (whole < len) codeInt8(err, codes, s.offset, i + whole, i + len, scale, inv);
    }
  });
}

export function decodeInt8Simd(m: CodecMemory, s: Segment, body: Uint8Array, out: Float32Array, at: number): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  s.pieces.forEach(([o, n], k) => {
    for (let i = o - s.offset; i < o - s.offset + n; i += BLOCK) {
      const len = Math.min(BLOCK, o - s.offset + n - i), whole = len & ~15;
      m.bytes.set(new Uint8Array(codes.buffer, codes.byteOffset + i, whole), SMALL_AT);
      m.k.int8Decode(SMALL_AT, FLOATS_AT, whole, scales[k]);
      out.set(whole === BLOCK ? m.floats : m.floats.subarray(0, whole), at + i);
      if (whole < len) decodeCodes(codes, i + whole, len - whole, scales[k], out, at + i + whole);
    }
  });
}
