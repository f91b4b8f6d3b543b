// A powersgd worker's two copies of the weights (client/src/exact-replica.ts, device-update.ts):
// the exact copy follows the coordinator bit for bit, in this thread or in a worker_threads
// thread; the working copy, updated on the tfjs backend, stays within rounding of it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { getModel, paramLayout, replicaHash, type Basis } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { applyPowerSgd, maxDrift, powerSgdPlan, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { ExactReplica, LocalReplica } from '../../client/src/exact-replica';
import { threadReplica } from '../../client/src/exact-replica-thread';
import { applyOnDevice, refreshOnDevice } from '../../client/src/device-update';

const SPEC = getModel('alexnet-tiny');
const { params, total } = paramLayout(SPEC);
const PLAN = powerSgdPlan(params, total, 2);
const LR = 0.05, BATCH = 32;

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}
const uniform = (n: number, seed: number, scale = 1) => { const next = xorshift(seed); return Float32Array.from({ length: n }, () => scale * (2 * next() - 1)); };

/** One step's broadcasts, split in `slices` pieces each, as the coordinator sends them. */
function broadcasts(plan: PowerSgdPlan, version: number, seed: number, slices = 3): { r1: Float32Array; r2: Float32Array; frames: { basis: Basis; floats: Float32Array }[] } {
  const r1 = uniform(plan.round1Floats, seed, 0.5), r2 = uniform(plan.round2Floats, seed + 1, 0.5);
  const frames: { basis: Basis; floats: Float32Array }[] = [];
  for (const [round, v] of [[1, r1], [2, r2]] as const) {
    const step = Math.ceil(v.length / slices);
    for (let o = 0; o < v.length; o += step) frames.push({ basis: { type: 'basis', version, round, offset: o, total: v.length, batch: BATCH }, floats: v.subarray(o, Math.min(v.length, o + step)) });
  }
  return { r1, r2, frames };
}

describe('the exact copy', () => {
  it('follows applyPowerSgd bit for bit over steps, answers hash and snapshot only at its version, and is caught when corrupted', () => {
    const w0 = uniform(total, 1, 0.1);
    const exact = new ExactReplica(PLAN, LR);
    const corrupt = new ExactReplica(PLAN, LR, 3);
    for (const r of [exact, corrupt]) r.handle({ op: 'weights', version: 0, offset: 0, total, floats: w0.subarray(0, 1000) });
    expect(exact.handle({ op: 'hash', id: 1, version: 0 })).toEqual({ id: 1, hash: null }); // not whole yet
    for (const r of [exact, corrupt]) r.handle({ op: 'weights', version: 0, offset: 1000, total, floats: w0.subarray(1000) });
    const ref = w0.slice();
    for (let v = 1; v <= 5; v++) {
      const { r1, r2, frames } = broadcasts(PLAN, v, 10 * v);
      for (const f of frames) for (const r of [exact, corrupt]) r.handle({ op: 'basis', ...f });
      applyPowerSgd(PLAN, ref, r1, r2, LR, BATCH);
      expect(exact.version).toBe(v);
      expect(exact.handle({ op: 'hash', id: v, version: v })!.hash).toBe(replicaHash(ref));
      const snap = exact.handle({ op: 'snapshot', id: v, version: v })!;
      expect(Buffer.from(snap.weights!.buffer)).toEqual(Buffer.from(ref.buffer));
      expect(snap.hash).toBe(replicaHash(ref));
    }
    expect(exact.handle({ op: 'snapshot', id: 9, version: 4 })!.weights).toBeNull();
    // A newcomer's full weights of v5 may come before the broadcast that made v5: they stay v5.
    const newcomer = new ExactReplica(PLAN, LR);
    newcomer.handle({ op: 'weights', version: 5, offset: 0, total, floats: ref });
    for (const f of broadcasts(PLAN, 5, 50).frames) newcomer.handle({ op: 'basis', ...f });
    expect(newcomer.handle({ op: 'hash', id: 9, version: 5 })!.hash).toBe(replicaHash(ref));
    expect(corrupt.handle({ op: 'hash', id: 9, version: 5 })!.hash).not.toBe(replicaHash(ref));
    // A step whose base it does not hold (v7 on v5) leaves it at no version: the worker resyncs.
    for (const f of broadcasts(PLAN, 7, 70).frames) exact.handle({ op: 'basis', ...f });
    expect(exact.version).toBe(-1);
    expect(exact.handle({ op: 'hash', id: 10, version: 5 })!.hash).toBeNull();
  });

  for (const threads of [1, 3]) it(`in a worker_threads thread, applying with ${threads} thread(s), gives the same hashes and weights as in this thread`, async () => {
    const w0 = uniform(total, 2, 0.1);
    const local = new LocalReplica(PLAN, LR), thread = threadReplica(PLAN, LR, undefined, threads);
    try {
      for (const h of [local, thread]) h.post({ op: 'weights', version: 4, offset: 0, total, floats: w0 });
      for (let v = 5; v <= 7; v++) for (const f of broadcasts(PLAN, v, v).frames) for (const h of [local, thread]) h.post({ op: 'basis', ...f });
      expect(await thread.hash(7)).toBe(await local.hash(7));
      expect(await thread.hash(6)).toBeNull();
      const [a, b] = [(await thread.snapshot(7))!, (await local.snapshot(7))!];
      expect(Buffer.from(a.weights.buffer)).toEqual(Buffer.from(b.weights.buffer));
      expect(a.hash).toBe(b.hash);
    } finally {
      thread.dispose();
    }
  });

  it('a question still unanswered when the thread is disposed is refused, not left waiting for ever', async () => {
    const thread = threadReplica(PLAN, LR);
    thread.post({ op: 'weights', version: 4, offset: 0, total, floats: uniform(total, 3, 0.1) });
    const asked = thread.hash(4); // the thread is still starting: no answer can have come yet
    thread.dispose();
    await expect(asked).rejects.toThrow(/disposed before it answered/);
    await expect(thread.hash(4)).rejects.toThrow(/disposed/);
  });
});

describe('the working copy on the backend', () => {
  beforeAll(async () => { await tf.setBackend('cpu'); });
  let net: Net | null = null;
  afterAll(() => net?.dispose());

  it('applyOnDevice agrees with applyPowerSgd to rounding over 20 steps; refreshOnDevice measures that drift and makes it bit-equal', async () => {
    net = new Net(SPEC);
    const exact = uniform(total, 3, 0.1);
    net.setWeights(exact);
    const before = tf.memory().numTensors;
    let bound = 0;
    for (let v = 1; v <= 20; v++) {
      const { r1, r2 } = broadcasts(PLAN, v, 100 * v);
      applyOnDevice(net, PLAN, r1, r2, LR, BATCH);
      applyPowerSgd(PLAN, exact, r1, r2, LR, BATCH);
      // fp32 rounding of |w| + |update| per step, at most a few units: the sum over steps bounds the drift.
      bound += 4 * 2 ** -24 * (0.2 + 2 * LR / BATCH * PLAN.rank * 0.25 + LR / BATCH * 0.5);
    }
    expect(tf.memory().numTensors).toBe(before); // nothing left behind per step
    const working = new Float32Array(total);
    await net.getWeights(working);
    const drift = maxDrift(working, exact);
    console.log(`alexnet-tiny rank 2, 20 steps on the cpu backend: drift ${drift.toExponential(2)} (bound ${bound.toExponential(2)})`);
    expect(drift).toBeGreaterThan(0); // the backend's fp32 rounds differently: this is what the refresh is for
    expect(drift).toBeLessThanOrEqual(bound);
    // The refresh measures the same drift on the backend, and leaves the working copy bit-equal.
    expect(await refreshOnDevice(net, exact)).toBe(drift);
    await net.getWeights(working);
    expect(maxDrift(working, exact)).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
  });
});
