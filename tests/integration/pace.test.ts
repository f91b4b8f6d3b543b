// What decides who computes, measured by the coordinator rather than taken from a worker's word
// (issue 24): speeds and upload rates (pace.ts, transport.ts), deadlines and repeated stalls, and
// the full copies of the weights a worker nobody vouched for may pull (full-copies.ts). Real
// Fashion-MNIST shapes, synthetic compute (a sleep per example and a fixed gradient, synthetic.ts).
//
// In-process (tests/helpers/in-process.ts) where what is checked lives above the wire: a real
// coordinator on the in-memory wire, real WorkerCores, and the liars as peers on it (peer-link.ts,
// their frames validated by the transport's own receive()). Over a real socket stays what only
// the transport measures: an upload's rate, timed from its first WebSocket fragment.
import { describe, expect, it } from 'vitest';
import { CLOSE, type Message } from '@tabtrain/shared';
import type { Coordinator, StepRecord } from '../../server/src/coordinator';
import { ADDRESS_BURST, ADDRESS_REFILL_MS, IDENTITY_BURST, IDENTITY_REFILL_MS } from '../../server/src/full-copies';
import { hello, join, sleep } from '../helpers/liars';
import { paceLiar } from '../helpers/pace-liars';
import { startCoordinator } from '../helpers/run';
import { SYNTHETIC, startInProcess } from '../helpers/in-process';

const RUN = { model: 'alexnet-tiny', batch: 16, seed: 3, balance: 'cost' as const, epochs: 1, evalExamples: 64 };
/** An honest worker at 1 ms per example (the synthetic net): hundreds of examples/s. */
const HONEST = { ...SYNTHETIC, syntheticMsPerExample: 1 };

/** Each worker's share of the examples of the last 10 steps. */
function shareOf(steps: StepRecord[], id: number): number {
  const recent = steps.slice(-10);
  const mine = recent.reduce((a, s) => a + s.shards.filter((x) => x.worker === id).reduce((b, x) => b + x.count, 0), 0);
  return mine / recent.reduce((a, s) => a + s.examples, 0);
}

/** The status row of the worker that said hello as `workerId`. */
const rowOf = (coord: Coordinator, workerId: string) => coord.status().workers.find((w) => w.workerId === workerId)!;

describe('pace from the coordinator\'s clock (issue 24)', () => {
  it.each(['speed', 'cost'] as const)('--balance %s: a slow worker claiming computeMs 0 gets no more than its measured share', async (balance) => {
    const run = await startInProcess({ ...RUN, balance, batch: 32, maxSteps: 20, minWorkers: 4, open: true });
    const { coord, lines } = run;
    // Three honest workers (the fourth stands where the socket test below has its fragmenter).
    await run.add(3, HONEST);
    // 20 ms per example: 50 examples/s at most, against hundreds for the honest three.
    const claimer = paceLiar(run, { msPerExample: 20, claim: { computeMs: 0, encodeMs: 0, sendMs: 0 } });
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    try {
      const { workerId } = await claimer.welcome;
      await coord.train();
      const claimerRow = rowOf(coord, workerId);
      const honestRows = coord.status().workers.filter((w) => w.id !== claimerRow.id);
      console.log(`--balance ${balance}: claimer (computeMs 0, 20 ms/example) measured ${claimerRow.examplesPerSec.toFixed(0)} examples/s, share of the last 10 steps ${(100 * shareOf(steps, claimerRow.id)).toFixed(1)}%; ` +
        `honest ${honestRows.map((w) => w.examplesPerSec.toFixed(0)).join(', ')} examples/s`);
      expect(lines.filter((l) => / caught: /.test(l)), 'nobody is punished: claiming less compute is no proof of a lie').toEqual([]);
      // Its measured speed is its own, far below the honest workers'; so is its share of the batch.
      expect(honestRows).toHaveLength(3);
      for (const h of honestRows) expect(claimerRow.examplesPerSec).toBeLessThan(h.examplesPerSec / 2);
      expect(shareOf(steps, claimerRow.id)).toBeLessThan(0.25);
    } finally {
      claimer.close();
      await run.close();
    }
  });

  // Real sockets: the rate is the transport's measure of a gradient message, from its first
  // fragment to its last, which only a socket carries in fragments (and pings).
  it('one that uploads in fragments with a ping before the last is measured at its real rate (real sockets)', async () => {
    const { coord, url, lines } = await startCoordinator({ ...RUN, batch: 32, maxSteps: 20, minWorkers: 3, open: true });
    // The honest two: worker cores in this process with the local key, as `--synthetic-ms-per-example 1` local workers are.
    const honest = [paceLiar(url, { msPerExample: 1 }), paceLiar(url, { msPerExample: 1 })];
    const fragmenter = paceLiar(url, { msPerExample: 1, fragments: 6, fragmentGapMs: 60 });
    try {
      const { workerId } = await fragmenter.welcome;
      await coord.train();
      const fragRow = rowOf(coord, workerId);
      const realRate = fragmenter.upload.bytes / (fragmenter.upload.ms / 1000);
      console.log(`fragmenter sent ${fragmenter.upload.bytes} bytes at ${(realRate / 1000).toFixed(0)} KB/s, measured ${(fragRow.upBytesPerSec / 1000).toFixed(0)} KB/s`);
      expect(lines.filter((l) => / caught: /.test(l))).toEqual([]);
      // The fragmented upload is timed from its first fragment: near the rate it really sent at.
      expect(fragmenter.upload.bytes).toBeGreaterThan(0);
      expect(fragRow.upBytesPerSec).toBeGreaterThan(0);
      expect(fragRow.upBytesPerSec).toBeLessThan(3 * realRate);
    } finally {
      coord.stop();
      await coord.close();
      for (const w of [...honest, fragmenter]) w.close();
    }
  });
});

describe('deadlines from the coordinator\'s clock (issue 24)', () => {
  it('a token worker that stalls after being measured is closed at its measured deadline, and refused the third time, however it rejoins; one that claims impossible compute is caught', async () => {
    const TOKEN = 'pace-token';
    const DEADLINE = 1500;
    const inProcess = await startInProcess({ ...RUN, balance: 'equal', batch: 16, maxSteps: 100_000, token: TOKEN, minDeadlineMs: DEADLINE, newcomerDeadlineMs: DEADLINE });
    const { coord, lines } = inProcess;
    await inProcess.add(1, HONEST);
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const run = coord.train();
    run.catch(() => {});
    const identity = { workerId: 'staller', kind: 'node' as const, backend: 'cpu', adapter: null, token: TOKEN };
    try {
      // It computes two shards honestly (measured), then holds every shard it gets; it rejoins with its secret each time.
      const codes: number[] = [];
      const t0 = performance.now();
      for (let k = 0; k < 5; k++) {
        const s = paceLiar(inProcess, { msPerExample: 1, stallAfter: k === 0 ? 2 : 0, identity });
        codes.push((await s.closed).code);
      }
      const ms = performance.now() - t0;
      console.log(`staller: closes ${codes.join(',')} in ${ms.toFixed(0)} ms; ${lines.filter((l) => /deadline/.test(l)).slice(-3).join(' | ')}`);
      expect(codes).toEqual([CLOSE.timeout, CLOSE.timeout, CLOSE.untrusted, CLOSE.untrusted, CLOSE.untrusted]);
      expect(lines.some((l) => /caught: missed 3 shard deadlines/.test(l))).toBe(true);
      // Three stalls of one measured deadline each (the 1.5 s floor), not three unbounded ones.
      expect(ms).toBeLessThan(3 * DEADLINE + 20_000);

      // A claim of 10^9 ms of compute (the tiny speed that bought a 3.5-day deadline) contradicts the coordinator's clock.
      const claimer = paceLiar(inProcess, { msPerExample: 1, claim: { computeMs: 1e9, encodeMs: 0, sendMs: 0 }, identity: { ...identity, workerId: 'slow-claimer', session: undefined } });
      expect((await claimer.closed).code).toBe(CLOSE.untrusted);
      expect(lines.some((l) => /caught: shard \d+\/\d+: it reported 1000000000 ms of compute/.test(l))).toBe(true);
      // The run goes on with the honest worker.
      const at = steps.length;
      expect(await new Promise<boolean>((r) => { const t = setInterval(() => { if (steps.length >= at + 3) { clearInterval(t); r(true); } }, 50); setTimeout(() => { clearInterval(t); r(false); }, 20_000); })).toBe(true);
    } finally {
      coord.stop();
      await run.catch(() => {});
      await inProcess.close();
    }
  });
});

describe('full copies of the weights to workers nobody vouched for (issue 24)', () => {
  it('a stranger that asks for a resync at every assign, and fresh identities from one address that take their copy and leave, get no more full copies than the buckets allow; the run keeps its pace', async () => {
    const inProcess = await startInProcess({ ...RUN, balance: 'equal', compress: { mode: 'fp16', rank: 0 }, probation: 1, maxSteps: 100_000, open: true });
    const { coord, lines } = inProcess;
    // Every in-memory connection comes from one address ('memory'), as every socket here from 127.0.0.1.
    await inProcess.add(1, HONEST);
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    const run = coord.train();
    run.catch(() => {});
    let on = true;
    try {
      while (steps.length < 2) await sleep(50);
      const t0 = Date.now();
      // A stranger (no key, no token) that passes probation, then asks for the weights at every assign; it rejoins with its secret when closed.
      const identity = { workerId: 'resyncer', kind: 'node' as const, backend: 'cpu', adapter: null };
      let resyncerCopies = 0;
      const resyncCodes: number[] = [];
      const resyncer = (async () => {
        while (on) {
          const r = paceLiar(inProcess, { msPerExample: 1, resyncEveryAssign: true, identity });
          const c = await Promise.race([r.closed, (async () => { while (on) await sleep(50); r.close(); return r.closed; })()]);
          resyncerCopies += r.copies();
          if (on) resyncCodes.push(c.code);
        }
      })();
      // Fresh identities from the same address: each joins, takes what it is sent for 300 ms, and leaves.
      let fresh = 0, freshCopies = 0;
      const joiners = (async () => {
        while (on) {
          const j = join(inProcess, hello());
          await sleep(300);
          freshCopies += j.received.filter((m: Message) => m.type === 'weights').length;
          fresh++;
          j.link.terminate();
        }
      })();
      const at = steps.length;
      await sleep(12_000);
      on = false;
      await Promise.all([resyncer, joiners]);
      const seconds = (Date.now() - t0) / 1000;
      const weightsBytes = 4 * coord.run.paramCount;
      const bound = ADDRESS_BURST + Math.ceil((seconds * 1000) / ADDRESS_REFILL_MS);
      console.log(`full copies in ${seconds.toFixed(1)} s: resyncer ${resyncerCopies} (closes ${resyncCodes.join(',')}), ${fresh} fresh identities ${freshCopies}; ` +
        `bound for the address ${bound} (${((bound * weightsBytes) / 1e6).toFixed(2)} MB of ${weightsBytes} B copies); ${steps.length - at} steps meanwhile; ` +
        `${lines.filter((l) => /waiting \d+ s for a full copy/.test(l)).length} waits logged`);
      expect(lines.some((l) => /worker #\d+ passed probation for train shards: \d+ agreed with the copies of #\d+ \(trusted\)$/.test(l)), 'the resyncer passed probation, vouched for by the token worker').toBe(true);
      // Its identity's bucket, and the address's bucket both share.
      expect(resyncerCopies).toBeLessThanOrEqual(IDENTITY_BURST + Math.ceil((seconds * 1000) / IDENTITY_REFILL_MS));
      expect(resyncerCopies + freshCopies).toBeLessThanOrEqual(bound);
      expect(fresh).toBeGreaterThan(bound);
      expect(lines.some((l) => /waiting \d+ s for a full copy of the weights: a worker without the run's token/.test(l))).toBe(true);
      // The vouched-for worker was never held back: the run went on.
      expect(steps.length - at).toBeGreaterThan(20);
    } finally {
      on = false;
      coord.stop();
      await run.catch(() => {});
      await inProcess.close();
    }
  });
});
