// The worker page in real headless Chromium (Debian's, through playwright-core), one browser
// process per worker, against a real in-process coordinator on port 0 with real Fashion-MNIST.
// WebGPU here is SwiftShader (a software fallback adapter): slow, so the model is vgg11-tiny.
import type { ChildProcess } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLOSE } from '@tabtrain/shared';
import { parseCompression } from '@tabtrain/shared/compress';
import { spawnWorker } from '../../server/src/spawn-worker';
import { Coordinator, DEFAULTS, type CoordinatorOptions } from '../../server/src/coordinator';
import { loadFashionMnist, type Dataset } from '../../server/src/data';
import type { PageSnapshot } from '../../client/src/page';
import { WITHOUT, openTab, screenshot, waitFor, type Tab } from '../helpers/browser';
import { ensureClientBuilt } from '../helpers/build-client';
import { subset } from '../helpers/run';

const RUN = { model: 'vgg11-tiny', batch: 16, seed: 11 };
/** SwiftShader's WebGPU adapter is a fallback one: the page takes wasm over it unless told. */
const GPU = '?backend=webgpu';

let data: Dataset;
const tabs: Tab[] = [];
const procs: ChildProcess[] = [];
const coords: Coordinator[] = [];
/** The reference weights after each step of one run, and the step count it runs to (the most any test needs). */
let references: Promise<Map<number, Float32Array>> | null = null;
const REFERENCE_STEPS = 6;

interface Started { coord: Coordinator; port: number; http: string; ws: string; lines: string[] }

async function startCoordinator(opts: Partial<CoordinatorOptions>, d?: Dataset): Promise<Started> {
  const lines: string[] = [];
  const coord = new Coordinator({
    // --open with probation 0: these tabs (no token in their address) are the workers under test,
    // trusted from their first shard (a tab on probation computes shadow copies only:
    // tests/integration/byzantine.test.ts covers that).
    ...RUN, epochs: 1, port: 0, host: '127.0.0.1', minWorkers: 1, balance: 'equal', evalExamples: 100, probation: 0, open: true,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {}, ...opts,
  } as CoordinatorOptions, d ?? data);
  coords.push(coord);
  const port = await coord.listen();
  const host = opts.host ?? '127.0.0.1';
  return { coord, port, http: `http://${host}:${port}/`, ws: `ws://${host}:${port}/ws`, lines };
}

function nodeWorker(url: string, backend = 'cpu'): ChildProcess {
  const p = spawnWorker(url, ['--backend', backend, '--quiet'], 'pipe');
  procs.push(p);
  return p;
}

async function tab(name: string, url: string, opts?: Parameters<typeof openTab>[2]): Promise<Tab> {
  const t = await openTab(name, url, opts);
  tabs.push(t);
  return t;
}

/**
 * The weights after each of REFERENCE_STEPS steps of RUN with one Node worker (cpu backend): one
 * run for every test's reference. An fp32 step is applied whole before its 'step' event
 * (coordinator.ts trainStep), so the weights copied there are the weights a run of that many
 * steps ends with. Its own coordinator and worker, never closed by afterEach: it may run beside a test.
 */
function referenceRun(): Promise<Map<number, Float32Array>> {
  return (references ??= (async () => {
    const lines: string[] = [];
    const coord = new Coordinator({
      ...RUN, epochs: 1, port: 0, host: '127.0.0.1', minWorkers: 1, balance: 'equal', evalExamples: 100, probation: 0, open: true, maxSteps: REFERENCE_STEPS,
      helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {},
    } as CoordinatorOptions, data);
    const after = new Map<number, Float32Array>();
    coord.events.on('step', (s: { step: number }) => after.set(s.step, coord.weights.slice()));
    const w = spawnWorker(`ws://127.0.0.1:${await coord.listen()}/ws`, ['--backend', 'cpu', '--quiet'], 'pipe');
    try {
      const summary = await coord.train();
      if (summary.steps !== REFERENCE_STEPS) throw new Error(`the reference run did ${summary.steps} steps: ${lines.join('\n')}`);
    } finally {
      await coord.close();
      w.kill('SIGKILL');
    }
    return after;
  })());
}

/** The weights after `steps` steps of RUN with one Node worker (cpu backend): the reference. */
async function reference(steps: number): Promise<Float32Array> {
  const w = (await referenceRun()).get(steps);
  if (!w) throw new Error(`no reference after ${steps} steps (the reference run does ${REFERENCE_STEPS})`);
  return w;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };
/** Examples/s of a tab after its first shard (which compiles every shader). */
const speedOf = (s: PageSnapshot) => median(s.shards.slice(1).map((x) => x.examplesPerSec));

beforeAll(() => {
  ensureClientBuilt();
  data = loadFashionMnist();
  // Started now, awaited where a test needs it: it trains while the first test's browsers start.
  referenceRun().catch(() => {});
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') {
    for (const t of tabs) console.log(`--- console of ${t.name} ---\n${t.console.join('\n')}`);
  }
  await Promise.all(tabs.splice(0).map((t) => t.close()));
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
  await Promise.all(coords.splice(0).map((c) => c.close().catch(() => {})));
});

afterAll(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
});

describe('browser worker page (headless Chromium, WebGPU on SwiftShader)', () => {
  it('(a) two WebGPU tabs (tfjs\'s filter-gradient kernel, and the split-K one) and one Node worker train to the same weights as one Node worker', async () => {
    const steps = 4;
    const ref = await reference(steps);
    const { coord, http, ws, lines } = await startCoordinator({ minWorkers: 3, maxSteps: steps });
    // A fallback adapter keeps tfjs's kernels unless told; tab2 runs the split-K one that a
    // hardware adapter gets, so its gradients are checked against the Node worker's here.
    const [t1, t2] = await Promise.all([tab('tab1', http + GPU), tab('tab2', http + GPU + '&kernels=split-k')]);
    nodeWorker(ws);
    const summary = await coord.train();
    await coord.close(); // as the CLI does: tells every worker the run is over
    expect(summary.steps).toBe(steps);

    const diff = maxAbsDiff(coord.weights, ref);
    console.log(`(a) max |w(2 tabs + 1 node) - w(1 node)| after ${steps} steps: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    // The weights moved: not a comparison of two copies of the initial weights.
    expect(maxAbsDiff(coord.weights, new Float32Array(ref.length))).toBeGreaterThan(0);

    // The coordinator's status lists each worker with its kind, backend and adapter.
    // (A worker that reconnected appears once per connection: count identities.)
    const status = coord.status();
    const browsers = status.workers.filter((w) => w.kind === 'browser');
    const ids = [...new Set(browsers.map((w) => w.workerId))];
    expect(ids).toHaveLength(2);
    for (const w of browsers) {
      expect(w.backend).toBe('webgpu');
      expect(w.adapter).not.toBeNull();
      expect(w.adapter).toMatchObject({ api: 'webgpu', isFallbackAdapter: true });
    }
    for (const id of ids) expect(browsers.filter((w) => w.workerId === id).reduce((a, w) => a + w.shardsDone, 0)).toBeGreaterThanOrEqual(1);
    expect(new Set(status.workers.filter((w) => w.kind === 'node').map((w) => w.workerId)).size).toBe(1);
    expect(lines.filter((l) => l.includes('joined: browser/webgpu')).length).toBeGreaterThanOrEqual(2);

    // Each page says the same about itself, and ends on "run finished".
    for (const t of [t1, t2]) {
      const s = await waitFor(`${t.name} to show the end of the run`, () => t.snapshot(), (x) => x.connection.startsWith('run finished'), 15_000);
      expect(s.backend).toBe('webgpu');
      expect(s.adapter).toMatchObject({ api: 'webgpu', vendor: expect.any(String), architecture: expect.any(String) });
      expect(s.notice).toMatch(/Computing with WebGPU.*fallback \(software\) adapter/);
      expect(s.shards.length).toBeGreaterThanOrEqual(1);
      expect(s.error).toBeNull();
      const shown = await t.page.locator('#backend').textContent();
      expect(shown).toBe('webgpu');
      expect(await t.page.locator('#adapter').textContent()).toMatch(/fallback adapter: yes/);
    }
    expect((await t1.snapshot()).adapter).toMatchObject({ kernels: 'tfjs', inputGradient: 'naive' });
    expect((await t2.snapshot()).adapter).toMatchObject({ kernels: 'split-k' });
    // (c) the page as a person sees it
    console.log(`(c) screenshot: ${await screenshot(t1, 'browser-worker-webgpu.png')}`);
  });

  it('(p) powersgd: a WebGPU tab computes its factors on the GPU, applies the two-round updates bit-equal to the coordinator, and trains as Node workers do', async () => {
    const steps = 4;
    const compress = parseCompression('powersgd', 2);
    // The reference: the same run with two Node workers (cpu backend), trained while the tab starts.
    const base = await startCoordinator({ minWorkers: 2, maxSteps: steps, compress, verifyEvery: 1 });
    nodeWorker(base.ws); nodeWorker(base.ws);
    const baseDone = base.coord.train().finally(() => base.coord.close());
    baseDone.catch(() => {}); // awaited below; a failure before then must not go unhandled
    const { coord, http, ws, lines } = await startCoordinator({ minWorkers: 2, maxSteps: steps, compress, verifyEvery: 1 });
    // ?refresh=2: the tab's working weights on the GPU are replaced by its exact copy (a Web Worker) at v2 and v4.
    // ?apply-threads=3: that Web Worker applies each update with 2 helper Web Workers over shared memory (the page is cross-origin isolated).
    const t = await tab('tab', `${http + GPU}&refresh=2&apply-threads=3`);
    nodeWorker(ws);
    const summary = await coord.train();
    await coord.close();
    await baseDone;
    expect(summary.steps).toBe(steps);
    const row = coord.status().workers.find((w) => w.kind === 'browser');
    expect(row?.backend).toBe('webgpu');
    // The drift it measured at v2 (WebGPU's fp32 update against the coordinator's kernel): rounding.
    console.log(`(p) the tab's drift at its refresh: ${row?.drift}`);
    expect(row?.drift).toBeLessThan(1e-6);
    // Every assign carried the replica hash (--verify-every 1): the tab's replica never differed.
    expect(lines.filter((l) => l.includes('replica differs'))).toEqual([]);
    const s = await t.snapshot();
    expect(s.shards.length).toBeGreaterThanOrEqual(2 * steps - 1); // both rounds of its shard, every step
    // Its factors came from WebGPU's matMuls, the reference's from cpu: close, not equal.
    const diff = maxAbsDiff(coord.weights, base.coord.weights);
    console.log(`(p) powersgd rank 2, ${steps} steps: max |w(tab + node) - w(2 node)| = ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
  });

  it('(b) closing a tab mid-run does not hang the run, and the weights stay exact', async () => {
    const steps = 6;
    const ref = await reference(steps);
    const { coord, http, ws, lines } = await startCoordinator({ minWorkers: 3, maxSteps: steps });
    const [t1, t2] = await Promise.all([tab('tab1', http + GPU), tab('tab2', http + GPU)]);
    nodeWorker(ws);
    const run = coord.train();
    // Close tab2 once it has finished a shard and holds the next one: its shard must be requeued.
    await waitFor('tab2 to be computing its second shard', () => t2.snapshot(), (s) => s.shards.length >= 1 && s.status?.state === 'working', 120_000, 50);
    await t2.page.close();
    const summary = await run;
    expect(summary.steps).toBe(steps);
    const diff = maxAbsDiff(coord.weights, ref);
    console.log(`(b) max |w - w(1 node)| after ${steps} steps with a tab closed mid-step: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    const gone = coord.status().workers.find((w) => w.kind === 'browser' && w.state === 'lost' && w.shardsDone >= 1);
    expect(gone).toBeDefined();
    expect(lines.some((l) => /left|closed/.test(l))).toBe(true);
    const s1 = await t1.snapshot();
    expect(s1.shards.length).toBeGreaterThanOrEqual(2);
  });

  it('survives a WebGPU device loss: re-initialises, rejoins under the same id, weights stay exact', async () => {
    const steps = 6;
    const ref = await reference(steps);
    const { coord, http, ws } = await startCoordinator({ minWorkers: 2, maxSteps: steps });
    const t = await tab('tab', http + GPU);
    nodeWorker(ws);
    const run = coord.train();
    const before = await waitFor('the tab to finish a shard', () => t.snapshot(), (s) => s.shards.length >= 1, 120_000, 50);
    // Lose the device mid-shard if we can catch one (the next shard is assigned at once).
    await waitFor('the tab to be computing', () => t.snapshot(), (s) => s.status?.state === 'working', 60_000, 20).catch(() => {});
    expect(await t.page.evaluate(() => window.tabtrain!.simulateDeviceLoss())).toBe(true);
    const after = await waitFor('the tab to rejoin and compute again', () => t.snapshot(), (s) => s.deviceLosses === 1 && s.shards.length > before.shards.length + 1, 120_000, 100);
    const summary = await run;
    expect(summary.steps).toBe(steps);
    expect(after.backend).toBe('webgpu');
    expect(after.notice).toMatch(/GPU device was lost/);
    expect(after.workerId).toBe(before.workerId);
    const diff = maxAbsDiff(coord.weights, ref);
    console.log(`device loss: max |w - w(1 node)| after ${steps} steps: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    const conns = coord.status().workers.filter((w) => w.workerId === before.workerId);
    expect(conns.length).toBeGreaterThanOrEqual(2); // the same worker joined twice
    // Nothing from the lost device lingers: the same tensor count as before the loss.
    const final = await t.snapshot();
    expect(final.shards.at(-1)!.tensors).toBe(before.shards[0].tensors);
  });

  it('reconnects with backoff when the coordinator goes away and comes back, under the same worker id', async () => {
    const first = await startCoordinator({ minWorkers: 1 });
    const t = await tab('tab', first.http + '?backend=cpu');
    const joined = await waitFor('the tab to join', () => t.snapshot(), (x) => x.connection.startsWith('joined'), 60_000);
    await first.coord.close(CLOSE.shutdown, 'coordinator restarting');
    const waiting = await waitFor('the tab to notice', () => t.snapshot(), (x) => x.connection.startsWith('disconnected'), 10_000, 50);
    expect(waiting.connection).toMatch(/shutdown: coordinator restarting\); reconnecting in \d+\.\d s \(attempt 1\)/);
    // A few refused attempts (nothing listens: the page shows attempt 3 once two were refused), then a coordinator on the same port again.
    const refused = await waitFor('two refused attempts', () => t.snapshot(), (x) => Number(/\(attempt (\d+)\)/.exec(x.connection)?.[1] ?? 0) >= 3, 10_000, 50);
    expect(refused.connection).toMatch(/coordinator is unreachable/);
    const second = await startCoordinator({ minWorkers: 1, port: first.port });
    await waitFor('the tab to rejoin the new coordinator', () => second.coord.status().workers, (w) => w.length === 1, 30_000);
    const w = second.coord.status().workers[0];
    expect(w).toMatchObject({ workerId: joined.workerId, kind: 'browser', backend: 'cpu' });
    expect((await t.snapshot()).workerId).toBe(joined.workerId);
  });

  it('a second tab with the same worker id (a duplicated tab) makes the first take a new id; both stay in', async () => {
    const { coord, http } = await startCoordinator({ minWorkers: 1 });
    const t1 = await tab('tab1', http + '?backend=cpu');
    const first = await waitFor('tab1 to join', () => t1.snapshot(), (x) => x.connection.startsWith('joined'), 60_000);
    // "Duplicate tab" copies sessionStorage, and with it the worker id and its session secret.
    const session = await t1.page.evaluate(() => sessionStorage.getItem('tabtrain.session'));
    expect(session).toMatch(/^[0-9a-f]{32}$/);
    const t2 = await tab('tab2', http + '?backend=cpu', { initScript: `sessionStorage.setItem('tabtrain.workerId', ${JSON.stringify(first.workerId)}); sessionStorage.setItem('tabtrain.session', ${JSON.stringify(session)});` });
    await waitFor('tab2 to join under the copied id', () => t2.snapshot(), (x) => x.connection.startsWith('joined') && x.workerId === first.workerId, 60_000);
    const again = await waitFor('tab1 to rejoin under a new id', () => t1.snapshot(), (x) => x.connection.startsWith('joined') && x.workerId !== first.workerId, 30_000);
    const live = coord.status().workers.filter((w) => w.state !== 'lost');
    expect(live.map((w) => w.workerId).sort()).toEqual([first.workerId, again.workerId].sort());
  });

  it('(r) shows the run it helps: the coordinator\'s step numbers, the loss, the test accuracy and this tab\'s share', async () => {
    // Three steps an epoch, two epochs: the page sees an epoch's test accuracy and the run's end.
    const { coord, http } = await startCoordinator({ minWorkers: 1, epochs: 2 }, subset(data, 3 * RUN.batch, 100));
    const t = await tab('tab', `${http}?backend=wasm`);
    const training = coord.train();
    const text = (id: string) => t.page.locator(`#${id}`).innerText();
    await waitFor('the tab to hear of step 4', () => t.snapshot(), (x) => (x.progress?.step ?? 0) >= 4, 60_000);
    // The docs' pictures come from docs-screenshots.test.ts (a longer run); these are for a person checking this test.
    for (const [name, width, height] of [['desktop', 1280, 800], ['phone', 390, 844]] as const) {
      await t.page.setViewportSize({ width, height });
      console.log(`(r) screenshot: ${await screenshot(t, `worker-page-${name}.png`)}`);
    }
    const summary = await training;
    expect(summary.steps).toBe(6);
    const s = await waitFor('the tab to hear of the end', () => t.snapshot(), (x) => x.progress?.state === 'finished' || x.connection.includes('finished'), 15_000);
    const last = coord.lastStep!;
    expect(s.progress!.step).toBe(6);
    // Numbered as the coordinator numbers its steps (from 1): the last shard was the test evaluation after step 6.
    expect(await text('step')).toBe('test evaluation after step 6');
    expect(await text('progress')).toContain('step 6 of 6 · epoch 2 of 2');
    expect(await text('loss')).toContain(`${last.loss.toFixed(3)} at step 6`);
    expect(await text('test-acc')).toBe(coord.history[1].testAcc!.toFixed(3));
    expect(await text('contributed')).toContain(`${(6 * RUN.batch).toLocaleString('en-US')} examples computed; 100% of the last`);
    expect(s.curve.map((p) => p[0])).toEqual([1, 2, 3, 4, 5, 6]);
    expect(s.curve.at(-1)![1]).toBeCloseTo(last.loss, 5);
    // No GPU figure on a backend that has none (wasm).
    expect(await text('memory')).not.toContain('GPU');
  });

  it('memory stays flat over 20 steps (tf.memory and the JS heap)', async () => {
    const steps = 20;
    const { coord, http } = await startCoordinator({ minWorkers: 1, maxSteps: steps });
    const t = await tab('tab', http + GPU);
    const summary = await coord.train();
    expect(summary.steps).toBe(steps);
    const s = await waitFor('the tab to show the end of the run', () => t.snapshot(), (x) => x.shards.length >= steps, 15_000);
    const tensors = new Set(s.shards.map((x) => x.tensors));
    const bytes = new Set(s.shards.map((x) => x.bytes));
    const params = coord.run.paramCount;
    const heaps = s.shards.map((x) => x.heapBytes ?? 0);
    console.log(`memory after ${steps} steps on webgpu (${coord.run.model}, ${params} params, batch ${RUN.batch}): ` +
      `tf.memory() numTensors ${s.shards.at(-1)!.tensors} (every step: ${[...tensors].join(',')}), numBytes ${s.shards.at(-1)!.bytes} (= ${(s.shards.at(-1)!.bytes / 4 / params).toFixed(2)}× the weights), ` +
      `JS heap ${(heaps.at(-1)! / 1048576).toFixed(1)} MB (min ${(Math.min(...heaps) / 1048576).toFixed(1)}, max ${(Math.max(...heaps) / 1048576).toFixed(1)}); ` +
      `${speedOf(s).toFixed(1)} examples/s`);
    expect(tensors.size).toBe(1);
    expect(bytes.size).toBe(1);
    // Only the weights stay resident between steps: one variable per parameter tensor.
    expect(s.shards[0].bytes).toBe(params * 4);
    // The JS heap does not grow with the steps (allow GC noise).
    expect(Math.max(...heaps.slice(10))).toBeLessThan(Math.min(...heaps.slice(0, 10)) + 8 * 1048576);
    console.log(`(c) screenshot: ${await screenshot(t, 'browser-worker-20-steps.png')}`);
  });

  it('falls back webgpu → webgl → wasm → cpu, passes over software GPUs while wasm works, with a notice that says why, and trains on each', async () => {
    const steps = 5;
    const ref = await reference(steps);
    // SwiftShader's WebGPU adapter and WebGL are software: passed over for wasm, taken when wasm is
    // missing. Then each browser lacks one more thing, as real machines do: no WebGPU adapter (most
    // Linux desktops today), then no WebGL either, then no WebAssembly either. ?backend= overrides.
    const cases: { name: string; query: string; webgpu: boolean; initScript?: string; backend: string; threads?: number; notice: RegExp }[] = [
      { name: 'a fallback WebGPU adapter and a software WebGL', query: '', webgpu: true, backend: 'wasm', notice: /^Computing with WebAssembly \(CPU\), \d+ threads?\..*Passed over: WebGPU: its only adapter is a fallback \(software\) one.*\?backend=webgpu forces it\. WebGL: its renderer is software \(.*SwiftShader.*\?backend=webgl forces it/ },
      { name: 'no WebAssembly: the fallback adapter beats plain JavaScript', query: '', webgpu: true, initScript: WITHOUT.wasm, backend: 'webgpu', notice: /^Computing with WebGPU.*fallback \(software\) adapter/ },
      { name: '?backend=webgl without a WebGPU adapter', query: '?backend=webgl', webgpu: false, backend: 'webgl', notice: /^Computing with WebGL.*\(chosen by \?backend=webgl\)/ },
      { name: 'no WebGPU, no WebGL', query: '', webgpu: false, initScript: WITHOUT.webgl, backend: 'wasm', notice: /^Computing with WebAssembly \(CPU\), \d+ threads?\..*Passed over: WebGPU: .*WebGL: / },
      { name: 'no WebGPU, WebGL or WebAssembly', query: '', webgpu: false, initScript: WITHOUT.webgl + WITHOUT.wasm, backend: 'cpu', notice: /^Computing with plain JavaScript.*Passed over: WebGPU: .*WebGL: .*WebAssembly \(CPU\): this browser has no WebAssembly/ },
      // ?threads=2 on this 2-core machine: tfjs alone would cap it at hardwareConcurrency / 2 = 1 (page-threads.ts).
      { name: '?backend=wasm&threads=2 on a WebGPU browser', query: '?backend=wasm&threads=2', webgpu: true, backend: 'wasm', threads: 2, notice: /^Computing with WebAssembly \(CPU\), 2 threads \(\?threads=2\) \(chosen by \?backend=wasm\)\. No GPU/ },
    ];
    const speeds: Record<string, number> = {};
    for (const c of cases) {
      const { coord, http } = await startCoordinator({ minWorkers: 1, maxSteps: steps });
      const t = await tab(c.backend, http + c.query, { webgpu: c.webgpu, initScript: c.initScript });
      const summary = await coord.train();
      expect(summary.steps).toBe(steps);
      const s = await waitFor(`${c.name}: the page to finish`, () => t.snapshot(), (x) => x.shards.length >= steps, 15_000);
      expect(s.backend, c.name).toBe(c.backend);
      expect(s.notice, c.name).toMatch(c.notice);
      expect(coord.status().workers[0]).toMatchObject({ kind: 'browser', backend: c.backend });
      const diff = maxAbsDiff(coord.weights, ref);
      expect(diff, c.name).toBeLessThan(1e-4);
      speeds[`${c.backend} (${c.name})`] = speedOf(s);
      // The threaded wasm build loads: the page is cross-origin isolated (COOP/COEP).
      if (c.backend === 'wasm') expect(s.adapter).toMatchObject({ api: 'wasm', crossOriginIsolated: true, multithread: true });
      if (c.threads) expect(s.adapter, c.name).toMatchObject({ threads: c.threads, threadsAsked: c.threads });
      await screenshot(t, `browser-worker-${c.backend}${c.query ? "-forced" : ""}.png`);
      await t.close();
      await coord.close();
    }
    // A ?threads= the page cannot take stops it with a message naming the value and the fix.
    const { http } = await startCoordinator({ minWorkers: 1 });
    const bad = await tab('bad-threads', `${http}?backend=wasm&threads=0`);
    const b = await waitFor('the page to refuse ?threads=0', () => bad.snapshot(), (x) => x.error !== null, 15_000);
    expect(b.error).toMatch(/\?threads=0 is not a whole number from 1 to 8: .*e\.g\. \?threads=2/);
    expect(b.backend).toBeNull();
    console.log(`examples/s by backend (${RUN.model}, batch ${RUN.batch}, one tab, median after the first shard): ${Object.entries(speeds).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  });
});

describe('opening the page from another machine on the LAN', () => {
  const lan = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

  it.skipIf(!lan)('over plain http it is not a secure context: WebGPU is off and the notice says so; the Chrome flag turns it on', async () => {
    const { http } = await startCoordinator({ host: lan!, minWorkers: 1 });
    const plain = await tab('lan', http);
    const s = await waitFor('the lan tab to join', () => plain.snapshot(), (x) => x.connection.startsWith('joined'), 60_000);
    // Its WebGL is SwiftShader (software): passed over for wasm, the notice giving both reasons.
    expect(s.backend).toBe('wasm');
    expect(s.notice).toMatch(/WebGPU: this page is not a secure context/);
    const flagged = await tab('lan-flag', http + GPU, { extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${http.replace(/\/$/, '')}`] });
    const f = await waitFor('the flagged tab to join', () => flagged.snapshot(), (x) => x.connection.startsWith('joined'), 60_000);
    expect(f.backend).toBe('webgpu');
  });
});
