// Examples/s of one tab on tfjs-backend-wasm at 1, 2 and 4 threads (?threads=), in headless
// Chromium, and where the step goes kernel by kernel at each count (issue 23).
//
//   node --import tsx bench/page-threads.ts [--batch 16] [--warmup 2] [--steps 5] [--rounds 2]
//        [--threads 1,2,4] [--out bench/results/page-threads.json] MODEL...
//
// One cross-origin-isolated page per thread count (tfjs fixes the count when the backend starts),
// the worker page's wasm kernels, Net.gradient on real Fashion-MNIST (forward + backward + the
// gradient's readback, as a tab computes a shard). Wall clock: threads are the point, and CPU time
// would count every thread. Each round sweeps the counts, the next round in reverse order, so that
// a change of load falls on all of them; each figure is the median of --steps steps after
// --warmup untimed ones (and the fastest step's, the nearest to an idle machine), with the
// 1-minute load average beside it.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { loadFashionMnist } from '../server/src/data';
import { ROOT } from '../server/src/page-build';
import { CHROMIUM, CHROMIUM_FLAGS } from '../tests/helpers/chromium';
import { serveBundlePage } from '../tests/helpers/kernel-page-server';
import { median } from './kernel-timer';
import type { PageThreadsKit, StepTimes } from './page-threads-kit';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    batch: { type: 'string', default: '16' }, warmup: { type: 'string', default: '2' }, steps: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' }, threads: { type: 'string', default: '1,2,4' }, out: { type: 'string', default: 'bench/results/page-threads.json' },
  },
});
const models = positionals.length ? positionals : ['alexnet-small', 'vgg11-small'];
const batch = Number(v.batch), warmup = Number(v.warmup), steps = Number(v.steps), rounds = Number(v.rounds);
const counts = v.threads.split(',').map(Number);
if (![batch, warmup, steps, rounds, ...counts].every((n) => Number.isInteger(n) && n >= 0) || !batch || !steps || !rounds) {
  console.error('page-threads: --batch, --steps, --rounds and --threads take whole numbers ≥ 1 (--warmup ≥ 0)');
  process.exit(2);
}

// Four batches of real images, cycled: the step's cost does not depend on which.
const train = loadFashionMnist().train;
const n = 4 * batch;
const images = Array.from(train.images.subarray(0, n * 784)), labels = Array.from(train.labels.subarray(0, n));
const wasmDir = join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist');
const files = Object.fromEntries(['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'].map((f) => [`/wasm/${f}`, join(wasmDir, f)]));
const server = await serveBundlePage('bench/page-threads-kit.ts', { isolated: true, files });
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
const version = browser.version();

/** examplesPerSec: at the median step; best: at the fastest step (a step no other process interrupted, or nearly). */
interface Row extends StepTimes { model: string; threadsAsked: number; threads: number; round: number; load: [number, number]; examplesPerSec: number; bestExamplesPerSec: number }
const rows: Row[] = [];
let info: unknown = null;
try {
  for (let round = 0; round < rounds; round++) {
    for (const asked of round % 2 ? [...counts].reverse() : counts) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
      await page.goto(`${server.url}?threads=${asked}`);
      await page.waitForFunction(() => 'kit' in globalThis);
      const ready = await page.evaluate(() => (globalThis as unknown as { kit: PageThreadsKit }).kit.ready);
      info ??= ready;
      if (!ready.isolated || !ready.multithread) throw new Error(`the bench page is not running threaded wasm: ${JSON.stringify(ready)}`);
      for (const model of models) {
        const before = loadavg()[0];
        const t = await page.evaluate(([model, batch, images, labels, warmup, steps]) =>
          (globalThis as unknown as { kit: PageThreadsKit }).kit.run(model, batch, images, labels, warmup, steps), [model, batch, images, labels, warmup, steps] as const);
        const row: Row = { model, threadsAsked: asked, threads: ready.threads, round, load: [before, loadavg()[0]], examplesPerSec: (1000 * batch) / median(t.stepMs), bestExamplesPerSec: (1000 * batch) / Math.min(...t.stepMs), ...t };
        rows.push(row);
        console.log(`round ${round + 1} ${model.padEnd(14)} threads ${ready.threads}: ${row.examplesPerSec.toFixed(0).padStart(5)} examples/s, best step ${row.bestExamplesPerSec.toFixed(0)} ` +
          `(median ${median(t.stepMs).toFixed(1)} ms of ${t.stepMs.map((x) => x.toFixed(0)).join(' ')}), load ${row.load.map((l) => l.toFixed(2)).join('→')}`);
      }
      await context.close();
    }
  }
} finally {
  await browser.close();
  await server.close();
}

// The kernels' shares: wall ms per profiled step (median over steps, then over rounds).
console.log(`\nbatch ${batch}; examples/s median over ${rounds} round(s); kernel ms per step (share of the profiled step)`);
const summary: { model: string; threads: number; examplesPerSec: number; bestExamplesPerSec: number; byRound: number[]; profiledStepMs: number; kernelMs: Record<string, number>; leastKernelMs: Record<string, number> }[] = [];
for (const model of models) {
  console.log(`\n${model}`);
  const byThreads = counts.map((c) => rows.filter((r) => r.model === model && r.threadsAsked === c));
  console.log(`  ${'threads'.padEnd(40)} ${counts.map((c) => String(c).padStart(14)).join('')}`);
  console.log(`  ${'examples/s'.padEnd(40)} ${byThreads.map((rs) => median(rs.map((r) => r.examplesPerSec)).toFixed(0).padStart(14)).join('')}`);
  console.log(`  ${'examples/s at the fastest step'.padEnd(40)} ${byThreads.map((rs) => Math.max(...rs.map((r) => r.bestExamplesPerSec)).toFixed(0).padStart(14)).join('')}`);
  const step = byThreads.map((rs) => median(rs.map((r) => r.profiledStepMs)));
  console.log(`  ${'profiled step ms'.padEnd(40)} ${step.map((s) => s.toFixed(1).padStart(14)).join('')}`);
  const kernels = [...new Set(byThreads.flat().flatMap((r) => r.kernels.map((k) => k.kernel)))];
  // 'Outer (own)': what a kernel of ours does besides the wasm kernels it calls (the filter flip in
  // JavaScript inside Conv2DBackpropInput, for one).
  const outers = [...new Set(kernels.filter((k) => k.includes(' > ')).map((k) => k.split(' > ')[0]))];
  kernels.push(...outers.map((o) => `${o} > (own)`));
  const own = (r: Row, outer: string) => (r.kernels.find((x) => x.kernel === outer)?.ms ?? 0) -
    r.kernels.filter((x) => x.kernel.startsWith(`${outer} > `)).reduce((a, x) => a + x.ms, 0);
  const ms = (rs: Row[], k: string) => median(rs.map((r) => k.endsWith(' > (own)') ? own(r, k.split(' > ')[0]) : r.kernels.find((x) => x.kernel === k)?.ms ?? 0));
  kernels.sort((a, b) => ms(byThreads[0], b) - ms(byThreads[0], a));
  // Whether a kernel runs on the threads: its least time over every profiled step (the nearest to
  // an idle machine), and 1 thread's least ÷ this count's. Load only ever adds time.
  const least = (rs: Row[], k: string) => Math.min(...rs.map((r) => r.kernels.find((x) => x.kernel === k)?.minMs ?? Infinity));
  counts.forEach((c, i) => summary.push({
    model, threads: c, examplesPerSec: median(byThreads[i].map((r) => r.examplesPerSec)), bestExamplesPerSec: Math.max(...byThreads[i].map((r) => r.bestExamplesPerSec)), byRound: byThreads[i].map((r) => Math.round(r.examplesPerSec)),
    profiledStepMs: step[i], kernelMs: Object.fromEntries(kernels.map((k) => [k, Math.round(1000 * ms(byThreads[i], k)) / 1000])),
    leastKernelMs: Object.fromEntries(kernels.filter((k) => !k.endsWith('(own)')).map((k) => [k, Math.round(1000 * least(byThreads[i], k)) / 1000])),
  }));
  for (const k of kernels.filter((k) => ms(byThreads[0], k) >= 0.05)) {
    console.log(`  ${(k.includes(' > ') ? `  ${k}` : k).padEnd(40)} ${byThreads.map((rs, i) => `${ms(rs, k).toFixed(2)} (${(100 * ms(rs, k) / step[i]).toFixed(0)}%)`.padStart(14)).join('')}`);
  }
  console.log(`  least ms per step, and speed-up over 1 thread:`);
  for (const k of kernels.filter((k) => !k.endsWith('(own)') && least(byThreads[0], k) >= 0.05)) {
    console.log(`  ${(k.includes(' > ') ? `  ${k}` : k).padEnd(40)} ${byThreads.map((rs) => `${least(rs, k).toFixed(2)} ×${(least(byThreads[0], k) / least(rs, k)).toFixed(2)}`.padStart(14)).join('')}`);
  }
}
mkdirSync(dirname(v.out), { recursive: true });
// One line per summary entry and per row (a row's kernels make it long): the file stays readable.
const meta = { machine: `${cpus().length}-core CPU (${cpus()[0]?.model}), no GPU`, date: new Date().toISOString(), chromium: version, page: info, batch, warmup, steps, rounds };
const list = (xs: unknown[]) => `[\n${xs.map((x) => `    ${JSON.stringify(x)}`).join(',\n')}\n  ]`;
writeFileSync(v.out, `${JSON.stringify(meta, null, 2).slice(0, -2)},\n  "summary": ${list(summary)},\n  "rows": ${list(rows)}\n}\n`);
console.log(`\nwrote ${v.out}`);
