// The coordinator's powersgd step (server/src/step.ts) between the sockets: each round's broadcast
// goes out matrix by matrix as soon as every shard's factor of that matrix is summed, with the bits
// of doing it all at the round's end, and what went out stays final when a shard is redone.
import { describe, expect, it } from 'vitest';
import { MSG, decodeFrame, getModel, initParams, paramLayout, type Basis } from '@tabtrain/shared';
import { parseCompression, roundSegments } from '@tabtrain/shared/compress';
import { applyPowerSgd, powerSgdPlan } from '@tabtrain/shared/powersgd';
import { orthonormaliseRound1 } from '@tabtrain/shared/powersgd-basis';
import { prng } from '../helpers/liars';
import { Step } from '../../server/src/step';

const SPEC = getModel('alexnet-tiny');
const SEED = 5;
const RANK = 2;
const { params, total } = paramLayout(SPEC);
const plan = powerSgdPlan(params, total, RANK);
const segs = roundSegments(plan, 1);

function vector(seed: number, floats = plan.round1Floats): Float32Array {
  const r = prng(seed);
  return Float32Array.from({ length: floats }, () => r() * 2 - 1);
}

const body = (v: Float32Array, s: { offset: number; count: number }) => new Uint8Array(v.slice(s.offset, s.offset + s.count).buffer);

/** A Step with its staged frames recorded, and a bad shard handled as the coordinator does (onBadShard). */
function stepWithLog() {
  const staged: { frame: Uint8Array; round: 1 | 2; index: number }[] = [];
  const bad: number[] = [];
  const step: Step = new Step(SPEC, SEED, parseCompression('powersgd', RANK), (shard) => {
    bad.push(shard);
    step.callOff();
    step.revoke(shard);
  });
  step.onRoundStaged = (frame, round, index) => staged.push({ frame, round, index });
  return { step, staged, bad };
}

/** The floats a run of basis frames carries, in order, checked to be one contiguous round-`round` vector. */
function broadcast(frames: Uint8Array[], round: 1 | 2): Float32Array {
  const out = new Float32Array(round === 1 ? plan.round1Floats : plan.round2Floats);
  let at = 0;
  for (const f of frames) {
    const { header, body: b } = decodeFrame(f);
    const h = header as Basis;
    expect([h.type, h.round, h.offset, h.total]).toEqual([MSG.basis, round, at, out.length]);
    out.set(new Float32Array(b.slice().buffer), at);
    at += b.byteLength / 4;
  }
  expect(at).toBe(out.length);
  return out;
}

/** Shard-order fp32 sum, then P̂: what the round-1 broadcast must be. */
function expectedBasis(shards: Float32Array[], step: number): Float32Array {
  const sum = shards[0].slice();
  for (const v of shards.slice(1)) for (let i = 0; i < sum.length; i++) sum[i] += v[i];
  orthonormaliseRound1(plan, sum, SEED, step);
  return sum;
}

const bits = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));

describe('powersgd broadcasts, matrix by matrix', () => {
  it('each matrix of round 1 goes out once every shard has sent it, with the bits of orthonormalising the whole sum at the end', () => {
    const { step, staged } = stepWithLog();
    const v = [vector(1), vector(2)];
    step.begin(2, SPEC.lr, 16, 7);
    for (const s of segs) step.accept(0, { offset: s.offset, total: plan.round1Floats }, body(v[0], s));
    expect(staged).toEqual([]); // nothing is final while shard 1 has sent nothing
    for (const [k, s] of segs.entries()) {
      step.accept(1, { offset: s.offset, total: plan.round1Floats }, body(v[1], s));
      expect(staged.length).toBe(k + 1); // one segment a matrix here (alexnet-tiny is far under CHUNK_FLOATS)
    }
    expect(segs.length).toBe(plan.matrices.length + 1);
    const frames = step.endRound1(2);
    expect(frames).toEqual(staged.map((s) => s.frame)); // the round's broadcast is what went out, nothing more
    expect(staged.every((s, i) => s.round === 1 && s.index === i)).toBe(true);
    expect(bits(broadcast(frames, 1))).toEqual(bits(expectedBasis(v, 7)));
  });

  it('a shard that turns bad after part of P̂ went out: the sent part stays final, and its redo is summed only where nothing went out', () => {
    const { step, staged, bad } = stepWithLog();
    const v = [vector(1), vector(2)];
    const redo = vector(3);
    const k = 4; // matrices 0..3 are sent before shard 1's fifth frame turns out non-finite
    step.begin(2, SPEC.lr, 16, 0);
    for (const s of segs) step.accept(0, { offset: s.offset, total: plan.round1Floats }, body(v[0], s));
    for (const s of segs.slice(0, k)) step.accept(1, { offset: s.offset, total: plan.round1Floats }, body(v[1], s));
    const sent = staged.map((s) => s.frame.slice());
    expect(sent.length).toBe(k);
    const poisoned = v[1].slice();
    poisoned[segs[k].offset] = Number.NaN;
    step.accept(1, { offset: segs[k].offset, total: plan.round1Floats }, body(poisoned, segs[k]));
    expect(bad).toEqual([1]);
    expect(staged.length).toBe(k);
    // Another worker redoes shard 1 from scratch: its frames of the sent matrices are skipped, not refused.
    for (const s of segs) step.accept(1, { offset: s.offset, total: plan.round1Floats }, body(redo, s));
    const frames = step.endRound1(2);
    expect(frames.slice(0, k).map((f) => Array.from(f))).toEqual(sent.map((f) => Array.from(f)));
    const mixed = redo.slice();
    mixed.set(v[1].subarray(0, segs[k].offset)); // what shard 1 contributed to the frozen matrices
    expect(bits(broadcast(frames, 1))).toEqual(bits(expectedBasis([v[0], mixed], 0)));
  });

  it('round 2 goes out as it is summed; the applied step broadcasts exactly those frames to a worker one version behind', () => {
    const { step, staged } = stepWithLog();
    const segs2 = roundSegments(plan, 2);
    const round1 = [vector(1), vector(2)];
    const round2 = [vector(4, plan.round2Floats), vector(5, plan.round2Floats)];
    step.begin(2, SPEC.lr, 16, 0);
    for (const [shard, v] of round1.entries()) for (const s of segs) step.accept(shard, { offset: s.offset, total: plan.round1Floats }, body(v, s));
    step.endRound1(2);
    staged.length = 0;
    for (const [shard, v] of round2.entries()) for (const s of segs2) step.accept(shard, { offset: s.offset, total: plan.round2Floats }, body(v, s));
    expect(staged.length).toBe(segs2.length);
    expect(staged.every((s) => s.round === 2)).toBe(true);
    step.apply(SPEC.lr, 16);
    expect(step.version).toBe(1);
    expect(step.framesFor(0, 1)).toEqual(staged.map((s) => s.frame));
    const sum = round2[0].slice();
    for (let i = 0; i < sum.length; i++) sum[i] += round2[1][i];
    expect(bits(broadcast(step.framesFor(0, 1), 2))).toEqual(bits(sum));
  });

  it('a shard that turns bad in round 2 after part of ΣQ went out: the coordinator applies exactly what every replica was sent', () => {
    const { step, staged, bad } = stepWithLog();
    const segs2 = roundSegments(plan, 2);
    const round1 = [vector(1), vector(2)];
    const round2 = [vector(4, plan.round2Floats), vector(5, plan.round2Floats)];
    const redo = vector(6, plan.round2Floats);
    const k = 3;
    const t2 = (s: { offset: number }) => ({ offset: s.offset, total: plan.round2Floats });
    step.begin(2, SPEC.lr, 16, 0);
    for (const [shard, v] of round1.entries()) for (const s of segs) step.accept(shard, { offset: s.offset, total: plan.round1Floats }, body(v, s));
    const basis = broadcast(step.endRound1(2), 1);
    staged.length = 0;
    for (const s of segs2) step.accept(0, t2(s), body(round2[0], s));
    for (const s of segs2.slice(0, k)) step.accept(1, t2(s), body(round2[1], s));
    expect(staged.length).toBe(k);
    const poisoned = round2[1].slice();
    poisoned[segs2[k].offset + 1] = Number.POSITIVE_INFINITY;
    step.accept(1, t2(segs2[k]), body(poisoned, segs2[k]));
    expect(bad).toEqual([1]);
    for (const s of segs2) step.accept(1, t2(s), body(redo, s));
    step.apply(SPEC.lr, 16);
    const sent = broadcast(step.framesFor(0, 1), 2);
    expect(step.framesFor(0, 1).slice(0, k)).toEqual(staged.slice(0, k).map((s) => s.frame));
    // A replica at version 0 that applies the two broadcasts it was sent lands on the coordinator's weights, bit for bit.
    const replica = new Float32Array(initParams(SPEC, SEED));
    applyPowerSgd(plan, replica, basis, sent, SPEC.lr, 16, null);
    expect(bits(step.weights)).toEqual(bits(replica));
  });
});
