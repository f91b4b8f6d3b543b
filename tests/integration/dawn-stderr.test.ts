// Dawn's own stderr (native warnings at every start) is kept from a person unless it is the reason
// no adapter was found. Real `bin/tabtrain worker --backend webgpu` processes on Mesa's llvmpipe,
// pointed at a port nobody listens on, so they give up after a second.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN } from '../../server/src/spawn-worker';

function worker(env: NodeJS.ProcessEnv = {}): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(BIN, ['worker', '--backend', 'webgpu', '--url', 'ws://127.0.0.1:9', '--connect-timeout', '1s'], {
    encoding: 'utf8', timeout: 90_000, env: { ...process.env, TABTRAIN_DAWN_STDERR: '', ...env },
  });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

describe("Dawn's stderr", () => {
  it('a worker that finds an adapter prints none of Dawn\'s warnings, only its own lines', () => {
    const r = worker();
    expect(r.stdout).toMatch(/backend webgpu on .*llvmpipe/);
    expect(r.stderr).toMatch(/tabtrain worker: gave up after 1s: no coordinator at ws:\/\/127\.0\.0\.1:9\/ws/);
    expect(r.stderr).not.toMatch(/artificially reduced|XDG_RUNTIME_DIR|PhysicalDeviceVk\.cpp|^Warning: /m);
    expect(r.status).toBe(1);
  });

  it('a worker that finds none prints Dawn\'s reasons right before its error; TABTRAIN_DAWN_STDERR=all shows them as they come', () => {
    // Vulkan alone: llvmpipe's Vulkan lacks a feature Dawn requires, and Dawn says so on stderr.
    const r = worker({ TABTRAIN_DAWN_BACKEND: 'vulkan' });
    const at = r.stderr.indexOf("Dawn's own messages (why each backend refused):");
    expect(at, r.stderr).toBeGreaterThanOrEqual(0);
    expect(r.stderr.slice(at)).toMatch(/Vulkan[^\n]*\n[\s\S]*tabtrain worker: no WebGPU adapter from Dawn/);
    expect(r.status).toBe(1);
    const raw = worker({ TABTRAIN_DAWN_STDERR: 'all' });
    expect(raw.stderr).toMatch(/^Warning: /m);
    expect(raw.stderr).not.toContain("Dawn's own messages");
  });
});
