// PowerSGD with its factors on the wire in 16 bits (--factors fp16) through the real system: a real
// coordinator and real wasm WorkerCores on the in-memory wire (helpers/in-process.ts), real
// Fashion-MNIST. Workers send P_i and Q_i as fp16, the coordinator broadcasts P̂ and ΣQ_i as fp16
// and applies exactly the decoded halves, so every replica must stay bit-equal to its weights.
import { beforeAll, describe, expect, it } from 'vitest';
import { CLOSE, decodeFrame, encode, getModel, paramLayout, replicaHash } from '@tabtrain/shared';
import { parseCompression, uploadBytes } from '@tabtrain/shared/compress';
import { setupNodeBackend } from '../../client/src/node-worker';
import { LOCAL_KEY } from '../../server/src/secrets';
import { WASM, startInProcess } from '../helpers/in-process';
import { liar, type Closed, type Tamper } from '../helpers/liars';

const MODEL = 'alexnet-tiny';
const RANK = 2;
const FP16 = parseCompression('powersgd', RANK, 'fp16');

beforeAll(async () => { await setupNodeBackend('wasm'); });

describe('powersgd with fp16 factors', () => {
  it('2 wasm workers, 20 steps: every hash check passes, each refresh is bit-equal to the coordinator, uploads are the fp16 plan', async () => {
    const steps = 20, every = 5;
    const run = await startInProcess({ model: MODEL, batch: 32, maxSteps: steps, seed: 9, minWorkers: 2, compress: FP16, verifyEvery: 1, evalExamples: 200 });
    const { coord, lines } = run;
    const hashes = new Map<number, string>();
    coord.events.on('step', () => hashes.set(coord.status().version, replicaHash(coord.weights)));
    try {
      const workers = await run.add(2, { ...WASM, refreshEvery: every });
      const summary = await coord.train();
      expect(summary.steps).toBe(steps);
      const { params, total } = paramLayout(getModel(MODEL));
      const half = uploadBytes(params, total, FP16), full = uploadBytes(params, total, parseCompression('powersgd', RANK));
      const rows = coord.status().workers;
      const up = rows.reduce((a, w) => a + w.bytesIn, 0) / steps / 2;
      await run.close(); // every refresh is logged once a worker has let go
      const refreshes = workers.flatMap((w) => w.log).map((l) => /v(\d+): working weights refreshed from the exact copy \(hash (\w+)\)/.exec(l)).filter((m) => m !== null);
      console.log(`${MODEL} rank ${RANK} fp16 factors: upload ${up.toFixed(0)} bytes/worker/step (plan ${half}; fp32 factors ${full}); ${refreshes.length} refreshes`);
      // Both rounds' frames, plus two results and two status messages per shard (< 600 bytes).
      expect(up).toBeGreaterThanOrEqual(half);
      expect(up).toBeLessThan(half + 600);
      expect(half / full).toBeLessThan(0.6);
      expect(lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      expect(rows.map((w) => w.resyncs)).toEqual([0, 0]);
      expect(workers.flatMap((w) => w.log).filter((l) => l.includes('asking for the full weights'))).toEqual([]);
      // The exact copies are the coordinator's weights bit for bit at every refresh (both workers, every 5 versions).
      expect(refreshes.map((m) => Number(m[1])).sort((a, b) => a - b)).toEqual([5, 5, 10, 10, 15, 15, 20, 20]);
      for (const m of refreshes) expect(m[2]).toBe(hashes.get(Number(m[1])));
    } finally {
      await run.close();
    }
  }, 300_000);

  // A trusted worker's first factor frame turns non-finite. fp16: NaN and +Inf bits, which the
  // coordinator's decode finds; fp32 factors: a NaN. Its own first frame folding bad once dropped
  // nobody (the copy was marked in the sum after the fold) and the step threw: sessions.ts.
  for (const factors of ['fp16', 'fp32'] as const) {
    it(`${factors} factors: a worker whose first round-1 frame is non-finite is closed 4009 (bad gradient), and the run goes on`, async () => {
      let poisoned = false;
      const tamper: Tamper = (f, m) => {
        if (poisoned || m.type !== 'gradient' || m.round !== 1 || m.offset !== 0) return [f];
        expect(m.codec ?? 'fp32').toBe(factors);
        poisoned = true;
        const body = decodeFrame(f).body.slice();
        if (factors === 'fp16') new Uint16Array(body.buffer, 0, 2).set([0x7e00, 0x7c00]);
        else new Float32Array(body.buffer, 0, 1)[0] = Number.NaN;
        return [encode(m, body)];
      };
      const run = await startInProcess({ model: MODEL, batch: 16, maxSteps: 6, seed: 4, minWorkers: 2, compress: parseCompression('powersgd', RANK, factors), verifyEvery: 1, evalExamples: 200 });
      try {
        await run.add(1, WASM);
        const bad = liar(run, tamper, { local: LOCAL_KEY });
        const summary = await run.coord.train();
        const closed = await Promise.race([bad.closed, new Promise<Closed>((r) => setTimeout(() => r({ code: -1, reason: 'still open' }), 3000))]);
        console.log(`${factors} factors, non-finite first frame: closed ${closed.code} (${closed.reason})`);
        expect(poisoned).toBe(true);
        expect(closed.code).toBe(CLOSE.badGradient);
        expect(closed.reason).toMatch(/non-finite|NaN/);
        expect(summary.steps).toBe(6);
        expect(run.lines.filter((l) => l.includes('replica differs'))).toEqual([]);
      } finally {
        await run.close();
      }
    }, 300_000);
  }
});
