// The convolution kernels the page registers or chooses (split-K filter gradient; tfjs's naive and
// matmul-based input gradient), in real headless Chromium on SwiftShader's WebGPU, against tfjs's
// cpu backend in the same page, at AlexNet's and VGG-11's layer geometry (d2l's kernel sizes,
// strides and paddings; channels, sides and batch cut down: tests/helpers/kernel-check.ts). The
// Dawn/llvmpipe twin of this test is in tests/integration/dawn.test.ts.
import { afterAll, describe, expect, it } from 'vitest';
import { openTab, type Tab } from '../helpers/browser';
import type { KernelPageKit } from '../helpers/kernel-page';
import { serveKernelPage } from '../helpers/kernel-page-server';

let tab: Tab | undefined;
let server: Awaited<ReturnType<typeof serveKernelPage>> | undefined;
afterAll(async () => {
  await tab?.close();
  await server?.close();
});

describe('webgpu kernels in Chromium (SwiftShader)', () => {
  it("equal the cpu backend at AlexNet's and VGG-11's layer geometry: split-K dW, naive and matmul dX", async () => {
    server = await serveKernelPage();
    tab = await openTab('kernels', server.url);
    await tab.page.waitForFunction(() => 'kit' in globalThis, undefined, { timeout: 60_000 });
    const adapter = await tab.page.evaluate(() => (globalThis as unknown as { kit: KernelPageKit }).kit.ready);
    expect(adapter.architecture, tab.console.join('\n')).toBe('swiftshader');
    const t0 = performance.now();
    const { cases, results } = await tab.page.evaluate(async () => {
      const kit = (globalThis as unknown as { kit: KernelPageKit }).kit;
      const cases = kit.kernelCases();
      return { cases: cases.map((c) => `${c.kernel}/${c.stride}/${c.pad}@${c.inH}`), results: await kit.checkKernels(cases) };
    });
    console.log(`chromium kernels vs cpu (${((performance.now() - t0) / 1000).toFixed(1)} s):\n${results.map((r) => `  ${r.variant.padEnd(10)} ${r.layer}: max |Δ| ${r.maxDiff.toExponential(1)} of ${r.maxRef.toFixed(2)}`).join('\n')}`);
    expect(cases).toEqual(expect.arrayContaining(['11/4/1@44', '5/1/2@26', '3/1/1@12', '3/1/1@32', '3/1/1@28', '3/1/1@14']));
    expect(results).toHaveLength(cases.length * 3);
    expect(results.filter((r) => !r.ok)).toEqual([]);
  });
});
