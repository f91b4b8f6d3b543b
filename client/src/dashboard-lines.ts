// A chart of named lines that come and go (runs side by side, one line per worker), drawn by uPlot.
// uPlot fixes its series and scales when it is made, so a new set of lines, another x-axis or the
// log scale makes the chart again; new points only set its data. Until the first point it shows
// what it is waiting for instead of empty axes.
import uPlot from 'uplot';
import { align, type Sparse } from './dashboard-runs';

/** Tableau 10, TensorBoard's and matplotlib's run colours. */
export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export interface LineOptions {
  /** The y-axis's label (the chart's title says what it is; the axis says its unit). */
  y: string;
  /** What the empty chart says until its first point. */
  empty: string;
  /** Points drawn at every value (sparse series: one a epoch). */
  points?: boolean;
  /** y from 0 to 1 (accuracies). */
  unit?: boolean;
  /** y from the data's own range rather than from 0 (a loss: its changes are small beside its size). */
  fit?: boolean;
  digits?: number;
}

export class LineChart {
  private chart: uPlot | null = null;
  private shape = '';
  private readonly plot: HTMLElement;
  private readonly note: HTMLElement;
  private data: [number[], ...Sparse[]] = [[]];

  constructor(private readonly el: HTMLElement, private readonly o: LineOptions) {
    this.plot = el.ownerDocument.createElement('div');
    this.note = el.ownerDocument.createElement('p');
    this.note.className = 'empty';
    this.note.textContent = o.empty;
    el.replaceChildren(this.note, this.plot);
    new ResizeObserver(() => this.chart?.setSize(this.size())).observe(el);
  }

  private size() {
    const width = Math.max(200, this.el.clientWidth);
    return { width, height: Math.round(Math.min(280, Math.max(160, width * 0.4))) };
  }

  /** Draws `labels[i]`'s points (each [x, y]); `xLabel` names the x-axis, `log` puts y on a log scale. */
  set(labels: string[], series: [number, number | null][][], xLabel: string, log = false): void {
    this.data = align(series);
    const any = series.some((s) => s.some((p) => p[1] !== null));
    this.note.hidden = any;
    this.plot.hidden = !any;
    if (!any) return;
    const shape = JSON.stringify([labels, xLabel, log]);
    if (shape !== this.shape || !this.chart) {
      this.shape = shape;
      this.chart?.destroy();
      const stroke = getComputedStyle(this.el.ownerDocument.body).color || '#444';
      const grid = { stroke: '#8883', width: 1 };
      const fixed = (d: number) => (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : v.toFixed(d));
      const digits = this.o.digits ?? 3;
      this.chart = new uPlot({
        ...this.size(),
        // Log scales need y > 0: a loss is; a 0 would vanish, not break the chart.
        scales: { x: { time: false }, y: this.o.unit ? { range: [0, 1] } : log ? { distr: 3 } : this.o.fit ? { auto: true } : { range: (_u, _min, max) => [0, Math.max(1e-9, max * 1.1)] } },
        axes: [{ label: xLabel, stroke, grid, ticks: grid }, { label: this.o.y, stroke, grid, ticks: grid, size: 60 }],
        // The x series is the axis: its legend entry would only repeat the axis's label.
        series: [{ label: xLabel, value: fixed(2), show: true }, ...labels.map((label, i): uPlot.Series => ({
          label, stroke: PALETTE[i % PALETTE.length], width: 2,
          points: { show: this.o.points === true, size: 7 }, value: fixed(digits),
        }))],
        legend: { live: true },
      }, this.data as uPlot.AlignedData, this.plot);
      return;
    }
    this.chart.setData(this.data as uPlot.AlignedData);
  }

  /** What it draws, for tests: the lines' labels and the non-null points of each. */
  describe(): { labels: string[]; points: number[] } {
    const labels = this.chart && !this.plot.hidden ? this.chart.series.slice(1).map((s) => String(s.label ?? '')) : [];
    return { labels, points: this.data.slice(1, labels.length + 1).map((col) => col.filter((y) => y !== null && y !== undefined).length) };
  }
}
