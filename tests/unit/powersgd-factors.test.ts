// PowerSGD's factors in 16 bits (--factors fp16): the plan's bytes, the encoder that leaves in the
// sender's vector exactly what the receivers decode, the worker's error feedback on its Q_i as
// sent, the welcome's check of the setting, and the autopilot's price. The run itself:
// tests/integration/powersgd-fp16.test.ts.
import { describe, expect, it } from 'vitest';
import { IMAGE_BYTES, getModel, paramLayout } from '@tabtrain/shared';
import { checkCompression, decodeInto, encodeFactors, parseCompression, powerSgdPlanOf, roundSegments, uploadBytes, type Segment } from '@tabtrain/shared/compress';
import { powerSgdBytes, powerSgdPlan } from '@tabtrain/shared/powersgd';
import { initialQ } from '@tabtrain/shared/powersgd-basis';
import { PowerSgdWorker } from '@tabtrain/shared/powersgd-worker';
import { roundToHalf } from '@tabtrain/shared/scalar-codecs';
import { Autopilot, type Fleet } from '../../server/src/autopilot';

const ALEX = paramLayout(getModel('alexnet'));
const FP16 = parseCompression('powersgd', 4, 'fp16');
const FP32 = parseCompression('powersgd', 4);

const seg = (codec: 'fp16' | 'fp32', offset: number, count: number): Segment => ({ index: 0, codec, offset, count, pieces: [], bytes: (codec === 'fp16' ? 2 : 4) * count });

describe('fp16 factors: bytes', () => {
  it('AlexNet at rank 4: a worker uploads about half of fp32 factors a step (every factor in 2 bytes, the fp32 tensors\' sums in 4)', () => {
    const p32 = powerSgdPlanOf(ALEX.params, ALEX.total, FP32)!, p16 = powerSgdPlanOf(ALEX.params, ALEX.total, FP16)!;
    const factors = p16.dense[0].at + p16.round2Floats, dense = p16.round1Floats - p16.dense[0].at;
    // Bodies: factors at 2 bytes, the biases (and tiny kernels) at 4.
    expect(powerSgdBytes(p16).perStep).toBe(2 * factors + 4 * dense);
    expect(powerSgdBytes(p32).perStep).toBe(4 * (factors + dense));
    for (const round of [1, 2] as const) {
      const segs = roundSegments(p16, round);
      expect(segs.map((s) => s.offset)).toEqual(roundSegments(p32, round).map((s) => s.offset)); // the same cuts
      for (const s of segs) expect(s.bytes).toBe((s.codec === 'fp16' ? 2 : 4) * s.count);
      expect(segs.filter((s) => s.codec === 'fp32').map((s) => s.offset)).toEqual(round === 1 ? [p16.dense[0].at] : []);
    }
    const full = uploadBytes(ALEX.params, ALEX.total, FP32), half = uploadBytes(ALEX.params, ALEX.total, FP16);
    console.log(`alexnet rank 4: ${full} bytes/worker/step with fp32 factors, ${half} with fp16 (${(half / full).toFixed(3)}); ${factors} factor floats, ${dense} fp32 floats`);
    expect(full).toBe(613_920); // docs/BENCHMARKS.md §3
    // Frame headers differ by the codec field alone (a few bytes a frame).
    expect(half - (full - 2 * factors)).toBeGreaterThan(0);
    expect(half - (full - 2 * factors)).toBeLessThan(16 * (roundSegments(p16, 1).length + roundSegments(p16, 2).length));
    // 326,856 bytes: 0.532 of fp32's, the 9,578 fp32 floats (38 KB) being the part that does not halve.
    expect(half).toBe(326_856);
    expect(half / full).toBeGreaterThan(0.5);
    expect(half / full).toBeLessThan(0.54);
  });

  it('fp32 factors keep the plan and the compression they always had (pinned runs unchanged)', () => {
    expect(FP32).toEqual({ mode: 'powersgd', rank: 4 });
    expect(powerSgdPlan(ALEX.params, ALEX.total, 4)).toEqual(powerSgdPlanOf(ALEX.params, ALEX.total, FP32));
    expect('factors' in powerSgdPlanOf(ALEX.params, ALEX.total, FP32)!).toBe(false);
    for (const s of [...roundSegments(powerSgdPlan(ALEX.params, ALEX.total, 4), 1), ...roundSegments(powerSgdPlan(ALEX.params, ALEX.total, 4), 2)]) expect(s.codec).toBe('fp32');
  });
});

describe('fp16 factors: encodeFactors', () => {
  it('leaves in the vector exactly what the receiver decodes; saturates at ±65504 like the fp16 mode; a NaN is refused by the decode', () => {
    const v = Float32Array.from([0.1, -1 / 3, 1e-6, 1e-9, 70000, -1e6, Infinity, 3.14159, 0]);
    const body = new Uint8Array(2 * v.length);
    encodeFactors(seg('fp16', 0, v.length), v, body);
    const out = new Float32Array(v.length);
    expect(decodeInto(seg('fp16', 0, v.length), body, out, 0)).toBe(true);
    expect(Array.from(v)).toEqual(Array.from(out));
    expect(v[4]).toBe(65504);
    expect(v[5]).toBe(-65504);
    expect(v[6]).toBe(65504); // never Inf on the wire
    expect(Math.abs(v[0] - 0.1)).toBeLessThan(0.1 * 2 ** -11);
    // Re-encoding what was decoded changes nothing: worker and coordinator agree on the bits.
    const again = new Uint8Array(body.length);
    encodeFactors(seg('fp16', 0, v.length), v, again);
    expect(again).toEqual(body);
    const nan = Float32Array.from([1, Number.NaN]);
    const nb = new Uint8Array(4);
    encodeFactors(seg('fp16', 0, 2), nan, nb);
    expect(decodeInto(seg('fp16', 0, 2), nb, new Float32Array(2), 0)).toBe(false);
  });

  it('fp32 segments are copied as they are', () => {
    const v = Float32Array.from([0.1, 2, 3]);
    const body = new Uint8Array(8);
    encodeFactors(seg('fp32', 1, 2), v, body);
    expect(Array.from(new Float32Array(body.buffer))).toEqual([2, 3]);
    expect(v[0]).toBe(Math.fround(0.1));
  });
});

describe('fp16 factors: the worker', () => {
  it('sends Q_i as halves and keeps e = M − P̂ Q_iᵀ with the Q_i it sent', () => {
    const toy = paramLayout(getModel('alexnet-tiny'));
    const plan = powerSgdPlan(toy.params, toy.total, 2, 'fp16');
    const grad = Float32Array.from({ length: toy.total }, (_, i) => Math.sin(i * 0.37) * 1e-2);
    const w = new PowerSgdWorker(plan, initialQ(plan, 5));
    const p = new Float32Array(plan.round1Floats);
    w.round1(0, grad, p);
    const basis = p.slice(); // stands for P̂: any fp16-representable vector
    roundToHalf(basis, 0, basis.length);
    const q = new Float32Array(plan.round2Floats);
    w.round2(0, basis, q);
    const rounded = q.slice();
    roundToHalf(rounded, 0, rounded.length);
    expect(q).toEqual(rounded); // what it sends is what the coordinator decodes
    // The error, from the sent Q_i: computed here in double, it agrees to fp32 rounding.
    let worst = 0, scale = 0;
    for (const m of plan.matrices) {
      for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) {
        let a = 0;
        for (let k = 0; k < plan.rank; k++) a += basis[m.pAt + k * m.rows + i] * q[m.qAt + k * m.cols + j];
        const x = m.offset + i * m.cols + j;
        worst = Math.max(worst, Math.abs(w.error[x] - (grad[x] - a)));
        scale = Math.max(scale, Math.abs(grad[x]));
      }
    }
    expect(worst).toBeLessThan(1e-6 * scale);
  });
});

describe('fp16 factors: the setting', () => {
  it('travels in the welcome and is checked there', () => {
    expect(checkCompression({ mode: 'powersgd', rank: 4, factors: 'fp16' })).toEqual(FP16);
    expect(checkCompression({ mode: 'powersgd', rank: 4 })).toEqual(FP32);
    expect(checkCompression({ mode: 'powersgd', rank: 4, factors: 'fp32' })).toEqual(FP32);
    expect(() => checkCompression({ mode: 'powersgd', rank: 4, factors: 'bf16' })).toThrow(/factors must be one of fp32, fp16, got 'bf16'/);
    expect(() => checkCompression({ mode: 'powersgd', rank: 4, factors: 16 })).toThrow(/factors must be/);
    expect(() => checkCompression({ mode: 'int8', rank: 0, factors: 'fp16' })).toThrow(/compression int8 has none/);
  });

  it('--compress auto prices powersgd with the run\'s factors: fewer bytes, a shorter step where the link is the limit', () => {
    const sizes = { params: ALEX.params, total: ALEX.total, pipeline: true, exampleBytes: IMAGE_BYTES + 1 };
    const workers = Array.from({ length: 8 }, (_, i) => ({ id: i + 1, computeRate: 4000, upRate: 119e6, downRate: 119e6, behind: 1 }));
    const f: Fleet = { workers, link: { up: 119e6, down: 119e6 }, batch: 1024, counts: workers.map(() => 128) };
    const price = (p: Autopilot) => p.price(f).find((x) => x.compress.mode === 'powersgd')!;
    const p32 = price(new Autopilot(sizes, 4)), p16 = price(new Autopilot(sizes, 4, 'fp16'));
    console.log(`8 workers at 1 Gbit/s, AlexNet: powersgd r4 priced ${p32.modelMs.toFixed(1)} ms with fp32 factors, ${p16.modelMs.toFixed(1)} ms with fp16`);
    expect(p16.compress).toEqual(FP16);
    expect(p16.modelMs).toBeLessThan(p32.modelMs);
  });
});
