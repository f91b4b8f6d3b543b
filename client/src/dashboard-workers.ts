// The per-worker charts over the run, as Weights & Biases shows a run's system charts: compute
// per shard, the measured upload and download rates, the shard size and the memory on its backend,
// one line per worker (named with its backend), from the workers sampled at the steps.
import { LineChart } from './dashboard-lines';
import { WORKER_METRICS, X_AXES, workerSeries, type NamedRun, type WorkerMetric, type XAxis } from './dashboard-runs';

export class WorkerCharts {
  private readonly charts: [WorkerMetric, LineChart][];

  constructor(doc: Document) {
    const box = doc.getElementById('worker-charts')!;
    this.charts = (Object.keys(WORKER_METRICS) as WorkerMetric[]).map((m) => {
      const div = doc.createElement('div');
      div.className = 'chart';
      div.dataset.metric = m;
      const h3 = doc.createElement('h3');
      h3.textContent = WORKER_METRICS[m].title;
      const plot = doc.createElement('div');
      plot.className = 'plot';
      div.append(h3, plot);
      box.append(div);
      const empty = m === 'upBytesPerSec' || m === 'downBytesPerSec'
        ? 'no rate measured yet: transfers too small to time say nothing of a link'
        : 'no workers sampled yet: a sample is taken at a step, every 2 s';
      return [m, new LineChart(plot, { y: WORKER_METRICS[m].unit, empty, digits: m === 'shardSize' ? 0 : 2 })];
    });
  }

  update(runs: NamedRun[], axis: XAxis): void {
    for (const [m, chart] of this.charts) {
      const { labels, points } = workerSeries(runs, m, axis);
      chart.set(labels, points, X_AXES[axis]);
    }
  }

  /** What each chart draws, for tests. */
  describe(): Record<string, ReturnType<LineChart['describe']>> {
    return Object.fromEntries(this.charts.map(([m, c]) => [m, c.describe()]));
  }
}
