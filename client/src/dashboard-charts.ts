// The dashboard's three charts, drawn by uPlot: d2l's Animator curves, examples/s over time, and
// the per-step timeline of where the wall time went. Each chart follows its box's width (a
// ResizeObserver: the window's resizes and the layout's). The step curves are drawn twice, raw and
// faint behind, and smoothed by the page's slider (TensorBoard's exponential moving average).
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { PHASES, SMOOTHING, curveData, speedData, timelineData, type RunView } from './dashboard-model';
import { X_AXES, xOf, type XAxis } from './dashboard-runs';

// d2l's Animator draws train loss 'b-', train acc 'm--', test acc 'g-.' (matplotlib's defaults).
const BLUE = '#1f77b4';
const MAGENTA = '#bf3fbf';
const GREEN = '#2ca02c';
const PHASE_COLORS = ['#1f77b4', '#ff7f0e', '#9e9e9e', '#2ca02c', '#d62728', '#9467bd'];

const fixed = (digits: number) => (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : v.toFixed(digits));

function axisColor(): string {
  return getComputedStyle(document.body).color || '#444';
}

function heightFor(width: number): number {
  return Math.round(Math.min(320, Math.max(180, width * 0.55)));
}

export class Charts {
  curves: uPlot;
  readonly speed: uPlot;
  readonly timeline: uPlot;
  /** Each phase's own ms for the timeline's legend (its series hold running sums). */
  private parts: number[][] = PHASES.map(() => []);
  private view: RunView | null = null;
  /** The smoothing slider's weight: 0 draws the raw curve, 0.99 a very smooth one. */
  smoothing: number = SMOOTHING.default;
  /** The curves' x-axis and whether the loss is on a log scale (the toolbar's choices). */
  private axis: XAxis = 'epoch';
  private log = false;
  private readonly empties: [note: HTMLElement, plot: HTMLElement][];

  constructor(private readonly curvesEl: HTMLElement, speedEl: HTMLElement, timelineEl: HTMLElement) {
    const stroke = axisColor();
    const grid = { stroke: '#8883', width: 1 };
    const axis = (label: string, extra: Partial<uPlot.Axis> = {}): uPlot.Axis => ({ label, stroke, grid, ticks: grid, ...extra });
    const size = (el: HTMLElement) => { const width = Math.max(200, el.clientWidth); return { width, height: heightFor(width) }; };
    // Until the first step: a line that says what the chart waits for, not empty axes.
    this.empties = [curvesEl, speedEl, timelineEl].map((el) => {
      const note = el.ownerDocument.createElement('p');
      note.className = 'empty';
      note.textContent = 'waiting for the first step…';
      el.before(note);
      el.hidden = true;
      return [note, el] as [HTMLElement, HTMLElement];
    });
    this.curves = this.makeCurves();

    this.speed = new uPlot({
      ...size(speedEl),
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [axis('seconds of the run'), axis('examples/s')],
      series: [
        { label: 's', value: fixed(1) },
        { label: 'per step', stroke: `${BLUE}40`, width: 1, points: { show: false }, value: fixed(1) },
        { label: 'per step (smoothed)', stroke: BLUE, width: 2, points: { show: false }, value: fixed(1) },
        { label: 'epoch (d2l)', stroke: GREEN, width: 2, dash: [8, 3, 2, 3], spanGaps: true, points: { show: true, size: 6 }, value: fixed(1) },
      ],
    }, [[], [], [], []], speedEl);

    // uPlot stacks nothing itself: series hold running sums, drawn tallest first so that each
    // shorter bar covers the one below it; the legend shows each phase's own ms.
    const bars = uPlot.paths.bars!({ size: [0.85, 40] });
    const order = PHASES.map((_, i) => i).reverse();
    this.timeline = new uPlot({
      ...size(timelineEl),
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.05)] } },
      axes: [axis('step'), axis('ms')],
      series: [
        { label: 'step', value: fixed(0) },
        ...order.map((i): uPlot.Series => ({
          label: PHASES[i][1], stroke: PHASE_COLORS[i], fill: PHASE_COLORS[i], width: 0, paths: bars, points: { show: false },
          value: (_u, _v, _si, idx) => (idx === null || this.parts[i][idx] === undefined ? '–' : this.parts[i][idx].toFixed(1)),
        })),
      ],
    }, [[], ...order.map(() => [])], timelineEl);

    const follow = (chart: uPlot, el: HTMLElement) => new ResizeObserver(() => chart.setSize(size(el))).observe(el);
    new ResizeObserver(() => this.curves.setSize(size(curvesEl))).observe(curvesEl);
    follow(this.speed, speedEl);
    follow(this.timeline, timelineEl);
  }

  /** d2l's Animator: step loss (raw and smoothed), running train loss and acc, test acc; x and the loss scale as chosen. */
  private makeCurves(): uPlot {
    const stroke = axisColor();
    const grid = { stroke: '#8883', width: 1 };
    const axis = (label: string, extra: Partial<uPlot.Axis> = {}): uPlot.Axis => ({ label, stroke, grid, ticks: grid, ...extra });
    const width = Math.max(200, this.curvesEl.clientWidth);
    return new uPlot({
      width, height: heightFor(width),
      scales: { x: { time: false }, loss: this.log ? { distr: 3 } : { auto: true }, acc: { range: [0, 1] } },
      axes: [axis(X_AXES[this.axis]), axis(this.log ? 'loss (log scale)' : 'loss', { scale: 'loss' }), axis('accuracy', { scale: 'acc', side: 1, grid: { show: false } })],
      series: [
        { label: X_AXES[this.axis], value: fixed(this.axis === 'epoch' ? 2 : 0) },
        { label: 'step loss', scale: 'loss', stroke: `${BLUE}40`, width: 1, points: { show: false }, value: fixed(3) },
        { label: 'step loss (smoothed)', scale: 'loss', stroke: `${BLUE}b0`, width: 1.5, points: { show: false }, value: fixed(3) },
        // The epoch's running means, several times an epoch, as d2l's Animator draws them.
        { label: 'train loss', scale: 'loss', stroke: BLUE, width: 2, spanGaps: true, points: { show: true, size: 6 }, value: fixed(3) },
        { label: 'train acc', scale: 'acc', stroke: MAGENTA, width: 2, dash: [8, 4], spanGaps: true, points: { show: true, size: 6 }, value: fixed(3) },
        // d2l's 'g-.', drawn heavier: one point an epoch, the figure people look for first.
        { label: 'test acc', scale: 'acc', stroke: GREEN, width: 3, dash: [8, 3, 2, 3], spanGaps: true, points: { show: true, size: 11, fill: GREEN }, value: fixed(3) },
      ],
    }, [[], [], [], [], [], []], this.curvesEl);
  }

  /** Another x-axis or loss scale: the curves chart is made again (uPlot fixes its scales when made). */
  setOptions(axis: XAxis, log: boolean): void {
    if (axis === this.axis && log === this.log) return;
    this.axis = axis;
    this.log = log;
    this.curves.destroy();
    this.curves = this.makeCurves();
    if (this.view) this.curves.setData(this.curveColumns(this.view));
  }

  /** curveData's columns with x on the chosen axis. */
  private curveColumns(v: RunView): uPlot.AlignedData {
    const [x, ...ys] = curveData(v, this.smoothing);
    const per = v.header?.stepsPerEpoch ?? 1;
    const at = xOf(v, this.axis);
    return [x.map((e) => at(Math.round(e * per))), ...ys] as uPlot.AlignedData;
  }

  update(v: RunView): void {
    this.view = v;
    const any = v.steps.length > 0 || v.epochs.length > 0;
    for (const [note, plot] of this.empties) { note.hidden = any; plot.hidden = !any; }
    this.curves.setData(this.curveColumns(v));
    this.speed.setData(speedData(v, this.smoothing));
    const t = timelineData(v);
    this.parts = t.parts;
    const [x, ...stacked] = t.data;
    this.timeline.setData([x, ...PHASES.map((_, i) => stacked[i]).reverse()]);
  }

  /** Redraws the step curves with another smoothing weight. */
  setSmoothing(w: number): void {
    this.smoothing = w;
    if (!this.view) return;
    this.curves.setData(this.curveColumns(this.view));
    this.speed.setData(speedData(this.view, w));
  }

  /** What each chart draws, for tests (window.tabtrainDashboard.charts()): series labels, data and sizes. */
  describe(): Record<'curves' | 'speed' | 'timeline', { labels: string[]; data: (number | null)[][]; width: number; height: number }> {
    const d = (u: uPlot) => ({
      labels: u.series.map((s) => String(s.label ?? '')),
      data: u.data.map((col) => Array.from(col ?? [] as number[], (y) => (y === undefined ? null : y))),
      width: u.width, height: u.height,
    });
    return { curves: d(this.curves), speed: d(this.speed), timeline: d(this.timeline) };
  }

  /** Points on the per-step loss line (tests read it through window.tabtrainDashboard). */
  lossPoints(): number {
    return Array.from(this.curves.data[1] ?? [] as number[]).filter((y) => y !== null && y !== undefined).length;
  }
}
