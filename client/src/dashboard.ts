// The dashboard page, served at http://COORDINATOR:PORT/dashboard. It reads the coordinator's
// server-sent events (/api/events: a snapshot, then at most four updates a second) and posts
// pause/resume/stop to /api/control with the admin token the user types in. It never talks to
// the workers' socket (/ws), so no number of open dashboards can slow training.
import { Charts } from './dashboard-charts';
import { applySnapshot, applyUpdate, emptyView, isTerminal, type RunView } from './dashboard-model';
import { DashboardUi } from './dashboard-ui';
import type { ControlAction, Snapshot, Update } from '@tabtrain/shared/dashboard-wire';

let view: RunView = emptyView();
let dirty = false;

const charts = new Charts(document.getElementById('chart-curves')!, document.getElementById('chart-speed')!, document.getElementById('chart-timeline')!);
const ui = new DashboardUi(document, (action, token) => void control(action, token));

function render(): void {
  dirty = false;
  ui.render(view);
  charts.update(view);
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
    if (res.ok) ui.setControlMessage('ok', `${action} accepted: ${after}`);
    else ui.setControlMessage('error', `${action} refused: ${body.error ?? res.statusText} (HTTP ${res.status})`);
  } catch (e) {
    ui.setControlMessage('error', `${action} failed: ${(e as Error).message}`);
  }
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

connect();

/** For tests and the curious, from the console: `tabtrainDashboard.view()`. */
Object.assign(window, { tabtrainDashboard: { view: () => view, lossPoints: () => charts.lossPoints() } });
