// Fast weight upload and gradient readback for tfjs's webgpu backend (Dawn in Node, or a browser).
// No Node-only imports: the page may install it too.
//
// tfjs's own paths cost, per step, for AlexNet's 187 MB (measured on llvmpipe, docs/GPU.md):
//   readback: one `data()` per variable = a fresh staging buffer + submit + map each, then an
//             ArrayBuffer copy (`slice(0)`), then our copy into the flat vector: ~230 ms.
//   upload:   `tf.tensor(flat.slice())` + assign: a JS copy, then at first use a NEW mapped staging
//             buffer per variable (not pooled) and a second copy: ~200 MB of fresh allocations.
// Here instead:
//   readback: ONE command encoder copies every gradient into persistent MAP_READ staging buffers,
//             one submit, all maps in flight together, then one copy per variable straight from the
//             mapped range into its slice of `out` (in layout order: slices land while later maps
//             are still pending).
//   upload:   `queue.writeBuffer` into each variable's resident GPU buffer: one write per variable,
//             no allocation, the weights stay on the GPU.
// Both lean on tfjs-backend-webgpu 4.22 internals (tensorMap, commandEncoder, submitQueue) and
// fall back to the plain path for any tensor they cannot handle.
import * as tf from '@tensorflow/tfjs-core';
import type { ParamInfo } from '@tabtrain/shared';
import { Net, type TensorIO } from '@tabtrain/shared/net';

interface TensorData { resource: unknown; values: unknown; refCount: number; dtype: string }
interface WebGPUBackendInternals {
  device: GPUDevice;
  queue: GPUQueue;
  tensorMap: { get(dataId: object): TensorData | undefined };
  commandEncoder: GPUCommandEncoder | null;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

function internals(): WebGPUBackendInternals | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const be = tf.backend() as unknown as Partial<WebGPUBackendInternals>;
  const ok = be.device && be.queue && be.tensorMap && typeof be.ensureCommandEncoderReady === 'function' &&
    typeof be.endComputePassEncoder === 'function' && typeof be.submitQueue === 'function';
  return ok ? (be as WebGPUBackendInternals) : null;
}

const isBuffer = (r: unknown): r is GPUBuffer => typeof GPUBuffer !== 'undefined' && r instanceof GPUBuffer;

/** The staging buffers, one per parameter, kept across steps (the model's size in host-visible memory). */
class Staging {
  private bufs: (GPUBuffer | null)[] = [];
  private device: GPUDevice | null = null;
  get(device: GPUDevice, i: number, bytes: number): GPUBuffer {
    if (this.device !== device) { this.destroy(); this.device = device; }
    let b = this.bufs[i];
    if (!b || b.size !== bytes) {
      b?.destroy();
      b = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: `tabtrain-grad-staging-${i}` });
      this.bufs[i] = b;
    }
    return b;
  }
  destroy(): void {
    for (const b of this.bufs) b?.destroy();
    this.bufs = [];
  }
}

/** A TensorIO for the webgpu backend; other backends (and odd tensors) go through the default. */
export function webgpuTensorIO(fallback: TensorIO = Net.io): TensorIO {
  const staging = new Staging();
  return {
    async read(ts: tf.Tensor[], params: ParamInfo[], out: Float32Array): Promise<void> {
      const be = internals();
      if (!be) return fallback.read(ts, params, out);
      // Which gradients live in a GPU buffer (all of them, in practice); the rest are read the plain way.
      const data = ts.map((t) => be.tensorMap.get(t.dataId));
      const onGpu = data.map((d, i) => !!d && isBuffer(d.resource) && d.dtype === 'float32' && ts[i].size === params[i].size);
      be.ensureCommandEncoderReady();
      be.endComputePassEncoder();
      const enc = be.commandEncoder!;
      const stg: (GPUBuffer | null)[] = params.map((p, i) => {
        if (!onGpu[i]) return null;
        const s = staging.get(be.device, i, p.size * 4);
        enc.copyBufferToBuffer(data[i]!.resource as GPUBuffer, 0, s, 0, p.size * 4);
        return s;
      });
      be.submitQueue(); // the queued forward/backward kernels and every copy, in one submit
      const maps = stg.map((s) => s?.mapAsync(GPUMapMode.READ));
      const plain = ts.map((t, i) => (onGpu[i] ? null : t.data()));
      for (let i = 0; i < params.length; i++) {
        const s = stg[i];
        if (s) {
          await maps[i];
          out.set(new Float32Array(s.getMappedRange(0, params[i].size * 4)), params[i].offset);
          s.unmap();
        } else {
          out.set((await plain[i]!) as Float32Array, params[i].offset);
        }
      }
    },

    write(vars: tf.Variable[], params: ParamInfo[], flat: Float32Array): boolean[] {
      const be = internals();
      if (!be) return vars.map(() => false);
      // Kernels still queued in tfjs's encoder may read these weights: submit them first, so
      // that the writes (ordered at the queue) land after them.
      if (be.commandEncoder) { be.endComputePassEncoder(); be.submitQueue(); }
      return vars.map((v, i) => {
        const d = be.tensorMap.get(v.dataId);
        // Only a buffer this variable owns alone (refCount 1) may be overwritten in place.
        if (!d || !isBuffer(d.resource) || d.refCount !== 1 || d.dtype !== 'float32' || d.values != null) return false;
        const p = params[i];
        be.queue.writeBuffer(d.resource, 0, flat.buffer, flat.byteOffset + p.offset * 4, p.size * 4);
        return true;
      });
    },

    dispose(): void { staging.destroy(); },
  };
}
