// The dashboard as `tabtrain view` serves it: runs read from --log files (GET /api/runs), drawn
// side by side, each in its colour, named by its file. Read-only; while a run's log is still
// growing the page reads /api/runs again every few seconds. Only text is written (textContent):
// the files are untrusted input.
import type { Snapshot } from '@tabtrain/shared/dashboard-wire';
import { LineChart, PALETTE } from './dashboard-lines';
import { applySnapshot, isTerminal } from './dashboard-model';
import { X_AXES, lossSeries, speedSeries, testAccSeries, type NamedRun, type XAxis } from './dashboard-runs';
import type { WorkerCharts } from './dashboard-workers';

export interface RunsBody {
  mode: 'view';
  runs: { name: string; file: string; snapshot: Snapshot | null; problems: string[]; problemCount: number }[];
}

/** How often a page re-reads the runs while one is still being written. */
const POLL_MS = 5000;

export class RunsView {
  runs: NamedRun[] = [];
  private body: RunsBody | null = null;
  private readonly loss: LineChart;
  private readonly acc: LineChart;
  private readonly speed: LineChart;

  constructor(private readonly doc: Document, private readonly workers: WorkerCharts, private readonly options: () => { axis: XAxis; log: boolean; smoothing: number }) {
    doc.body.dataset.mode = 'view';
    this.loss = new LineChart(doc.getElementById('view-loss')!, { y: 'loss', empty: 'no steps in these logs yet', fit: true });
    this.acc = new LineChart(doc.getElementById('view-test-acc')!, { y: 'test accuracy', empty: 'no epoch has ended in these logs yet: test accuracy is measured at each epoch\'s end', points: true, unit: true });
    this.speed = new LineChart(doc.getElementById('view-speed')!, { y: 'examples/s', empty: 'no steps in these logs yet', digits: 1 });
  }

  /** Takes a /api/runs body and draws it. */
  show(body: RunsBody): void {
    this.body = body;
    this.runs = body.runs.filter((r) => r.snapshot).map((r) => ({ name: r.name, view: applySnapshot(r.snapshot!, 0) }));
    this.renderTable();
    this.draw();
  }

  /** Draws the charts again (another x-axis, the log scale, smoothing). */
  draw(): void {
    const { axis, log, smoothing } = this.options();
    const names = this.runs.map((r) => r.name);
    this.loss.set(names, lossSeries(this.runs, axis, smoothing), X_AXES[axis], log);
    this.acc.set(names, testAccSeries(this.runs, axis), X_AXES[axis]);
    this.speed.set(names, speedSeries(this.runs, axis, smoothing), X_AXES[axis]);
    this.workers.update(this.runs, axis);
  }

  /** What the run charts draw, for tests. */
  describe(): Record<'loss' | 'testAcc' | 'speed', ReturnType<LineChart['describe']>> {
    return { loss: this.loss.describe(), testAcc: this.acc.describe(), speed: this.speed.describe() };
  }

  /** Whether a run may still grow (its log does not end in a final state). */
  get live(): boolean {
    return this.runs.some((r) => !isTerminal(r.view.header?.state));
  }

  private renderTable(): void {
    const doc = this.doc;
    const runs = this.body!.runs;
    doc.getElementById('title')!.textContent = `tabtrain view · ${runs.length} run${runs.length === 1 ? '' : 's'}`;
    doc.title = `tabtrain view · ${runs.map((r) => r.name).join(', ')}`;
    const rows = runs.map((r, i) => {
      const tr = doc.createElement('tr');
      tr.dataset.run = r.name;
      const h = r.snapshot?.header;
      const last = r.snapshot?.steps.at(-1);
      const test = r.snapshot?.epochs.filter((e) => e.testAcc !== null).at(-1);
      const cells = [
        '■', r.name, h ? `${h.model} · lr ${h.config.lr} · batch ${h.config.batch} · seed ${h.config.seed}` : 'unreadable', h?.state ?? '–',
        h ? `${h.step} / ${h.totalSteps}` : '–', last ? last.loss.toFixed(3) : '–', test ? `${test.testAcc!.toFixed(3)} (epoch ${test.epoch})` : '–',
        r.problemCount ? `${r.problemCount} skipped` : '',
      ];
      for (const [k, text] of cells.entries()) {
        const td = doc.createElement('td');
        td.textContent = text;
        if (k === 0) td.style.color = PALETTE[i % PALETTE.length];
        tr.append(td);
      }
      tr.title = r.file;
      return tr;
    });
    doc.querySelector('#runs tbody')!.replaceChildren(...rows);
    const problems = runs.flatMap((r) => [...r.problems, ...(r.problemCount > r.problems.length ? [`${r.name}: … and ${r.problemCount - r.problems.length} more`] : [])]);
    doc.getElementById('view-problems')!.replaceChildren(...problems.map((p) => { const li = doc.createElement('li'); li.textContent = p; return li; }));
  }
}

/** Reads /api/runs: the body when this page was served by `tabtrain view`, else null (a live coordinator). */
export async function fetchRuns(): Promise<RunsBody | null> {
  try {
    const res = await fetch('api/runs', { cache: 'no-store' });
    if (!res.ok) return null;
    const body = (await res.json()) as RunsBody;
    return body?.mode === 'view' && Array.isArray(body.runs) ? body : null;
  } catch {
    return null;
  }
}

/** Shows the runs, and reads them again every POLL_MS while one is still being written. */
export function follow(view: RunsView, first: RunsBody, onError: (text: string) => void): void {
  view.show(first);
  const again = async () => {
    if (!view.live) return;
    const body = await fetchRuns();
    if (body) view.show(body);
    else onError('tabtrain view is gone: reload to retry');
    setTimeout(again, POLL_MS);
  };
  setTimeout(again, POLL_MS);
}
