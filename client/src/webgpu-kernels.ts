// A faster Conv2DBackpropFilter (the weight gradient of a convolution) for tfjs's webgpu backend.
// No Node-only imports: the page may install it too.
//
// tfjs-backend-webgpu 4.22 computes it with one thread per filter element, each looping over the
// whole batch and image (Conv2DDerFilterProgram). For VGG's first layer that is 144 threads each
// summing 64·224·224 products; on llvmpipe it is 3–8× slower than the forward conv of the same
// layer (docs/GPU.md), and on a GPU those few long threads leave almost every core idle.
//
// Here it is a tiled matrix product, split along the reduction:
//   dW[(kh,kw,ci), co] = Σ_k A[(kh,kw,ci), k] · B[k, co],  k = (n, oh, ow),
//   A = the padded input read in place (implicit im2col, nothing materialised), B = dy.
// 32×32 output tiles, 4×4 per thread, 32-deep K tiles through workgroup memory; the K range is cut
// into S slices (one per workgroup z) so that small filters still fill the GPU; S partial sums
// [S, M, N] are then reduced by tfjs's own Sum kernel. Same products as the naive kernel, summed in
// another order: results agree with the cpu backend to fp32 rounding (tests/integration/dawn.test.ts).
import * as tf from '@tensorflow/tfjs-core';

const TILE = 32; // output tile (M and N) and K tile
const PER_THREAD = 4; // 8×8 threads × 4×4 outputs each = 32×32
/** About this many workgroups per dispatch fill a large GPU (132 SMs × several resident groups). */
const TARGET_WORKGROUPS = 2048;

type Attrs = { strides: number | [number, number]; pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding; dataFormat: 'NHWC' | 'NCHW'; dimRoundingMode?: 'floor' | 'round' | 'ceil'; filterShape: [number, number, number, number] };
interface TensorInfo { dataId: object; shape: number[]; dtype: string }
interface WebGPUBackendLike {
  runWebGPUProgram(program: object, inputs: TensorInfo[], outputDtype: string, uniforms?: { type: string; data: number[] }[]): TensorInfo;
  disposeData(dataId: object): void;
}

class Conv2DDerFilterSplitKProgram {
  variableNames = ['x', 'dy'];
  uniforms = 'pads : vec2<i32>, strides : vec2<i32>, filterDims : vec2<i32>, kPerSplit : i32, numTiles : i32, dimInner : i32, dimM : i32, dimN : i32,';
  workgroupSize: [number, number, number] = [TILE / PER_THREAD, TILE / PER_THREAD, 1];
  outputShape: number[];
  dispatchLayout = { x: [2], y: [1], z: [0] };
  dispatch: [number, number, number];
  shaderKey = 'tabtrainConv2DDerFilterSplitK';

  constructor(splits: number, m: number, n: number) {
    this.outputShape = [splits, m, n];
    this.dispatch = [Math.ceil(n / TILE), Math.ceil(m / TILE), splits];
  }

  getUserCode(): string {
    const P = PER_THREAD;
    return `
      var<workgroup> subA : array<array<f32, ${TILE}>, ${TILE}>;
      var<workgroup> subB : array<array<f32, ${TILE}>, ${TILE}>;

      // B[k, n] = dy[b, yR, yC, n]: dy is [batch, outH, outW, outC], so row k starts at k * outC.
      fn readB(k : i32, n : i32, kEnd : i32) -> f32 {
        if (n >= uniforms.dimN || k >= kEnd) { return 0.0; }
        return dy[k * uniforms.dimN + n];
      }

      fn main() {
        let split = i32(globalId.z);
        var kStart = split * uniforms.kPerSplit;
        let kEnd = min(uniforms.dimInner, kStart + uniforms.kPerSplit);
        let tileRow = i32(localId.y) * ${P};
        let tileCol = i32(localId.x) * ${P};
        let rowStart = i32(workgroupId.y) * ${TILE};
        let colStart = i32(workgroupId.x) * ${TILE};

        // A[m, k] is the input pixel that filter element m = (wR, wC, d1) meets at output position
        // k = (b, yR, yC). The ${P} rows m this thread loads never change: split them once.
        let ci = uniforms.xShape[3];
        let inH = uniforms.xShape[1];
        let inW = uniforms.xShape[2];
        var mR : array<i32, ${P}>;
        var mC : array<i32, ${P}>;
        var mD : array<i32, ${P}>;
        var mOk : array<bool, ${P}>;
        for (var i = 0; i < ${P}; i++) {
          let m = rowStart + tileRow + i;
          mOk[i] = m < uniforms.dimM;
          mD[i] = m % ci;
          let t = m / ci;
          mC[i] = t % uniforms.filterDims[1] - uniforms.pads[1];
          mR[i] = t / uniforms.filterDims[1] - uniforms.pads[0];
        }

        var acc : array<array<f32, ${P}>, ${P}>;
        for (var i = 0; i < ${P}; i++) {
          for (var j = 0; j < ${P}; j++) { acc[i][j] = 0.0; }
        }

        // uniforms.numTiles: a uniform loop bound, as workgroupBarrier() requires.
        for (var t = 0; t < uniforms.numTiles; t++) {
          for (var j = 0; j < ${P}; j++) {
            // Column k of the A tile: split k once for the ${P} rows.
            let k = kStart + tileCol + j;
            let yC = k % uniforms.dyShape[2];
            let t2 = k / uniforms.dyShape[2];
            let yR = t2 % uniforms.dyShape[1];
            let b = t2 / uniforms.dyShape[1];
            let r0 = yR * uniforms.strides[0];
            let c0 = yC * uniforms.strides[1];
            for (var i = 0; i < ${P}; i++) {
              let xR = mR[i] + r0;
              let xC = mC[i] + c0;
              var v = 0.0;
              if (k < kEnd && mOk[i] && xR >= 0 && xR < inH && xC >= 0 && xC < inW) {
                v = x[((b * inH + xR) * inW + xC) * ci + mD[i]];
              }
              subA[tileRow + i][tileCol + j] = v;
              subB[tileRow + j][tileCol + i] = readB(kStart + tileRow + j, colStart + tileCol + i, kEnd);
            }
          }
          workgroupBarrier();
          for (var k = 0; k < ${TILE}; k++) {
            var bCached : array<f32, ${P}>;
            for (var j = 0; j < ${P}; j++) { bCached[j] = subB[k][tileCol + j]; }
            for (var i = 0; i < ${P}; i++) {
              let a = subA[tileRow + i][k];
              for (var j = 0; j < ${P}; j++) { acc[i][j] = fma(a, bCached[j], acc[i][j]); }
            }
          }
          workgroupBarrier();
          kStart = kStart + ${TILE};
        }

        for (var i = 0; i < ${P}; i++) {
          let row = rowStart + tileRow + i;
          for (var j = 0; j < ${P}; j++) {
            let col = colStart + tileCol + j;
            if (row < uniforms.dimM && col < uniforms.dimN) {
              result[(split * uniforms.dimM + row) * uniforms.dimN + col] = acc[i][j];
            }
          }
        }
      }
    `;
  }
}

/** How many K slices: enough workgroups to fill the GPU, each slice at least a few K tiles long. */
export function splitsFor(m: number, n: number, k: number): number {
  const tiles = Math.ceil(m / TILE) * Math.ceil(n / TILE);
  const maxSplits = Math.max(1, Math.floor(k / (4 * TILE)));
  return Math.min(maxSplits, Math.max(1, Math.ceil(TARGET_WORKGROUPS / tiles)), 65535);
}

let installed = false;
let originalConfig: tf.KernelConfig | null = null;

/** Which Conv2DBackpropInput tfjs-backend-webgpu runs: its matmul-based kernel or its naive default. */
export type InputGradient = 'mm' | 'naive';

/** Chooses tfjs's input-gradient kernel (a flag it reads at every call). */
export function useInputGradient(which: InputGradient): void {
  tf.env().set('WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE', which === 'naive');
}

/** Whether the split-K Conv2DBackpropFilter is the registered one. */
export const splitKInstalled = (): boolean => installed;

/** Puts tfjs's own kernel back (A/B measurements). */
export function restoreWebGPUKernels(): void {
  if (!installed || !originalConfig) return;
  tf.unregisterKernel('Conv2DBackpropFilter', 'webgpu');
  tf.registerKernel(originalConfig);
  installed = false;
}

/**
 * Replaces webgpu's Conv2DBackpropFilter with the split-K tiled version (NHWC; anything else goes
 * to the original kernel). Idempotent. Returns false if the webgpu kernel is not registered.
 */
export function registerWebGPUKernels(): boolean {
  if (installed) return true;
  const original = tf.getKernel('Conv2DBackpropFilter', 'webgpu');
  if (!original) return false;
  originalConfig = original;
  const sumKernel = tf.getKernel('Sum', 'webgpu');
  const reshapeKernel = tf.getKernel('Reshape', 'webgpu');
  if (!sumKernel || !reshapeKernel) return false;
  tf.unregisterKernel('Conv2DBackpropFilter', 'webgpu');
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'webgpu',
    kernelFunc: (args) => {
      const { inputs, backend, attrs } = args as unknown as { inputs: { x: TensorInfo; dy: TensorInfo }; backend: WebGPUBackendLike; attrs: Attrs };
      if (attrs.dataFormat === 'NCHW') return original.kernelFunc(args);
      const { x, dy } = inputs;
      const info = tf.backend_util.computeConv2DInfo(
        x.shape as [number, number, number, number], attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
      const m = info.filterHeight * info.filterWidth * info.inChannels;
      const n = info.outChannels;
      const k = info.batchSize * info.outHeight * info.outWidth;
      const splits = splitsFor(m, n, k);
      const kPerSplit = Math.ceil(Math.ceil(k / splits) / TILE) * TILE;
      const s = Math.ceil(k / kPerSplit);
      const program = new Conv2DDerFilterSplitKProgram(s, m, n);
      const partial = backend.runWebGPUProgram(program, [x, dy], 'float32', [
        { type: 'int32', data: [info.padInfo.top, info.padInfo.left] },
        { type: 'int32', data: [info.strideHeight, info.strideWidth] },
        { type: 'int32', data: [info.filterHeight, info.filterWidth] },
        { type: 'int32', data: [kPerSplit] },
        { type: 'int32', data: [kPerSplit / TILE] },
        { type: 'int32', data: [k] },
        { type: 'int32', data: [m] },
        { type: 'int32', data: [n] },
      ]);
      const summed = s > 1
        ? sumKernel.kernelFunc({ inputs: { x: partial } as never, backend: backend as never, attrs: { axis: [0], keepDims: false } as never }) as TensorInfo
        : partial;
      const out = reshapeKernel.kernelFunc({ inputs: { x: summed } as never, backend: backend as never, attrs: { shape: attrs.filterShape } as never }) as TensorInfo;
      if (summed !== partial) backend.disposeData(partial.dataId);
      backend.disposeData(summed.dataId);
      return out as never;
    },
  });
  installed = true;
  return true;
}
