// The page the kernel test and the SwiftShader kernel benchmark open: tfjs on the browser's WebGPU
// adapter and the cpu backend, nothing else of tabtrain's page. Bundled by kernel-page-server.ts.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-webgpu';
import { modelLayers } from '../../bench/gpu/layers';
import { timeLayer } from '../../bench/gpu/layer-timing';
import { checkKernels, kernelCases } from './kernel-check';

const kit = {
  /** Starts webgpu; resolves to the adapter's info (SwiftShader's is a fallback adapter). */
  ready: (async () => {
    tf.env().set('PROD', true);
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs could not start webgpu in this browser');
    const info = (tf.backend() as unknown as { adapterInfo?: { vendor?: string; architecture?: string; description?: string } }).adapterInfo;
    return { vendor: info?.vendor ?? '', architecture: info?.architecture ?? '', description: info?.description ?? '' };
  })(),
  modelLayers, timeLayer, checkKernels, kernelCases,
};
(globalThis as unknown as { kit: typeof kit }).kit = kit;
export type KernelPageKit = typeof kit;
