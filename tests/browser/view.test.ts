// `tabtrain view` in real headless Chromium: two --log files of two small real runs (in-process,
// real Fashion-MNIST, different learning rates) served read-only and drawn side by side, each
// named by its file; a bad line in one is listed as FILE:LINE and the rest still draws.
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LogRuns, runNames, viewHandler } from '../../server/src/view';
import { WASM, trainInProcess } from '../helpers/in-process';
import { data, subset } from '../helpers/run';
import { openTab, screenshot, waitFor, type Tab } from '../helpers/browser';
import { DIST, ensureClientBuilt } from '../helpers/build-client';

let server: Server | null = null;
let tab: Tab | null = null;
const dir = mkdtempSync(join(tmpdir(), 'tabtrain-view-'));
afterAll(async () => {
  await tab?.close();
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Drawn { labels: string[]; points: number[] }
type Dash = {
  runs(): { name: string; steps: number; epochs: number; state: string }[] | null;
  runCharts(): Record<'loss' | 'testAcc' | 'speed', Drawn> | null;
  workerCharts(): Record<string, Drawn>;
};

describe('tabtrain view', () => {
  it('overlays two runs from their --log files, named by the files', async () => {
    ensureClientBuilt();
    const files = [join(dir, 'lr-0.05.jsonl'), join(dir, 'lr-0.2.jsonl')];
    // Two epochs of 2 steps each, one worker: the logs of two small real runs.
    const d = subset(data(), 2 * 16, 64);
    for (const [i, lr] of [0.05, 0.2].entries()) await trainInProcess(1, { model: 'vgg11-tiny', epochs: 2, batch: 16, lr, evalExamples: 64, metricsLog: files[i] }, WASM, d);
    appendFileSync(files[1], '{"type": "step", "step": oops}\n');
    server = createServer(viewHandler(new LogRuns(runNames(files)), DIST));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    tab = await openTab('view', `http://127.0.0.1:${port}/dashboard`);
    const runs = await waitFor('both runs', () => tab!.page.evaluate(() => (window as unknown as { tabtrainDashboard: Dash }).tabtrainDashboard.runs()), (r) => r?.length === 2, 20_000);
    expect(runs).toEqual([
      { name: 'lr-0.05', steps: 4, epochs: 2, state: 'finished' },
      { name: 'lr-0.2', steps: 4, epochs: 2, state: 'finished' },
    ]);
    const charts = await tab.page.evaluate(() => (window as unknown as { tabtrainDashboard: Dash }).tabtrainDashboard.runCharts());
    expect(charts!.loss).toEqual({ labels: ['lr-0.05', 'lr-0.2'], points: [4, 4] });
    expect(charts!.testAcc).toEqual({ labels: ['lr-0.05', 'lr-0.2'], points: [2, 2] });
    const workers = await tab.page.evaluate(() => (window as unknown as { tabtrainDashboard: Dash }).tabtrainDashboard.workerCharts());
    expect(workers.computeMs.labels).toHaveLength(2);
    expect(workers.computeMs.labels.every((l) => /^lr-0\.(05|2)\/.+ \(wasm\)$/.test(l))).toBe(true);
    // The table names the runs; the bad line is listed by file and line.
    expect(await tab.page.locator('#runs tbody tr').allInnerTexts()).toEqual([expect.stringContaining('lr-0.05'), expect.stringContaining('lr-0.2')]);
    expect(await tab.page.locator('#view-problems').innerText()).toMatch(/^lr-0\.2:\d+: not JSON/);
    // The toolbar's choices, as the pictures show them: x by step, the loss on a log scale.
    await tab.page.selectOption('#x-axis', 'step');
    await tab.page.check('#log-loss');
    for (const [name, width, height] of [['desktop', 1280, 800], ['phone', 390, 844]] as const) {
      await tab.page.setViewportSize({ width, height });
      await new Promise((r) => setTimeout(r, 300));
      console.log(`screenshot: ${await screenshot(tab, `view-two-runs-${name}.png`)}`);
    }
    // The page fits the phone's width (long run and worker names wrap).
    expect(await tab.page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  }, 120_000);
});
