// The coordinator's one-round steps (server/src/step-fp32.ts, step-coded.ts, through the Step of
// step.ts) between the sockets: the weights they make are those of SGD on the shard-order sum, and
// what they broadcast brings a replica to exactly those weights. (powersgd: step-rounds.test.ts.)
import { describe, expect, it } from 'vitest';
import { MSG, decodeFrame, getModel, initParams, paramLayout, replicaHash, sgdStep } from '@tabtrain/shared';
import { GradientEncoder, decodeInto, parseCompression, planSegments, type Segment } from '@tabtrain/shared/compress';
import { prng } from '../helpers/liars';
import { Step } from '../../server/src/step';

const SPEC = getModel('alexnet-tiny');
const SEED = 9;
const BATCH = 16;
const { params, total } = paramLayout(SPEC);

function gradient(seed: number): Float32Array {
  const r = prng(seed);
  return Float32Array.from({ length: total }, () => r() * 2 - 1);
}

const bits = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));

/** SGD from the initial weights on the shard-order fp32 sum: what an fp32 step must make. */
function expectedWeights(shards: Float32Array[]): Float32Array {
  const sum = shards[0].slice();
  for (const g of shards.slice(1)) for (let i = 0; i < total; i++) sum[i] += g[i];
  const w = new Float32Array(initParams(SPEC, SEED));
  sgdStep(w, sum, SPEC.lr, BATCH);
  return w;
}

/** A shard's gradient as its worker sends it: each segment's body, encoded by the run's codec. */
function send(step: Step, shard: number, g: Float32Array, plan: Segment[], encoder = new GradientEncoder(plan, total)): void {
  for (const s of plan) {
    const body = new Uint8Array(s.bytes);
    encoder.encode(s, g, body);
    step.accept(shard, { offset: s.offset, total, codec: s.codec === 'fp32' ? undefined : s.codec }, body);
  }
}

/** The floats a worker holding nothing takes from `frames` of type `type`: every frame's body decoded at its offset. */
function received(frames: Uint8Array[], type: string, plan?: Segment[]): Float32Array {
  const out = new Float32Array(total);
  for (const f of frames) {
    const { header, body } = decodeFrame(f);
    const h = header as { type: string; offset: number; total: number };
    expect([h.type, h.total]).toEqual([type, total]);
    const s = plan?.find((p) => p.offset === h.offset) ?? { index: 0, codec: 'fp32', offset: h.offset, count: body.byteLength / 4, pieces: [], bytes: body.byteLength };
    expect(decodeInto(s, body.slice(), out)).toBe(true);
  }
  return out;
}

describe('fp32 steps', () => {
  const plan = planSegments(params, total, parseCompression('none'));

  it('pipelined and whole make the weights of SGD on the shard-order sum; the pipelined one sent them before apply', () => {
    const g = [gradient(1), gradient(2)];
    const made = [true, false].map((pipeline) => {
      const step = new Step(SPEC, SEED, parseCompression('none'), () => {}, pipeline);
      const staged: Uint8Array[] = [];
      step.onStaged = (frame, index) => { expect(index).toBe(staged.length); staged.push(frame); };
      expect(step.pipelined).toBe(pipeline);
      step.begin(2, SPEC.lr, BATCH);
      send(step, 0, g[0], plan);
      expect(staged).toEqual([]); // nothing is final while shard 1 has sent nothing
      send(step, 1, g[1], plan);
      expect(staged.length).toBe(pipeline ? plan.length : 0);
      expect(step.staged).toBe(staged.length);
      step.apply(SPEC.lr, BATCH);
      expect(step.version).toBe(1);
      if (pipeline) expect(step.framesFor(0)).toEqual(staged); // the segments that went out are the new version's weights
      expect(bits(received(step.framesFor(0), MSG.weights))).toEqual(bits(step.weights));
      expect(step.framesFor(1)).toEqual([]);
      expect(step.checkHash(1)).toBeUndefined(); // fp32 replicas are sent the weights themselves
      return step.weights;
    });
    expect(bits(made[0])).toEqual(bits(expectedWeights(g)));
    expect(bits(made[1])).toEqual(bits(made[0]));
  });

  it('a step called off after its segments went out is applied whole, with the redone shard', () => {
    const g = [gradient(1), gradient(2)];
    const redo = gradient(3);
    // No onStaged listener here: staging must not depend on one (it once looped forever without it).
    const step = new Step(SPEC, SEED, parseCompression('none'), () => {});
    step.begin(2, SPEC.lr, BATCH);
    send(step, 0, g[0], plan);
    send(step, 1, g[1], plan);
    expect(step.staged).toBe(plan.length);
    expect(step.callOff()).toBe(true); // frames went out: their receivers must take the whole step again
    expect(step.staged).toBe(0);
    step.revoke(1);
    send(step, 1, redo, plan); // thawed: the redo is summed, not skipped
    step.apply(SPEC.lr, BATCH);
    expect(bits(step.weights)).toEqual(bits(expectedWeights([g[0], redo])));
    expect(bits(received(step.framesFor(0), MSG.weights))).toEqual(bits(step.weights));
  });
});

describe.each(['fp16', 'int8'])('%s steps', (mode) => {
  const plan = planSegments(params, total, parseCompression(mode));

  it('a replica one version behind applies the update frames and lands on the coordinator\'s weights, bit for bit', () => {
    const step = new Step(SPEC, SEED, parseCompression(mode), () => {});
    expect(step.pipelined).toBe(false);
    const replica = new Float32Array(initParams(SPEC, SEED));
    for (let version = 0; version < 3; version++) {
      step.begin(2, SPEC.lr, BATCH, version);
      send(step, 0, gradient(10 + version), plan);
      send(step, 1, gradient(20 + version), plan);
      expect(step.staged).toBe(0);
      step.apply(SPEC.lr, BATCH);
      expect(step.version).toBe(version + 1);
      expect(step.updateFrameCount).toBe(plan.length);
      sgdStep(replica, received(step.framesFor(version), MSG.update, plan), SPEC.lr, BATCH);
      expect(bits(replica)).toEqual(bits(step.weights));
      expect(step.checkHash(1)).toBe(replicaHash(replica));
    }
    // Two versions behind (or new): the full weights.
    expect(bits(received(step.framesFor(1), MSG.weights))).toEqual(bits(step.weights));
    expect(bits(received(step.framesFor(-1), MSG.weights))).toEqual(bits(step.weights));
    expect(() => step.endRound1(2)).toThrow(/one round/);
  });

  it('restored from a checkpoint, it has no update to send: a worker one behind gets the weights', () => {
    const step = new Step(SPEC, SEED, parseCompression(mode), () => {});
    step.begin(1, SPEC.lr, BATCH);
    send(step, 0, gradient(4), plan);
    step.apply(SPEC.lr, BATCH);
    const checkpoint = gradient(5);
    step.restore(checkpoint, 7);
    expect(step.updateFrameCount).toBe(0);
    expect(bits(received(step.framesFor(6), MSG.weights))).toEqual(bits(checkpoint));
  });
});
