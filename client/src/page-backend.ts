// Backend setup for the browser page: webgpu → webgl → wasm → cpu, with the reason each one was
// passed over, the adapter the tab computes on, and WebGPU device-loss detection.
//
// A GPU API backed by software (WebGPU's fallback adapter, SwiftShader or llvmpipe behind WebGL) is
// passed over while WebAssembly works: it runs on the same CPU, far slower (alexnet-small: 1.9
// examples/s on SwiftShader against 230–520 on wasm). ?backend= still forces it.
//
// For WebGPU we create the adapter and device ourselves (as tfjs-backend-webgpu's own factory
// does) so that the page can show the adapter, watch `device.lost`, and after a loss register a
// fresh backend on a new device.
import * as tf from '@tensorflow/tfjs-core';
// Registers the webgl backend and its kernels (the union package that shared/net imports does
// too; this keeps the page's own dependency visible).
import '@tensorflow/tfjs-backend-webgl';
import '@tensorflow/tfjs-backend-cpu';
import { startWasmThreads, threadsShortfall } from './page-threads';

export type BackendName = 'webgpu' | 'webgl' | 'wasm' | 'cpu';
export const BACKEND_ORDER: readonly BackendName[] = ['webgpu', 'webgl', 'wasm', 'cpu'];

export const BACKEND_LABELS: Record<BackendName, string> = {
  webgpu: 'WebGPU',
  webgl: 'WebGL',
  wasm: 'WebAssembly (CPU)',
  cpu: 'plain JavaScript (CPU)',
};

export interface DeviceLoss { reason: string; message: string }

export interface BackendChoice {
  backend: BackendName;
  /** What the tab computes on; sent in the hello and shown on the page. */
  adapter: Record<string, unknown> | null;
  /** Backends tried before this one and why each was passed over, in order. */
  skipped: { backend: BackendName; why: string }[];
  /** 'ok': a GPU; 'warn': works, but slow or not what the user probably wanted. */
  level: 'ok' | 'warn';
  /** One paragraph for the page: which backend, and why. */
  notice: string;
  /** Settles when the WebGPU device is lost; never for other backends. */
  lost: Promise<DeviceLoss>;
}

/** A backend that cannot run here; `why` is shown to the user. */
class Unavailable extends Error {}

// ---- minimal WebGPU shapes (the page does not depend on a particular @webgpu/types) ----
interface GpuAdapterInfoLike { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number }
interface GpuDeviceLike {
  lost: Promise<{ reason: string; message: string }>;
  destroy(): void;
}
interface GpuAdapterLike {
  info?: GpuAdapterInfoLike;
  isFallbackAdapter?: boolean;
  features: Set<string>;
  limits: Record<string, number>;
  requestDevice(desc?: unknown): Promise<GpuDeviceLike>;
}
interface GpuLike { requestAdapter(opts?: unknown): Promise<GpuAdapterLike | null> }

let currentDevice: GpuDeviceLike | null = null;

const never = new Promise<DeviceLoss>(() => {});

/** Destroys the current WebGPU device, exactly as a driver reset would lose it (for tests). */
export function simulateDeviceLoss(): boolean {
  if (!currentDevice) return false;
  currentDevice.destroy();
  return true;
}

export interface SelectOptions {
  /** Try this backend first (?backend=). */
  forced?: string | null;
  /** Said before the notice (e.g. that the device was lost). */
  prefix?: string;
  /** A backend that has not started after this long is passed over. */
  timeoutMs?: number;
  /** Threads for the wasm backend (?threads=, checked by parseWasmThreads); tfjs's choice when absent. */
  threads?: number;
}

/** Picks the first backend that works, in BACKEND_ORDER (or `forced` first). */
export async function selectBackend(opts: SelectOptions = {}): Promise<BackendChoice> {
  const { forced = null, prefix = '', timeoutMs = 30_000, threads } = opts;
  const skipped: BackendChoice['skipped'] = [];
  let order = [...BACKEND_ORDER];
  if (forced) {
    if (!(BACKEND_ORDER as readonly string[]).includes(forced)) {
      skipped.push({ backend: forced as BackendName, why: `?backend=${forced} is not one of ${BACKEND_ORDER.join(', ')}` });
    } else {
      order = [forced as BackendName, ...order.filter((b) => b !== forced)];
    }
  }
  for (const backend of order) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Unavailable(`it did not start within ${timeoutMs / 1000} s`)), timeoutMs);
      });
      const { adapter, lost } = await Promise.race([init(backend, forced === backend, threads), timeout]);
      await Promise.race([smokeTest(backend), timeout]);
      return describe(backend, adapter, lost, skipped, forced, prefix);
    } catch (e) {
      // A backend whose start hangs (a wasm thread that fails to load never settles) must not
      // become the active backend later, under the one we pick next: remove it for good.
      if (tf.getBackend() !== backend && tf.findBackendFactory(backend) && !tf.findBackend(backend)) {
        try { tf.removeBackend(backend); } catch { /* already gone */ }
      }
      const why = e instanceof Unavailable ? e.message : `failed to start: ${(e as Error).message ?? e}`;
      skipped.push({ backend, why });
    } finally {
      clearTimeout(timer);
    }
  }
  throw new Error(`no TensorFlow.js backend works in this browser: ${skipped.map((s) => `${s.backend}: ${s.why}`).join('; ')}`);
}

async function init(backend: BackendName, forced: boolean, threads: number | undefined): Promise<{ adapter: Record<string, unknown> | null; lost: Promise<DeviceLoss> }> {
  switch (backend) {
    case 'webgpu': return initWebGPU(forced);
    case 'webgl': return initWebGL(forced);
    case 'wasm': return initWasm(threads);
    case 'cpu':
      if (!(await tf.setBackend('cpu'))) throw new Unavailable('the cpu backend did not start');
      return { adapter: null, lost: never };
  }
}

/** WebAssembly can run here: a software GPU adapter is then not worth taking. */
const wasmUsable = () => typeof WebAssembly === 'object' && typeof WebAssembly.instantiate === 'function';
const SOFTWARE_RENDERER = /SwiftShader|llvmpipe|softpipe|lavapipe|Software Rasterizer|Microsoft Basic Render/i;

async function initWebGPU(forced: boolean): Promise<{ adapter: Record<string, unknown>; lost: Promise<DeviceLoss> }> {
  const gpu = (navigator as unknown as { gpu?: GpuLike }).gpu;
  if (!window.isSecureContext) {
    throw new Unavailable(`this page is not a secure context (${location.protocol}//${location.host}); browsers offer WebGPU only over https:// or on localhost`);
  }
  if (!gpu) throw new Unavailable('this browser has no WebGPU (Chrome and Edge 113+ on desktop, Safari 26, and Firefox 141+ on Windows do)');
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Unavailable('the browser offers no WebGPU adapter (GPU blocklisted or disabled, or no driver)');
  const info: GpuAdapterInfoLike = adapter.info ?? {};
  const fallback = info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false;
  if (fallback && !forced && wasmUsable()) {
    throw new Unavailable(`its only adapter is a fallback (software) one${info.description || info.architecture ? ` (${info.description || info.architecture})` : ''}, which runs on this CPU far slower than WebAssembly; ?backend=webgpu forces it`);
  }
  const limits = adapter.limits;
  // The limits tfjs-backend-webgpu asks for: the adapter's own maxima.
  const device = await adapter.requestDevice({
    requiredFeatures: adapter.features.has('bgra8unorm-storage') ? ['bgra8unorm-storage'] : [],
    requiredLimits: {
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    },
  });
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  // Replace whatever 'webgpu' factory exists (tfjs's own, or ours from before a device loss);
  // removeBackend disposes the old backend instance and its buffers.
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device as never, info as never), 3);
  if (!(await tf.setBackend('webgpu'))) {
    device.destroy();
    throw new Unavailable('tfjs could not start its webgpu backend on this device');
  }
  currentDevice = device;
  const lost = device.lost.then((l) => {
    if (currentDevice === device) currentDevice = null;
    return { reason: l.reason ?? 'unknown', message: l.message ?? '' };
  });
  const isFallbackAdapter = info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? null;
  // The filter gradient as a split-K tiled matrix product (webgpu-kernels.ts), as the Dawn worker
  // does on a GPU: tfjs's own runs one thread per filter element and leaves a GPU's cores idle.
  // On a software adapter the CPU's few threads gain nothing from it.
  const query = new URLSearchParams(location.search);
  const kernels = query.get('kernels') ?? (isFallbackAdapter ? 'tfjs' : 'split-k');
  const webgpuKernels = await import('./webgpu-kernels');
  if (kernels === 'split-k') webgpuKernels.registerWebGPUKernels();
  // The input gradient: tfjs's matmul-based kernel on a GPU (it fills the cores; tfjs measured it
  // ~2× faster), its naive one on a software adapter: on SwiftShader the naive one was faster on 10
  // of AlexNet's and VGG's 11 layers, 4.6× summed (docs/BENCHMARKS.md §6). ?dx=mm|naive forces one.
  const inputGradient = query.get('dx') === 'mm' || query.get('dx') === 'naive' ? query.get('dx') as 'mm' | 'naive' : isFallbackAdapter ? 'naive' : 'mm';
  webgpuKernels.useInputGradient(inputGradient);
  return {
    adapter: {
      api: 'webgpu', vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '', description: info.description ?? '',
      isFallbackAdapter, kernels: kernels === 'split-k' ? 'split-k' : 'tfjs', inputGradient, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize, maxBufferSize: limits.maxBufferSize,
    },
    lost,
  };
}

async function initWebGL(forced: boolean): Promise<{ adapter: Record<string, unknown> | null; lost: Promise<DeviceLoss> }> {
  if (!tf.findBackendFactory('webgl')) throw new Unavailable('the webgl backend is not in this build');
  const renderer = webglRenderer();
  if (renderer && SOFTWARE_RENDERER.test(renderer) && !forced && wasmUsable()) {
    throw new Unavailable(`its renderer is software (${renderer}), which runs on this CPU far slower than WebAssembly; ?backend=webgl forces it`);
  }
  if (!(await tf.setBackend('webgl'))) throw new Unavailable('the browser gave no WebGL context (WebGL disabled or blocklisted)');
  // Gradients in 16-bit floats drift far from the other workers' fp32: refuse them.
  if (!tf.env().getBool('WEBGL_RENDER_FLOAT32_CAPABLE')) throw new Unavailable('this GPU renders only 16-bit float textures in WebGL, too imprecise for training');
  const adapter: Record<string, unknown> = { api: 'webgl', version: tf.env().getNumber('WEBGL_VERSION') };
  if (renderer) Object.assign(adapter, { vendor: webglVendor, renderer });
  return { adapter, lost: never };
}

let webglVendor = '';
/** The unmasked renderer's name ('' when the browser hides it), from a throwaway context. */
function webglRenderer(): string {
  try {
    const gl = document.createElement('canvas').getContext('webgl2') ?? document.createElement('canvas').getContext('webgl');
    const ext = gl?.getExtension('WEBGL_debug_renderer_info');
    const renderer = gl && ext ? String(gl.getParameter(ext.UNMASKED_RENDERER_WEBGL)) : '';
    if (gl && ext) webglVendor = String(gl.getParameter(ext.UNMASKED_VENDOR_WEBGL));
    gl?.getExtension('WEBGL_lose_context')?.loseContext();
    return renderer;
  } catch {
    return '';
  }
}

async function initWasm(threads: number | undefined): Promise<{ adapter: Record<string, unknown> | null; lost: Promise<DeviceLoss> }> {
  if (typeof WebAssembly !== 'object') throw new Unavailable('this browser has no WebAssembly');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const { WASM_PATHS } = await import('./page-wasm-paths');
  // tfjs uses threads when the page is cross-origin isolated (the coordinator sends COOP/COEP for
  // it), max(1, cores / 2) of them unless ?threads= says (page-threads.ts). The build keeps the
  // wasm glue unminified for them.
  try {
    wasm.setWasmPaths(WASM_PATHS);
  } catch { /* already set on an earlier attempt */ }
  const { registerWasmKernels } = await import('./wasm-kernels');
  registerWasmKernels();
  // The count is read when the backend starts: after a device loss, wasm keeps the first one.
  if (!(await startWasmThreads(wasm.setThreadsCount, threads, () => tf.setBackend('wasm')))) throw new Unavailable('the wasm backend did not start');
  return {
    adapter: {
      api: 'wasm', threads: wasm.getThreadsCount(), threadsAsked: threads ?? null, simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
      multithread: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'), crossOriginIsolated: globalThis.crossOriginIsolated === true,
    },
    lost: never,
  };
}

/** One tiny op end to end: a backend that registers but cannot compute is not a backend. */
async function smokeTest(backend: BackendName): Promise<void> {
  const t = tf.tidy(() => tf.sum(tf.mul(tf.tensor1d([1, 2, 3]), tf.tensor1d([4, 5, 6]))));
  try {
    const v = (await t.data())[0];
    if (v !== 32) throw new Unavailable(`a test computation on ${backend} gave ${v} instead of 32`);
  } finally {
    t.dispose();
  }
}

function describe(backend: BackendName, adapter: Record<string, unknown> | null, lost: Promise<DeviceLoss>, skipped: BackendChoice['skipped'], forced: string | null, prefix: string): BackendChoice {
  const passed = skipped.map((s) => `${BACKEND_LABELS[s.backend] ?? s.backend}: ${s.why}.`).join(' ');
  let what = `Computing with ${BACKEND_LABELS[backend]}`;
  let level: BackendChoice['level'] = 'ok';
  let hint = '';
  if (backend === 'webgpu') {
    const name = [adapter?.vendor, adapter?.architecture].filter(Boolean).join(' ') || 'an unnamed adapter';
    what += ` on ${name}`;
    if (adapter?.isFallbackAdapter) {
      level = 'warn';
      hint = ' This is a fallback (software) adapter: the browser found no usable GPU, so it runs on the CPU and is slow; on such a machine ?backend=wasm is usually faster.';
    }
  } else if (backend === 'webgl') {
    if (adapter?.renderer) what += ` on ${adapter.renderer}`;
    level = 'warn';
    hint = ' WebGL works but is slower than WebGPU.';
  } else if (backend === 'wasm') {
    const threads = Number(adapter?.threads ?? 1);
    what += `, ${threads} thread${threads === 1 ? '' : 's'}`;
    if (adapter?.threadsAsked === threads) what += ` (?threads=${threads})`;
    level = 'warn';
    hint = ' No GPU is in use: this tab helps only a little.' +
      threadsShortfall((adapter?.threadsAsked ?? undefined) as number | undefined, threads, adapter?.crossOriginIsolated === true);
  } else {
    level = 'warn';
    hint = ' No GPU and no WebAssembly: very slow, useful only for tiny models.';
  }
  if (forced === backend) what += ` (chosen by ?backend=${backend})`;
  return { backend, adapter, skipped, level, lost, notice: `${prefix}${what}.${hint}${passed ? ` Passed over: ${passed}` : ''}` };
}
