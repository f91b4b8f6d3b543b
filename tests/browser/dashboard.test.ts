// The dashboard in real headless Chromium (Debian's, through playwright-core) during a real run:
// an in-process coordinator on port 0, two Node worker processes (wasm), real Fashion-MNIST.
// The training set is cut to its first 640 images so that epochs (and their test accuracy) come
// every 20 steps; everything else is the real path. Screenshots go to artifacts/.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS, type CoordinatorOptions, type Summary } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import type { RunView } from '../../client/src/dashboard-model';
import { openTab, screenshot, waitFor, type Tab } from '../helpers/browser';
import { DIST, ensureClientBuilt } from '../helpers/build-client';
import { data, kill, subset, workers } from '../helpers/run';

const ADMIN = 'dashboard-test-admin-token';
const TRAIN_IMAGES = 640;

interface Run { coord: Coordinator; port: number; base: string; lines: string[]; procs: ChildProcess[]; done: Promise<Summary> }
const runs: Run[] = [];
const tabs: Tab[] = [];

async function startRun(opts: Partial<CoordinatorOptions>, nWorkers: number): Promise<Run> {
  const lines: string[] = [];
  const coord = new Coordinator({
    model: 'vgg11-tiny', batch: 32, epochs: 1000, seed: 5, port: 0, host: '127.0.0.1', minWorkers: nWorkers, balance: 'speed', evalExamples: 320,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, staticDir: DIST, log: (l) => lines.push(l), progress: () => {}, ...opts,
  }, subset(data(), TRAIN_IMAGES, 320));
  new Dashboard(coord);
  const port = await coord.listen();
  const procs = workers(`ws://127.0.0.1:${port}/ws`, nWorkers);
  const done = coord.train();
  done.catch(() => {});
  const run = { coord, port, base: `http://127.0.0.1:${port}`, lines, procs, done };
  runs.push(run);
  return run;
}

async function tab(name: string, url: string): Promise<Tab> {
  const t = await openTab(name, url);
  tabs.push(t);
  return t;
}

const view = (t: Tab) => t.page.evaluate(() => (window as unknown as { tabtrainDashboard: { view(): RunView } }).tabtrainDashboard.view());
const lossPoints = (t: Tab) => t.page.evaluate(() => (window as unknown as { tabtrainDashboard: { lossPoints(): number } }).tabtrainDashboard.lossPoints());
const text = (t: Tab, selector: string) => t.page.locator(selector).innerText();

beforeAll(() => ensureClientBuilt());

afterAll(async () => {
  for (const r of runs) {
    const dropped = r.lines.filter((l) => / closed: /.test(l));
    if (dropped.length) console.log(`workers dropped during the run on port ${r.port}:\n${dropped.join('\n')}`);
  }
  for (const t of tabs) await t.close();
  for (const r of runs) {
    r.coord.stop('test over');
    await r.coord.close();
    kill(r.procs);
  }
});

describe('dashboard during a run with 2 Node workers', () => {
  let run: Run;
  let t: Tab;

  beforeAll(async () => {
    run = await startRun({ adminToken: ADMIN }, 2);
    t = await tab('dashboard', `${run.base}/dashboard`);
  });

  it('lists both workers, draws the loss curve and the epoch points, says it is in admin mode', async () => {
    const live = (v: RunView) => v.workers.filter((w) => w.state !== 'lost');
    const v = await waitFor('2 workers with shards done, 2 epochs', () => view(t),
      (v) => live(v).filter((w) => w.shardsDone > 0).length === 2 && v.epochs.length >= 2, 60_000);
    expect(live(v).map((w) => w.kind)).toEqual(['node', 'node']);
    expect(live(v).every((w) => w.backend === 'wasm')).toBe(true);
    expect(await t.page.locator('#workers tbody tr:not([data-state="lost"])').count()).toBe(2);
    expect(await text(t, '#workers tbody')).toMatch(/#\d+[\s\S]*node[\s\S]*wasm[\s\S]*#\d+[\s\S]*node[\s\S]*wasm/);
    expect(await lossPoints(t)).toBeGreaterThan(20);
    expect(v.epochs[0].testAcc).toBeGreaterThan(0);
    expect(v.header!.stepsPerEpoch).toBe(TRAIN_IMAGES / 32);
    // With two shards every step has a straggler, and the table marks it.
    expect(v.steps.at(-1)!.straggler).not.toBeNull();
    expect(await t.page.locator('#workers .marker').count()).toBe(1);
    expect(await text(t, '#mode')).toContain('admin');
    expect(await text(t, '#d2l')).toMatch(/loss \d\.\d{3}, train acc \d\.\d{3}/);
    expect(Number((await text(t, '#step')).split('/')[0].replace(/,/g, ''))).toBeGreaterThan(0);
    // The timeline's stacks: six phases, one bar per recent step.
    const timeline = await t.page.evaluate(() => document.querySelectorAll('#chart-timeline .u-legend .u-series').length);
    expect(timeline).toBe(7);
    await screenshot(t, 'dashboard-desktop.png');
  });

  it('refuses a pause without the admin token, pauses with it, and resumes', async () => {
    await t.page.fill('#token', '');
    await t.page.click('#pause');
    await waitFor('the refusal on the page', () => text(t, '#control-message'), (s) => /refused.*401/.test(s), 10_000);
    expect(run.coord.state).not.toBe('paused');
    await t.page.fill('#token', 'not-the-token');
    await t.page.click('#pause');
    await waitFor('the second refusal', () => text(t, '#control-message'), (s) => /refused.*wrong admin token/.test(s), 10_000);
    expect(run.coord.state).not.toBe('paused');

    await t.page.fill('#token', ADMIN);
    await t.page.click('#pause');
    await waitFor('the coordinator to pause', () => run.coord.state, (s) => s === 'paused', 10_000);
    await waitFor('the page to show it', () => text(t, '#state'), (s) => s === 'paused', 10_000);
    expect(await text(t, '#reason')).toContain('paused from the dashboard');
    const step = run.coord.step;
    await new Promise((r) => setTimeout(r, 1000));
    expect(run.coord.step).toBe(step);
    await screenshot(t, 'dashboard-paused.png');

    await t.page.click('#resume');
    await waitFor('steps after resume', () => run.coord.step, (s) => s > step + 3, 20_000);
    await waitFor('the page to show running', () => text(t, '#state'), (s) => s === 'running' || s === 'evaluating', 10_000);
  });

  it('fits a phone-sized screen', async () => {
    await t.page.setViewportSize({ width: 390, height: 844 });
    await new Promise((r) => setTimeout(r, 500));
    const { scrollWidth, innerWidth, chartWidth } = await t.page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
      chartWidth: (document.querySelector('#chart-curves .uplot') as HTMLElement).getBoundingClientRect().width,
    }));
    expect(scrollWidth).toBeLessThanOrEqual(innerWidth);
    expect(chartWidth).toBeLessThanOrEqual(innerWidth);
    expect(chartWidth).toBeGreaterThan(250);
    await screenshot(t, 'dashboard-phone.png');
    await t.page.setViewportSize({ width: 1000, height: 760 });
  });

  it('stops the run from the page (two clicks) and shows the final state and why', async () => {
    await t.page.click('#stop');
    expect(await text(t, '#stop')).toBe('Confirm stop');
    expect(run.coord.state).not.toBe('stopped');
    await t.page.click('#stop');
    const summary = await run.done;
    expect(summary.stoppedBy).toBe('stop');
    await waitFor('the page to show stopped', () => text(t, '#state'), (s) => s === 'stopped', 10_000);
    expect(await text(t, '#reason')).toMatch(/stopped from the dashboard/);
    expect(await t.page.locator('#pause').isDisabled()).toBe(true);
    await run.coord.close();
    kill(run.procs);
    await waitFor('the page to notice the coordinator left', () => text(t, '#connection'), (s) => /gone|reconnecting/.test(s), 10_000);
    expect(await text(t, '#state')).toBe('stopped');
    await screenshot(t, 'dashboard-stopped.png');
  });
});

describe('dashboard without --admin-token', () => {
  it('is read-only, says so, and shows a finished run with its reason', async () => {
    const run = await startRun({ maxSteps: 30 }, 1);
    const t = await tab('read-only', `${run.base}/dashboard`);
    await waitFor('the header', () => text(t, '#mode'), (s) => s === 'read-only', 20_000).catch((e) => { throw new Error(`${e.message}\npage console:\n${t.console.join('\n')}`); });
    expect(await t.page.locator('#pause').isDisabled()).toBe(true);
    expect(await t.page.locator('#token').isHidden()).toBe(true);
    expect(await text(t, '#control-note')).toMatch(/Read-only/);
    const res = await fetch(`${run.base}/api/control`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer anything' }, body: '{"action":"pause"}' });
    expect(res.status).toBe(403);
    expect(run.coord.state).not.toBe('paused');
    const summary = await run.done;
    expect(summary.steps).toBe(30);
    await waitFor('the page to show finished', () => text(t, '#state'), (s) => s === 'finished', 10_000);
    expect(await text(t, '#reason')).toBe('30 steps done');
    expect(await text(t, '#step')).toBe('30 / 30');
    await screenshot(t, 'dashboard-finished.png');
  });
});
