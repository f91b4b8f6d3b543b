// The chart options in the toolbar: the curves' x-axis (step, epoch, wall time) and a log scale
// for the loss, kept across visits (localStorage: preferences, not secrets).
import { X_AXES, type XAxis } from './dashboard-runs';

const AXIS_KEY = 'tabtrain.xAxis';
const LOG_KEY = 'tabtrain.logLoss';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the page works, it only forgets
  }
}

export function chartOptions(doc: Document, changed: () => void): { get(): { axis: XAxis; log: boolean } } {
  const select = doc.getElementById('x-axis') as HTMLSelectElement;
  const log = doc.getElementById('log-loss') as HTMLInputElement;
  select.replaceChildren(...(Object.keys(X_AXES) as XAxis[]).map((a) => { const o = doc.createElement('option'); o.value = a; o.textContent = a === 'wall' ? 'wall time' : a; return o; }));
  const stored = storage()?.getItem(AXIS_KEY);
  select.value = stored && stored in X_AXES ? stored : 'epoch';
  log.checked = storage()?.getItem(LOG_KEY) === 'true';
  select.addEventListener('change', () => { storage()?.setItem(AXIS_KEY, select.value); changed(); });
  log.addEventListener('change', () => { storage()?.setItem(LOG_KEY, String(log.checked)); changed(); });
  return { get: () => ({ axis: (select.value in X_AXES ? select.value : 'epoch') as XAxis, log: log.checked }) };
}
