// The WebAssembly kernels: the shipped bytes are what wabt makes of the .wat source, and the fp16
// and int8 kernels give the plain JavaScript codecs' bytes, floats and residuals bit for bit.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ParamInfo } from '@tabtrain/shared';
import { GradientEncoder, decodeInto, parseCompression, planSegments } from '@tabtrain/shared/compress';
import { halfToFloatTable, scalarCodecs } from '@tabtrain/shared/scalar-codecs';
import { KERNELS_WASM } from '@tabtrain/shared/kernels.wasm';
import { compileKernels, generatedSource, GENERATED_PATH, WAT_PATH } from '../../server/src/build-kernels';

const shipped = Uint8Array.from(atob(KERNELS_WASM), (c) => c.charCodeAt(0));

describe('kernel source and bytes', () => {
  it('kernels.wasm.ts is exactly what `npm run build:kernels` writes from kernels.wat', async () => {
    const built = await compileKernels(), sharedBuilt = await compileKernels(undefined, true);
    expect(Buffer.from(shipped).equals(Buffer.from(built))).toBe(true);
    expect(Buffer.from(sharedBuilt).equals(Buffer.from(built))).toBe(false);
    expect(readFileSync(GENERATED_PATH, 'utf8')).toBe(generatedSource(built, sharedBuilt));
  });

  it('a changed source gives other bytes (the comparison above can fail)', async () => {
    const wat = readFileSync(WAT_PATH, 'utf8');
    const changed = await compileKernels(wat.replace('(i32.const 64)', '(i32.const 48)'));
    expect(Buffer.from(shipped).equals(Buffer.from(changed))).toBe(false);
  });

  it('validates, with SIMD', () => {
    expect(WebAssembly.validate(shipped)).toBe(true);
  });
});

// ---- the fp16 and int8 kernels against the plain JavaScript codecs, bit for bit ----

/** Tensors of awkward sizes (tails of every length mod 16, pieces across the 16,384-float blocks). */
function layout(sizes: number[]): { params: ParamInfo[]; total: number } {
  let offset = 0;
  const params = sizes.map((size, i) => {
    const p: ParamInfo = { name: `p${i}`, shape: [size], size, offset, layer: i, role: 'kernel', fanIn: 1, fanOut: 1 };
    offset += size;
    return p;
  });
  return { params, total: offset };
}
const SIZES = [1, 15, 16, 17, 33, 0, 7, 16385, 5, 40000, 3, 31, 2 * 16384 + 15];

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
}

/** Floats of every kind: random bits (all exponents: subnormals, Inf, NaN), ±0, and gradient-like values. */
function wild(n: number, seed: number, finite = false): Float32Array {
  const next = xorshift(seed);
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) {
    const r = next(), kind = r % 8;
    if (kind < 2) bits[i] = next();
    else if (kind === 2) out[i] = kind & 1 ? 0 : -0;
    else if (kind === 3) bits[i] = (r & 0x80000000) | (next() % 0x00800000); // an fp32 subnormal
    else out[i] = (next() / 2 ** 32 - 0.5) * 10 ** ((next() % 14) - 9);
    if (finite && !Number.isFinite(out[i])) out[i] = 1e-3;
  }
  return out;
}

/** The floats around every boundary of the fp16 rounding: each half's value, the midpoints to its neighbours and one ulp either side. */
function halfBoundaries(): Float32Array {
  const t = halfToFloatTable();
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  const out: number[] = [65504, 65519.99, 65520, 65535, 65536, 1e9, 3e38, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -14, 2 ** -14 - 2 ** -25];
  for (let h = 0; h < 0x7c00; h++) {
    const v = t[h], mid = h < 0x7bff ? (v + t[h + 1]) / 2 : 65520;
    for (const x of [v, mid]) {
      f32[0] = x;
      const b = u32[0];
      for (const d of [-1, 0, 1]) { u32[0] = b + d; out.push(f32[0], -f32[0]); }
    }
  }
  out.push(Infinity, -Infinity, NaN);
  return Float32Array.from(out);
}

const sameBits = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
/** fp32 arrays equal bit for bit, except that any NaN equals any NaN (NaN payloads are not specified). */
function firstDifference(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  return -1;
}

describe('fp16 kernels', () => {
  it('encode to the same halves as the plain loop: every rounding boundary, subnormals, saturation, NaN, odd lengths', () => {
    const grads = [halfBoundaries(), wild(120000, 1)];
    for (const g of grads) {
      const { params, total } = layout([...SIZES, g.length]);
      const grad = new Float32Array(total);
      for (let i = 0; i < total; i++) grad[i] = g[i % g.length];
      const plan = planSegments(params, total, parseCompression('fp16'), 9000);
      const enc = new GradientEncoder(plan, total);
      expect(enc.simd).toBe(true);
      for (const s of plan) {
        const simd = new Uint8Array(s.bytes), js = new Uint8Array(s.bytes);
        enc.encode(s, grad, simd);
        scalarCodecs.encodeHalf(grad, s.offset, s.count, js);
        expect(sameBits(simd, js), `segment ${s.index}`).toBe(true);
      }
    }
  });

  it('decode every half to the table float, and report Inf/NaN wherever it sits', () => {
    const n = 65536 + 37;
    const halves = new Uint16Array(n);
    for (let i = 0; i < n; i++) halves[i] = i & 0xffff;
    const s = planSegments(layout([n]).params, n, parseCompression('fp16'))[0];
    const body = new Uint8Array(halves.buffer);
    const simd = new Float32Array(n), js = new Float32Array(n);
    expect(decodeInto(s, body, simd, 0)).toBe(false); // 0x7c00.. are in there
    expect(scalarCodecs.decodeHalf(body, n, js, 0)).toBe(false);
    expect(firstDifference(simd, js)).toBe(-1);
    // Finite halves only, then one Inf or NaN at each position class: a block's first lane, mid-vector, the tail.
    const finite = halves.map((h) => ((h & 0x7c00) === 0x7c00 ? h & 0x83ff : h));
    expect(decodeInto(s, new Uint8Array(finite.buffer), simd, 0)).toBe(true);
    for (const at of [0, 5, 16384, n - 16, n - 1]) {
      for (const bad of [0x7c00, 0xfc00, 0x7e01]) {
        const h = finite.slice();
        h[at] = bad;
        expect(decodeInto(s, new Uint8Array(h.buffer), simd, 0), `${bad.toString(16)} at ${at}`).toBe(false);
      }
    }
  });
});

describe('int8 kernels', () => {
  /** Encodes `steps` gradients with the SIMD encoder and with the plain loop on its own residual; both must agree on every byte and every residual bit. */
  function agree(sizes: number[], grads: (total: number, step: number) => Float32Array, residual?: (total: number) => Float32Array, steps = 3): void {
    const { params, total } = layout(sizes);
    const plan = planSegments(params, total, parseCompression('int8'), 5000); // 20,000-float segments: pieces cut at both ends
    const enc = new GradientEncoder(plan, total);
    expect(enc.simd).toBe(true);
    const err = residual ? residual(total) : new Float32Array(total);
    enc.residual!.set(err);
    for (let step = 0; step < steps; step++) {
      const g = grads(total, step);
      for (const s of plan) {
        const simd = new Uint8Array(s.bytes), js = new Uint8Array(s.bytes);
        enc.encode(s, g, simd);
        scalarCodecs.encodeInt8(s, g, err, js);
        expect(sameBits(simd, js), `step ${step}, segment ${s.index}`).toBe(true);
        const a = new Float32Array(s.count), b = new Float32Array(s.count);
        decodeInto(s, simd, a, 0);
        scalarCodecs.decodeInt8(s, js, b, 0);
        expect(firstDifference(a, b), `decode, step ${step}, segment ${s.index}`).toBe(-1);
      }
      expect(firstDifference(enc.residual!, err), `residual after step ${step}`).toBe(-1);
    }
  }

  it('agree with the plain loop on gradient-like data and wild floats, step after step (error feedback)', () => {
    agree(SIZES, (n, step) => randomGradient(n, 10 + step));
    agree(SIZES, (n, step) => wild(n, 20 + step, true));
  });

  it('agree on NaN and Inf in the gradient (NaN is skipped by the maximum; Inf makes the scale Inf)', () => {
    agree(SIZES, (n, step) => { const g = randomGradient(n, 30 + step); g[3] = NaN; g[40 + step] = Infinity; g[n - 2] = -Infinity; g[16400] = NaN; return g; });
    agree(SIZES, (n, step) => wild(n, 40 + step));
  });

  it('agree on exact ties and their neighbours (Math.round goes up; −0.5 gives −0), where the kernel leaves f32', () => {
    // scale = 127/1024 / 127 = 2^-10 exactly, so v · inv = (k + 0.5) is a tie for v = (k + 0.5) / 1024.
    const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
    agree(SIZES, (n) => Float32Array.from({ length: n }, (_, i) => {
      if (i % 97 === 0) return 127 / 1024;
      f32[0] = ((i % 254) - 127 + 0.5) / 1024; // k + 0.5 for k in −127..126: |v| stays under 127/1024
      u32[0] += (i % 3) - 1; // the tie, and one ulp below and above it
      return f32[0];
    }), undefined, 2);
  });

  it('agree where the scale is subnormal (codes past ±127 wrap, as an Int8Array store does) or zero', () => {
    agree([100, 37], (n) => Float32Array.from({ length: n }, (_, i) => (i < 100 ? ((i % 7) - 3) * 2 ** -143 : 0)), undefined, 2);
    const tiny = new Float32Array(1);
    tiny[0] = 1.49 * 127 * 2 ** -149; // max / 127 rounds down to 2^-149: codes up to ±189
    agree([64], (n) => Float32Array.from({ length: n }, (_, i) => (i === 0 ? tiny[0] : ((i % 41) - 20) * 9 * 2 ** -149)), undefined, 1);
    agree([40, 17], (n) => new Float32Array(n), undefined, 1); // all zero
  });

  it('take the maximum over the double sums, where equal fp32 sums hide a larger double one', () => {
    // a + e rounds to a in fp32, yet (a + e) / 127 rounds to another scale than a / 127 does.
    let a = 1, e = 0;
    for (let i = 1; Math.fround((a + e) / 127) === Math.fround(a / 127); i++) { a = Math.fround(1 + i / 1024); e = Math.fround(0.49 * 2 ** -23); }
    expect(Math.fround(a + e)).toBe(a);
    // The larger double sum first, then equal fp32 sums with smaller double ones, in and out of one vector of sixteen.
    const at = [0, 3, 17, 40];
    agree([64], (n) => Float32Array.from({ length: n }, (_, i) => (at.includes(i) ? a : 0.01)), (n) => Float32Array.from({ length: n }, (_, i) => (i === 0 ? e : 0)), 1);
  });

  it('agree where gradient + residual leaves fp32 (the double sum is the maximum, its fround is Inf)', () => {
    agree([33, 16400], (n) => Float32Array.from({ length: n }, (_, i) => (i % 5 === 0 ? 3.4e38 : -1e30 * (i % 3))),
      (n) => Float32Array.from({ length: n }, (_, i) => (i % 10 === 0 ? 1e37 : 0)), 2);
  });
});

function randomGradient(n: number, seed: number): Float32Array {
  const next = xorshift(seed);
  return Float32Array.from({ length: n }, () => {
    const u = next() / 2 ** 32;
    return u < 0.6 ? 0 : (u - 0.8) * 10 ** -((next() % 6) + 1);
  });
}
