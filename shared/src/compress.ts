// Gradient compression, selectable per run (`--compress none|fp16|int8|powersgd`).
//
// Both ends derive the same *segment plan* from the run (model layout + compression): the flat
// gradient is cut into segments, each travelling as one `gradient` frame whose body is encoded by
// the segment's codec. The coordinator checks every body against the plan (exact length, finite
// scales and factors), decodes it and sums decoded shards in shard order, so a compressed run is
// as reproducible as an fp32 one.
//
//   fp32     raw little-endian floats (no compression)
//   fp16     IEEE half floats, round to nearest even, saturating at ±65504
//   int8     per-segment pieces (segment ∩ parameter tensor), each with an fp32 scale:
//            body = fp32 scale per piece | one int8 code per float; value = fround(code · scale)
//
// int8 keeps error feedback on the worker: what a step's encoding lost is added to the next
// step's gradient, so nothing is dropped for good, only delayed (Karimireddy et al. 2019).
// powersgd is not a codec of segments: it sends small factors in two rounds (powersgd.ts), each
// round's vector as plain fp32 frames (`roundSegments`).
//
// fp16 and int8 encode and decode as WebAssembly SIMD kernels (kernels.wat, through simd.ts) where
// WebAssembly SIMD exists, and with the plain loops here elsewhere; both give the same bits, so a
// page, a Node worker and the coordinator agree whichever runs where (tests/unit/simd.test.ts).
//
// Pure code: no Node or DOM imports, so the page and the Node worker run the same encoder.
import { COMPRESS_MODES, type Codec, type CompressMode, type Compression } from './codec-types';
import type { ParamInfo } from './models';
import { CHUNK_FLOATS, encode, type Gradient, type Update } from './protocol';
import { powerSgdPlan, type PowerSgdPlan } from './powersgd';
import { instantiateKernels, kernelMemory, simdAvailable, type Kernels } from './simd';

export { CODECS, COMPRESS_MODES, type Codec, type CompressMode, type Compression } from './codec-types';

export const NO_COMPRESSION: Compression = { mode: 'none', rank: 0 };
/** PowerSGD's paper reaches full accuracy on its benchmarks at rank 2–4; 4 costs AlexNet ~0.3 MB. */
export const DEFAULT_RANK = 4;

/** One frame's worth of the gradient. */
export interface Segment {
  index: number;
  codec: Codec;
  /** First float of the segment in the flat vector, and how many floats it covers. */
  offset: number;
  count: number;
  /** int8: [offset, count] of each piece with its own scale (absolute offsets). */
  pieces: [number, number][];
  /** Exact body length in bytes. */
  bytes: number;
}

/** Bodies stay near 8 MiB whatever the codec: one fp32 chunk's worth of bytes. */
const CHUNK_BYTES = CHUNK_FLOATS * 4;

export function parseCompression(mode: string, rank = DEFAULT_RANK): Compression {
  if (!(COMPRESS_MODES as readonly string[]).includes(mode)) throw new Error(`compression must be one of ${COMPRESS_MODES.join(', ')}, got '${mode}'`);
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > 64) throw new Error(`rank must be an integer in 1..64, got ${rank}`);
  return { mode: mode as CompressMode, rank: mode === 'powersgd' ? rank : 0 };
}

/** Checks a run's compression as it arrives in a welcome (untrusted like everything else). */
export function checkCompression(c: unknown): Compression {
  if (c === undefined || c === null) return NO_COMPRESSION;
  const { mode, rank } = c as Partial<Compression>;
  return parseCompression(String(mode), mode === 'powersgd' ? Number(rank) : DEFAULT_RANK);
}

/**
 * The segment plan of a run's gradient (none, fp16, int8). Every end calls this with the same
 * arguments and gets the same plan; `chunk` (floats per fp32 frame) only changes in tests.
 */
export function planSegments(params: ParamInfo[], total: number, c: Compression, chunk = CHUNK_FLOATS): Segment[] {
  const segs: Segment[] = [];
  const push = (s: Omit<Segment, 'index' | 'bytes'>) => segs.push({ ...s, index: segs.length, bytes: bodyBytes(s) });
  // Contiguous run [from, to) of plain-codec floats, cut into frames of about CHUNK_BYTES.
  const plain = (codec: Codec, from: number, to: number) => {
    const per = codec === 'fp16' ? chunk * 2 : codec === 'int8' ? chunk * 4 : chunk;
    for (let o = from; o < to; o += per) {
      const end = Math.min(to, o + per);
      const pieces: [number, number][] = [];
      if (codec === 'int8') {
        for (const p of params) {
          const a = Math.max(o, p.offset), b = Math.min(end, p.offset + p.size);
          if (a < b) pieces.push([a, b - a]);
        }
      }
      push({ codec, offset: o, count: end - o, pieces });
    }
  };
  if (c.mode === 'powersgd') throw new Error('powersgd gradients do not travel as segments: see powerSgdPlan and roundSegments');
  if (total === 0) return [{ index: 0, codec: 'fp32', offset: 0, count: 0, pieces: [], bytes: 0 }];
  plain(c.mode === 'none' ? 'fp32' : c.mode, 0, total);
  return segs;
}

/**
 * A PowerSGD round's vector as fp32 frames (offsets into that vector), cut where its matrices'
 * factors start (round 1: each Pᵀ, then the fp32 tensors' sums together; round 2: each Qᵀ). The
 * coordinator can then orthonormalise and broadcast a matrix's P̂ as soon as every shard's P of it
 * is summed, while later matrices are still arriving (step.ts), so the two directions overlap.
 */
export function roundSegments(plan: PowerSgdPlan, round: 1 | 2): Segment[] {
  const floats = round === 1 ? plan.round1Floats : plan.round2Floats;
  const starts = plan.matrices.map((m) => (round === 1 ? m.pAt : m.qAt));
  if (round === 1 && plan.dense.length) starts.push(plan.dense[0].at);
  const segs: Segment[] = [];
  starts.forEach((from, i) => {
    const to = i + 1 < starts.length ? starts[i + 1] : floats;
    for (let o = from; o < to; o += CHUNK_FLOATS) {
      const count = Math.min(to, o + CHUNK_FLOATS) - o;
      segs.push({ index: segs.length, codec: 'fp32', offset: o, count, pieces: [], bytes: 4 * count });
    }
  });
  return segs.length ? segs : [{ index: 0, codec: 'fp32', offset: 0, count: 0, pieces: [], bytes: 0 }];
}

/** The PowerSGD plan of a run, or null when it is not a powersgd run. */
export function powerSgdPlanOf(params: ParamInfo[], total: number, c: Compression): PowerSgdPlan | null {
  return c.mode === 'powersgd' ? powerSgdPlan(params, total, c.rank) : null;
}

/**
 * Bytes one worker uploads per step (bodies and frame headers; result excluded): the gradient's
 * frames, or PowerSGD's two rounds of factors.
 */
export function uploadBytes(params: ParamInfo[], total: number, c: Compression): number {
  const p = powerSgdPlanOf(params, total, c);
  if (!p) return planBytes(planSegments(params, total, c), total);
  return planBytes(roundSegments(p, 1), p.round1Floats, 1000, 7, 1) + planBytes(roundSegments(p, 2), p.round2Floats, 1000, 7, 2);
}

function bodyBytes(s: Omit<Segment, 'index' | 'bytes'>): number {
  switch (s.codec) {
    case 'fp32': return 4 * s.count;
    case 'fp16': return 2 * s.count;
    case 'int8': return 4 * s.pieces.length + s.count;
  }
}

/** Bytes one worker uploads per step under a plan: bodies plus frame headers (result excluded). */
export function planBytes(plan: Segment[], total: number, step = 1000, shard = 7, round?: 1 | 2): number {
  return plan.reduce((a, s) => a + gradientHeader(s, step, shard, total, round).length + s.bytes, 0);
}

function gradientHeader(s: Segment, step: number, shard: number, total: number, round?: 1 | 2): Uint8Array {
  const h: Gradient = { type: 'gradient', step, shard, offset: s.offset, total };
  if (s.codec !== 'fp32') h.codec = s.codec;
  if (round) h.round = round;
  return encode(h);
}

/**
 * One gradient frame whose body the caller writes in place (no second copy of the body):
 * the frame is encode(header) followed by `bytes` of body, 4-byte aligned like every frame.
 * `reuse` may be a frame this returned before, once the socket no longer needs it.
 */
export function gradientFrame(s: Segment, step: number, shard: number, total: number, reuse?: Uint8Array | null, round?: 1 | 2): { frame: Uint8Array; body: Uint8Array } {
  return frameWithBody(gradientHeader(s, step, shard, total, round), s.bytes, reuse);
}

/** The coordinator's update frame for segment `s` (compressed runs broadcast these instead of weights). */
export function updateFrame(s: Segment, version: number, total: number, batch: number): { frame: Uint8Array; body: Uint8Array } {
  const h: Update = { type: 'update', version, offset: s.offset, total, batch };
  if (s.codec !== 'fp32') h.codec = s.codec;
  return frameWithBody(encode(h), s.bytes);
}

function frameWithBody(head: Uint8Array, bytes: number, reuse?: Uint8Array | null): { frame: Uint8Array; body: Uint8Array } {
  // Reusing last step's frame saves a fresh 8 MiB allocation (and its page faults) per frame.
  const frame = reuse?.length === head.length + bytes ? reuse : new Uint8Array(head.length + bytes);
  frame.set(head);
  return { frame, body: frame.subarray(head.length) };
}

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

// ---- worker side: the encoder, with error feedback ----

/**
 * Encodes a worker's gradient, segment by segment, into frame bodies. Keeps the worker's error
 * feedback (int8) between steps.
 */
export class GradientEncoder {
  /** What the last encodings lost, per float; added to the next gradient. Null without error feedback. */
  readonly residual: Float32Array | null;
  /** fp16 and int8 run in here (the residual too) where WebAssembly SIMD exists. */
  private readonly wasm: CodecMemory | null;

  constructor(readonly plan: Segment[], readonly total: number) {
    const feedback = plan.some((s) => s.codec === 'int8');
    this.wasm = plan.some((s) => s.codec === 'fp16' || s.codec === 'int8') ? codecMemory(feedback ? total : 0) : null;
    this.residual = feedback ? this.wasm?.residual ?? new Float32Array(total) : null;
  }

  /** Whether this encoder's fp16 and int8 segments run as WebAssembly SIMD kernels. */
  get simd(): boolean { return this.wasm !== null; }

  /** Writes segment `s` of `grad` into `body` (s.bytes long). `grad` is not modified. */
  encode(s: Segment, grad: Float32Array, body: Uint8Array): void {
    if (body.byteLength !== s.bytes) throw new Error(`segment ${s.index}: body of ${body.byteLength} bytes, plan says ${s.bytes}`);
    switch (s.codec) {
      case 'fp32': body.set(new Uint8Array(grad.buffer, grad.byteOffset + 4 * s.offset, 4 * s.count)); return;
      case 'fp16': return this.wasm ? encodeHalfSimd(this.wasm, grad, s.offset, s.count, body) : encodeHalf(grad, s.offset, s.count, body);
      case 'int8': return this.wasm ? encodeInt8Simd(this.wasm, s, grad, body) : encodeInt8(s, grad, this.residual!, body);
    }
  }
}

function encodeHalf(grad: Float32Array, offset: number, count: number, body: Uint8Array): void {
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

function encodeInt8(s: Segment, grad: Float32Array, err: Float32Array, body: Uint8Array): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  s.pieces.forEach(([o, n], k) => {
    const scale = Math.fround(foldInt8(grad, err, o, o + n, 0) / 127);
    scales[k] = scale;
    codeInt8(err, codes, s.offset, o, o + n, scale, scale > 0 ? 1 / scale : 0);
  });
}

/** Pass 1 over [from, to): v = gradient + carried error (kept in err); the largest |v|, from `max` up. */
function foldInt8(grad: Float32Array, err: Float32Array, from: number, to: number, max: number): number {
  for (let i = from; i < to; i++) {
    const v = grad[i] + err[i];
    err[i] = v;
    const m = v < 0 ? -v : v;
    if (m > max) max = m;
  }
  return max;
}

/** Pass 2 over [from, to): round to the nearest code (codes[i − first]); what rounding lost stays in err for the next step. */
function codeInt8(err: Float32Array, codes: Int8Array, first: number, from: number, to: number, scale: number, inv: number): void {
  for (let i = from; i < to; i++) {
    const v = err[i];
    const q = Math.round(v * inv);
    codes[i - first] = q;
    err[i] = v - Math.fround(q * scale);
  }
}

function decodeHalf(body: Uint8Array, n: number, out: Float32Array, at: number): boolean {
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

function decodeInt8(s: Segment, body: Uint8Array, out: Float32Array, at: number): void {
  const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
  const codes = new Int8Array(body.buffer, body.byteOffset + 4 * s.pieces.length, s.count);
  s.pieces.forEach(([o, n], k) => decodeCodes(codes, o - s.offset, n, scales[k], out, at + o - s.offset));
}

function decodeCodes(codes: Int8Array, from: number, n: number, scale: number, out: Float32Array, at: number): void {
  for (let i = 0; i < n; i++) out[at + i] = codes[from + i] * scale;
}

/**
 * The plain-JavaScript fp16 and int8 codecs: what runs without WebAssembly SIMD, and the reference
 * the kernels are tested against bit for bit.
 */
export const scalarCodecs = { encodeHalf, encodeInt8, decodeHalf, decodeInt8 };

// ---- fp16 and int8 as WebAssembly SIMD kernels (kernels.wat) ----
//
// A kernel sees only its own memory, and neither the gradient (the worker's Float32Array) nor a
// frame body is in it. So they pass through in blocks of BLOCK floats, small enough to stay in the
// CPU's L2 cache between the copy and the kernel: each copy costs about one read or one write of
// the data from memory, not two. The int8 residual lives in the encoder's memory for good. The
// kernels take whole groups of 16 floats; the plain loops above do the last < 16 of a piece.

const BLOCK = 16384;
const FLOATS_AT = 0; // BLOCK fp32
const SMALL_AT = 4 * BLOCK; // BLOCK halves or int8 codes
const RESIDUAL_AT = 6 * BLOCK;

interface CodecMemory { k: Kernels; bytes: Uint8Array; floats: Float32Array; residual: Float32Array }

/** A memory for the codec kernels with `residual` floats of error feedback; null without SIMD. */
function codecMemory(residual: number): CodecMemory | null {
  if (!simdAvailable()) return null;
  const mem = kernelMemory(RESIDUAL_AT + 4 * residual);
  const k = instantiateKernels(mem)!;
  return { k, bytes: new Uint8Array(mem.buffer), floats: new Float32Array(mem.buffer, FLOATS_AT, BLOCK), residual: new Float32Array(mem.buffer, RESIDUAL_AT, residual) };
}

let decoder: CodecMemory | null | undefined;
/** Decoding keeps no state, so one memory serves every call. */
function decodeMemory(): CodecMemory | null {
  if (decoder === undefined) decoder = codecMemory(0);
  return decoder;
}

function encodeHalfSimd(m: CodecMemory, grad: Float32Array, offset: number, count: number, body: Uint8Array): void {
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

function decodeHalfSimd(m: CodecMemory, body: Uint8Array, count: number, out: Float32Array, at: number): boolean {
  const { decoded, finite } = halfBlocks(m, body, count, (floats, first) => out.set(floats, at + first));
  return (decoded === count || decodeHalf(body.subarray(2 * decoded), count - decoded, out, at + decoded)) && finite;
}

/** encodeInt8 with its two passes over each piece in kernels; the residual is m.residual. */
function encodeInt8Simd(m: CodecMemory, s: Segment, grad: Float32Array, body: Uint8Array): void {
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

function decodeInt8Simd(m: CodecMemory, s: Segment, body: Uint8Array, out: Float32Array, at: number): void {
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

// ---- coordinator side: check and decode ----

/** Why a body does not fit its segment, or null. Runs before a body is kept. */
export function checkBody(s: Segment, body: Uint8Array): string | null {
  if (body.byteLength !== s.bytes) return `${s.codec} segment at ${s.offset} needs a ${s.bytes}-byte body, got ${body.byteLength}`;
  if (body.byteOffset % 4 !== 0) return `body is not 4-byte aligned`;
  if (s.codec === 'int8') {
    const scales = new Float32Array(body.buffer, body.byteOffset, s.pieces.length);
    // 127 · scale must stay finite, or a decoded value could be Inf.
    for (let k = 0; k < scales.length; k++) if (!(scales[k] >= 0 && scales[k] <= 2.6e36)) return `int8 scale ${k} is ${scales[k]}`;
  }
  return null;
}

/**
 * Decodes a checked body into out[s.offset, s.offset + s.count) (fp32, overwriting). Returns false
 * if a decoded value is not finite.
 */
export function decodeInto(s: Segment, body: Uint8Array, out: Float32Array, at = s.offset): boolean {
  const n = s.count;
  switch (s.codec) {
    case 'fp32': {
      out.set(new Float32Array(body.buffer, body.byteOffset, n), at);
      return allFinite(out, at, n);
    }
    case 'fp16': {
      const m = decodeMemory();
      return m ? decodeHalfSimd(m, body, n, out, at) : decodeHalf(body, n, out, at);
    }
    case 'int8': {
      const m = decodeMemory();
      if (m) decodeInt8Simd(m, s, body, out, at);
      else decodeInt8(s, body, out, at);
      return true; // scales were checked: |code · scale| ≤ 127 · 2.6e36 is finite
    }
  }
}

function allFinite(v: Float32Array, at: number, n: number): boolean {
  let bad = 0;
  for (let i = at; i < at + n; i++) { const x = v[i]; bad += x - x; }
  return bad === 0;
}
