// Markdown tables and an SVG plot for the benchmark results (no plotting dependency).
import type { ScaleoutRun } from './scaleout';

const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);

export function scaleoutMarkdown(runs: ScaleoutRun[], memcpy: number, machine: string): string {
  const lines = [
    `Machine: ${machine}. Memory copy measured in the same run: ${memcpy.toFixed(2)} GB/s.`,
    '',
    '| compute | model | compress | scaling | N | batch | examples/s | efficiency | step ms | compute | upload | broadcast | aggregate | apply | coordinator MB/step | upload MB/worker | comm ms | comm ÷ copy bound | coordinator CPU ms | load |',
    '|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of runs) {
    const s = r.split;
    lines.push(`| ${r.kind} | ${r.model} | ${r.compress} | ${r.scaling} | ${r.workers} | ${r.batch} | ${f1(r.examplesPerSec)} | ${r.efficiency === null ? '–' : `${f0(100 * r.efficiency)}%`} | ${f0(s.wall)} | ${f1(s.compute)} | ${f0(s.upload)} | ${f0(s.broadcast)} | ${f0(s.aggregate)} | ${f0(s.apply)} | ${f0(r.bytesPerStep / 1e6)} | ${f1(r.uploadBytesPerWorker / 1e6)} | ${f0(r.commMs)} | ${f1(r.commOverBound)}× | ${r.coordinatorCpuMs === undefined ? '–' : f0(r.coordinatorCpuMs)} | ${r.loadAvg.toFixed(1)} |`);
  }
  return lines.join('\n') + '\n';
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Two panels, examples/s and efficiency against N (log₂ axis), one line per series. */
export function scaleoutSvg(runs: ScaleoutRun[], title: string): string {
  const series = new Map<string, ScaleoutRun[]>();
  for (const r of runs) {
    const key = `${r.kind} ${r.model} ${r.compress === 'none' ? '' : `${r.compress} `}${r.scaling}`;
    series.set(key, [...(series.get(key) ?? []), r]);
  }
  const ns = [...new Set(runs.map((r) => r.workers))].sort((a, b) => a - b);
  const W = 980, H = 420, top = 50, bottom = 60, panelW = 360, gap = 110, left = 80;
  const legendX = left + 2 * panelW + gap + 30;
  const x = (n: number, x0: number) => x0 + (ns.length < 2 ? panelW / 2 : (Math.log2(n / ns[0]) / Math.log2(ns[ns.length - 1] / ns[0])) * panelW);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W + 200}" height="${H}" viewBox="0 0 ${W + 200} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  const panel = (x0: number, label: string, value: (r: ScaleoutRun) => number | null, ideal: boolean) => {
    const vals = runs.map(value).filter((v): v is number => v !== null);
    const max = niceMax(Math.max(ideal ? 1 : 0, ...vals));
    const y = (v: number) => top + (1 - v / max) * (H - top - bottom);
    out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${H - bottom}" stroke="#333"/>`, `<line x1="${x0}" y1="${H - bottom}" x2="${x0 + panelW}" y2="${H - bottom}" stroke="#333"/>`);
    for (let i = 0; i <= 5; i++) {
      const v = (max * i) / 5;
      out.push(`<line x1="${x0}" y1="${y(v)}" x2="${x0 + panelW}" y2="${y(v)}" stroke="#eee"/>`, `<text x="${x0 - 6}" y="${y(v) + 4}" text-anchor="end">${ideal ? `${f0(100 * v)}%` : fmt(v)}</text>`);
    }
    for (const n of ns) out.push(`<text x="${x(n, x0)}" y="${H - bottom + 18}" text-anchor="middle">${n}</text>`);
    out.push(`<text x="${x0 + panelW / 2}" y="${H - bottom + 40}" text-anchor="middle">workers (N)</text>`);
    out.push(`<text x="${x0 - 60}" y="${(top + H - bottom) / 2}" text-anchor="middle" transform="rotate(-90 ${x0 - 60} ${(top + H - bottom) / 2})">${label}</text>`);
    if (ideal) out.push(`<line x1="${x0}" y1="${y(1)}" x2="${x0 + panelW}" y2="${y(1)}" stroke="#999" stroke-dasharray="4 4"/>`);
    [...series.values()].forEach((rs, i) => {
      const pts = rs.map((r) => [r.workers, value(r)] as const).filter((p): p is readonly [number, number] => p[1] !== null);
      const c = PALETTE[i % PALETTE.length];
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map(([n, v]) => `${x(n, x0).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`);
      for (const [n, v] of pts) out.push(`<circle cx="${x(n, x0).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${c}"/>`);
    });
  };
  panel(left, 'examples/s', (r) => r.examplesPerSec, false);
  panel(left + panelW + gap, 'scaling efficiency', (r) => r.efficiency, true);
  [...series.keys()].forEach((k, i) => {
    const yy = top + 10 + i * 20;
    out.push(`<line x1="${legendX}" y1="${yy}" x2="${legendX + 20}" y2="${yy}" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="3"/>`, `<text x="${legendX + 26}" y="${yy + 4}">${esc(k)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k` : v >= 10 ? f0(v) : v.toFixed(1);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}
