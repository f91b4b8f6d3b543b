// The runs of `bench scaleout --link`: the coordinator and each worker in a network namespace of
// its own behind an emulated link (netns.ts, linked.ts), one lab per link configuration.
import { loadavg } from 'node:os';
import { getModel, paramLayout } from '@tabtrain/shared';
import type { WorkerCosts } from '@tabtrain/shared/worker-costs';
import { DEFAULTS } from '../coordinator';
import { NetLab, formatRate, payloadBytesPerSec, TCP_PAYLOAD_FRACTION } from './netns';
import { probeLink, runInLab, type Probe } from './linked';
import type { HostOptions } from './coord-host';
import { linkFigures, linkLine } from './link-figures';
import { benchName, chosenModes, coordinatorCompression, runMatrix } from './scaleout-matrix';
import type { BenchCompression, LinkConfig, ScaleoutOptions, ScaleoutRun, Scaling } from './scaleout-types';
import { costsOf, workerCommand, workerOwnMs } from './worker-costs';

/** One lab per link configuration, sized for the largest N; every run of the matrix goes through it. */
export async function linkedSeries(o: ScaleoutOptions, costs: Map<string, WorkerCosts>): Promise<ScaleoutRun[]> {
  const runs: ScaleoutRun[] = [];
  const most = Math.max(...o.workers);
  for (const l of o.links!) {
    const lab = NetLab.create({ workers: most, worker: { rateBits: l.workerBits, rttMs: l.rttMs }, coordinator: { rateBits: l.coordinatorBits, rttMs: l.rttMs } });
    try {
      const rttNote = l.rttMs > 0 ? (lab.netem ? `RTT ${l.rttMs} ms by netem (RTT/4 on each of the 4 qdiscs of a round trip)` : `RTT ${l.rttMs} ms NOT applied: this kernel has no netem (CONFIG_NET_SCH_NETEM), links are shaped for rate only`) : 'no added RTT';
      o.log(`links: ${most} workers, each on its own ${formatRate(l.workerBits)} link, coordinator on one ${formatRate(l.coordinatorBits)} link shared by all (tbf both ways); ${rttNote}; namespaces ${lab.prefix}-*`);
      // About a second at the slower of the two rates: long enough to see the rate, short enough to be cheap.
      const slower = Math.min(l.workerBits, l.coordinatorBits);
      const bytes = Math.round(Math.min(512e6, Math.max(16e6, slower / 8)));
      const probe = await probeLink(lab, lab.workers[0], bytes);
      o.log(`link check, coordinator ↔ worker 0, one TCP stream, ${(bytes / 1e6).toFixed(0)} MB: ${probe.downMBs.toFixed(1)} MB/s down, ${probe.upMBs.toFixed(1)} MB/s up, against ${(payloadBytesPerSec(slower) / 1e6).toFixed(1)} MB/s of TCP payload at ${formatRate(slower)} (${(100 * TCP_PAYLOAD_FRACTION).toFixed(1)}% of the line rate); RTT ${probe.rttMs.toFixed(3)} ms measured${l.rttMs > 0 ? `, ${l.rttMs} ms configured` : ''}`);
      runs.push(...await runMatrix(o, (model, compress, scaling, n) => runLinked(o, lab, l, probe, model, compress, scaling, n, costsOf(costs, model, compress)), linkLine));
    } finally {
      lab.destroySync();
    }
  }
  return runs;
}

async function runLinked(o: ScaleoutOptions, lab: NetLab, l: LinkConfig, probe: Probe, model: string, compress: BenchCompression, scaling: Scaling, n: number, costs: WorkerCosts[] | null): Promise<ScaleoutRun> {
  const { total } = paramLayout(getModel(model));
  const batch = scaling === 'strong' ? o.batch : o.perWorkerBatch * n;
  const burnIn = Math.max(1, o.burnIn);
  const host: HostOptions = {
    model, epochs: 1, batch, seed: 42, port: 0, host: lab.coordinator.ip, minWorkers: n, maxSteps: burnIn + o.steps,
    balance: o.balance, applyThreads: o.applyThreads, evalExamples: 1, helloTimeoutMs: 120_000, minDeadlineMs: 600_000, ...coordinatorCompression(compress),
    // Every shard computed once: no --verify-shards spot checks (a 5% chance per shard of a second copy).
    verifyShards: 0,
  };
  const load = loadavg()[0];
  const t0 = performance.now();
  const { marks, log } = await runInLab(lab, host, n, (url) => workerCommand(o, url, costs), (m) => {
    if (m.rec.step <= burnIn + o.steps) o.log(`  ${model} ${scaling} N=${n} step ${m.rec.step}${m.rec.step <= burnIn ? ' (burn-in)' : ''}: ${m.rec.wallMs.toFixed(0)} ms (collect ${m.rec.collectMs.toFixed(0)}: compute ${m.rec.computeMs.toFixed(0)}, upload ${m.rec.uploadMs.toFixed(0)}; ${m.rec.earlySegments} segments of the new weights staged during the upload${m.overlap ? `; coordinator sent ${(m.overlap.sentBytes / 1e6).toFixed(0)} MB, ${(m.overlap.sentDuringUpBytes / 1e6).toFixed(0)} MB of it while gradients came in` : ''}), ${((performance.now() - t0) / 1000).toFixed(0)} s into the run`);
  });
  if (marks.length < burnIn + o.steps) throw new Error(`${model} N=${n}: only ${marks.length} steps ran`);
  const measured = marks.slice(burnIn - 1, burnIn + o.steps);
  const r = linkFigures(o, l, lab.netem, probe, model, total, scaling, n, batch, measured, benchName(compress), load, costs ? 'sleep' : undefined);
  if (compress.mode === 'auto') r.chose = chosenModes(measured.slice(1).map((m) => m.rec.mode));
  // auto: the costs of the mode its last step ran in.
  const own = costs?.find((c) => benchName(c.compress) === (measured.at(-1)?.rec.mode ?? benchName(compress))) ?? (costs?.length === 1 ? costs[0] : undefined);
  if (own) {
    const k = r.link!;
    const ownMs = workerOwnMs(own, DEFAULTS.verifyEvery);
    k.workerOwnMs = ownMs.pathMs;
    k.workerThreadMs = ownMs.threadMs;
    k.overOwnBound = k.stepMs / Math.max(k.computeMs + ownMs.pathMs, ownMs.threadMs, k.linkBoundMs);
  }
  // A worker that closed mid-run makes the row a different run than it says: flagged, with the reason.
  r.link!.lost = log.filter((line) => / closed: /.test(line));
  for (const line of r.link!.lost) o.log(`  LOST A WORKER: ${line}`);
  return r;
}
