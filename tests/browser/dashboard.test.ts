// The dashboard in real headless Chromium (Debian's, through playwright-core) during a real run:
// an in-process coordinator on port 0, two Node worker processes (wasm), real Fashion-MNIST.
// The training set is cut to its first 640 images so that epochs (and their test accuracy) come
// every 20 steps; everything else is the real path. Screenshots go to artifacts/ (the README's
// docs/img/dashboard.png comes from tests/browser/dashboard-screenshot.test.ts).
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Download } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, saveCheckpoint } from '../../server/src/checkpoint';
import { Coordinator, DEFAULTS, type CoordinatorOptions, type StepRecord, type Summary } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import { CSV_COLUMNS, type RunView } from '../../client/src/dashboard-model';
import type { Charts } from '../../client/src/dashboard-charts';
import { openTab, screenshot, waitFor, type Tab } from '../helpers/browser';
import { DIST, ensureClientBuilt } from '../helpers/build-client';
import { data, kill, subset, workers } from '../helpers/run';
import { csvRows } from '../helpers/csv';

const ADMIN = 'dashboard-test-admin-token';
const TRAIN_IMAGES = 640;

interface Run { coord: Coordinator; port: number; base: string; lines: string[]; procs: ChildProcess[]; done: Promise<Summary> }
const runs: Run[] = [];
const tabs: Tab[] = [];

/** `beforeListen` runs where the CLI restores a checkpoint: after the Dashboard, before the port opens. */
async function startRun(opts: Partial<CoordinatorOptions>, nWorkers: number, beforeListen?: (c: Coordinator) => void): Promise<Run> {
  const lines: string[] = [];
  const coord = new Coordinator({
    model: 'vgg11-tiny', batch: 32, epochs: 1000, seed: 5, port: 0, host: '127.0.0.1', minWorkers: nWorkers, balance: 'speed', evalExamples: 320,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, staticDir: DIST, log: (l) => lines.push(l), progress: () => {}, ...opts,
  }, subset(data(), TRAIN_IMAGES, 320));
  new Dashboard(coord);
  beforeListen?.(coord);
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
/** What uPlot draws: each chart's series labels, its data columns and its size. */
const drawn = (t: Tab) => t.page.evaluate(() => (window as unknown as { tabtrainDashboard: { charts(): ReturnType<Charts['describe']> } }).tabtrainDashboard.charts());
const text = (t: Tab, selector: string) => t.page.locator(selector).innerText();

type Drawn = Awaited<ReturnType<typeof drawn>>['curves'];
/** One series of a chart as [x, y] pairs where y is drawn (not a gap). */
function series(c: Drawn, label: string): [number, number][] {
  const i = c.labels.indexOf(label);
  if (i < 1) throw new Error(`no series '${label}' in ${JSON.stringify(c.labels)}`);
  return c.data[0].map((x, j) => [x as number, c.data[i][j]] as [number, number | null]).filter((p): p is [number, number] => p[1] !== null);
}

/** The page's '#elapsed': "12 s", "3 min 05 s", "1 h 02 min" → seconds. */
function seconds(s: string): number {
  const m = /^(?:(\d+) h )?(?:(\d+) min ?)?(?:(\d+) s)?$/.exec(s.trim());
  if (!m) throw new Error(`not a duration: ${s}`);
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

/** Clicks `selector` and returns the downloaded file's text (Playwright's download event). */
async function download(t: Tab, selector: string): Promise<{ name: string; text: string }> {
  const [d] = await Promise.all([t.page.waitForEvent('download', { timeout: 10_000 }), t.page.click(selector)]) as [Download, void];
  const path = await d.path();
  return { name: d.suggestedFilename(), text: readFileSync(path, 'utf8') };
}

/** The CSV download (tests/helpers/csv.ts) into objects keyed by the header. */
function parseCsv(text: string): Record<string, string>[] {
  const rows = csvRows(text);
  const [head, ...body] = rows;
  for (const r of body) if (r.length !== head.length) throw new Error(`a row of ${r.length} cells under a header of ${head.length}`);
  return body.map((r) => Object.fromEntries(head.map((h, i) => [h, r[i]])));
}

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
  let logFile: string;
  /** The first epoch is held open after this step (of 20), so that the page is read mid-epoch. */
  const HOLD_AT = 17;

  beforeAll(async () => {
    logFile = join(mkdtempSync(join(tmpdir(), 'tabtrain-dashboard-')), 'run.jsonl');
    run = await startRun({ adminToken: ADMIN, metricsLog: logFile }, 2);
    const hold = (s: StepRecord) => {
      if (s.step !== HOLD_AT) return;
      run.coord.events.off('step', hold);
      run.coord.pause('test: the first epoch held open');
    };
    run.coord.events.on('step', hold);
    t = await tab('dashboard', `${run.base}/dashboard`);
  });

  it("draws the epoch's running train loss and acc several times before the first epoch ends", async () => {
    await waitFor('the run to hold at step 17', () => run.coord.state, (s) => s === 'paused', 60_000);
    expect(run.coord.step).toBe(HOLD_AT);
    const v = await waitFor('the page to have every step so far', () => view(t), (v) => v.steps.length === HOLD_AT && v.header?.state === 'paused', 10_000);
    // The epoch has not ended: no epoch record, no test accuracy yet, but four running points.
    expect(v.epochs).toEqual([]);
    expect(v.train.map((p) => p.step)).toEqual([4, 8, 12, 16]);
    // Each is the epoch's running mean so far: the mean over its steps, weighted by their examples.
    for (const p of v.train) {
      const upTo = v.steps.filter((s) => s.step <= p.step);
      const n = upTo.reduce((a, s) => a + s.examples, 0);
      expect(p.examples).toBe(n);
      expect(p.acc).toBeCloseTo(upTo.reduce((a, s) => a + s.acc * s.examples, 0) / n, 3);
      expect(p.loss).toBeCloseTo(upTo.reduce((a, s) => a + s.loss * s.examples, 0) / n, 3);
    }
    // Drawn: the train acc and train loss curves have those points at x = step / 20 < 1 (epochs).
    const c = (await drawn(t)).curves;
    expect(series(c, 'train acc')).toEqual(v.train.map((p) => [p.step / 20, p.acc]));
    expect(series(c, 'train loss')).toEqual(v.train.map((p) => [p.step / 20, p.loss]));
    expect(series(c, 'test acc')).toEqual([]);
    expect(series(c, 'step loss')).toHaveLength(HOLD_AT);
  });

  it('smooths the step curves with the slider (raw stays behind), and remembers the weight', async () => {
    try {
      await smoothing();
    } finally {
      run.coord.resume(); // the first epoch was held open for this test and the one before
    }
  });

  async function smoothing(): Promise<void> {
    const before = (await drawn(t)).curves;
    const raw = series(before, 'step loss');
    // The default: 0.6, smoothed away from the raw curve.
    expect(await t.page.inputValue('#smoothing')).toBe('0.6');
    expect(series(before, 'step loss (smoothed)')).not.toEqual(raw);

    await t.page.locator('#smoothing').fill('0');
    expect(await text(t, '#smoothing-value')).toBe('0.00');
    const none = (await drawn(t)).curves;
    expect(series(none, 'step loss (smoothed)')).toEqual(raw);
    expect(series(none, 'step loss')).toEqual(raw);

    await t.page.locator('#smoothing').fill('0.9');
    const strong = await drawn(t);
    const smoothed = series(strong.curves, 'step loss (smoothed)');
    const tv = (p: [number, number][]) => p.slice(1).reduce((a, [, y], i) => a + Math.abs(y - p[i][1]), 0);
    expect(smoothed.map(([x]) => x)).toEqual(raw.map(([x]) => x));
    expect(smoothed[0][1]).toBeCloseTo(raw[0][1], 6); // debiased: the first point is the first value
    expect(tv(smoothed)).toBeLessThan(tv(series(before, 'step loss (smoothed)')));
    expect(tv(series(before, 'step loss (smoothed)'))).toBeLessThan(tv(raw));
    // The speed chart's step curve follows the same slider.
    const speedRaw = series(strong.speed, 'per step');
    const speedSmooth = series(strong.speed, 'per step (smoothed)');
    expect(speedSmooth).toHaveLength(speedRaw.length);
    expect(tv(speedSmooth)).toBeLessThan(tv(speedRaw));

    // Kept in localStorage: a reload draws with 0.9 again.
    expect(await t.page.evaluate(() => localStorage.getItem('tabtrain.smoothing'))).toBe('0.9');
    await t.page.reload();
    await waitFor('the reloaded page to have the steps', () => view(t), (v) => v.steps.length === HOLD_AT, 10_000);
    expect(await t.page.inputValue('#smoothing')).toBe('0.9');
    expect(await text(t, '#smoothing-value')).toBe('0.90');
    const again = await waitFor('the reloaded charts', () => drawn(t), (d) => series(d.curves, 'step loss').length === HOLD_AT, 10_000);
    expect(series(again.curves, 'step loss (smoothed)')).toEqual(smoothed);
  }

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
    // Per worker, over the run (issue 22): a line per worker, named with its backend, in the compute chart.
    const perWorker = await t.page.evaluate(() => (window as unknown as { tabtrainDashboard: { workerCharts(): Record<string, { labels: string[]; points: number[] }> } }).tabtrainDashboard.workerCharts());
    expect(perWorker.computeMs.labels).toHaveLength(2);
    expect(perWorker.computeMs.labels.every((l) => l.endsWith('(wasm)'))).toBe(true);
    expect(Math.min(...perWorker.computeMs.points)).toBeGreaterThan(0);
    // The latest test accuracy, at a glance beside the chart's title.
    expect(await text(t, '#test-acc-glance')).toMatch(/^test accuracy \d\.\d{3} after epoch \d+$/);
    await screenshot(t, 'dashboard-desktop.png');
  });

  it('gives both charts the full width of a 1600-px desktop screen, and follows the window', async () => {
    await t.page.setViewportSize({ width: 1600, height: 1000 });
    const wide = (d: Awaited<ReturnType<typeof drawn>>) => Math.min(d.curves.width, d.speed.width);
    await waitFor('the charts to follow the window', () => drawn(t), (d) => wide(d) >= 0.9 * 1600, 5_000);
    const boxes = await t.page.evaluate(() => ({
      curves: (document.querySelector('#chart-curves .uplot') as HTMLElement).getBoundingClientRect().width,
      speed: (document.querySelector('#chart-speed .uplot') as HTMLElement).getBoundingClientRect().width,
      canvas: (document.querySelector('#chart-curves canvas') as HTMLCanvasElement).getBoundingClientRect().width,
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    }));
    expect(boxes.curves).toBeGreaterThanOrEqual(1440);
    expect(boxes.speed).toBeGreaterThanOrEqual(1440);
    expect(boxes.canvas).toBeGreaterThanOrEqual(1440);
    expect(boxes.scrollWidth).toBeLessThanOrEqual(boxes.innerWidth);
    await screenshot(t, 'dashboard-1600.png');
    // Narrower again: the charts shrink with the window.
    await t.page.setViewportSize({ width: 1000, height: 760 });
    const narrow = await waitFor('the charts to shrink', () => drawn(t), (d) => Math.max(d.curves.width, d.speed.width) <= 1000, 5_000);
    expect(wide(narrow)).toBeGreaterThanOrEqual(0.9 * 1000 - 60);
  });

  it('refuses a pause without the admin token, pauses with it (the badge says so at once), and resumes', async () => {
    const badge = () => t.page.evaluate(() => { const m = document.getElementById('mode')!; return { text: m.textContent, token: m.dataset.token, message: document.getElementById('control-message')!.textContent }; });
    expect(await badge()).toMatchObject({ text: 'admin: controls need the token', token: 'unknown' });
    await t.page.fill('#token', '');
    await t.page.click('#pause');
    await waitFor('the refusal on the page', () => text(t, '#control-message'), (s) => /refused.*401/.test(s), 10_000);
    expect(run.coord.state).not.toBe('paused');
    expect(await badge()).toMatchObject({ text: 'admin: token refused', token: 'refused' });
    await t.page.fill('#token', 'not-the-token');
    expect(await badge()).toMatchObject({ text: 'admin: controls need the token', token: 'unknown' });
    await t.page.click('#pause');
    await waitFor('the second refusal', () => text(t, '#control-message'), (s) => /refused.*wrong admin token/.test(s), 10_000);
    expect(run.coord.state).not.toBe('paused');
    expect(await badge()).toMatchObject({ text: 'admin: token refused', token: 'refused' });

    await t.page.fill('#token', ADMIN);
    await t.page.click('#pause');
    // The badge flips with the answer, in the same task as the message: not at the next update.
    const accepted = await waitFor('the pause to be accepted', () => badge(), (b) => /pause accepted/.test(b.message ?? ''), 10_000);
    expect(accepted).toMatchObject({ text: 'admin: token accepted', token: 'accepted' });
    await waitFor('the coordinator to pause', () => run.coord.state, (s) => s === 'paused', 10_000);
    await waitFor('the page to show it', () => text(t, '#state'), (s) => s === 'paused', 10_000);
    expect(await text(t, '#reason')).toContain('paused from the dashboard');
    const step = run.coord.step;
    await new Promise((r) => setTimeout(r, 1000));
    expect(run.coord.step).toBe(step);
    await screenshot(t, 'dashboard-paused.png');

    // Still accepted after updates came in (they re-render the header).
    expect(await badge()).toMatchObject({ text: 'admin: token accepted' });

    await t.page.click('#resume');
    await waitFor('steps after resume', () => run.coord.step, (s) => s > step + 3, 20_000);
    await waitFor('the page to show running', () => text(t, '#state'), (s) => s === 'running' || s === 'evaluating', 10_000);
    expect(await badge()).toMatchObject({ text: 'admin: token accepted', token: 'accepted' });
  });

  it('downloads the metrics as CSV and JSONL (every step the page has, the train points, the epochs) and the full --log file', async () => {
    run.coord.pause('test: downloads of a still run');
    try {
      await downloads();
    } finally {
      run.coord.resume();
    }
  });

  async function downloads(): Promise<void> {
    await waitFor('the run to pause', () => run.coord.state, (s) => s === 'paused', 20_000);
    const v = await waitFor('the page to have every step', () => view(t), (v) => v.header?.state === 'paused' && v.steps.at(-1)?.step === run.coord.step, 10_000);
    expect(v.epochs.length).toBeGreaterThanOrEqual(2);
    expect(v.steps.map((p) => p.step)).toEqual(Array.from({ length: run.coord.step }, (_, i) => i + 1));

    const csv = await download(t, '#download-csv');
    expect(csv.name).toBe(`tabtrain-vgg11-tiny-step${run.coord.step}.csv`);
    const rows = parseCsv(csv.text);
    expect(Object.keys(rows[0])).toEqual([...CSV_COLUMNS]);
    const of = (type: string) => rows.filter((r) => r.type === type);
    expect(of('step').map((r) => Number(r.step))).toEqual(v.steps.map((p) => p.step));
    expect(of('step').map((r) => [Number(r.loss), Number(r.acc), Number(r.examples_per_sec), Number(r.wall_ms), Number(r.at)]))
      .toEqual(v.steps.map((p) => [p.loss, p.acc, p.examplesPerSec, p.wallMs, p.at]));
    expect(of('train').map((r) => [Number(r.step), Number(r.x_epochs), Number(r.loss), Number(r.acc)])).toEqual(v.train.map((p) => [p.step, p.step / 20, p.loss, p.acc]));
    expect(of('epoch').map((r) => [Number(r.epoch), Number(r.step), Number(r.loss), Number(r.acc), Number(r.test_acc), Number(r.seconds)]))
      .toEqual(v.epochs.map((e) => [e.epoch, e.epoch * 20, e.loss, e.trainAcc, e.testAcc, e.seconds]));
    expect(rows.length).toBe(v.steps.length + v.train.length + v.epochs.length);

    const jsonl = await download(t, '#download-jsonl');
    expect(jsonl.name).toBe(`tabtrain-vgg11-tiny-step${run.coord.step}.jsonl`);
    const records = jsonl.text.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string });
    expect(records[0]).toMatchObject({ type: 'meta', model: 'vgg11-tiny', stepsPerEpoch: 20, stepsHeld: v.steps.length, stepsRun: run.coord.step, thinned: false, fullLog: 'api/log' });
    const strip = (type: string) => records.filter((r) => r.type === type).map(({ type: _t, ...r }) => r);
    expect(strip('step')).toEqual(v.steps);
    expect(strip('train')).toEqual(v.train);
    expect(strip('epoch')).toEqual(v.epochs);
    // The page says what the files hold.
    expect(await text(t, '#download-note')).toMatch(new RegExp(`every step this coordinator ran \\(${run.coord.step}\\)`));

    // The full record: the --log file as the coordinator wrote it, every line whole.
    expect(await t.page.locator('#download-log').isVisible()).toBe(true);
    const log = await download(t, '#download-log');
    expect(log.text).toBe(readFileSync(logFile, 'utf8'));
    const lines = log.text.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; step?: number });
    expect(lines.filter((l) => l.type === 'step').map((l) => l.step)).toEqual(v.steps.map((p) => p.step));
    expect(lines.filter((l) => l.type === 'epoch')).toHaveLength(v.epochs.length);
  }

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

describe('dashboard of a resumed run', () => {
  it("goes on from the checkpoint: elapsed time, the speed chart and the running curves do not restart from 0", async () => {
    // The first leg, as `serve --checkpoint DIR --max-steps 30` would leave it: epoch 1 closed, 10 steps of epoch 2 open.
    const first = await startRun({ maxSteps: 30 }, 1);
    expect((await first.done).steps).toBe(30);
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-dashboard-ckpt-'));
    saveCheckpoint(dir, first.coord);
    await first.coord.close();
    kill(first.procs);
    const { ckpt, weights } = loadCheckpoint(dir);
    expect(ckpt.history).toHaveLength(1);
    expect(ckpt.epochAcc.steps).toBe(10);
    const priorSec = ckpt.history[0].seconds + ckpt.epochAcc.seconds;
    expect(priorSec).toBeGreaterThan(0);

    // The second leg, as `serve --resume DIR --max-steps 60` does it: the Dashboard first, then restore.
    const run = await startRun({ maxSteps: 60 }, 1, (c) => c.restore({ step: ckpt.step, weights, epochAcc: ckpt.epochAcc, history: ckpt.history }));
    const t = await tab('resumed', `${run.base}/dashboard`);
    const early = await waitFor('the header', () => view(t), (v) => v.header !== null, 20_000);
    expect(early.header).toMatchObject({ resumedFromStep: 30, priorSec });
    expect(early.header!.elapsedSec).toBeGreaterThanOrEqual(priorSec);
    // The restored epochs are on the running curves before any new step: epoch 1's end, and the open epoch at step 30.
    expect(early.train.slice(0, 2).map((p) => [p.step, p.epoch])).toEqual([[20, 1], [30, 2]]);
    expect(early.train[0]).toMatchObject({ loss: expect.closeTo(ckpt.history[0].loss, 4), acc: expect.closeTo(ckpt.history[0].trainAcc, 4) });
    expect(early.train[1].acc).toBeCloseTo(ckpt.epochAcc.correct / ckpt.epochAcc.examples, 4);

    const summary = await run.done;
    expect(summary.steps).toBe(60);
    const v = await waitFor('the page to show the finished run', () => view(t), (v) => v.header?.state === 'finished' && v.steps.at(-1)?.step === 60, 10_000);
    // This coordinator's steps are 31..60: the speed chart's points start at the resumed step, at the
    // run's time (after the restored seconds), not at 0.
    expect(v.steps.map((p) => p.step)).toEqual(Array.from({ length: 30 }, (_, i) => 31 + i));
    const speed = (await drawn(t)).speed;
    const perStep = series(speed, 'per step');
    expect(perStep).toHaveLength(30);
    expect(perStep[0][0]).toBeGreaterThanOrEqual(priorSec);
    expect(perStep[0][0]).toBeCloseTo(priorSec + (v.steps[0].at - v.header!.startedAt) / 1000, 6);
    // The restored epoch's d2l figure sits before the resume, placed by its training seconds.
    const epochSpeed = series(speed, 'epoch (d2l)');
    expect(epochSpeed[0]).toEqual([ckpt.history[0].seconds, ckpt.history[0].examplesPerSec]);
    expect(epochSpeed.length).toBe(3);
    // Elapsed: the restored training seconds plus this coordinator's time.
    expect(v.header!.elapsedSec).toBeGreaterThanOrEqual(priorSec + (v.steps.at(-1)!.at - v.header!.startedAt) / 1000 - 0.5);
    expect(seconds(await text(t, '#elapsed'))).toBeGreaterThanOrEqual(Math.floor(v.header!.elapsedSec));

    // Epoch 2's running curve went on from the restored totals: its end point is the coordinator's epoch-2 figure
    // (over steps 21..40), not the mean of the 10 steps this coordinator ran.
    const e2 = summary.epochs.find((e) => e.epoch === 2)!;
    const end2 = v.train.find((p) => p.step === 40)!;
    expect(end2.loss).toBeCloseTo(e2.loss, 4);
    expect(end2.acc).toBeCloseTo(e2.trainAcc, 4);
    const live = v.steps.filter((p) => p.step <= 40);
    expect(Math.abs(live.reduce((a, p) => a + p.loss, 0) / live.length - e2.loss)).toBeGreaterThan(1e-4);
    expect(end2.examples).toBe(640);
    expect(v.train.map((p) => p.step)).toEqual([20, 30, 32, 36, 40, 44, 48, 52, 56, 60]);
    await screenshot(t, 'dashboard-resumed.png');
  });
});
