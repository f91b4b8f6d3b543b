// Markdown tables and an SVG plot for the benchmark results (no plotting dependency).
import type { ScaleoutRun } from './scaleout';
import { formatRate, payloadBytesPerSec } from './netns';

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
    lines.push(`| ${r.kind} | ${r.model} | ${compressCell(r)} | ${r.scaling} | ${r.workers} | ${r.batch} | ${f1(r.examplesPerSec)} | ${r.efficiency === null ? '–' : `${f0(100 * r.efficiency)}%`} | ${f0(s.wall)} | ${f1(s.compute)} | ${f0(s.upload)} | ${f0(s.broadcast)} | ${f0(s.aggregate)} | ${f0(s.apply)} | ${f0(r.bytesPerStep / 1e6)} | ${f1(r.uploadBytesPerWorker / 1e6)} | ${f0(r.commMs)} | ${f1(r.commOverBound)}× | ${r.coordinatorCpuMs === undefined ? '–' : f0(r.coordinatorCpuMs)} | ${r.loadAvg.toFixed(1)} |`);
  }
  return lines.join('\n') + '\n';
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Two panels, examples/s and efficiency against N (log₂ axis), one line per series. */
export function scaleoutSvg(runs: ScaleoutRun[], title: string): string {
  const key = (r: ScaleoutRun) => `${r.kind} ${r.model} ${r.compress === 'none' ? '' : `${r.compress} `}${r.scaling}`;
  return twoPanels(runs, title, key, { label: 'scaling efficiency', value: (r) => r.efficiency, ref: 1, tick: (v) => `${f0(100 * v)}%` });
}

/** Linked runs: examples/s, and the step time ÷ its bound (1 = at the bound), against N. */
export function linkSvg(runs: ScaleoutRun[], title: string): string {
  const key = (r: ScaleoutRun) => `${r.model} ${r.compress === 'none' ? '' : `${r.compress} `}${r.scaling} ${r.link ? formatRate(r.link.workerBits).replace(' ', '') : 'loopback'}`;
  return twoPanels(runs, title, key, { label: 'step ÷ max(compute, link) bound', value: (r) => r.link?.overBound ?? null, ref: 1, tick: (v) => `${v.toFixed(v < 10 ? 1 : 0)}×` });
}

interface Panel { label: string; value: (r: ScaleoutRun) => number | null; ref: number; tick: (v: number) => string }

function twoPanels(runs: ScaleoutRun[], title: string, keyOf: (r: ScaleoutRun) => string, second: Panel): string {
  const series = new Map<string, ScaleoutRun[]>();
  for (const r of runs) series.set(keyOf(r), [...(series.get(keyOf(r)) ?? []), r]);
  const ns = [...new Set(runs.map((r) => r.workers))].sort((a, b) => a - b);
  const W = 980, H = Math.max(420, 70 + 20 * series.size), top = 50, bottom = 60, panelW = 360, gap = 110, left = 80;
  const legendX = left + 2 * panelW + gap + 30;
  const x = (n: number, x0: number) => x0 + (ns.length < 2 ? panelW / 2 : (Math.log2(n / ns[0]) / Math.log2(ns[ns.length - 1] / ns[0])) * panelW);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W + 200}" height="${H}" viewBox="0 0 ${W + 200} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  const panel = (x0: number, p: Panel | null) => {
    const value = p ? p.value : (r: ScaleoutRun) => r.examplesPerSec;
    const vals = runs.map(value).filter((v): v is number => v !== null && Number.isFinite(v));
    const max = niceMax(Math.max(p ? p.ref : 0, ...vals));
    const y = (v: number) => top + (1 - v / max) * (H - top - bottom);
    out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${H - bottom}" stroke="#333"/>`, `<line x1="${x0}" y1="${H - bottom}" x2="${x0 + panelW}" y2="${H - bottom}" stroke="#333"/>`);
    for (let i = 0; i <= 5; i++) {
      const v = (max * i) / 5;
      out.push(`<line x1="${x0}" y1="${y(v)}" x2="${x0 + panelW}" y2="${y(v)}" stroke="#eee"/>`, `<text x="${x0 - 6}" y="${y(v) + 4}" text-anchor="end">${p ? p.tick(v) : fmt(v)}</text>`);
    }
    for (const n of ns) out.push(`<text x="${x(n, x0)}" y="${H - bottom + 18}" text-anchor="middle">${n}</text>`);
    out.push(`<text x="${x0 + panelW / 2}" y="${H - bottom + 40}" text-anchor="middle">workers (N)</text>`);
    const label = p ? p.label : 'examples/s';
    out.push(`<text x="${x0 - 60}" y="${(top + H - bottom) / 2}" text-anchor="middle" transform="rotate(-90 ${x0 - 60} ${(top + H - bottom) / 2})">${esc(label)}</text>`);
    if (p) out.push(`<line x1="${x0}" y1="${y(p.ref)}" x2="${x0 + panelW}" y2="${y(p.ref)}" stroke="#999" stroke-dasharray="4 4"/>`);
    [...series.values()].forEach((rs, i) => {
      const pts = rs.map((r) => [r.workers, value(r)] as const).filter((q): q is readonly [number, number] => q[1] !== null && Number.isFinite(q[1]));
      const c = PALETTE[i % PALETTE.length];
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map(([n, v]) => `${x(n, x0).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`);
      for (const [n, v] of pts) out.push(`<circle cx="${x(n, x0).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${c}"/>`);
    });
  };
  panel(left, null);
  panel(left + panelW + gap, second);
  [...series.keys()].forEach((k, i) => {
    const yy = top + 10 + i * 20;
    out.push(`<line x1="${legendX}" y1="${yy}" x2="${legendX + 20}" y2="${yy}" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="3"/>`, `<text x="${legendX + 26}" y="${yy + 4}">${esc(k)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Linked runs: every step time beside its three bounds. */
export function linkMarkdown(runs: ScaleoutRun[], machine: string, whatIsReal: string): string {
  const first = runs.find((r) => r.link)?.link;
  const lines = [
    `Machine: ${machine}. ${whatIsReal}`,
    '',
    `Bounds: **compute** = the slowest shard's compute (median, as its worker measured it). **link** = the larger of the coordinator's link (bytes into and out of the coordinator per step, all workers, each way ÷ its rate) and the busiest worker's link (the same, for one worker). Rates are TCP payload rates: the tbf's line rate × 1448/1514 (MTU 1500, TCP timestamps). **upload**: the slowest shard's encode + send, as its worker measured it (sent = taken by its socket). **weights**: encoding the new weights plus the part of the step that is neither compute nor upload (shipping the weights and the shard, and the worker taking them in). **aggregate + apply**: the coordinator's sum and SGD. Medians over the measured steps. **÷ bound** = the step (median time between steps) ÷ max(compute, link). **worker's own**: what a synthetic machine sleeps per step on the step's path for its own work besides the GPU's compute, from the costs measured on this machine (fp32, fp16, int8: copying or decoding and applying what came, encoding, the replica hash every 10 steps, and the upload of new weights to its GPU at 12 GB/s; powersgd: the next Q, the update on the GPU, the refresh every 50 versions amortised). **exact copy's threads** (powersgd): the exact copy's apply, measured here on one thread and slept as split over the machine's apply threads, plus the hash every 10 steps: it runs beside the step. **÷ own bound** = the step ÷ max(compute + worker's own, exact copy's threads, link). **÷ serial** = the step ÷ (compute + the busiest link's in + out), the floor of a step that overlaps neither the two directions nor compute with communication. **sent during upload**: of the bytes the coordinator's interface sent per step, the share that went out in 10 ms intervals in which it was also receiving at ≥ 25% of its link's rate (0% when the directions take turns; about 1 − 1/segments when a pipelined step overlaps them; it cannot see an overlap shorter than an interval, so it reads 0% for a transfer that takes under 10 ms either way, as a powersgd round at 10 Gbit/s does). Flag **CPU**: the coordinator process was busy (user + system) ≥ 80% of the step, so its CPU, not the link, was the limit. **workers CPU**: all worker processes together, per step. **machine CPU**: all of this machine's CPUs over the measured steps, every process's (other users' too) and the kernel's; flag **machine CPU** where it was ≥ 90% and the step ≥ 1.5× its serial floor: the run's processes waited for CPU. Flag **coordinator apply** (powersgd): the coordinator's own apply of each update, in its helper threads on this machine, took ≥ 80% of the step: this machine's cores and memory bandwidth, not the link or the workers, set the pace. **load**: the 1-minute load average when the run started.`,
    '',
    first ? `RTT: ${first.rttMs} ms configured, ${first.rttApplied ? 'applied by netem' : first.rttMs > 0 ? '**not applied** (this kernel has no netem: links are shaped for rate only)' : 'none added'}.` : '',
    '',
    '| model | compress | scaling | link | coordinator link | N | batch | examples/s | efficiency | step ms | upload ms | weights ms | aggregate + apply ms | compute bound ms | coordinator in / out MB | coordinator link in / out ms | busiest worker link in / out ms | link bound ms | step ÷ bound | worker’s own ms | exact copy’s threads ms | step ÷ own bound | step ÷ serial | sent during upload | coordinator CPU ms (share) | workers CPU ms | machine CPU | load | flag |',
    '|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  ];
  for (const r of runs) {
    const k = r.link;
    if (!k) continue;
    lines.push(`| ${r.model} | ${compressCell(r)} | ${r.scaling} | ${formatRate(k.workerBits)} | ${formatRate(k.coordinatorBits)} | ${r.workers} | ${r.batch} | ${f1(r.examplesPerSec)} | ${r.efficiency === null ? '–' : `${f0(100 * r.efficiency)}%`} | ${f0(k.stepMs)} | ${f0(r.split.upload)} | ${f0(r.split.broadcast)} | ${f0(r.split.aggregate + r.split.apply)} | ${f0(k.computeMs)} | ${f0(k.coordinatorInBytes / 1e6)} / ${f0(k.coordinatorOutBytes / 1e6)} | ${f0(k.coordinatorInMs)} / ${f0(k.coordinatorOutMs)} | ${f0(k.workerInMs)} / ${f0(k.workerOutMs)} | ${f0(k.linkBoundMs)} | **${k.overBound.toFixed(2)}×** | ${k.workerOwnMs === undefined ? '–' : f0(k.workerOwnMs)} | ${k.workerThreadMs ? f0(k.workerThreadMs) : '–'} | ${k.overOwnBound === undefined ? '–' : `${k.overOwnBound.toFixed(2)}×`} | ${k.overSerial.toFixed(2)}× | ${k.sentDuringUpShare === undefined ? '–' : `${f0(100 * k.sentDuringUpShare)}%`} | ${f0(k.coordinatorCpuMs)} (${f0(100 * k.coordinatorCpuShare)}%) | ${f0(k.workersCpuMs)} | ${Number.isFinite(k.machineBusy) ? `${f0(100 * k.machineBusy)}%` : '–'} | ${r.loadAvg.toFixed(1)} | ${[k.coordinatorCpuBound ? 'CPU' : '', k.machineCpuBound ? 'machine CPU' : '', k.coordinatorApplyBound ? 'coordinator apply' : '', k.lost?.length ? `lost ${k.lost.length} worker(s)` : ''].filter(Boolean).join(', ')} |`);
  }
  const probes = new Map<string, ScaleoutRun['link']>();
  for (const r of runs) if (r.link) probes.set(`${r.link.workerBits}/${r.link.coordinatorBits}`, r.link);
  lines.push('', '| link | coordinator link | check: TCP coordinator → worker 0 MB/s | worker 0 → coordinator MB/s | TCP payload rate MB/s | RTT ms measured |', '|---|---|--:|--:|--:|--:|');
  for (const k of probes.values()) {
    const slower = Math.min(k!.workerBits, k!.coordinatorBits);
    lines.push(`| ${formatRate(k!.workerBits)} | ${formatRate(k!.coordinatorBits)} | ${f1(k!.probe.downMBs)} | ${f1(k!.probe.upMBs)} | ${f1(payloadBytesPerSec(slower) / 1e6)} | ${k!.probe.rttMs.toFixed(3)} |`);
  }
  return lines.join('\n') + '\n';
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

/** A row's compression: fixed, or auto and the mode(s) its measured steps ran in. */
function compressCell(r: ScaleoutRun): string {
  return r.chose === undefined ? r.compress : `auto → ${r.chose || '?'}`;
}
