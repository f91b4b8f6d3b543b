// Gradient compression (shared/src/compress.ts) and the streaming reducer (server/src/reducer.ts):
// plans, codecs, error feedback, and a fold that equals the naive shard-order sum bit for bit.
import { describe, expect, it } from 'vitest';
import { getModel, paramLayout, ProtocolError, CLOSE, type ParamInfo } from '@tabtrain/shared';
import {
  GradientEncoder, COMPRESS_MODES, decodeInto, gradientFrame, parseCompression, planBytes, planSegments, roundSegments, uploadBytes,
  type Compression, type Segment,
} from '@tabtrain/shared/compress';
import { floatNormSq, halfNormSq } from '@tabtrain/shared/simd-codecs';
import { halfToFloatTable, toHalf } from '@tabtrain/shared/scalar-codecs';
import { sumInOrder } from '../../server/src/aggregate';
import { StreamReducer } from '../../server/src/reducer';
import { SimdArena } from '@tabtrain/shared/simd';
import { powerSgdPlan } from '@tabtrain/shared/powersgd';
import { sgdStep } from '@tabtrain/shared';

function randomVec(n: number, seed: number, scale = 1e-2, zeros = 0.5): Float32Array {
  let x = seed * 2654435761 >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const u = x / 4294967296;
    return u < zeros ? 0 : (u - 0.5) * scale * (u > 0.999 ? 50 : 1); // a few outliers, like real gradients
  });
}

/** A made-up layout: a conv-like tensor, a bias, a 200×150 dense kernel (low-rank at rank 2), a bias, a 150×3 kernel. */
function toyLayout(): { params: ParamInfo[]; total: number } {
  const shapes: [number[], 'kernel' | 'bias'][] = [[[3, 3, 1, 5], 'kernel'], [[5], 'bias'], [[200, 150], 'kernel'], [[150], 'bias'], [[150, 3], 'kernel'], [[3], 'bias']];
  let offset = 0;
  const params = shapes.map(([shape, role], i) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const p: ParamInfo = { name: `p${i}`, shape, size, offset, layer: i, role, fanIn: shape[0], fanOut: shape[shape.length - 1] };
    offset += size;
    return p;
  });
  return { params, total: offset };
}

function encodeAll(enc: GradientEncoder, grad: Float32Array): Uint8Array[] {
  return enc.plan.map((s) => { const body = new Uint8Array(s.bytes); enc.encode(s, grad, body); return body; });
}

function decodeAll(plan: Segment[], bodies: Uint8Array[], total: number): Float32Array {
  const out = new Float32Array(total);
  plan.forEach((s, i) => expect(decodeInto(s, bodies[i], out)).toBe(true));
  return out;
}

/** The modes whose gradient travels as segments; powersgd sends factors in two rounds (tests/unit/powersgd.test.ts). */
const MODES: Compression[] = COMPRESS_MODES.filter((m) => m !== 'powersgd').map((m) => parseCompression(m));

describe('segment plans', () => {
  for (const name of ['alexnet', 'vgg11', 'alexnet-small', 'alexnet-tiny', 'vgg11-tiny']) {
    it(`${name}: every mode's plan tiles the parameters exactly, in order`, () => {
      const { params, total } = paramLayout(getModel(name));
      for (const c of MODES) {
        const plan = planSegments(params, total, c);
        let at = 0;
        for (const s of plan) {
          expect(s.offset).toBe(at);
          if (s.codec === 'int8') expect(s.pieces.reduce((a, [, n]) => a + n, 0)).toBe(s.count);
          at += s.count;
        }
        expect(at).toBe(total);
      }
    });
  }

  it('powersgd has no segment plan: its rounds travel as plain fp32 vectors', () => {
    const { params, total } = toyLayout();
    expect(() => planSegments(params, total, parseCompression('powersgd', 2))).toThrow(/powerSgdPlan/);
    // Each round is cut where a matrix's factors start (round 1 also before the fp32 tensors), so
    // the coordinator can finish a matrix while later ones arrive; and into frames of CHUNK_FLOATS.
    const alex = paramLayout(getModel('alexnet'));
    const plan = powerSgdPlan(alex.params, alex.total, 4);
    for (const round of [1, 2] as const) {
      const segs = roundSegments(plan, round);
      const starts = plan.matrices.map((m) => (round === 1 ? m.pAt : m.qAt)).concat(round === 1 ? [plan.dense[0].at] : []);
      expect(segs.map((s) => s.offset)).toEqual(starts);
      expect(segs.every((s, i) => s.index === i && s.codec === 'fp32' && s.bytes === 4 * s.count)).toBe(true);
      expect(segs.reduce((a, s) => a + s.count, 0)).toBe(round === 1 ? plan.round1Floats : plan.round2Floats);
    }
    const big = powerSgdPlan([{ name: 'w', shape: [3_000_000, 4], size: 12_000_000, offset: 0, role: 'kernel' } as ParamInfo], 12_000_000, 1);
    expect(roundSegments(big, 1).map((s) => [s.offset, s.count])).toEqual([[0, 2 ** 21], [2 ** 21, 3_000_000 - 2 ** 21]]);
  });

  it('AlexNet bytes per worker per step: int8 about 1/4 of fp32, powersgd (both rounds) under 1/250', () => {
    const { params, total } = paramLayout(getModel('alexnet'));
    const bytes = Object.fromEntries(COMPRESS_MODES.map((m) => [m, uploadBytes(params, total, parseCompression(m, 4))]));
    console.log('AlexNet bytes/worker/step:', bytes);
    expect(bytes.none).toBeGreaterThan(4 * total);
    expect(bytes.fp16 / bytes.none).toBeLessThan(0.5001);
    // A scale per piece and a header per frame: 1/4 to four significant digits, not below it.
    expect(bytes.int8 / bytes.none).toBeLessThan(0.2501);
    expect(bytes.none).toBe(planBytes(planSegments(params, total, parseCompression('none')), total));
    expect(bytes.powersgd / bytes.none).toBeLessThan(1 / 250);
  });

  it('refuses unknown modes and silly ranks', () => {
    expect(() => parseCompression('zip')).toThrow(/none, fp16, int8, powersgd/);
    expect(() => parseCompression('powersgd', 0)).toThrow(/rank/);
  });
});

describe('fp16', () => {
  it('rounds to nearest even and saturates', () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(-2)).toBe(0xc000);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(1e9)).toBe(0x7bff);
    expect(toHalf(-1e9)).toBe(0xfbff);
    expect(toHalf(NaN) & 0x7e00).toBe(0x7e00);
    expect(toHalf(-0)).toBe(0x8000);
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(toHalf(2 ** -24)).toBe(1); // smallest subnormal
    expect(toHalf(2 ** -25)).toBe(0); // tie → even (zero)
    expect(toHalf(3 * 2 ** -25)).toBe(2);
  });

  it('every finite half survives half → float → half', () => {
    const t = halfToFloatTable();
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00) continue;
      expect(toHalf(t[h])).toBe(h);
    }
  });

  it('the encoder matches toHalf on random values, subnormals included', () => {
    const { params, total } = toyLayout();
    const plan = planSegments(params, total, parseCompression('fp16'), 64);
    const g = randomVec(total, 3, 1e-5);
    const out = decodeAll(plan, encodeAll(new GradientEncoder(plan, total), g), total);
    const t = halfToFloatTable();
    for (let i = 0; i < total; i++) expect(out[i]).toBe(t[toHalf(g[i])]);
  });

  it('a body\'s norm (the verifier\'s check): every half squared, in blocks and tails of any length; Inf or NaN gives no finite norm', () => {
    const t = halfToFloatTable();
    for (const n of [0, 5, 16, 16383, 16384, 16400, 40_007]) {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = ((i * 2654435761) >>> 7) & 0xfbff; // every sign and finite exponent, subnormals too
      let want = 0;
      for (let i = 0; i < n; i++) want += t[h[i]] * t[h[i]];
      const got = halfNormSq(new Uint8Array(h.buffer), n);
      expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-12 * want);
      if (n) {
        h[n - 1] = 0x7c00; // Inf, in the tail or a block
        expect(Number.isFinite(halfNormSq(new Uint8Array(h.buffer), n))).toBe(false);
        h[0] = 0x7e00; h[n - 1] = 0; // NaN
        expect(Number.isFinite(halfNormSq(new Uint8Array(h.buffer), n))).toBe(false);
      }
    }
  });
});

describe('fp32 norms', () => {
  it('floatNormSq (the verifier\'s fp32 norm): every float squared in f64, in blocks and tails of any length; Inf or NaN gives no finite norm', () => {
    for (const n of [0, 5, 16, 16383, 16384, 16400, 40_007]) {
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = Math.sin(i * 1.7) * 10 ** ((i % 9) - 4);
      let want = 0;
      for (let i = 0; i < n; i++) want += x[i] * x[i];
      expect(Math.abs(floatNormSq(x) - want)).toBeLessThanOrEqual(1e-12 * want);
      if (n) {
        // A view at an odd float: blocks cut elsewhere, the same sum to rounding.
        expect(Math.abs(floatNormSq(x.subarray(1)) - (want - x[0] * x[0]))).toBeLessThanOrEqual(1e-12 * want);
        x[n - 1] = Infinity;
        expect(Number.isFinite(floatNormSq(x))).toBe(false);
        x[0] = NaN; x[n - 1] = 0;
        expect(Number.isFinite(floatNormSq(x))).toBe(false);
      }
    }
  });
});

describe('error feedback', () => {
  for (const mode of ['int8'] as const) {
    it(`${mode}: what was sent plus what is carried equals what was given, step after step`, () => {
      const { params, total } = toyLayout();
      const plan = planSegments(params, total, parseCompression(mode, 2), 100);
      const enc = new GradientEncoder(plan, total);
      const given = new Float64Array(total);
      const sent = new Float64Array(total);
      for (let step = 0; step < 20; step++) {
        const g = randomVec(total, 100 + step);
        const out = decodeAll(plan, encodeAll(enc, g), total);
        for (let i = 0; i < total; i++) { given[i] += g[i]; sent[i] += out[i]; }
      }
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < total; i++) {
        worst = Math.max(worst, Math.abs(given[i] - sent[i] - enc.residual![i]));
        scale = Math.max(scale, Math.abs(given[i]));
      }
      expect(worst).toBeLessThan(1e-5 * scale);
    });
  }

  it('int8: the residual stays below half a quantisation step', () => {
    const { params, total } = toyLayout();
    const plan = planSegments(params, total, parseCompression('int8'), 100);
    const enc = new GradientEncoder(plan, total);
    const g = randomVec(total, 9);
    const bodies = encodeAll(enc, g);
    plan.forEach((s, i) => {
      const scales = new Float32Array(bodies[i].buffer, 0, s.pieces.length);
      s.pieces.forEach(([o, n], k) => {
        for (let j = o; j < o + n; j++) expect(Math.abs(enc.residual![j])).toBeLessThanOrEqual(scales[k] * 0.5 + 1e-12);
      });
    });
  });
});

describe('frames', () => {
  it('a gradient frame decodes to its header and a body of exactly the plan size', async () => {
    const { decodeFrame, validate } = await import('@tabtrain/shared');
    const { params, total } = toyLayout();
    for (const c of MODES) {
      for (const s of planSegments(params, total, c, 64)) {
        const { frame, body } = gradientFrame(s, 3, 1, total);
        body.fill(0);
        const d = decodeFrame(frame);
        const h = validate(d.header) as { offset: number; codec?: string };
        expect(h.offset).toBe(s.offset);
        expect(h.codec ?? 'fp32').toBe(s.codec);
        expect(d.body.byteLength).toBe(s.bytes);
        expect(d.body.byteOffset % 4).toBe(0);
      }
    }
  });
});

describe('SIMD kernels', () => {
  it('add and check equal scalar fp32 and find NaN/Inf, odd lengths included', () => {
    const a = new SimdArena(2000);
    expect(a.simd).toBe(true);
    for (const n of [0, 1, 15, 16, 17, 63, 64, 999]) {
      const x = randomVec(n, n + 1, 1e3, 0.1), y = randomVec(n, n + 2, 1e-3, 0.1);
      a.f32.set(x, 0); a.f32.set(y, 1000);
      expect(a.add(0, 1000, n)).toBe(true);
      expect(Array.from(a.f32.subarray(0, n))).toEqual(Array.from(x, (v, i) => Math.fround(v + y[i])));
      if (n === 0) continue;
      a.f32[1000 + n - 1] = NaN;
      expect(a.check(1000, n)).toBe(false);
      expect(a.add(0, 1000, n)).toBe(false);
      a.f32[1000 + n - 1] = 3e38; a.f32[n - 1] = 3e38; // finite + finite = Inf
      expect(a.add(0, 1000, n)).toBe(false);
    }
  });
});

describe('SIMD SGD', () => {
  it('is sgdStep bit for bit (f64 products, one rounding), odd lengths and tiny values included, and falls back outside the arena', () => {
    const a = new SimdArena(4096);
    expect(a.simd).toBe(true);
    for (const [n, lr, batch] of [[0, 0.1, 32], [1, 0.01, 128], [15, 0.05, 7], [16, 0.1, 1], [17, 0.01, 128], [1000, 0.1, 3]] as const) {
      const w = randomVec(n, n + 5, 1, 0.1), g = randomVec(n, n + 6, 10 ** ((n % 7) - 6), 0.3);
      if (n > 3) { g[1] = 1e-40; w[2] = 3e38; g[2] = -3e38; } // a subnormal gradient, a product past fp32's range
      const ws = a.f32.subarray(0, n), gs = a.f32.subarray(2048, 2048 + n);
      ws.set(w); gs.set(g);
      a.sgd(ws, gs, lr, batch);
      const ref = w.slice();
      sgdStep(ref, g, lr, batch);
      expect(Array.from(ws)).toEqual(Array.from(ref));
      // Not in the arena: the plain loop, same result.
      const out = w.slice();
      a.sgd(out, g, lr, batch);
      expect(Array.from(out)).toEqual(Array.from(ref));
    }
  });
});

describe('streaming reducer', () => {
  function bodiesFor(plan: Segment[], total: number, shards: number, seed: number): { bodies: Uint8Array[][]; decoded: Float32Array[] } {
    const bodies: Uint8Array[][] = [];
    const decoded: Float32Array[] = [];
    for (let k = 0; k < shards; k++) {
      const enc = new GradientEncoder(plan, total);
      const b = encodeAll(enc, randomVec(total, seed + k, 10 ** ((k % 5) - 2)));
      bodies.push(b);
      decoded.push(decodeAll(plan, b, total));
    }
    return { bodies, decoded };
  }

  function shuffled<T>(xs: T[], seed: number): T[] {
    const out = xs.slice();
    let x = seed;
    for (let i = out.length - 1; i > 0; i--) { x = (x * 1103515245 + 12345) % 2 ** 31; const j = x % (i + 1); [out[i], out[j]] = [out[j], out[i]]; }
    return out;
  }

  for (const c of MODES) {
    for (const shards of [1, 2, 4, 7]) {
      it(`${c.mode}, ${shards} shards in random arrival order: bit-identical to the naive shard-order sum`, () => {
        const { params, total } = toyLayout();
        const plan = planSegments(params, total, c, 997); // odd chunks: tails and unaligned segments
        const { bodies, decoded } = bodiesFor(plan, total, shards, 11);
        const expected = sumInOrder(decoded, new Float32Array(total));
        const r = new StreamReducer(plan, total);
        for (const round of [1, 2]) {
          r.begin(shards);
          const arrivals = shuffled(bodies.flatMap((b, k) => b.map((body, s) => ({ k, s, body }))), round * 7 + shards);
          for (const { k, s, body } of arrivals) r.accept(k, { offset: plan[s].offset, total, codec: plan[s].codec === 'fp32' ? undefined : plan[s].codec }, body);
          expect(Array.from(r.finish())).toEqual(Array.from(expected));
        }
      });
    }
  }

  it('a shard revoked mid-upload is taken out again; its redo gives the same sum', () => {
    const { params, total } = toyLayout();
    const c = parseCompression('int8');
    const plan = planSegments(params, total, c, 97);
    const { bodies, decoded } = bodiesFor(plan, total, 3, 21);
    const junk = bodiesFor(plan, total, 3, 99).bodies[1];
    const r = new StreamReducer(plan, total);
    const hdr = (s: number) => ({ offset: plan[s].offset, total, codec: plan[s].codec });
    r.begin(3);
    r.accept(0, hdr(0), bodies[0][0]);
    r.accept(1, hdr(0), junk[0]); // folded right away: shard 0 is in
    r.accept(1, hdr(1), junk[1]);
    expect(r.complete(1)).toBe(false);
    r.revoke(1);
    for (let s = 0; s < plan.length; s++) for (const k of [2, 1, 0]) if (!(k === 0 && s === 0)) r.accept(k, hdr(s), bodies[k][s]);
    expect(Array.from(r.finish())).toEqual(Array.from(sumInOrder(decoded, new Float32Array(total))));
  });

  it('a NaN body is reported against its own shard (even when it arrived early) and the sum recovers', () => {
    const { params, total } = toyLayout();
    const plan = planSegments(params, total, parseCompression('none'), 97);
    const { bodies, decoded } = bodiesFor(plan, total, 3, 31);
    const poisoned = bodies[2][0].slice();
    new Float32Array(poisoned.buffer)[5] = NaN;
    const blamed: number[] = [];
    const r = new StreamReducer(plan, total, (k) => { blamed.push(k); r.revoke(k); });
    const hdr = (s: number) => ({ offset: plan[s].offset, total });
    r.begin(3);
    r.accept(2, hdr(0), poisoned); // early: waits for shards 0 and 1
    r.accept(1, hdr(0), bodies[1][0]);
    expect(blamed).toEqual([]);
    r.accept(0, hdr(0), bodies[0][0]); // now 0, 1, 2 fold: shard 2 is caught, not shard 0
    expect(blamed).toEqual([2]);
    for (let s = 0; s < plan.length; s++) for (const k of [0, 1, 2]) if (s > 0 || k === 2) r.accept(k, hdr(s), bodies[k][s]);
    expect(Array.from(r.finish())).toEqual(Array.from(sumInOrder(decoded, new Float32Array(total))));
  });

  it('refuses a segment that is not in the plan, of the wrong codec or length, or twice', () => {
    const { params, total } = toyLayout();
    const plan = planSegments(params, total, parseCompression('int8'), 97);
    const r = new StreamReducer(plan, total);
    r.begin(2);
    const body = new Uint8Array(plan[0].bytes);
    const code = (f: () => void) => { try { f(); } catch (e) { return (e as ProtocolError).code; } return 0; };
    expect(code(() => r.accept(0, { offset: 1, total, codec: 'int8' }, body))).toBe(CLOSE.badGradient);
    expect(code(() => r.accept(0, { offset: 0, total }, body))).toBe(CLOSE.badGradient);
    expect(code(() => r.accept(0, { offset: 0, total, codec: 'int8' }, body.subarray(4)))).toBe(CLOSE.badGradient);
    const badScale = body.slice();
    new Float32Array(badScale.buffer)[0] = Infinity;
    expect(code(() => r.accept(0, { offset: 0, total, codec: 'int8' }, badScale))).toBe(CLOSE.badGradient);
    expect(code(() => r.accept(0, { offset: 0, total, codec: 'int8' }, body))).toBe(0);
    expect(code(() => r.accept(0, { offset: 0, total, codec: 'int8' }, body))).toBe(CLOSE.duplicate);
    expect(() => r.finish()).toThrow(/folded/);
  });
});
