// Makes docs/img/dashboard.png, the README's picture of the dashboard: a real run (alexnet-small,
// 2 wasm workers, the first 3,200 Fashion-MNIST training images so that an epoch is 100 steps)
// seen by real headless Chromium at 1600×1000, in its third epoch. Skipped unless asked for, as
// it takes minutes:
//   TABTRAIN_DOCS_SCREENSHOT=1 npx vitest run tests/browser/dashboard-screenshot.test.ts
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import type { RunView } from '../../client/src/dashboard-model';
import { openTab, waitFor, type Tab } from '../helpers/browser';
import { DIST, ROOT, ensureClientBuilt } from '../helpers/build-client';
import { data, kill, subset, workers } from '../helpers/run';

const OUT = join(ROOT, 'docs', 'img', 'dashboard.png');
let coord: Coordinator | null = null;
let procs: ChildProcess[] = [];
let t: Tab | null = null;

afterAll(async () => {
  await t?.close();
  coord?.stop('screenshot taken');
  await coord?.close();
  kill(procs);
});

describe.skipIf(!process.env.TABTRAIN_DOCS_SCREENSHOT)('the README screenshot', () => {
  it('docs/img/dashboard.png: a run in its third epoch at 1600×1000', async () => {
    ensureClientBuilt();
    coord = new Coordinator({
      model: 'alexnet-small', batch: 32, epochs: 5, seed: 1, port: 0, host: '127.0.0.1', minWorkers: 2, balance: 'speed', evalExamples: 1000,
      helloTimeoutMs: DEFAULTS.helloTimeoutMs, staticDir: DIST, adminToken: 'screenshot', log: () => {}, progress: () => {},
    }, subset(data(), 3200, 1000));
    new Dashboard(coord);
    const port = await coord.listen();
    procs = workers(`ws://127.0.0.1:${port}/ws`, 2);
    void coord.train().catch(() => {});
    t = await openTab('screenshot', `http://127.0.0.1:${port}/dashboard`);
    await t.page.setViewportSize({ width: 1600, height: 1000 });
    const view = () => t!.page.evaluate(() => (window as unknown as { tabtrainDashboard: { view(): RunView } }).tabtrainDashboard.view());
    // Two epochs done and 70% of the third: the running curves, two test points, the speed chart.
    const v = await waitFor('step 270', view, (v) => (v.steps.at(-1)?.step ?? 0) >= 270, 40 * 60_000, 1000);
    expect(v.epochs.map((e) => e.epoch)).toEqual([1, 2]);
    expect(v.epochs[1].testAcc).toBeGreaterThan(0.4);
    mkdirSync(join(ROOT, 'docs', 'img'), { recursive: true });
    await t.page.screenshot({ path: OUT, fullPage: true });
    const png = readFileSync(OUT);
    expect(png.readUInt32BE(16)).toBe(1600);
    console.log(`wrote ${OUT} (${png.length} bytes, ${png.readUInt32BE(16)}×${png.readUInt32BE(20)}) at step ${v.steps.at(-1)!.step}, test acc ${v.epochs.map((e) => e.testAcc!.toFixed(3)).join(', ')}`);
  }, 45 * 60_000);
});
