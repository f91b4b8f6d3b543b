// Which Chromium the browser tests and benchmarks start, and with which flags. No vitest import:
// bench scripts (bench/gpu/browser-layers.ts) launch the same browser outside a test run.
export const CHROMIUM = process.env.TABTRAIN_CHROMIUM ?? '/usr/bin/chromium';

/** SwiftShader gives WebGPU (a fallback adapter) and WebGL without a GPU; the rest keeps the browser quiet. */
export const CHROMIUM_FLAGS = [
  '--enable-unsafe-webgpu',
  '--enable-unsafe-swiftshader',
  '--use-angle=swiftshader',
  '--no-sandbox',
  '--disable-gpu-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
