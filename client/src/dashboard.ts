// The dashboard page, served at http://COORDINATOR:PORT/dashboard. It reads the coordinator's
// server-sent events (/api/events: a snapshot, then at most four updates a second) and posts
// pause/resume/stop to /api/control with the admin token the user types in. It never talks to
// the workers' socket (/ws), so no number of open dashboards can slow training.
import { Charts } from './dashboard-charts';
import { applySnapshot, applyUpdate, downloadName, emptyView, isTerminal, metricsCsv, metricsJsonl, type RunView } from './dashboard-model';
import { DashboardUi } from './dashboard-ui';
import { chartOptions } from './dashboard-options';
import { RunsView, fetchRuns, follow } from './dashboard-view';
import { WorkerCharts } from './dashboard-workers';
import type { ControlAction, Snapshot, Update } from '@tabtrain/shared/dashboard-wire';

let view: RunView = emptyView();
let dirty = false;

const charts = new Charts(document.getElementById('chart-curves')!, document.getElementById('chart-speed')!, document.getElementById('chart-timeline')!);
const ui = new DashboardUi(document, {
  control: (action, token) => void control(action, token),
  smoothing: (w) => { charts.setSmoothing(w); runsView?.draw(); },
  download: (kind) => download(kind),
});
charts.smoothing = ui.smoothing;
const workerCharts = new WorkerCharts(document);
let runsView: RunsView | null = null;
const options = chartOptions(document, () => {
  const o = options.get();
  charts.setOptions(o.axis, o.log);
  if (runsView) runsView.draw();
  else workerCharts.update([{ name: '', view }], o.axis);
});
charts.setOptions(options.get().axis, options.get().log);

function render(): void {
  dirty = false;
  ui.render(view);
  charts.update(view);
  workerCharts.update([{ name: '', view }], options.get().axis);
  const test = view.epochs.filter((e) => e.testAcc !== null).at(-1);
  document.getElementById('test-acc-glance')!.textContent = test ? `test accuracy ${test.testAcc!.toFixed(3)} after epoch ${test.epoch}` : '';
}

/** Draws now, or when the tab is next visible (a hidden tab keeps the data, skips the drawing). */
function changed(): void {
  dirty = true;
  if (!document.hidden) render();
}
document.addEventListener('visibilitychange', () => { if (!document.hidden && dirty) render(); });

async function control(action: ControlAction, token: string): Promise<void> {
  ui.setControlMessage('info', `${action}…`);
  try {
    const res = await fetch('api/control', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ action }),
    });
    const body = (await res.json().catch(() => ({}))) as { error?: string; state?: string; step?: number; dir?: string };
    const after = { pause: 'the run pauses after the current step', resume: 'the run goes on', stop: 'the run stops after the current step', export: `the weights of step ${body.step} are in ${body.dir}` }[action];
    // 409 (the run is over, or no --export folder) comes after the token was checked.
    if (res.ok || res.status === 409) ui.setToken('accepted');
    else if (res.status === 401) ui.setToken('refused');
    if (res.ok) ui.setControlMessage('ok', `${action} accepted: ${after}`);
    else ui.setControlMessage('error', `${action} refused: ${body.error ?? res.statusText} (HTTP ${res.status})`);
  } catch (e) {
    ui.setControlMessage('error', `${action} failed: ${(e as Error).message}`);
  }
}

/** The page's points as a file: built here from what the page holds, so the coordinator pays nothing. */
function download(kind: 'csv' | 'jsonl'): void {
  const text = kind === 'csv' ? metricsCsv(view) : metricsJsonl(view);
  const url = URL.createObjectURL(new Blob([text], { type: kind === 'csv' ? 'text/csv;charset=utf-8' : 'application/x-ndjson;charset=utf-8' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = downloadName(view, kind);
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function connect(): void {
  const events = new EventSource('api/events');
  events.addEventListener('open', () => ui.setConnection('ok', 'live'));
  events.addEventListener('snapshot', (m) => {
    view = applySnapshot(JSON.parse((m as MessageEvent<string>).data) as Snapshot);
    changed();
  });
  events.addEventListener('update', (m) => {
    applyUpdate(view, JSON.parse((m as MessageEvent<string>).data) as Update);
    changed();
  });
  events.addEventListener('error', () => {
    // EventSource reconnects by itself (after the `retry:` the coordinator sent) unless CLOSED.
    const over = isTerminal(view.header?.state);
    if (events.readyState === EventSource.CLOSED) ui.setConnection('error', 'disconnected: reload to retry');
    else ui.setConnection(over ? 'warn' : 'error', over ? 'coordinator gone (the run is over)' : 'reconnecting…');
  });
}

// Served by `tabtrain view` (GET /api/runs answers): runs from --log files, read-only; else a live coordinator.
void fetchRuns().then((body) => {
  if (!body) return connect();
  runsView = new RunsView(document, workerCharts, () => ({ ...options.get(), smoothing: charts.smoothing }));
  ui.setConnection('ok', 'read-only: --log files');
  follow(runsView, body, (text) => ui.setConnection('error', text));
});

/** For tests and the curious, from the console: `tabtrainDashboard.view()`. */
Object.assign(window, {
  tabtrainDashboard: {
    view: () => view, lossPoints: () => charts.lossPoints(), charts: () => charts.describe(), smoothing: () => charts.smoothing,
    runs: () => runsView?.runs.map((r) => ({ name: r.name, steps: r.view.steps.length, epochs: r.view.epochs.length, state: r.view.header?.state })) ?? null,
    workerCharts: () => workerCharts.describe(),
    runCharts: () => runsView?.describe() ?? null,
  },
});
