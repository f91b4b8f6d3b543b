// The figures of one run through emulated links (bench scaleout --link): its step against the
// compute and link bounds, from the coordinator's step marks, and the line it prints.
import { formatRate, payloadBytesPerSec } from './netns';
import type { Probe, StepMark } from './linked';
import type { LinkConfig, LinkFigures, ScaleoutOptions, ScaleoutRun, Scaling, StepSplit, WorkerCpu } from './scaleout-types';

/** A row whose coordinator was at least this busy is flagged: its CPU, not the link, was the limit. */
export const CPU_BOUND_SHARE = 0.8;
/** A row whose machine was at least this busy, and whose step was far from its floor, is flagged too. */
export const MACHINE_BUSY = 0.9;
/** powersgd: the coordinator's apply of an update (applyMs) at ≥ this share of the step is flagged: the coordinator's machine set the pace. */
export const APPLY_BOUND_SHARE = 0.8;

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

export function linkLine(r: ScaleoutRun): string {
  const k = r.link!;
  return `${r.kind} ${r.model} ${r.compress}${r.chose !== undefined ? ` (chose ${r.chose})` : ''} ${r.scaling} N=${r.workers} @ ${formatRate(k.workerBits)}${k.coordinatorBits !== k.workerBits ? ` (coordinator ${formatRate(k.coordinatorBits)})` : ''}: ` +
    `${r.examplesPerSec.toFixed(1)} examples/s${r.efficiency === null ? '' : `, efficiency ${(100 * r.efficiency).toFixed(0)}%`}; step ${k.stepMs.toFixed(0)} ms (median) against ` +
    `compute ${k.computeMs.toFixed(0)} ms, link ${k.linkBoundMs.toFixed(0)} ms (coordinator in ${k.coordinatorInMs.toFixed(0)} / out ${k.coordinatorOutMs.toFixed(0)}, busiest worker in ${k.workerInMs.toFixed(0)} / out ${k.workerOutMs.toFixed(0)}): ` +
    `${k.overBound.toFixed(2)}× the bound, ${k.overSerial.toFixed(2)}× compute + in + out${k.workerOwnMs === undefined ? '' : `, ${k.overOwnBound!.toFixed(2)}× max(compute + the worker's own ${k.workerOwnMs.toFixed(0)} ms${k.workerThreadMs ? `, its exact copy's threads ${k.workerThreadMs.toFixed(0)} ms` : ''}, link)`}; ${k.sentDuringUpShare === undefined ? '' : `${(100 * k.sentDuringUpShare).toFixed(0)}% of the coordinator's sent bytes went out while gradients came in; `}coordinator CPU ${k.coordinatorCpuMs.toFixed(0)} ms/step (${(100 * k.coordinatorCpuShare).toFixed(0)}%), workers ${k.workersCpuMs.toFixed(0)} ms/step, machine ${(100 * k.machineBusy).toFixed(0)}% busy` +
    `${k.coordinatorCpuBound ? ' — COORDINATOR CPU-BOUND' : ''}${k.machineCpuBound ? ' — MACHINE CPU-BOUND' : ''}${k.coordinatorApplyBound ? ' — COORDINATOR APPLY-BOUND (this machine)' : ''}${k.lost?.length ? ` — LOST ${k.lost.length} WORKER(S)` : ''}`;
}

/** Figures of one linked run from its step marks; `marks[0]` is the last unmeasured step. */
export function linkFigures(o: Pick<ScaleoutOptions, 'kind' | 'workerCpu'>, l: LinkConfig, rttApplied: boolean, probe: Probe, model: string, params: number, scaling: Scaling, n: number, batch: number, marks: StepMark[], compress: string, load: number, workerCpu?: WorkerCpu): ScaleoutRun {
  const first = marks[0], last = marks[marks.length - 1];
  const measured = marks.slice(1);
  const steps = measured.length;
  const stepMs = median(measured.map((m, i) => m.t - marks[i].t));
  const cpu = measured.map((m, i) => m.cpuMs - marks[i].cpuMs);
  // Bytes per worker link in each measured step, by remote address (one namespace, one address);
  // medians over the steps, so that an occasional extra shard (a spot check) does not count.
  const stepLinks = measured.map((m, i) => {
    const perLink = new Map<string, { in: number; out: number }>();
    for (const c of m.links) {
      const before = marks[i].links.find((b) => b.id === c.id);
      const e = perLink.get(c.remote) ?? { in: 0, out: 0 };
      e.in += c.bytesIn - (before?.bytesIn ?? 0);
      e.out += c.bytesOut - (before?.bytesOut ?? 0);
      perLink.set(c.remote, e);
    }
    const links = [...perLink.values()];
    return {
      in: links.reduce((a, x) => a + x.in, 0), out: links.reduce((a, x) => a + x.out, 0),
      wIn: Math.max(0, ...links.map((x) => x.in)), wOut: Math.max(0, ...links.map((x) => x.out)),
    };
  });
  const coordIn = median(stepLinks.map((x) => x.in)), coordOut = median(stepLinks.map((x) => x.out));
  const busiest = { in: median(stepLinks.map((x) => x.wIn)), out: median(stepLinks.map((x) => x.wOut)) };
  const coordRate = payloadBytesPerSec(l.coordinatorBits) / 1000, workerRate = payloadBytesPerSec(l.workerBits) / 1000; // bytes per ms
  const computeMs = median(measured.map((m) => m.rec.computeMs));
  const f = {
    coordinatorInMs: coordIn / coordRate, coordinatorOutMs: coordOut / coordRate,
    workerInMs: busiest.in / workerRate, workerOutMs: busiest.out / workerRate,
  };
  const linkBoundMs = Math.max(f.coordinatorInMs, f.coordinatorOutMs, f.workerInMs, f.workerOutMs);
  const boundMs = Math.max(computeMs, linkBoundMs);
  const serialMs = computeMs + Math.max(f.coordinatorInMs + f.coordinatorOutMs, f.workerInMs + f.workerOutMs);
  const jiffies = last.machine.total - first.machine.total;
  const coordinatorCpuMs = median(cpu);
  const link: LinkFigures = {
    workerBits: l.workerBits, coordinatorBits: l.coordinatorBits, rttMs: l.rttMs, rttApplied: rttApplied && l.rttMs > 0, probe,
    stepMs, computeMs, coordinatorInBytes: coordIn, coordinatorOutBytes: coordOut, workerInBytes: busiest.in, workerOutBytes: busiest.out, ...f,
    linkBoundMs, boundMs, overBound: stepMs / boundMs, serialMs, overSerial: stepMs / serialMs,
    coordinatorCpuMs, coordinatorCpuShare: coordinatorCpuMs / stepMs, machineBusy: jiffies > 0 ? (last.machine.busy - first.machine.busy) / jiffies : NaN,
    coordinatorCpuBound: coordinatorCpuMs / stepMs >= CPU_BOUND_SHARE,
    machineCpuBound: jiffies > 0 && (last.machine.busy - first.machine.busy) / jiffies >= MACHINE_BUSY && stepMs / serialMs >= 1.5,
    workersCpuMs: median(measured.map((m, i) => m.workersCpuMs - marks[i].workersCpuMs)),
    ...(measured.every((m) => m.overlap && m.overlap.sentBytes > 0) ? { sentDuringUpShare: median(measured.map((m) => m.overlap!.sentDuringUpBytes / m.overlap!.sentBytes)) } : {}),
  };
  const recs = measured.map((m) => m.rec);
  // powersgd: the coordinator's own apply of each update (in its helper threads, --apply-threads)
  // took most of the step: this VM's cores and memory, not the link or the workers, set the pace.
  if (recs.every((r) => (r.mode ?? compress).startsWith('powersgd'))) link.coordinatorApplyBound = median(recs.map((r) => r.applyMs)) >= APPLY_BOUND_SHARE * stepMs;
  const split: StepSplit = {
    wall: median(recs.map((r) => r.wallMs)),
    compute: computeMs,
    upload: median(recs.map((r) => r.uploadMs)),
    aggregate: median(recs.map((r) => r.aggregateMs + (r.foldMs ?? 0))),
    apply: median(recs.map((r) => r.applyMs)),
    broadcast: median(recs.map((r) => r.broadcastMs + Math.max(0, r.collectMs - r.computeMs - r.uploadMs))),
  };
  return {
    kind: o.kind, model, params, scaling, compress, workers: n, batch, steps,
    examplesPerSec: (batch * 1000) / stepMs, efficiency: null, split, bytesPerStep: coordIn + coordOut, uploadBytesPerWorker: coordIn / n,
    commMs: stepMs - computeMs, boundMs, commOverBound: stepMs / boundMs, coordinatorCpuMs, loadAvg: load, link, workerCpu,
  };
}
