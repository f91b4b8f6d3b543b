// PowerSGD's pure parts (shared/src/powersgd.ts): the plan and its bytes, the orthonormalisation,
// the linearity that lets the coordinator just sum factors, the bit-exact update, and the error
// feedback that delays gradient but never loses it.
import { describe, expect, it } from 'vitest';
import { getModel, paramLayout, type ParamInfo } from '@tabtrain/shared';
import {
  ArrivingUpdate, LowRankKernel, applyLowRank, applyPart, applyPowerSgd, powerSgdBytes, powerSgdPlan, type PowerSgdPlan,
} from '@tabtrain/shared/powersgd';
import { PowerSgdWorker } from '@tabtrain/shared/powersgd-worker';
import { initialQ, nextQ, orthonormalise, orthonormaliseRound1 } from '@tabtrain/shared/powersgd-basis';
import { simdAvailable } from '@tabtrain/shared/simd';

/** A layout of kernels (last dim = cols) and biases; awkward sizes on purpose (odd cols, cols < 4). */
function layout(shapes: number[][]): { params: ParamInfo[]; total: number } {
  let offset = 0;
  const params = shapes.map((shape, i) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const p: ParamInfo = { name: `p${i}`, shape, size, offset, layer: i, role: shape.length > 1 ? 'kernel' : 'bias', fanIn: 1, fanOut: 1 };
    offset += size;
    return p;
  });
  return { params, total: offset };
}
const TOY = layout([[3, 3, 4, 16], [16], [40, 13], [13], [13, 3], [3], [64, 30], [30]]);

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

/** Uniform [-1, 1) floats. */
function uniform(n: number, seed: number): Float32Array {
  const next = xorshift(seed);
  return Float32Array.from({ length: n }, () => 2 * next() - 1);
}

/** A gradient whose kernels are rank-`signal` matrices of falling strength plus a little full-rank noise. */
function lowRankish(plan: PowerSgdPlan, seed: number, signal = 3, noise = 0.05): Float32Array {
  const g = uniform(plan.total, seed);
  for (const m of plan.matrices) {
    const u = uniform(signal * m.rows, seed + 1), v = uniform(signal * m.cols, seed + 2);
    for (let i = 0; i < m.rows; i++) {
      for (let j = 0; j < m.cols; j++) {
        let x = 0;
        for (let k = 0; k < signal; k++) x += u[k * m.rows + i] * v[k * m.cols + j] / 2 ** k;
        g[m.offset + i * m.cols + j] = x + noise * g[m.offset + i * m.cols + j];
      }
    }
  }
  return g;
}

const maxAbs = (v: ArrayLike<number>) => { let m = 0; for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i])); return m; };
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
const bits = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

/** The coordinator's fold: fp32 adds in shard order, as the reducer does them. */
function fold(vs: Float32Array[]): Float32Array {
  const sum = new Float32Array(vs[0].length);
  for (const v of vs) for (let i = 0; i < v.length; i++) sum[i] += v[i];
  return sum;
}

/** |PᵀP − I| over the rank columns of a factor-major factor, in double. */
function orthonormalityError(f: Float32Array, at: number, rows: number, rank: number): number {
  let worst = 0;
  for (let a = 0; a < rank; a++) {
    for (let b = 0; b < rank; b++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += f[at + a * rows + i] * f[at + b * rows + i];
      worst = Math.max(worst, Math.abs(dot - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

interface Step { round1: Float32Array; round2: Float32Array }

/**
 * One two-round step for `workers`, each with its shard's gradient (one shard each, shard = index),
 * and the coordinator between them; the weights advance by applyPowerSgd. Returns the broadcasts.
 */
function step(plan: PowerSgdPlan, workers: PowerSgdWorker[], grads: Float32Array[], w: Float32Array, seed: number, t: number, lr = 0.1, batch = 8): Step {
  const round1 = fold(workers.map((wk, s) => { const out = new Float32Array(plan.round1Floats); wk.round1(s, grads[s], out); return out; }));
  orthonormaliseRound1(plan, round1, seed, t);
  const round2 = fold(workers.map((wk, s) => { const out = new Float32Array(plan.round2Floats); wk.round2(s, round1, out); return out; }));
  applyPowerSgd(plan, w, round1, round2, lr, batch);
  const q = nextQ(plan, round2, seed, t + 1);
  for (const wk of workers) wk.setQ(q);
  return { round1, round2 };
}

/** The update a step applied, in gradient-sum units (P̂ Qᵀ and the fp32 sums), in double. */
function appliedUpdate(plan: PowerSgdPlan, s: Step): Float64Array {
  const u = new Float64Array(plan.total);
  for (const t of plan.dense) for (let j = 0; j < t.count; j++) u[t.offset + j] = s.round1[t.at + j];
  for (const m of plan.matrices) {
    for (let i = 0; i < m.rows; i++) {
      for (let j = 0; j < m.cols; j++) {
        let d = 0;
        for (let k = 0; k < plan.rank; k++) d += s.round1[m.pAt + k * m.rows + i] * s.round2[m.qAt + k * m.cols + j];
        u[m.offset + i * m.cols + j] = d;
      }
    }
  }
  return u;
}

describe('plan', () => {
  it('AlexNet at rank 4: every kernel as factors, biases in fp32; bytes per worker per step ≤ 1/250 of fp32', () => {
    const { params, total } = paramLayout(getModel('alexnet'));
    const plan = powerSgdPlan(params, total, 4);
    // The tfjs layout gives rows = kh·kw·in (or in), cols = out.
    expect(plan.matrices.map((m) => [params[m.param].name, m.rows, m.cols])).toEqual([
      ['layer0_conv/kernel', 121, 96], ['layer2_conv/kernel', 2400, 256], ['layer4_conv/kernel', 2304, 384],
      ['layer5_conv/kernel', 3456, 384], ['layer6_conv/kernel', 3456, 256], ['layer9_dense/kernel', 6400, 4096],
      ['layer11_dense/kernel', 4096, 4096], ['layer13_dense/kernel', 4096, 10],
    ]);
    expect(plan.dense.every((t) => params[t.param].role === 'bias')).toBe(true);
    const b = powerSgdBytes(plan);
    // Σ rows = 26,329 and Σ cols = 9,578 (also the bias count): round 1 = 4 · (4 · 26,329 + 9,578) bytes.
    expect(b).toEqual({ round1: 459_576, round2: 153_248, perStep: 612_824 });
    const fp32 = 4 * total;
    console.log(`AlexNet, rank 4, per worker per step: round 1 ${b.round1.toLocaleString('en-US')} B up and the same down (P̂ + fp32 sums), `
      + `round 2 ${b.round2.toLocaleString('en-US')} B up and the same down (Q); ${b.perStep.toLocaleString('en-US')} B each way `
      + `against fp32's ${fp32.toLocaleString('en-US')} B: 1/${(fp32 / b.perStep).toFixed(1)}`);
    expect(b.perStep * 250).toBeLessThanOrEqual(fp32);
  });

  it('a kernel is factored only while its factors are under half its floats; the vectors tile without gaps', () => {
    const { params, total } = layout([[4096, 10], [10], [9, 9], [9]]);
    expect(powerSgdPlan(params, total, 4).matrices.map((m) => m.param)).toEqual([0]); // 4·4106 < 40960/2; [9, 9] is too small
    expect(powerSgdPlan(params, total, 5).matrices).toEqual([]); // 5·4106 ≥ 40960/2
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    expect(plan.matrices.map((m) => m.param)).toEqual([0, 2, 6]);
    let p = 0, q = 0;
    for (const m of plan.matrices) { expect([m.pAt, m.qAt]).toEqual([p, q]); p += 2 * m.rows; q += 2 * m.cols; }
    for (const t of plan.dense) { expect(t.at).toBe(p); p += t.count; }
    expect([plan.round1Floats, plan.round2Floats]).toEqual([p, q]);
    expect(plan.matrices.reduce((a, m) => a + m.rows * m.cols, 0) + plan.dense.reduce((a, t) => a + t.count, 0)).toBe(TOY.total);
  });
});

describe('orthonormalise', () => {
  it.each([[50, 4], [6400, 4], [17, 1], [300, 8]])('rows %i, rank %i: orthonormal to 1e-6, the same span, the same bits every time', (rows, rank) => {
    const f = uniform(rank * rows + 3, rows + rank).map((x) => x * 1e3); // a big scale and an offset start
    const a = f.slice(), b = f.slice();
    expect(orthonormalise(a, 3, rows, rank, 7)).toBe(0);
    orthonormalise(b, 3, rows, rank, 7);
    expect(bits(a).equals(bits(b))).toBe(true);
    expect(orthonormalityError(a, 3, rows, rank)).toBeLessThan(1e-6);
    expect(a.subarray(0, 3)).toEqual(f.subarray(0, 3));
    // Each original column lies in the span: projecting it on the result gives it back.
    for (let k = 0; k < rank; k++) {
      const c = Array.from(f.subarray(3 + k * rows, 3 + (k + 1) * rows));
      const back = new Float64Array(rows);
      for (let l = 0; l < rank; l++) {
        let dot = 0;
        for (let i = 0; i < rows; i++) dot += c[i] * a[3 + l * rows + i];
        for (let i = 0; i < rows; i++) back[i] += dot * a[3 + l * rows + i];
      }
      expect(maxDiff(back, c) / maxAbs(c)).toBeLessThan(1e-6);
    }
    // The first column keeps its direction (Gram–Schmidt, not some other basis of the span).
    const c0 = f.subarray(3, 3 + rows), n0 = Math.hypot(...c0);
    expect(maxDiff(a.subarray(3, 3 + rows), c0.map((x) => x / n0))).toBeLessThan(1e-6);
  });

  it('refills a zero column and one dependent on the columns before it, from the seed', () => {
    const rows = 40, rank = 4;
    const f = uniform(rank * rows, 3);
    for (let i = 0; i < rows; i++) { f[rows + i] = -2 * f[i]; f[2 * rows + i] = 0; }
    const a = f.slice(), again = f.slice(), other = f.slice();
    expect(orthonormalise(a, 0, rows, rank, 11)).toBe(2);
    expect(orthonormalityError(a, 0, rows, rank)).toBeLessThan(1e-6);
    orthonormalise(again, 0, rows, rank, 11);
    orthonormalise(other, 0, rows, rank, 12);
    expect(bits(a).equals(bits(again))).toBe(true);
    expect(bits(a).equals(bits(other))).toBe(false);
    const zero = new Float32Array(rank * rows);
    expect(orthonormalise(zero, 0, rows, rank, 5)).toBe(rank);
    expect(orthonormalityError(zero, 0, rows, rank)).toBeLessThan(1e-6);
  });

  it('the first Q and the warm-started Q are orthonormal, the same on every replica, and a vanished column comes back', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const q0 = initialQ(plan, 42);
    expect(bits(q0).equals(bits(initialQ(plan, 42)))).toBe(true);
    expect(bits(q0).equals(bits(initialQ(plan, 43)))).toBe(false);
    const sum = uniform(plan.round2Floats, 9);
    const m = plan.matrices[1];
    sum.fill(0, m.qAt, m.qAt + 2 * m.cols); // a layer whose gradient was zero: Q = Mᵀ P̂ = 0
    const q1 = nextQ(plan, sum, 42, 1);
    expect(bits(q1).equals(bits(nextQ(plan, sum, 42, 1)))).toBe(true);
    for (const x of plan.matrices) {
      expect(orthonormalityError(q0, x.qAt, x.cols, 2)).toBeLessThan(1e-6);
      expect(orthonormalityError(q1, x.qAt, x.cols, 2)).toBeLessThan(1e-6);
    }
    expect(sum[m.qAt]).toBe(0); // nextQ leaves the broadcast alone
  });
});

describe('the low-rank update', () => {
  /** w − s · P̂ Qᵀ from the definition, in double, with P̂ read as [rows, rank] and Q as [cols, rank]. */
  function reference(w: Float32Array, rows: number, cols: number, rank: number, p: Float32Array, q: Float32Array, s: number): Float64Array {
    const out = Float64Array.from(w);
    const P = (i: number, k: number) => p[k * rows + i], Q = (j: number, k: number) => q[k * cols + j];
    for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) {
      let d = 0;
      for (let k = rank - 1; k >= 0; k--) d += P(i, k) * Q(j, k);
      out[i * cols + j] -= s * d;
    }
    return out;
  }

  it.each([[1, 1, 1], [7, 1, 3], [33, 5, 4], [300, 13, 4], [17, 64, 2], [50, 4096, 4], [5000, 17, 3]])(
    'rows %i, cols %i, rank %i: the same bits every call, the kernel is the plain loop bit for bit, and within 1e-6 of the exact value',
    (rows, cols, rank) => {
      const { params, total } = layout([[rows, cols]]);
      const m = { param: 0, offset: 0, rows, cols, pAt: 0, qAt: 0 };
      const plan: PowerSgdPlan = { rank, total, matrices: [m], dense: [], round1Floats: rank * rows, round2Floats: rank * cols };
      expect(params[0].size).toBe(total);
      const w0 = uniform(total, rows * 31 + cols);
      w0[0] = -0; // a signed zero in the weights, and tiny and huge values
      if (total > 2) { w0[1] = 1e-30; w0[2] = 3e30; }
      const p = uniform(rank * rows, 5).map((x) => x / Math.sqrt(rows)), q = uniform(rank * cols, 6);
      const a = w0.slice(), b = w0.slice();
      applyLowRank(a, m, rank, p, q, 0.05, 3);
      applyLowRank(b, m, rank, p, q, 0.05, 3);
      expect(bits(a).equals(bits(b))).toBe(true);
      expect(bits(a).equals(bits(w0))).toBe(false);
      if (simdAvailable()) {
        // Through the kernel, on a plain array (blocks copied through) and in place in its own memory.
        const k = w0.slice();
        LowRankKernel.shared(plan)!.apply(k, m, p, q, 0.05, 3);
        expect(bits(k).equals(bits(a))).toBe(true);
        const own = LowRankKernel.withWeights(plan)!;
        own.weights!.set(w0);
        own.apply(own.weights!, m, p, q, 0.05, 3);
        expect(bits(own.weights!).equals(bits(a))).toBe(true);
      }
      const exact = reference(w0, rows, cols, rank, p, q, 0.05 / 3);
      let worst = 0;
      for (let x = 0; x < total; x++) worst = Math.max(worst, Math.abs(a[x] - exact[x]) / (Math.abs(exact[x]) + 1e-30));
      expect(worst).toBeLessThan(1e-6);
    });

  // The kernel's paths by rank (1 to 4 with P̂'s row in registers, more through its term loop), two
  // rows a turn (an odd last row, and blocks of odd length: cols 121 → 541 rows a block), four
  // columns a turn and the scalar tail (cols mod 4), against the plain loop, bit for bit. Signed
  // zeros and a zero factor row make ±0 products, whose sum's sign shows on a −0 weight. Rows
  // i ≡ 1 (mod 3) at odd columns have products 2^60, c1, −2^60, c3, 2^60, c5, ...: summed in l
  // order c1 is lost to 2^60 and the sum is c3 at rank 4 (c7 at rank 8), so a term out of order shows even
  // through the f32 rounding (which hides the last bits of an f64 sum).
  it.each([1, 2, 3, 4, 5, 8])('rank %i: the kernel is the plain loop bit for bit, at every cols mod 8 and odd row counts', (rank) => {
    if (!simdAvailable()) return;
    const shapes: [number, number][] = [];
    for (const cols of [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 121]) for (const rows of [1, 2, 3, 6]) shapes.push([rows, cols]);
    shapes.push([1100, 121], [3, 1000]);
    for (const [rows, cols] of shapes) {
      const m = { param: 0, offset: 0, rows, cols, pAt: 0, qAt: 0 };
      const plan: PowerSgdPlan = { rank, total: rows * cols, matrices: [m], dense: [], round1Floats: rank * rows, round2Floats: rank * cols };
      const w0 = uniform(rows * cols, rows * 7 + cols);
      for (let x = 0; x < w0.length; x += 5) w0[x] = -0;
      const p = uniform(rank * rows, rank + rows), q = uniform(rank * cols, rank + 2 * cols);
      for (let k = 0; k < rank; k += 2) {
        for (let i = 1; i < rows; i += 3) p[k * rows + i] = k % 4 ? -(2 ** 30) : 2 ** 30;
        for (let j = 1; j < cols; j += 2) q[k * cols + j] = 2 ** 30;
      }
      for (let k = 0; k < rank; k++) { p[k * rows + rows - 1] = k % 2 ? -0 : 0; q[k * cols] = -0; }
      if (rows > 1) p[1] = 0; // a zero factor in row 1, term 0
      const a = w0.slice();
      applyLowRank(a, m, rank, p, q, 0.05, 3);
      const k = w0.slice();
      LowRankKernel.shared(plan)!.apply(k, m, p, q, 0.05, 3);
      expect(bits(k).equals(bits(a)), `rows ${rows}, cols ${cols}`).toBe(true);
      const own = LowRankKernel.withWeights(plan)!;
      own.weights!.set(w0);
      own.apply(own.weights!, m, p, q, 0.05, 3);
      expect(bits(own.weights!).equals(bits(a)), `rows ${rows}, cols ${cols}, in place`).toBe(true);
    }
  });

  it('applyPowerSgd: the fp32 tensors by plain SGD, the matrices by their factors, kernel or not the same bits', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const w0 = uniform(plan.total, 1), r1 = uniform(plan.round1Floats, 2), r2 = uniform(plan.round2Floats, 3);
    const a = w0.slice(), b = w0.slice();
    applyPowerSgd(plan, a, r1, r2, 0.1, 4);
    applyPowerSgd(plan, b, r1, r2, 0.1, 4, null);
    expect(bits(a).equals(bits(b))).toBe(true);
    const own = LowRankKernel.withWeights(plan);
    if (own) {
      own.weights!.set(w0);
      applyPowerSgd(plan, own.weights!, r1, r2, 0.1, 4, own);
      expect(bits(own.weights!).equals(bits(a))).toBe(true);
    }
    for (const t of plan.dense) for (let j = 0; j < t.count; j++) expect(a[t.offset + j]).toBe(Math.fround(w0[t.offset + j] - (0.1 / 4) * r1[t.at + j]));
  });

  it('ArrivingUpdate: the update applied part by part as round 2 arrives in slices has the bits of applying it whole', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    expect(plan.matrices.length).toBeGreaterThan(1);
    const w0 = uniform(plan.total, 1), r1 = uniform(plan.round1Floats, 2), r2 = uniform(plan.round2Floats, 3);
    const whole = w0.slice();
    applyPowerSgd(plan, whole, r1, r2, 0.1, 4);
    const parts = w0.slice();
    const arriving = new ArrivingUpdate(plan, 1);
    const seen: number[] = [];
    let slices = 0;
    // Slices of 7 floats: a matrix is due only once its Qᵀ is whole; what has not arrived is still zero.
    const sofar = new Float32Array(plan.round2Floats);
    for (let got = 0; got < plan.round2Floats;) {
      const next = Math.min(plan.round2Floats, got + 7);
      sofar.set(r2.subarray(got, next), got);
      got = next;
      const part = arriving.due(got);
      for (const m of part.matrices) expect(m.qAt + plan.rank * m.cols).toBeLessThanOrEqual(got);
      if (slices++ === 0) expect(part.dense).toEqual(plan.dense);
      else expect(part.dense).toEqual([]);
      seen.push(...part.matrices.map((m) => m.param));
      applyPart(plan, parts, part, r1, sofar, 0.1, 4);
      expect(arriving.done).toBe(got === plan.round2Floats);
    }
    expect(seen).toEqual(plan.matrices.map((m) => m.param));
    expect(bits(parts).equals(bits(whole))).toBe(true);
  });
});

describe('two rounds, linear', () => {
  it('two workers give the single-worker PowerSGD of the summed gradient, step after step (error feedback included)', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const seed = 5;
    const pair = [new PowerSgdWorker(plan, initialQ(plan, seed)), new PowerSgdWorker(plan, initialQ(plan, seed))];
    const single = [new PowerSgdWorker(plan, initialQ(plan, seed))];
    const w0 = uniform(plan.total, 77);
    const w2 = w0.slice(), w1 = w0.slice();
    for (let t = 0; t < 4; t++) {
      const ga = lowRankish(plan, 100 * t + 1), gb = lowRankish(plan, 100 * t + 50);
      const s2 = step(plan, pair, [ga, gb], w2, seed, t);
      const s1 = step(plan, single, [fold([ga, gb])], w1, seed, t);
      // The summed P̂ and Q (and the fp32 sums) agree up to the order of fp32 sums.
      expect(maxDiff(s2.round1, s1.round1)).toBeLessThan(1e-5);
      expect(maxDiff(s2.round2, s1.round2) / maxAbs(s1.round2)).toBeLessThan(1e-5);
      expect(maxDiff(w2, w1) / maxAbs(w1)).toBeLessThan(1e-6);
      // Σ e_i is the single worker's e: the pair lost nothing the single worker kept.
      const e = fold([pair[0].error, pair[1].error]);
      expect(maxDiff(e, single[0].error) / maxAbs(single[0].error)).toBeLessThan(1e-5);
      expect(maxAbs(single[0].error)).toBeGreaterThan(1e-3); // there is error to compare
    }
    expect(maxDiff(w2, w0)).toBeGreaterThan(0.01); // the weights did move
  });

  it('a rank-r gradient passes whole at rank r: nothing is left in the error', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const workers = [new PowerSgdWorker(plan, initialQ(plan, 1))];
    const g = lowRankish(plan, 9, 2, 0);
    const s = step(plan, workers, [g], new Float32Array(plan.total), 1, 0);
    const u = appliedUpdate(plan, s);
    expect(maxDiff(u, g) / maxAbs(g)).toBeLessThan(1e-5);
    expect(maxAbs(workers[0].error) / maxAbs(g)).toBeLessThan(1e-5);
  });
});

describe('error feedback', () => {
  /** Σ over steps of the applied updates, plus what is left in the errors, against Σ of the gradients. */
  function ledger(plan: PowerSgdPlan, steps: Step[], errors: Float32Array[], grads: Float32Array[]) {
    const applied = new Float64Array(plan.total), given = new Float64Array(plan.total), left = new Float64Array(plan.total);
    for (const s of steps) appliedUpdate(plan, s).forEach((x, i) => { applied[i] += x; });
    for (const g of grads) g.forEach((x, i) => { given[i] += x; });
    for (const e of errors) e.forEach((x, i) => { left[i] += x; });
    const scale = maxAbs(given);
    return {
      balance: maxDiff(applied.map((x, i) => x + left[i]), given) / scale,
      withoutErrors: maxDiff(applied, given) / scale,
    };
  }

  it('what the steps applied plus what the errors still hold is every gradient given, to 1e-4', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const workers = [new PowerSgdWorker(plan, initialQ(plan, 3)), new PowerSgdWorker(plan, initialQ(plan, 3))];
    const w = uniform(plan.total, 4);
    const steps: Step[] = [], grads: Float32Array[] = [];
    for (let t = 0; t < 5; t++) {
      const g = [lowRankish(plan, 10 * t + 1, 3, 0.5), lowRankish(plan, 10 * t + 2, 3, 0.5)];
      grads.push(...g);
      steps.push(step(plan, workers, g, w, 3, t));
    }
    const { balance, withoutErrors } = ledger(plan, steps, workers.map((x) => x.error), grads);
    expect(balance).toBeLessThan(1e-4);
    expect(withoutErrors).toBeGreaterThan(0.05); // the errors hold a real share: the balance could fail
  });

  it('a worker lost after round 1: its shard is finished by another from the bare gradient, and only the lost error is missing', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const [a, b] = [new PowerSgdWorker(plan, initialQ(plan, 8)), new PowerSgdWorker(plan, initialQ(plan, 8))];
    const w = uniform(plan.total, 4);
    const steps: Step[] = [], grads: Float32Array[] = [];
    for (let t = 0; t < 2; t++) {
      const g = [lowRankish(plan, 10 * t + 1, 3, 0.5), lowRankish(plan, 10 * t + 2, 3, 0.5)];
      grads.push(...g);
      steps.push(step(plan, [a, b], g, w, 8, t));
    }
    const lost = a.error.slice();
    // Step 2: both run round 1; a vanishes; b runs round 2 of shard 0 from its gradient, then its own.
    const g = [lowRankish(plan, 21, 3, 0.5), lowRankish(plan, 22, 3, 0.5)];
    grads.push(...g);
    const round1 = fold([0, 1].map((s) => { const out = new Float32Array(plan.round1Floats); [a, b][s].round1(s, g[s], out); return out; }));
    orthonormaliseRound1(plan, round1, 8, 2);
    const round2 = fold([0, 1].map((s) => { const out = new Float32Array(plan.round2Floats); b.round2(s, round1, out, s === 0 ? g[0] : undefined); return out; }));
    applyPowerSgd(plan, w, round1, round2, 0.1, 8);
    steps.push({ round1, round2 });
    b.setQ(nextQ(plan, round2, 8, 3));
    // Two more steps with b alone, both shards.
    for (let t = 3; t < 5; t++) {
      const h = [lowRankish(plan, 10 * t + 1, 3, 0.5), lowRankish(plan, 10 * t + 2, 3, 0.5)];
      grads.push(...h);
      const r1 = fold([0, 1].map((s) => { const out = new Float32Array(plan.round1Floats); b.round1(s, h[s], out); return out; }));
      orthonormaliseRound1(plan, r1, 8, t);
      const r2 = fold([0, 1].map((s) => { const out = new Float32Array(plan.round2Floats); b.round2(s, r1, out); return out; }));
      applyPowerSgd(plan, w, r1, r2, 0.1, 8);
      steps.push({ round1: r1, round2: r2 });
      b.setQ(nextQ(plan, r2, 8, t + 1));
    }
    expect(maxAbs(lost)).toBeGreaterThan(0.1);
    expect(ledger(plan, steps, [b.error, lost], grads).balance).toBeLessThan(1e-4);
    expect(ledger(plan, steps, [b.error], grads).balance).toBeGreaterThan(1e-2);
  });

  it('round 2 of a shard that had neither round 1 nor a gradient is refused', () => {
    const plan = powerSgdPlan(TOY.params, TOY.total, 2);
    const wk = new PowerSgdWorker(plan, initialQ(plan, 1));
    expect(() => wk.round2(3, new Float32Array(plan.round1Floats), new Float32Array(plan.round2Floats))).toThrow(/shard 3/);
  });
});
