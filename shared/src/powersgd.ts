// PowerSGD as its authors designed it (Vogels, Karimireddy, Jaggi, NeurIPS 2019): linear, in two
// rounds, so that the coordinator only sums small factors and never decodes anything.
//
//   round 1  worker i:    M_i = its gradient sum + its error e_i;  sends P_i = M_i Q
//            coordinator: ΣP_i in shard order (a plain fp32 fold), orthonormalised once → P̂
//   round 2  worker i:    sends Q_i = M_iᵀ P̂;  keeps e_i ← M_i − P̂ Q_iᵀ
//            coordinator: Q = ΣQ_i in shard order
//   update   every replica: w ← w − lr/B · P̂ Qᵀ, with one deterministic kernel (bit-equal replicas)
//
// Linearity is the point: ΣP_i = (ΣM_i) Q and ΣQ_i = (ΣM_i)ᵀ P̂, so the step is PowerSGD of the
// summed gradient whatever the split, up to the order of fp32 sums.
//
// The matrices. Every weight kernel is a matrix M [rows, cols] in its tfjs layout, as it already
// lies in the flat vector: a conv kernel [kh, kw, in, out] is rows = kh·kw·in, cols = out, and a
// dense kernel [in, out] is itself. That is PyTorch's out × (in·kh·kw) transposed with its rows
// permuted, which changes neither the singular values nor what a rank-r approximation keeps, and
// it costs no copy and no transpose on any backend. Biases and tensors too small to be worth it
// travel as fp32 sums beside P.
//
// The wire vectors. Round 1's vector is every matrix's Pᵀ [rank, rows] (factor-major: a column
// of P is contiguous), then every fp32 tensor; the coordinator sums it as one fp32 vector, then
// orthonormalises the P parts in place: the round-1 broadcast has the same layout. Round 2's
// vector is every matrix's Qᵀ [rank, cols]; its sum is the round-2 broadcast.
//
// Q's warm start and the orthonormalisation of P̂ and Q: powersgd-basis.ts.
//
// Pure code (no tfjs, no Node or DOM): the coordinator, the page and the Node worker run it.
// client/src/powersgd-ops.ts is the worker's side on tfjs ops; PowerSgdWorker (powersgd-worker.ts)
// is the same on Float32Arrays, the reference the tests hold it to.
import type { FactorCodec } from './codec-types';
import type { ParamInfo } from './models';
import { instantiateKernels, kernelMemory, simdAvailable, type Kernels } from './simd';

/** A weight kernel sent as rank-r factors. */
export interface LowRankMatrix {
  /** Index of the kernel in the model's params. */
  param: number;
  /** First float of the kernel in the flat parameter vector. */
  offset: number;
  rows: number;
  cols: number;
  /** Where its Pᵀ [rank, rows] starts in round 1's vector, and its Qᵀ [rank, cols] in round 2's. */
  pAt: number;
  qAt: number;
}

/** A parameter tensor that travels as its fp32 gradient sum (biases, tiny kernels). */
export interface DenseTensor {
  param: number;
  offset: number;
  count: number;
  /** Where it starts in round 1's vector (after every P). */
  at: number;
}

export interface PowerSgdPlan {
  rank: number;
  /** How the factors (every Pᵀ and Qᵀ, not the fp32 tensors' sums) travel, both ways (roundSegments); absent = fp32. */
  factors?: FactorCodec;
  /** Floats in the flat parameter vector. */
  total: number;
  matrices: LowRankMatrix[];
  dense: DenseTensor[];
  /** Floats of round 1's vector (every Pᵀ, then every fp32 tensor) and of round 2's (every Qᵀ). */
  round1Floats: number;
  round2Floats: number;
}

/**
 * A kernel is worth factoring when its factors are under half its floats (PyTorch's default
 * min_compression_rate of 2): below that, the two extra round trips and the power iteration's
 * error buy too little. It also implies rank < min(rows, cols) / 2.
 */
const MIN_COMPRESSION = 2;

/** The plan of a run: every replica derives the same one from the model's layout and the rank. */
export function powerSgdPlan(params: ParamInfo[], total: number, rank: number, factors: FactorCodec = 'fp32'): PowerSgdPlan {
  if (!Number.isSafeInteger(rank) || rank < 1) throw new Error(`PowerSGD rank must be a positive integer, got ${rank}`);
  const matrices: LowRankMatrix[] = [];
  const kept: number[] = [];
  let pAt = 0, qAt = 0;
  params.forEach((p, param) => {
    const cols = p.shape[p.shape.length - 1];
    const rows = p.size / cols;
    if (p.role !== 'kernel' || p.shape.length < 2 || MIN_COMPRESSION * rank * (rows + cols) >= rows * cols) { kept.push(param); return; }
    matrices.push({ param, offset: p.offset, rows, cols, pAt, qAt });
    pAt += rank * rows;
    qAt += rank * cols;
  });
  let at = pAt;
  const dense = kept.map((param) => {
    const d = { param, offset: params[param].offset, count: params[param].size, at };
    at += d.count;
    return d;
  });
  return { rank, ...(factors === 'fp32' ? {} : { factors }), total, matrices, dense, round1Floats: at, round2Floats: qAt };
}

/** Bodies per worker per step, in bytes: what goes up and comes down in each round. */
export function powerSgdBytes(plan: PowerSgdPlan): { round1: number; round2: number; perStep: number } {
  const f = plan.factors === 'fp16' ? 2 : 4;
  const pFloats = plan.dense.length ? plan.dense[0].at : plan.round1Floats;
  const round1 = f * pFloats + 4 * (plan.round1Floats - pFloats), round2 = f * plan.round2Floats;
  return { round1, round2, perStep: round1 + round2 };
}

// ---- the update, bit for bit on every replica ----

/**
 * w ← w − lr/batch · P̂ Qᵀ for one matrix, on the flat weights: for each weight,
 * d = Σ_k P̂[k][i] · Q[k][j] summed in double in k order from the k = 0 product, then
 * w = fround(w − (lr/batch) · d), rounded once. The plain loop; the kernel is the same bits.
 */
export function applyLowRank(w: Float32Array, m: LowRankMatrix, rank: number, pHat: Float32Array, q: Float32Array, lr: number, batch: number): void {
  const { offset, rows, cols, pAt, qAt } = m;
  const scale = lr / batch;
  const d = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const p0 = pHat[pAt + i];
    for (let j = 0; j < cols; j++) d[j] = p0 * q[qAt + j];
    for (let k = 1; k < rank; k++) {
      const pk = pHat[pAt + k * rows + i], qk = qAt + k * cols;
      for (let j = 0; j < cols; j++) d[j] += pk * q[qk + j];
    }
    const row = offset + i * cols;
    for (let j = 0; j < cols; j++) w[row + j] -= scale * d[j];
  }
}

/**
 * A step's whole update on the flat weights: the fp32 tensors by plain SGD on their summed
 * gradient (sgdStep's arithmetic), every matrix by its low-rank product. `round1` is the round-1
 * broadcast (P̂ and the fp32 sums), `round2` the round-2 broadcast (Q). Runs the SIMD kernel where
 * WebAssembly SIMD exists, the plain loop elsewhere: the same bits either way.
 */
export function applyPowerSgd(plan: PowerSgdPlan, w: Float32Array, round1: Float32Array, round2: Float32Array, lr: number, batch: number, kernel: LowRankKernel | null = LowRankKernel.shared(plan)): void {
  checkLength('round-2 broadcast', round2, plan.round2Floats);
  applyPart(plan, w, { dense: plan.dense, matrices: plan.matrices }, round1, round2, lr, batch, kernel);
}

/** Tensors of a step's update: the fp32 ones and the matrices, each updated on its own. */
export interface UpdatePart {
  dense: readonly DenseTensor[];
  matrices: readonly LowRankMatrix[];
}

/**
 * Part of a step's update (applyPowerSgd's arithmetic on those tensors: every element gets the
 * same operations, so applying a step in parts gives the bits of applying it whole). `round2` need
 * only hold the Qᵀ of the part's matrices.
 */
export function applyPart(plan: PowerSgdPlan, w: Float32Array, part: UpdatePart, round1: Float32Array, round2: Float32Array, lr: number, batch: number, kernel: LowRankKernel | null = LowRankKernel.shared(plan)): void {
  // Weights in a kernel's own memory are updated there in place (`withWeights`).
  checkLength('weights', w, plan.total);
  checkLength('round-1 broadcast', round1, plan.round1Floats);
  const scale = lr / batch;
  for (const t of part.dense) for (let j = 0; j < t.count; j++) w[t.offset + j] -= scale * round1[t.at + j];
  for (const m of part.matrices) {
    if (kernel) kernel.apply(w, m, round1, round2, lr, batch);
    else applyLowRank(w, m, plan.rank, round1, round2, lr, batch);
  }
}

/**
 * Which parts of a step's update have arrived, as its round-2 broadcast comes in slice by slice
 * (the coordinator sends it matrix by matrix): the fp32 tensors with the first slice (their sums
 * came in round 1), each matrix once its Qᵀ is whole. A worker applies each part as it is due, so
 * the apply overlaps the rest of the broadcast instead of following it.
 */
export class ArrivingUpdate {
  private applied = 0;
  private started = false;
  /** `version`: the weights version this update makes. */
  constructor(private readonly plan: PowerSgdPlan, readonly version: number) {}

  /** The part that `received` floats of round 2 complete, not handed out before. */
  due(received: number): UpdatePart {
    const dense = this.started ? [] : this.plan.dense;
    this.started = true;
    const from = this.applied;
    const { matrices, rank } = this.plan;
    while (this.applied < matrices.length && matrices[this.applied].qAt + rank * matrices[this.applied].cols <= received) this.applied++;
    return { dense, matrices: matrices.slice(from, this.applied) };
  }

  /** True once every part was handed out. */
  get done(): boolean { return this.started && this.applied === this.plan.matrices.length; }
}

/**
 * applyLowRank as a WebAssembly SIMD kernel (kernels.wat, lowRankApply). Both factors go in
 * promoted to f64 (exact), so the kernel's inner loop does no conversions: the matrix's Qᵀ whole
 * (rank · cols, small), P̂ a block of rows at a time. Weights that live in the kernel's own memory
 * (`LowRankKernel.withWeights`: the coordinator's, a worker's replica) are updated in place; any
 * other array passes through in blocks small enough to stay in the CPU's cache between the copy
 * and the kernel.
 */
export class LowRankKernel {
  private static cache: { plan: PowerSgdPlan; kernel: LowRankKernel | null } | null = null;
  private readonly k: Kernels;
  private readonly f32: Float32Array;
  private readonly f64: Float64Array;
  /** Byte offsets in the kernel's memory: Qᵀ (f64), a block's P̂ᵀ (f64), a block of weights (f32), the owned weights (f32). */
  private readonly pAt: number;
  private readonly wAt: number;
  private readonly ownAt: number;
  /** The weights this kernel updates in place (withWeights), or null. */
  readonly weights: Float32Array | null;

  /** The kernel for `plan` (one per process or page, rebuilt when the plan changes); null without SIMD. */
  static shared(plan: PowerSgdPlan): LowRankKernel | null {
    if (LowRankKernel.cache?.plan !== plan) LowRankKernel.cache = { plan, kernel: simdAvailable() ? new LowRankKernel(plan, false) : null };
    return LowRankKernel.cache.kernel;
  }

  /** A kernel of one's own whose memory also holds a weights vector (`weights`), updated in place; null without SIMD. */
  static withWeights(plan: PowerSgdPlan): LowRankKernel | null {
    return simdAvailable() ? new LowRankKernel(plan, true) : null;
  }

  private constructor(private readonly plan: PowerSgdPlan, own: boolean) {
    const maxCols = Math.max(1, ...plan.matrices.map((m) => m.cols));
    this.pAt = align16(8 * plan.rank * maxCols);
    this.wAt = this.pAt + align16(8 * plan.rank * Math.max(1, ...plan.matrices.map((m) => blockRows(m.cols))));
    this.ownAt = align16(this.wAt + 4 * Math.max(BLOCK_FLOATS, maxCols));
    const bytes = this.ownAt + (own ? 4 * plan.total : 0);
    const mem = kernelMemory(bytes);
    const k = instantiateKernels(mem);
    if (!k) throw new Error('WebAssembly SIMD is not available here');
    this.k = k;
    this.f32 = new Float32Array(mem.buffer, 0, bytes >> 2);
    this.f64 = new Float64Array(mem.buffer, 0, this.wAt >> 3);
    this.weights = own ? new Float32Array(mem.buffer, this.ownAt, plan.total) : null;
  }

  apply(w: Float32Array, m: LowRankMatrix, pHat: Float32Array, q: Float32Array, lr: number, batch: number): void {
    const { rank } = this.plan;
    const { offset, rows, cols, pAt, qAt } = m;
    const nb = blockRows(cols);
    const wf = this.wAt >> 2, pf = this.pAt >> 3;
    const inPlace = w === this.weights;
    this.f64.set(q.subarray(qAt, qAt + rank * cols), 0);
    for (let i0 = 0; i0 < rows; i0 += nb) {
      const n = Math.min(nb, rows - i0);
      for (let k = 0; k < rank; k++) this.f64.set(pHat.subarray(pAt + k * rows + i0, pAt + k * rows + i0 + n), pf + k * nb);
      const from = offset + i0 * cols, to = from + n * cols;
      if (inPlace) {
        this.k.lowRankApply(this.ownAt + 4 * from, n, cols, this.pAt, 8 * nb, 0, rank, lr / batch);
        continue;
      }
      this.f32.set(w.subarray(from, to), wf);
      this.k.lowRankApply(this.wAt, n, cols, this.pAt, 8 * nb, 0, rank, lr / batch);
      w.set(this.f32.subarray(wf, wf + n * cols), from);
    }
  }
}

/** Weights per block through the kernel: 256 KiB, which stays in L2 between copy and kernel. */
const BLOCK_FLOATS = 65536;
const blockRows = (cols: number) => Math.max(1, Math.floor(BLOCK_FLOATS / cols));
const align16 = (n: number) => (n + 15) & ~15;

/** Throws unless `v` has the `n` floats the plan gives it. */
export function checkLength(what: string, v: Float32Array, n: number): void {
  if (v.length !== n) throw new Error(`PowerSGD: ${what} has ${v.length} floats, the plan needs ${n}`);
}

// ---- a worker's working copy of the weights ----
//
// A worker applies each update to the weights on its own device (client/src/device-update.ts),
// in the backend's fp32: they drift from the coordinator's by rounding. Its exact copy, updated
// with the kernel above in a thread of its own, replaces them every K versions.

/**
 * Versions between refreshes (worker --refresh-every, the page's ?refresh=). The drift is a few
 * fp32 roundings of the weights per step (measured: ≤ 3e-8 over 50 steps of alexnet-tiny); a
 * refresh reads the weights back and uploads them, at AlexNet size 2 × 187 MB, ~30 ms over PCIe 3:
 * 0.6 ms a step over 50.
 */
export const DEFAULT_REFRESH_EVERY = 50;

/** The largest |working − exact|: a worker's drift (client/src/device-update.ts measures it on the backend; this is the reference). */
export function maxDrift(working: Float32Array, exact: Float32Array): number {
  checkLength('working weights', working, exact.length);
  let m = 0;
  for (let i = 0; i < working.length; i++) { const d = Math.abs(working[i] - exact[i]); if (d > m) m = d; }
  return m;
}
