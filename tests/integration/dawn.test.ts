// The headless WebGPU worker (Dawn, npm `webgpu`). Without a GPU it runs on Mesa's llvmpipe
// through Dawn's OpenGL backend (EGL_PLATFORM=surfaceless, compatibility feature level), which is
// what CI has: see docs/GPU.md. llvmpipe is ~10× slower than wasm, so the configs are tiny.
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { kill, maxAbsDiff, startCoordinator, trainWith } from '../helpers/run';
import { spawnWorker } from '../../server/src/spawn-worker';
import { getModel, initParams } from '@tabtrain/shared';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// vgg11-tiny: every VGG-11 layer at 32×32 (conv, pool, dense, dropout). Batch 16 split 8/8.
const RUN = { model: 'vgg11-tiny', batch: 16, maxSteps: 4, seed: 5, lr: 0.05, balance: 'equal' as const };

/** Runs `tabtrain worker --backend webgpu` with `env` and returns its exit code and output. */
function workerOutput(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((res) => {
    const p = spawn(join(ROOT, 'bin/tabtrain'), ['worker', '--url', 'ws://127.0.0.1:9/ws', '--backend', 'webgpu'], { env: { ...process.env, ...env }, stdio: 'pipe' });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('close', (code) => res({ code, out }));
  });
}

/** One webgpu worker (with `env`) + one wasm worker train RUN; returns the weights and the workers' rows. */
async function webgpuPlusWasm(env: Record<string, string>) {
  const { coord, url, lines } = await startCoordinator({ ...RUN, minWorkers: 2 });
  const saved = { ...process.env };
  Object.assign(process.env, env); // spawnWorker passes our environment on
  const gpu = spawnWorker(url, ['--backend', 'webgpu', '--quiet'], 'pipe');
  for (const k of Object.keys(env)) { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; }
  let gpuErr = '';
  gpu.stderr!.on('data', (d) => { gpuErr += d; });
  const wasm = spawnWorker(url, ['--backend', 'wasm', '--quiet'], 'pipe');
  try {
    const summary = await coord.train();
    return { summary, weights: coord.weights.slice(), workers: coord.status().workers, why: `webgpu worker stderr:\n${gpuErr}\ncoordinator:\n${lines.join('\n')}` };
  } finally {
    await coord.close();
    kill([gpu, wasm]);
  }
}

describe('Dawn webgpu worker', () => {
  it('one webgpu worker + one wasm worker end within 1e-4 of a 1-worker run, with either weight-gradient kernel', async () => {
    // The 1-worker run trains beside the first webgpu run (its own coordinator): nothing here is timed.
    const oneDone = trainWith(1, RUN);
    oneDone.catch(() => {}); // awaited below; a failure before then must not go unhandled
    for (const kernels of ['tfjs', 'split-k']) {
      const two = await webgpuPlusWasm({ TABTRAIN_WEBGPU_KERNELS: kernels });
      const one = await oneDone;
      // The weights did move: the comparisons below are not between copies of the initial weights.
      expect(maxAbsDiff(initParams(getModel(RUN.model), RUN.seed), one.weights)).toBeGreaterThan(1e-3);
      expect(two.summary.steps).toBe(RUN.maxSteps);
      const webgpu = two.workers.filter((w) => w.backend === 'webgpu');
      expect(webgpu, two.why).toHaveLength(1);
      // Its adapter travelled in the hello: which Dawn backend, which device, which kernel.
      const adapter = webgpu[0].adapter as Record<string, unknown>;
      expect(['vulkan', 'opengl']).toContain(adapter.backendType);
      expect(typeof adapter.device).toBe('string');
      expect(adapter.kernels).toBe(kernels);
      // The input gradient: tfjs's matmul-based kernel on a GPU, its naive one on llvmpipe (measured faster there).
      expect(adapter.inputGradient).toBe(adapter.backendType === 'vulkan' ? 'mm' : 'naive');
      // Both workers computed every step's half: 4 steps × 1 shard each.
      expect(webgpu[0].shardsDone).toBe(RUN.maxSteps);
      expect(two.workers.find((w) => w.backend === 'wasm')!.shardsDone).toBe(RUN.maxSteps);
      const diff = maxAbsDiff(one.weights, two.weights);
      console.log(`${kernels}: max |w(1 wasm) - w(webgpu + wasm)| after ${RUN.maxSteps} steps: ${diff.toExponential(2)}; adapter ${JSON.stringify(adapter)}`);
      expect(diff).toBeLessThan(1e-4);
    }
  });

  it('the split-K Conv2DBackpropFilter equals the cpu backend: strides 1, 2, 4, explicit and valid padding', async () => {
    const { setupDawn } = await import('../../client/src/dawn');
    const { registerWebGPUKernels } = await import('../../client/src/webgpu-kernels');
    const tf = await import('@tensorflow/tfjs');
    await import('@tensorflow/tfjs-backend-cpu');
    await setupDawn();
    expect(registerWebGPUKernels()).toBe(true);
    // [x shape NHWC, kernel, out channels, stride, pad]
    const cases: [[number, number, number, number], number, number, number, number | 'valid'][] = [
      [[2, 9, 9, 3], 3, 5, 1, 1], // VGG-like
      [[2, 65, 65, 1], 11, 8, 4, 1], // AlexNet conv1 at 65: stride 4, remainder 1
      [[2, 67, 67, 2], 11, 4, 4, 1], // remainder 3
      [[3, 13, 13, 6], 5, 7, 1, 2], // AlexNet conv2-like
      [[2, 9, 9, 3], 3, 4, 2, 'valid'],
      [[1, 32, 32, 1], 3, 2, 1, 1], // few weights, long reduction: many K slices
      [[4, 12, 12, 40], 3, 36, 1, 1], // more than one 32×32 output tile
    ];
    const grad = (x: number[], dyv: Float32Array, xs: number[], k: number, co: number, s: number, p: number | 'valid', dys: number[]) => {
      const pad = p === 'valid' ? 'valid' : [[0, 0], [p, p], [p, p], [0, 0]];
      return tf.tidy(() => tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.tensor4d(x, xs as [number, number, number, number]), dy: tf.tensor4d(dyv, dys as [number, number, number, number]) },
        { strides: s, pad, dataFormat: 'NHWC', filterShape: [k, k, xs[3], co] } as never) as never as import('@tensorflow/tfjs').Tensor);
    };
    for (const [xs, k, co, s, p] of cases) {
      const x = Array.from({ length: xs.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * 0.37));
      await tf.setBackend('cpu');
      const ys = tf.tidy(() => tf.conv2d(tf.zeros(xs) as import('@tensorflow/tfjs').Tensor4D, tf.zeros([k, k, xs[3], co]) as import('@tensorflow/tfjs').Tensor4D, s, p === 'valid' ? 'valid' : [[0, 0], [p, p], [p, p], [0, 0]]).shape);
      const dyv = Float32Array.from({ length: ys.reduce((a, b) => a * b) }, (_, i) => Math.cos(i * 0.11));
      const refT = grad(x, dyv, xs, k, co, s, p, ys);
      const ref = await refT.data();
      refT.dispose();
      await tf.setBackend('webgpu');
      const gotT = grad(x, dyv, xs, k, co, s, p, ys);
      const got = await gotT.data();
      gotT.dispose();
      let diff = 0, big = 0;
      for (let i = 0; i < ref.length; i++) { diff = Math.max(diff, Math.abs(got[i] - ref[i])); big = Math.max(big, Math.abs(ref[i])); }
      expect(diff, `${JSON.stringify([xs, k, co, s, p])}: max diff ${diff} of max ${big}`).toBeLessThan(1e-5 * Math.max(1, big));
    }
  });

  it("every kernel the worker may register equals the cpu backend at AlexNet's and VGG-11's layer geometry (split-K dW, naive and matmul dX)", async () => {
    const { setupDawn } = await import('../../client/src/dawn');
    await import('@tensorflow/tfjs-backend-cpu');
    await setupDawn();
    const { checkKernels, kernelCases } = await import('../helpers/kernel-check');
    const cases = kernelCases();
    // d2l's geometry: AlexNet's 11×11 stride 4 pad 1 (224² cut to 44², the same partial last window),
    // 5×5 pad 2 at 26², 3×3 pad 1 at 12²; VGG's 3×3 pad 1 from 32² (cut from 224² and 112²) to 14².
    expect(cases.map((c) => `${c.kernel}/${c.stride}/${c.pad}@${c.inH}`)).toEqual(expect.arrayContaining(['11/4/1@44', '5/1/2@26', '3/1/1@12', '3/1/1@32', '3/1/1@28', '3/1/1@14']));
    const t0 = performance.now();
    const results = await checkKernels(cases);
    console.log(`dawn kernels vs cpu (${((performance.now() - t0) / 1000).toFixed(1)} s):\n${results.map((r) => `  ${r.variant.padEnd(10)} ${r.layer}: max |Δ| ${r.maxDiff.toExponential(1)} of ${r.maxRef.toFixed(2)}`).join('\n')}`);
    expect(results).toHaveLength(cases.length * 3);
    expect(results.filter((r) => !r.ok)).toEqual([]);
  });

  // These two are worker processes that exit at start (their env is their own): they run side by side.
  it.concurrent('no adapter: the worker exits non-zero naming the backend it tried and the fix', async () => {
    // An EGL platform that does not exist makes the OpenGL path fail on any machine.
    const { code, out } = await workerOutput({ TABTRAIN_DAWN_BACKEND: 'opengl', EGL_PLATFORM: 'no-such-platform' });
    expect(code).not.toBe(0);
    expect(out).toContain('no WebGPU adapter from Dawn');
    expect(out).toContain("opengl (create(['backend=opengl']), featureLevel 'compatibility')");
    expect(out).toContain('EGL_PLATFORM=surfaceless');
    // A message, not our stack trace (Dawn's own warnings above it carry C++ source lines).
    expect(out).toMatch(/^tabtrain worker: .*no WebGPU adapter from Dawn/m);
    expect(out).not.toMatch(/dawn\.ts:\d+/);
  });

  it.concurrent('an unknown TABTRAIN_DAWN_BACKEND is refused with the choices', async () => {
    const { code, out } = await workerOutput({ TABTRAIN_DAWN_BACKEND: 'metal' });
    expect(code).not.toBe(0);
    expect(out).toContain("unknown Dawn backend 'metal'; use vulkan, opengl");
  });
});
