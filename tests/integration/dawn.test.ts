// The headless WebGPU worker (Dawn, npm `webgpu`). Without a GPU it runs on Mesa's llvmpipe
// through Dawn's OpenGL backend (EGL_PLATFORM=surfaceless, compatibility feature level), which is
// what CI has: see docs/GPU.md. llvmpipe is ~10× slower than wasm, so the config is tiny.
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { kill, maxAbsDiff, startCoordinator, trainWith } from '../helpers/run';
import { spawnWorker } from '../../server/src/cli';
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

describe('Dawn webgpu worker', () => {
  it('one webgpu worker + one wasm worker end within 1e-4 of a 1-worker run, and the webgpu worker did its shards', async () => {
    const one = await trainWith(1, RUN);

    const { coord, url, lines } = await startCoordinator({ ...RUN, minWorkers: 2 });
    const gpu = spawnWorker(url, ['--backend', 'webgpu', '--quiet'], 'pipe');
    let gpuErr = '';
    gpu.stderr!.on('data', (d) => { gpuErr += d; });
    const wasm = spawnWorker(url, ['--backend', 'wasm', '--quiet'], 'pipe');
    let two;
    let workers;
    try {
      two = await coord.train();
      workers = coord.status().workers;
    } finally {
      await coord.close();
      kill([gpu, wasm]);
    }
    expect(two.steps).toBe(RUN.maxSteps);
    const webgpu = workers.filter((w) => w.backend === 'webgpu');
    expect(webgpu, `webgpu worker did not join; its stderr:\n${gpuErr}\ncoordinator:\n${lines.join('\n')}`).toHaveLength(1);
    // Its adapter travelled in the hello: which Dawn backend and which device.
    const adapter = webgpu[0].adapter as Record<string, unknown>;
    expect(['vulkan', 'opengl']).toContain(adapter.backendType);
    expect(typeof adapter.device).toBe('string');
    console.log(`webgpu worker adapter: ${JSON.stringify(adapter)}`);
    // Both workers computed every step's half: 4 steps × 1 shard each.
    expect(webgpu[0].shardsDone).toBe(RUN.maxSteps);
    expect(workers.find((w) => w.backend === 'wasm')!.shardsDone).toBe(RUN.maxSteps);

    const diff = maxAbsDiff(one.weights, coord.weights);
    console.log(`max |w(1 wasm) - w(webgpu + wasm)| after ${RUN.maxSteps} steps: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    // …and the weights did move: the comparison is not between two copies of the initial weights.
    expect(maxAbsDiff(initParams(getModel(RUN.model), RUN.seed), coord.weights)).toBeGreaterThan(1e-3);
    expect(two.epochs[0].loss).toBeGreaterThan(0);
  });

  it('no adapter: the worker exits non-zero naming the backend it tried and the fix', async () => {
    // An EGL platform that does not exist makes the OpenGL path fail on any machine.
    const { code, out } = await workerOutput({ TABTRAIN_DAWN_BACKEND: 'opengl', EGL_PLATFORM: 'no-such-platform' });
    expect(code).not.toBe(0);
    expect(out).toContain('no WebGPU adapter from Dawn');
    expect(out).toContain("opengl (create(['backend=opengl']), featureLevel 'compatibility')");
    expect(out).toContain('EGL_PLATFORM=surfaceless');
    // A message, not our stack trace (Dawn's own warnings above it carry C++ source lines).
    expect(out).toMatch(/^tabtrain: DawnError: /m);
    expect(out).not.toMatch(/dawn\.ts:\d+/);
  });

  it('an unknown TABTRAIN_DAWN_BACKEND is refused with the choices', async () => {
    const { code, out } = await workerOutput({ TABTRAIN_DAWN_BACKEND: 'metal' });
    expect(code).not.toBe(0);
    expect(out).toContain("unknown Dawn backend 'metal'; use vulkan, opengl");
  });
});
