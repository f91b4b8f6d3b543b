// bench/gpu/layer-bench.ts's per-layer kernel times, in headless Chromium: WebGPU on whatever
// adapter the browser gives (SwiftShader, a fallback adapter, on a machine without a GPU; the
// page's kernels are the same code as the Dawn worker's). Measures the input-gradient and
// filter-gradient variants the page may choose between.
//
//   node --import tsx bench/gpu/browser-layers.ts [--batch 2] [--reps 3] [--budget-ms 1500]
//        [--layers 'alexnet conv2,vgg11 conv3'] [--json FILE] MODEL...
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_FLAGS } from '../../tests/helpers/chromium';
import { serveKernelPage } from '../../tests/helpers/kernel-page-server';
import type { KernelPageKit } from '../../tests/helpers/kernel-page';
import { describeLayer, modelLayers } from './layers';
import type { LayerTiming } from './layer-timing';
import { layerSection } from './report-layers';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    batch: { type: 'string', default: '2' }, reps: { type: 'string', default: '3' }, 'budget-ms': { type: 'string', default: '1500' },
    layers: { type: 'string' }, json: { type: 'string' },
  },
});
const batch = Number(v.batch), reps = Number(v.reps), budgetMs = Number(v['budget-ms']);
const only = v.layers?.split(',').map((s) => s.trim());
const layers = (positionals.length ? positionals : ['alexnet', 'vgg11']).flatMap((m) => modelLayers(m, batch)).filter((g) => !only || only.includes(g.name));
if (!layers.length) { console.error(`browser-layers: no layer matches --layers ${v.layers}`); process.exit(2); }

const server = await serveKernelPage();
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  await page.goto(server.url);
  await page.waitForFunction(() => 'kit' in globalThis);
  const adapter = await page.evaluate(() => (globalThis as unknown as { kit: KernelPageKit }).kit.ready);
  console.log(`Chromium WebGPU adapter: ${JSON.stringify(adapter)}; batch ${batch}`);
  const timings: LayerTiming[] = [];
  const save = () => { if (v.json) writeFileSync(v.json, JSON.stringify({ date: new Date().toISOString(), where: 'chromium', adapter, batch, peak: { size: 0, best: null, tiles: [], checkError: null }, bandwidth: null, layers: timings, split: [] }, null, 2) + '\n'); };
  for (const g of layers) {
    const t = await page.evaluate(([g, opts]) => (globalThis as unknown as { kit: KernelPageKit }).kit.timeLayer(g, opts), [g, { reps, budgetMs }] as const);
    timings.push(t);
    save();
    console.log(`${g.name.padEnd(15)} ${describeLayer(g).padEnd(38)} ${Object.entries(t.ms).map(([k, ms]) => `${k} ${ms} ms`).join('; ')}`);
  }
  console.log(['', ...layerSection({ batch, peak: { size: 0, best: null, tiles: [], checkError: null }, bandwidth: null, layers: timings, split: [] })].join('\n'));
} finally {
  await browser.close();
  await server.close();
}
