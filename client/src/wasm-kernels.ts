// Convolution gradients for the tfjs wasm backend (4.22).
//
// - wasm has no Conv2DBackpropFilter kernel, so tf.grad through conv2d throws. We add one.
// - wasm's Conv2DBackpropInput is a naive C loop (most of an AlexNet step). For stride 1 we
//   replace it with one XNNPACK Conv2D.
//
// Both are built from kernels wasm already has (Transpose, Slice, Conv2D) and one flip on the heap, called
// directly so that no intermediate becomes a tracked tf.Tensor. We don't use wasm's
// Conv3DBackpropFilterV2: it is wrong for strides > 1.
//
// The step's other slow kernels (BatchMatMul with a transpose, MaxPoolGrad) are in
// wasm-step-kernels.ts, registered from here too.
//
// Call registerWasmKernels() after importing '@tensorflow/tfjs-backend-wasm' and before
// tf.setBackend('wasm') (or any time after; both work).
import * as tf from '@tensorflow/tfjs-core';
import { flippedFilter, registerWasmStepKernels } from './wasm-step-kernels';
import { installWasmTrainStep } from './wasm-train-step';
import type {
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  KernelBackend,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  TensorInfo,
} from '@tensorflow/tfjs-core';

type Pad4 = [[number, number], [number, number], [number, number], [number, number]];

let registered = false;

/** Registers the wasm convolution gradient kernels. Safe to call more than once. */
export function registerWasmKernels(): void {
  if (registered) return;
  const conv2d = wasmKernel('Conv2D');
  const transpose = wasmKernel('Transpose');
  const slice = wasmKernel('Slice');
  const original = tf.getKernel(tf.Conv2DBackpropInput, 'wasm');
  if (!original) throw new Error('wasm Conv2DBackpropInput kernel missing');

  // Runs a wasm kernel and returns its raw TensorInfo (the caller disposes it).
  const run = (fn: KernelFunc, backend: KernelBackend, inputs: Record<string, TensorInfo>, attrs: object): TensorInfo =>
    fn({ inputs, backend, attrs: attrs as unknown as NamedAttrMap }) as TensorInfo;
  const free = (backend: KernelBackend, ...infos: TensorInfo[]) => {
    for (const info of infos) backend.disposeData(info.dataId);
  };

  // dW[kh,kw,ci,co] = sum_{n,oh,ow} x[n, oh*s+kh-padTop, ow*s+kw-padLeft, ci] * dy[n,oh,ow,co]
  // is a convolution of x^T [ci,H,W,n] (batch ci, channels n) by dy^T [oh,ow,n,co] (an oh x ow
  // filter) with dilation s and stride 1: output [ci, H', W', co], whose first kh x kw positions
  // are dW. Gradients of conv2d never have dilations > 1 (tfjs asserts it), so the attrs carry none.
  const backpropFilter: KernelFunc = ({ inputs, backend: b, attrs }) => {
    const backend = b as KernelBackend;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
    if (dataFormat !== 'NHWC') throw new Error(`wasm Conv2DBackpropFilter supports only NHWC, got ${dataFormat}`);
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode);
    const [, inH, inW] = x.shape;
    const [kh, kw] = filterShape;
    // dy's own shape, not info.outHeight: the gradient passes no dimRoundingMode.
    const [, outH, outW] = dy.shape;
    const { strideHeight: sh, strideWidth: sw, padInfo } = info;
    // Pad the bottom/right just enough that the last output row/col sees real or zero input.
    // With 'floor' rounding that may be less than the forward pad (the rest is never read);
    // with 'ceil' it may be more (the forward conv read zeros past the edge).
    const padBottom = Math.max(0, (outH - 1) * sh + kh - inH - padInfo.top);
    const padRight = Math.max(0, (outW - 1) * sw + kw - inW - padInfo.left);
    const paddings: Pad4 = [[0, 0], [padInfo.top, padBottom], [padInfo.left, padRight], [0, 0]];

    const xT = run(transpose, backend, { x }, { perm: [3, 1, 2, 0] });
    const dyT = run(transpose, backend, { x: dy }, { perm: [1, 2, 0, 3] });
    const full = run(conv2d, backend, { x: xT, filter: dyT }, {
      strides: [1, 1], dilations: [sh, sw], pad: paddings, dataFormat: 'NHWC',
    });
    free(backend, xT, dyT);
    let cropped = full;
    if (full.shape[1] !== kh || full.shape[2] !== kw) {
      cropped = run(slice, backend, { x: full }, { begin: [0, 0, 0, 0], size: [full.shape[0], kh, kw, full.shape[3]] });
      free(backend, full);
    }
    const dW = run(transpose, backend, { x: cropped }, { perm: [1, 2, 0, 3] });
    free(backend, cropped);
    return dW;
  };

  // For stride 1, dx = conv2d(dy, W') with W' = W flipped in both spatial axes and transposed to
  // [kh,kw,co,ci], padded top kh-1-padTop and bottom H-oh+padTop (same for width). Other strides,
  // and forward pads larger than the kernel (negative pads here), go to the original kernel.
  const backpropInput: KernelFunc = (args) => {
    const { inputs, attrs } = args;
    const backend = args.backend as KernelBackend;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as Conv2DBackpropInputAttrs;
    if (dataFormat !== 'NHWC') return original.kernelFunc(args);
    const info = tf.backend_util.computeConv2DInfo(
      inputShape, filter.shape as [number, number, number, number], strides, 1, pad, dimRoundingMode);
    const [kh, kw] = filter.shape;
    const [, outH, outW] = dy.shape;
    const { strideHeight, strideWidth, inHeight, inWidth, padInfo } = info;
    const paddings: Pad4 = [
      [0, 0],
      [kh - 1 - padInfo.top, inHeight - outH + padInfo.top],
      [kw - 1 - padInfo.left, inWidth - outW + padInfo.left],
      [0, 0],
    ];
    if (strideHeight !== 1 || strideWidth !== 1 || paddings.flat().some((p) => p < 0)) {
      return original.kernelFunc(args);
    }
    const wT = flippedFilter(backend, filter);
    const dx = run(conv2d, backend, { x: dy, filter: wT }, {
      strides: [1, 1], dilations: [1, 1], pad: paddings, dataFormat: 'NHWC',
    });
    free(backend, wT);
    return dx;
  };

  tf.registerKernel({ kernelName: tf.Conv2DBackpropFilter, backendName: 'wasm', kernelFunc: backpropFilter });
  tf.unregisterKernel(tf.Conv2DBackpropInput, 'wasm');
  // Keep the original setupFunc: it binds the C function that the stride > 1 fallback calls, and
  // tf.setBackend only runs setupFuncs of kernels registered at that moment.
  const replacement: KernelConfig = { ...original, kernelFunc: backpropInput };
  tf.registerKernel(replacement);
  registerWasmStepKernels();
  installWasmTrainStep();
  registered = true;
}

function wasmKernel(name: string): KernelFunc {
  const kernel = tf.getKernel(name, 'wasm');
  if (!kernel) throw new Error(`wasm kernel ${name} is not registered: import '@tensorflow/tfjs-backend-wasm' first`);
  return kernel.kernelFunc;
}
