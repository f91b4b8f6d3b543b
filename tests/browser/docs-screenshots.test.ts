// Makes the docs' pictures of issue 22 (docs/BROWSER.md, docs/DASHBOARD.md), desktop 1280×800 and
// phone 390×844, from real runs seen by real headless Chromium:
//   docs/img/worker-page-{desktop,phone}.png      a WebGPU tab (SwiftShader) and a Node worker, mid-run
//   docs/img/view-two-runs-{desktop,phone}.png    `tabtrain view` of two alexnet-small runs' --log files (lr 0.05 and 0.1)
// Skipped unless asked for, as it takes a few minutes:
//   TABTRAIN_DOCS_SCREENSHOT=1 npx vitest run tests/browser/docs-screenshots.test.ts
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import { LogRuns, runNames, viewHandler } from '../../server/src/view';
import { WASM, trainInProcess } from '../helpers/in-process';
import { openTab, waitFor, type Tab } from '../helpers/browser';
import { DIST, ROOT, ensureClientBuilt } from '../helpers/build-client';
import { data, kill, subset, workers } from '../helpers/run';

const IMG = join(ROOT, 'docs', 'img');
const SIZES = [['desktop', 1280, 800], ['phone', 390, 844]] as const;
let coord: Coordinator | null = null;
let procs: ChildProcess[] = [];
let server: Server | null = null;
const tabs: Tab[] = [];

afterAll(async () => {
  for (const t of tabs) await t.close();
  coord?.stop('screenshot taken');
  await coord?.close();
  kill(procs);
  server?.close();
});

async function shoot(t: Tab, name: string): Promise<void> {
  mkdirSync(IMG, { recursive: true });
  for (const [size, width, height] of SIZES) {
    await t.page.setViewportSize({ width, height });
    await new Promise((r) => setTimeout(r, 500));
    const file = join(IMG, `${name}-${size}.png`);
    await t.page.screenshot({ path: file, fullPage: true });
    const png = readFileSync(file);
    expect(png.readUInt32BE(16)).toBe(width);
    console.log(`wrote ${file} (${png.readUInt32BE(16)}×${png.readUInt32BE(20)})`);
  }
}

describe.skipIf(!process.env.TABTRAIN_DOCS_SCREENSHOT)('the docs pictures of the worker page and of tabtrain view', () => {
  it('worker page: a WebGPU tab beside a Node worker, in the run\'s second epoch', async () => {
    ensureClientBuilt();
    coord = new Coordinator({
      model: 'vgg11-tiny', batch: 32, epochs: 3, seed: 1, port: 0, host: '127.0.0.1', minWorkers: 2, balance: 'speed', evalExamples: 500, open: true, probation: 0,
      helloTimeoutMs: DEFAULTS.helloTimeoutMs, staticDir: DIST, log: () => {}, progress: () => {},
    }, subset(data(), 20 * 32, 500));
    new Dashboard(coord);
    const port = await coord.listen();
    procs = workers(`ws://127.0.0.1:${port}/ws`, 1);
    const t = await openTab('worker', `http://127.0.0.1:${port}/?backend=webgpu`);
    tabs.push(t);
    void coord.train().catch(() => {});
    await waitFor('step 28 with the tab computing', () => t.snapshot(), (s) => (s.progress?.step ?? 0) >= 28 && s.status?.state === 'working', 10 * 60_000, 100);
    await shoot(t, 'worker-page');
  }, 12 * 60_000);

  it('tabtrain view: two runs\' --log files side by side', async () => {
    ensureClientBuilt();
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-docs-view-'));
    // The README picture's run, shorter: alexnet-small learns in its second 100 steps. Three epochs of 100 steps, two wasm workers a run.
    const d = subset(data(), 100 * 32, 500);
    const files = [join(dir, 'lr-0.05.jsonl'), join(dir, 'lr-0.1.jsonl')];
    for (const [i, lr] of [0.05, 0.1].entries()) await trainInProcess(2, { model: 'alexnet-small', epochs: 3, batch: 32, lr, seed: 1, evalExamples: 500, metricsLog: files[i] }, WASM, d);
    server = createServer(viewHandler(new LogRuns(runNames(files)), DIST));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const t = await openTab('view', `http://127.0.0.1:${(server.address() as { port: number }).port}/dashboard`);
    tabs.push(t);
    await waitFor('both runs', () => t.page.evaluate(() => (window as unknown as { tabtrainDashboard: { runs(): unknown[] | null } }).tabtrainDashboard.runs()), (r) => r?.length === 2, 20_000);
    await shoot(t, 'view-two-runs');
    rmSync(dir, { recursive: true, force: true });
  }, 12 * 60_000);
});
