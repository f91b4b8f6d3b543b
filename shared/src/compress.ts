// Gradient compression, selectable per run (`--compress none|fp16|int8|powersgd`).
//
// Both ends derive the same *segment plan* from the run (segment-plan.ts): the flat gradient is
// cut into segments, each travelling as one `gradient` frame whose body is encoded by the
// segment's codec. The coordinator checks every body against the plan (exact length, finite
// scales and factors), decodes it and sums decoded shards in shard order, so a compressed run is
// as reproducible as an fp32 one.
//
//   fp32     raw little-endian floats (no compression)
//   fp16     IEEE half floats, round to nearest even, saturating at ±65504
//   int8     per-segment pieces with an fp32 scale each, with error feedback on the worker
//
// The codecs themselves are scalar-codecs.ts (plain JavaScript) and simd-codecs.ts (WebAssembly
// SIMD kernels, where they exist; the same bits). This module is their one door: the run's
// compression, the frames, the worker's encoder and the coordinator's check and decode.
// powersgd is not a codec of segments: it sends small factors in two rounds (powersgd.ts), each
// round's vector as frames cut by matrix (`roundSegments`): fp32, or with `--factors fp16` the
// factors as fp16 (the fp32 tensors' sums stay fp32), encoded by `encodeFactors`.
//
// Pure code: no Node or DOM imports, so the page and the Node worker run the same encoder.
import { COMPRESS_MODES, FACTOR_CODECS, type CompressMode, type Compression, type FactorCodec } from './codec-types';
import type { ParamInfo } from './models';
import { encode, type Gradient, type Update } from './protocol';
import { powerSgdPlan, type PowerSgdPlan } from './powersgd';
import { decodeHalf, decodeInt8, encodeHalf, encodeInt8 } from './scalar-codecs';
import { planSegments, roundSegments, type Segment } from './segment-plan';
import { codecMemory, decodeHalfSimd, decodeInt8Simd, decodeMemory, encodeHalfSimd, encodeInt8Simd, type CodecMemory } from './simd-codecs';

export { CODECS, COMPRESS_MODES, FACTOR_CODECS, type Codec, type CompressMode, type Compression, type FactorCodec } from './codec-types';
// The plan has many callers; they keep reaching it here.
export { planSegments, roundSegments, type Segment } from './segment-plan';

export const NO_COMPRESSION: Compression = { mode: 'none', rank: 0 };
/** PowerSGD's paper reaches full accuracy on its benchmarks at rank 2–4; 4 costs AlexNet ~0.3 MB. */
export const DEFAULT_RANK = 4;

/**
 * A run's compression from its names. `factors` is powersgd's factor precision: fp32 (the default,
 * left out of the result so that fp32 runs look as they always did) or fp16.
 */
export function parseCompression(mode: string, rank = DEFAULT_RANK, factors: string = 'fp32'): Compression {
  if (!(COMPRESS_MODES as readonly string[]).includes(mode)) throw new Error(`compression must be one of ${COMPRESS_MODES.join(', ')}, got '${mode}'`);
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > 64) throw new Error(`rank must be an integer in 1..64, got ${rank}`);
  if (!(FACTOR_CODECS as readonly string[]).includes(factors)) throw new Error(`factors must be one of ${FACTOR_CODECS.join(', ')}, got '${String(factors).slice(0, 16)}'`);
  if (factors !== 'fp32' && mode !== 'powersgd') throw new Error(`factors ${factors} is for powersgd's factors; compression ${mode} has none`);
  const c: Compression = { mode: mode as CompressMode, rank: mode === 'powersgd' ? rank : 0 };
  if (factors !== 'fp32') c.factors = factors as FactorCodec;
  return c;
}

/** Checks a run's compression as it arrives in a welcome (untrusted like everything else). */
export function checkCompression(c: unknown): Compression {
  if (c === undefined || c === null) return NO_COMPRESSION;
  const { mode, rank, factors } = c as Partial<Compression>;
  return parseCompression(String(mode), mode === 'powersgd' ? Number(rank) : DEFAULT_RANK, factors === undefined ? 'fp32' : String(factors));
}

/** The PowerSGD plan of a run, or null when it is not a powersgd run. */
export function powerSgdPlanOf(params: ParamInfo[], total: number, c: Compression): PowerSgdPlan | null {
  return c.mode === 'powersgd' ? powerSgdPlan(params, total, c.rank, c.factors ?? 'fp32') : null;
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

/**
 * Writes segment `s` of a PowerSGD round's vector `v` into `body` in the segment's codec, and
 * leaves in `v` exactly what every receiver decodes from it: the coordinator applies, and a worker
 * feeds back into its error, the very values the replicas decode, so they stay bit-equal. fp16 is
 * the fp16 mode's codec and rule: round to nearest even, saturating at ±65504, so a finite factor
 * never turns into Inf; a NaN stays NaN and the receiver's decode refuses it (badGradient).
 */
export function encodeFactors(s: Segment, v: Float32Array, body: Uint8Array): void {
  if (body.byteLength !== s.bytes) throw new Error(`factor segment ${s.index}: body of ${body.byteLength} bytes, plan says ${s.bytes}`);
  if (s.codec === 'fp32') { body.set(new Uint8Array(v.buffer, v.byteOffset + 4 * s.offset, 4 * s.count)); return; }
  if (s.codec !== 'fp16') throw new Error(`PowerSGD factors do not travel as ${s.codec}`);
  encodeHalf(v, s.offset, s.count, body);
  decodeHalf(body, s.count, v, s.offset);
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
