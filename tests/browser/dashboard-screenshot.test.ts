// Makes docs/img/dashboard.png, the README's picture of the dashboard: the quick start's run
// (alexnet-small, batch 32, 2 wasm workers, all of Fashion-MNIST, 10,000 test images) seen by real
// headless Chromium at 1600×1000, 400 steps into its second epoch, so that what the picture shows
// is what `npm start` gives. Skipped unless asked for, as it takes minutes:
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
import { data, kill, workers } from '../helpers/run';

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
  it('docs/img/dashboard.png: the quick start\'s run in its second epoch at 1600×1000', async () => {
    ensureClientBuilt();
    coord = new Coordinator({
      model: 'alexnet-small', batch: 32, epochs: 2, seed: 1, port: 0, host: '127.0.0.1', minWorkers: 2, balance: 'speed', evalExamples: 10_000,
      helloTimeoutMs: DEFAULTS.helloTimeoutMs, staticDir: DIST, adminToken: 'screenshot', log: () => {}, progress: () => {},
    }, data());
    new Dashboard(coord);
    const port = await coord.listen();
    procs = workers(`ws://127.0.0.1:${port}/ws`, 2);
    void coord.train().catch(() => {});
    t = await openTab('screenshot', `http://127.0.0.1:${port}/dashboard`);
    await t.page.setViewportSize({ width: 1600, height: 1000 });
    const view = () => t!.page.evaluate(() => (window as unknown as { tabtrainDashboard: { view(): RunView } }).tabtrainDashboard.view());
    // The first epoch done (its test point, ~83% as the README says) and 400 steps of the second.
    const v = await waitFor('step 2275', view, (v) => (v.steps.at(-1)?.step ?? 0) >= 1875 + 400, 40 * 60_000, 1000);
    expect(v.epochs.map((e) => e.epoch)).toEqual([1]);
    expect(v.epochs[0].testAcc).toBeGreaterThan(0.8);
    mkdirSync(join(ROOT, 'docs', 'img'), { recursive: true });
    await t.page.screenshot({ path: OUT, fullPage: true });
    const png = readFileSync(OUT);
    expect(png.readUInt32BE(16)).toBe(1600);
    console.log(`wrote ${OUT} (${png.length} bytes, ${png.readUInt32BE(16)}×${png.readUInt32BE(20)}) at step ${v.steps.at(-1)!.step}, test acc ${v.epochs.map((e) => e.testAcc!.toFixed(3)).join(', ')}`);
  }, 45 * 60_000);
});
