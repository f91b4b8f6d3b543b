// WebGPU in Node through Dawn (npm `webgpu`, which ships a prebuilt dawn.node for linux-x64/arm64,
// macOS and Windows; its postinstall only strips macOS's quarantine flag, so npm 11's gating of
// install scripts changes nothing on Linux).
//
// What it tries, in order (TABTRAIN_DAWN_BACKEND=vulkan|opengl picks one):
//   1. vulkan  — Dawn's default backend on Linux: a real GPU through its Vulkan ICD (NVIDIA, AMD,
//                Intel). Needs the Vulkan loader (libvulkan.so.1) and the vendor's ICD json.
//   2. opengl  — Dawn's OpenGL ES/EGL backend at WebGPU's 'compatibility' feature level. With
//                EGL_PLATFORM=surfaceless this runs headless on Mesa's llvmpipe (CPU): slow, for
//                correctness tests on machines without a GPU. Debian 12's lavapipe (Vulkan on CPU)
//                is refused by Dawn (it lacks shaderUniform*ArrayDynamicIndexing), hence this path.
//
// tfjs-backend-webgpu creates its own device from `navigator.gpu`; Node 20 has no navigator, so
// we install one whose requestAdapter hands out the adapter we chose and whose requestDevice asks
// for every limit at the adapter's maximum (tfjs asks for only six of them), and we make GPU errors
// loud: an uncaptured WebGPU error or a lost device would otherwise give silently wrong gradients.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Net } from '@tabtrain/shared/net';
import { webgpuTensorIO } from './webgpu-io';
import { registerWebGPUKernels, useInputGradient, type InputGradient } from './webgpu-kernels';

export type DawnBackendName = 'vulkan' | 'opengl';

// A type (not an interface) so that it is assignable to Record<string, unknown> (the hello's adapter).
export type DawnAdapterInfo = {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** Which Dawn backend gave the adapter: 'vulkan' or 'opengl'. */
  backendType: DawnBackendName;
  featureLevel: 'core' | 'compatibility';
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  /** Which Conv2DBackpropFilter runs: tabtrain's split-K kernel or tfjs's own. */
  kernels?: 'split-k' | 'tfjs';
  /** Which Conv2DBackpropInput runs: tfjs's matmul-based kernel or its naive one. */
  inputGradient?: InputGradient;
};

export interface DawnOptions {
  /** Backends to try in order; default from TABTRAIN_DAWN_BACKEND, else ['vulkan', 'opengl']. */
  backends?: DawnBackendName[];
  /** Dawn toggles: 'name' enables, '-name' disables (e.g. 'disable_robustness'); default from TABTRAIN_DAWN_TOGGLES (comma-separated). */
  toggles?: string[];
  /** What to do on an uncaptured GPU error or a lost device: exit the process (default) or only log. */
  onGpuError?: 'exit' | 'log';
}

interface Attempt { backend: DawnBackendName; flags: string[]; featureLevel: 'core' | 'compatibility' }

const FIX_VULKAN =
  'For a GPU (Vulkan): install the vendor driver with its Vulkan ICD and the loader ' +
  '(Debian/Ubuntu: `apt-get install libvulkan1` plus the driver, e.g. nvidia-driver or mesa-vulkan-drivers for AMD/Intel); ' +
  '`vulkaninfo --summary` (package vulkan-tools) must list the GPU. In containers, expose the ICD, e.g. ' +
  'VK_DRIVER_FILES=/usr/share/vulkan/icd.d/nvidia_icd.json (older loaders: VK_ICD_FILENAMES).';
const FIX_OPENGL =
  'Without a GPU (CPU, Mesa llvmpipe through OpenGL/EGL): `apt-get install libegl-dev libegl1 libegl-mesa0 libgl1-mesa-dri` ' +
  '(Dawn dlopens the unversioned libEGL.so, which Debian ships in libegl-dev) and run with EGL_PLATFORM=surfaceless ' +
  '(set automatically when unset).';

/** An error the user can act on: the CLI prints its message, the stack would only add noise. */
export class DawnError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DawnError';
    this.stack = `DawnError: ${message}`;
  }
}

/** Dawn's OpenGL backend dlopens 'libEGL.so' (no version): beside dawn.node first, then the system's. */
function unversionedEglFound(dawnDir: string): boolean {
  const dirs = [dawnDir, '/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib',
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean)];
  return dirs.some((d) => existsSync(join(d, 'libEGL.so')));
}

/**
 * The Dawn objects must outlive every device: if the GPU object from create() is garbage
 * collected, Dawn's instance goes with it and the process later hangs or crashes (seen here:
 * std::system_error, SIGSEGV, or a readback that never resolves). Held here for the process.
 */
const keepAlive: unknown[] = [];

let setupDone: Promise<{ backend: 'webgpu'; adapter: DawnAdapterInfo }> | null = null;

/** Loads dawn.node, picks an adapter, registers and initialises tfjs's webgpu backend. Idempotent. */
export function setupDawn(opts: DawnOptions = {}): Promise<{ backend: 'webgpu'; adapter: DawnAdapterInfo }> {
  setupDone ??= setup(opts).catch((e) => { setupDone = null; throw e; });
  return setupDone;
}

function envList(name: string): string[] | undefined {
  const v = process.env[name]?.trim();
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

function attempts(backends: DawnBackendName[], toggles: string[]): Attempt[] {
  // 'name' enables a Dawn toggle, '-name' disables one (e.g. -timestamp_quantization for profiling).
  const on = toggles.filter((x) => !x.startsWith('-')), off = toggles.filter((x) => x.startsWith('-')).map((x) => x.slice(1));
  const t = [...(on.length ? [`enable-dawn-features=${on.join(',')}`] : []), ...(off.length ? [`disable-dawn-features=${off.join(',')}`] : [])];
  return backends.map((b) => b === 'vulkan'
    ? { backend: b, flags: ['backend=vulkan', ...t], featureLevel: 'core' }
    : { backend: b, flags: ['backend=opengl', ...t], featureLevel: 'compatibility' });
}

type DawnModule = { create(flags: string[]): GPU; globals: Record<string, unknown> };

function loadDawn(): DawnModule & { path: string } {
  const require = createRequire(import.meta.url);
  // A bundle (bench/gpu kit) points here at its own copy of the webgpu package's dawn.node.
  const explicit = process.env.TABTRAIN_DAWN_NODE;
  try {
    // The package's index.js picks dist/<platform>-<arch>/dawn.node; require it directly so that a
    // bundler can keep it external. Same file the package loads.
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const path = explicit ?? join(dirname(require.resolve('webgpu/package.json')), 'dist', `${process.platform}-${arch}`, 'dawn.node');
    return { ...(require(path) as DawnModule), path };
  } catch (e) {
    throw new DawnError(`cannot load Dawn's dawn.node${explicit ? ` from TABTRAIN_DAWN_NODE=${explicit}` : ' (npm package webgpu)'}: ${(e as Error).message}. ` +
      'Run `npm ci` in the tabtrain checkout (the package ships dawn.node for linux-x64, linux-arm64, macOS and Windows).');
  }
}

function maxLimits(adapter: GPUAdapter): Record<string, number> {
  const out: Record<string, number> = {};
  // GPUSupportedLimits exposes its members as enumerable getters.
  for (const k in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[k];
    if (typeof v === 'number') out[k] = v;
  }
  return out;
}

/** GPUAdapterInfo as Dawn has it (TypeScript's DOM types predate `adapter.info`). */
type Info = { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
const infoOf = (adapter: GPUAdapter): Info => (adapter as unknown as { info: Info }).info;

function describe(adapter: GPUAdapter, a: Attempt): DawnAdapterInfo {
  const info = infoOf(adapter);
  return {
    vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '', description: info.description ?? '',
    isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    backendType: a.backend, featureLevel: a.featureLevel,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize,
  };
}

async function setup(opts: DawnOptions): Promise<{ backend: 'webgpu'; adapter: DawnAdapterInfo }> {
  const fromEnv = envList('TABTRAIN_DAWN_BACKEND');
  const backends = opts.backends ?? (fromEnv as DawnBackendName[] | undefined) ?? ['vulkan', 'opengl'];
  for (const b of backends) if (b !== 'vulkan' && b !== 'opengl') throw new DawnError(`TABTRAIN_DAWN_BACKEND: unknown Dawn backend '${b}'; use vulkan, opengl or both (vulkan,opengl)`);
  const toggles = opts.toggles ?? envList('TABTRAIN_DAWN_TOGGLES') ?? [];
  // EGL reads EGL_PLATFORM when Dawn first initialises EGL, which is after this line: setting it
  // here (not only in the parent shell) is enough. Vulkan ignores it.
  if (backends.includes('opengl')) process.env.EGL_PLATFORM ??= 'surfaceless';

  const dawn = loadDawn();
  // WebGPU's constant namespaces (GPUBufferUsage, GPUMapMode, GPUTextureUsage, GPUShaderStage…),
  // which tfjs-backend-webgpu reads as globals.
  for (const [k, v] of Object.entries(dawn.globals)) if (!(k in globalThis)) Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true });

  const tried: string[] = [];
  let chosen: { gpu: GPU; attempt: Attempt; adapter: GPUAdapter } | null = null;
  for (const a of attempts(backends, toggles)) {
    try {
      const gpu = dawn.create(a.flags);
      const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance', featureLevel: a.featureLevel } as GPURequestAdapterOptions);
      if (adapter) { chosen = { gpu, attempt: a, adapter }; break; }
      tried.push(`${a.backend} (create([${a.flags.map((f) => `'${f}'`).join(', ')}]), featureLevel '${a.featureLevel}'): no adapter`);
    } catch (e) {
      tried.push(`${a.backend}: ${(e as Error).message}`);
    }
  }
  if (!chosen) {
    if (backends.includes('opengl') && !unversionedEglFound(dirname(dawn.path))) tried.push('opengl: libEGL.so (unversioned; Debian package libegl-dev) is not installed, so Dawn cannot load EGL');
    throw new DawnError(`no WebGPU adapter from Dawn. Tried: ${tried.join('; ')}. ` +
      `${backends.includes('vulkan') ? FIX_VULKAN + ' ' : ''}${backends.includes('opengl') ? FIX_OPENGL + ' (EGL_PLATFORM is now ' + process.env.EGL_PLATFORM + '.) ' : ''}` +
      "Dawn's own warnings above (stderr) say why each backend refused. Or run the worker with --backend wasm.");
  }
  const { gpu, attempt, adapter } = chosen;
  keepAlive.push(dawn, gpu, adapter);
  const info = describe(adapter, attempt);
  const onGpuError = opts.onGpuError ?? 'exit';
  const fatal = (what: string) => {
    console.error(`tabtrain webgpu: ${what} (${info.backendType}, ${info.device || info.description})`);
    if (onGpuError === 'exit') process.exit(70);
  };

  // The navigator tfjs-backend-webgpu will read. requestAdapter returns a stand-in that creates
  // the device on our adapter with every limit raised to the adapter's maximum.
  let handedOut = false;
  const shimAdapter = {
    features: adapter.features,
    limits: adapter.limits,
    info: infoOf(adapter),
    isFallbackAdapter: info.isFallbackAdapter,
    async requestDevice(desc: GPUDeviceDescriptor = {}): Promise<GPUDevice> {
      // tfjs pushes ['bgra8unorm-storage'] as an array (its bug): keep only real, supported names.
      const features = [...(desc.requiredFeatures ?? [])].filter((f): f is GPUFeatureName => typeof f === 'string' && adapter.features.has(f));
      const device = await adapter.requestDevice({ ...desc, requiredFeatures: features, requiredLimits: maxLimits(adapter) });
      keepAlive.push(device);
      device.lost.then((l) => { if (l.reason !== 'destroyed') fatal(`GPU device lost: ${l.message}`); });
      device.addEventListener('uncapturederror', (ev) => fatal(`uncaptured WebGPU error: ${(ev as GPUUncapturedErrorEvent).error.message}`));
      return device;
    },
  };
  const shimGpu = {
    async requestAdapter(): Promise<unknown> {
      if (handedOut) throw new Error('tabtrain: the Dawn adapter was already used to create a device (one WebGPU backend per process)');
      handedOut = true;
      return shimAdapter;
    },
    getPreferredCanvasFormat: () => 'rgba8unorm' as GPUTextureFormat,
    wgslLanguageFeatures: gpu.wgslLanguageFeatures,
  };
  const nav = (globalThis as { navigator?: object }).navigator;
  if (nav) Object.defineProperty(nav, 'gpu', { value: shimGpu, configurable: true, writable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu: shimGpu }, configurable: true, writable: true });

  // Only now: the package registers its backend at import time if navigator.gpu exists.
  await import('@tensorflow/tfjs-backend-webgpu');
  tf.env().set('PROD', true);
  if (!(await tf.setBackend('webgpu'))) throw new Error(`tfjs could not initialise its webgpu backend on ${info.backendType} ${info.device || info.description}`);
  await tf.ready();
  // Weights written in place and gradients read through reused staging buffers (webgpu-io.ts);
  // TABTRAIN_WEBGPU_IO=tfjs keeps tfjs's own data()/assign paths (for A/B measurements).
  if (process.env.TABTRAIN_WEBGPU_IO !== 'tfjs') Net.io = webgpuTensorIO();
  // The weight gradient of convolutions: tfjs's kernel runs one thread per weight, which starves a
  // GPU on the first layers; webgpu-kernels.ts has a split-K tiled one. On llvmpipe (2 CPU threads)
  // neither wins everywhere (docs/GPU.md), so by default: split-k on Vulkan, tfjs's on OpenGL.
  // TABTRAIN_WEBGPU_KERNELS=split-k|tfjs forces one.
  const kernels = process.env.TABTRAIN_WEBGPU_KERNELS ?? (info.backendType === 'vulkan' ? 'split-k' : 'tfjs');
  if (kernels !== 'tfjs' && kernels !== 'split-k') throw new DawnError(`TABTRAIN_WEBGPU_KERNELS must be split-k or tfjs, got '${kernels}'`);
  if (kernels === 'split-k') registerWebGPUKernels();
  info.kernels = kernels;
  // The input gradient: tfjs's matmul-based kernel or its naive default (one thread per input
  // element). On llvmpipe and SwiftShader the naive one measured faster on most of AlexNet's and
  // VGG's layers (docs/BENCHMARKS.md); on a GPU the matmul-shaped one fills the cores (tfjs measured
  // it ~2× faster), which bench/gpu/run.sh checks. TABTRAIN_WEBGPU_DX=naive|mm forces one.
  const dx = process.env.TABTRAIN_WEBGPU_DX ?? (info.backendType === 'vulkan' ? 'mm' : 'naive');
  if (dx !== 'naive' && dx !== 'mm') throw new DawnError(`TABTRAIN_WEBGPU_DX must be naive or mm, got '${dx}'`);
  useInputGradient(dx);
  info.inputGradient = dx;
  // tfjs flags for experiments, e.g. TABTRAIN_WEBGPU_FLAGS=WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE=false
  for (const kv of envList('TABTRAIN_WEBGPU_FLAGS') ?? []) {
    const [k, v] = kv.split('=');
    tf.env().set(k, v === 'true' ? true : v === 'false' ? false : Number.isFinite(Number(v)) ? Number(v) : v);
  }
  return { backend: 'webgpu', adapter: info };
}
