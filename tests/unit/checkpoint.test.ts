// checkpoint.json read as strictly as a network message (issue 24 §7): every bad field is refused
// with one line naming it; and the temp files of a write cut short are removed at the next start.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getModel, modelHash, paramLayout } from '@tabtrain/shared';
import { CheckpointError, checkCheckpoint, checkPosition } from '../../server/src/checkpoint-check';
import { CHECKPOINT_VERSION, Checkpointer } from '../../server/src/checkpoint';

const spec = getModel('alexnet-tiny');
const TRAIN = 60_000;
const BATCH = 16;
const PER_EPOCH = TRAIN / BATCH; // 3750

/** A checkpoint as saveCheckpoint writes it: two steps into the second epoch of alexnet-tiny. */
function valid(): Record<string, any> {
  return {
    format: 'tabtrain-checkpoint', version: CHECKPOINT_VERSION, model: spec.name, modelHash: modelHash(spec), paramCount: paramLayout(spec).total,
    config: { epochs: 10, batch: BATCH, lr: 0.01, seed: 9, balance: 'equal', compress: { mode: 'none', rank: 0 } },
    optimizer: { kind: 'sgd', lr: 0.01 },
    step: PER_EPOCH + 2, epoch: 1, dataOrderSeed: 9,
    epochAcc: { steps: 2, examples: 2 * BATCH, lossSum: 40.5, correct: 20.25, seconds: 0.5 },
    history: [{ epoch: 1, steps: PER_EPOCH, examples: TRAIN, loss: 0.61, trainAcc: 0.77, testAcc: 0.8, examplesPerSec: 1000, seconds: 60 }],
    weightsFile: `weights-${PER_EPOCH + 2}.bin`, weightsSha256: 'ab'.repeat(32), savedAt: '2026-12-06T01:00:00.000Z',
  };
}

const PATH = '/runs/a/checkpoint.json';
const check = (c: unknown) => {
  const ckpt = checkCheckpoint(c, PATH, CHECKPOINT_VERSION);
  checkPosition(ckpt, PATH, TRAIN, PER_EPOCH);
  return ckpt;
};

// [what is wrong, the change, the field the refusal must name]
const BAD: [string, (c: Record<string, any>) => void, string][] = [
  ['a negative step (resumed "at step -100" and waited forever)', (c) => { c.step = -100; }, 'step'],
  ['a fractional step', (c) => { c.step = 1499.5; }, 'step'],
  ['a string step (echoed into the log)', (c) => { c.step = '1500; rm -rf /'; }, 'step'],
  ['a step beyond the safe integers', (c) => { c.step = 2 ** 60; }, 'step'],
  ['history: null (TypeError: state.history is not iterable)', (c) => { c.history = null; }, 'history'],
  ['a weightsFile out of the folder', (c) => { c.weightsFile = '../../etc/passwd'; }, 'weightsFile'],
  ['a weightsFile of another step', (c) => { c.weightsFile = 'weights-7.bin'; }, 'weightsFile'],
  ['an absolute weightsFile', (c) => { c.weightsFile = '/etc/passwd'; }, 'weightsFile'],
  ['no format', (c) => { delete c.format; }, 'format'],
  ['another version', (c) => { c.version = 2; }, 'version'],
  ['an unknown model', (c) => { c.model = 'resnet'; }, 'model'],
  ['a model name that is an Object property', (c) => { c.model = 'constructor'; }, 'model'],
  ["another model's hash", (c) => { c.modelHash = modelHash(getModel('vgg11-tiny')); }, 'modelHash'],
  ['a wrong parameter count', (c) => { c.paramCount += 1; }, 'paramCount'],
  ['a string parameter count', (c) => { c.paramCount = String(c.paramCount); }, 'paramCount'],
  ['config: null', (c) => { c.config = null; }, 'config'],
  ['epochs 0', (c) => { c.config.epochs = 0; }, 'config.epochs'],
  ['a fractional batch', (c) => { c.config.batch = 15.5; }, 'config.batch'],
  ['a negative lr', (c) => { c.config.lr = -0.01; c.optimizer.lr = -0.01; }, 'config.lr'],
  ['a string lr', (c) => { c.config.lr = '0.01'; }, 'config.lr'],
  ['a negative seed', (c) => { c.config.seed = -1; c.dataOrderSeed = -1; }, 'config.seed'],
  ['an unknown balance', (c) => { c.config.balance = 'fast'; }, 'config.balance'],
  ['an unknown compression', (c) => { c.config.compress = { mode: 'zip', rank: 0 }; }, 'config.compress.mode'],
  ['a powersgd rank of 0', (c) => { c.config.compress = { mode: 'powersgd', rank: 0 }; }, 'config.compress.rank'],
  ['fp16 factors on a run without factors', (c) => { c.config.compress = { mode: 'int8', rank: 0, factors: 'fp16' }; }, 'config.compress.factors'],
  ['unknown powersgd factors', (c) => { c.config.compress = { mode: 'powersgd', rank: 4, factors: 'bf16' }; }, 'config.compress.factors'],
  ['unknown auto factors', (c) => { c.config.autoRank = 4; c.config.autoFactors = 'fp8'; }, 'config.autoFactors'],
  ['an unknown config field', (c) => { c.config.momentum = 0.9; }, 'config.momentum'],
  ['another optimizer', (c) => { c.optimizer.kind = 'adam'; }, 'optimizer.kind'],
  ["an optimizer lr unlike config's", (c) => { c.optimizer.lr = 0.1; }, 'optimizer.lr'],
  ['epoch NaN (null in JSON)', (c) => { c.epoch = null; }, 'epoch'],
  ['an epoch the step has not reached', (c) => { c.epoch = 5; }, 'epoch'],
  ["a data-order seed unlike config's", (c) => { c.dataOrderSeed = 10; }, 'dataOrderSeed'],
  ['epochAcc missing a field', (c) => { delete c.epochAcc.seconds; }, 'epochAcc.seconds'],
  ['more correct than examples', (c) => { c.epochAcc.correct = 33; }, 'epochAcc.correct'],
  ['a negative loss sum', (c) => { c.epochAcc.lossSum = -1; }, 'epochAcc.lossSum'],
  ["epochAcc steps not the step's place in its epoch", (c) => { c.epochAcc.steps = 3; c.epochAcc.examples = 48; }, 'epochAcc.steps'],
  ['epochAcc examples not steps × batch', (c) => { c.epochAcc.examples = 31; c.epochAcc.correct = 20; }, 'epochAcc.examples'],
  ['a history entry that is a string', (c) => { c.history = ['epoch 1']; }, 'history[0]'],
  ['history epochs out of order', (c) => { c.history[0].epoch = 2; }, 'history[0].epoch'],
  ['a train accuracy over 1', (c) => { c.history[0].trainAcc = 1.5; }, 'history[0].trainAcc'],
  ['a string test accuracy', (c) => { c.history[0].testAcc = '0.9'; }, 'history[0].testAcc'],
  ['a history short of the finished epochs', (c) => { c.history = []; }, 'history'],
  ['a history epoch of the wrong length', (c) => { c.history[0].steps = 100; }, 'history[0].steps'],
  ['a short hash', (c) => { c.weightsSha256 = 'abc'; }, 'weightsSha256'],
  ['a savedAt that is no time', (c) => { c.savedAt = 'yesterday'; }, 'savedAt'],
  ['an unknown field', (c) => { c.extra = 1; }, 'extra'],
];

describe('checkpoint.json validation', () => {
  it('accepts what saveCheckpoint writes, and the older epoch numbering at an epoch end', () => {
    expect(check(valid()).step).toBe(PER_EPOCH + 2);
    const atEnd = valid();
    Object.assign(atEnd, { step: PER_EPOCH, epoch: 0, weightsFile: `weights-${PER_EPOCH}.bin`, epochAcc: { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 } });
    expect(check(atEnd).epoch).toBe(0);
    const old = valid();
    delete old.config.compress; // before compression existed: an fp32 run
    expect(check(old).config.compress).toEqual({ mode: 'none', rank: 0 });
    // --factors fp16 (a fixed powersgd run, or auto's powersgd): kept for the resumed run.
    const half = valid();
    half.config.compress = { mode: 'powersgd', rank: 4, factors: 'fp16' };
    expect(check(half).config.compress).toEqual({ mode: 'powersgd', rank: 4, factors: 'fp16' });
    Object.assign(half.config, { compress: { mode: 'none', rank: 0 }, autoRank: 4, autoFactors: 'fp16' });
    expect(check(half).config.autoFactors).toBe('fp16');
  });

  it.each(BAD)('refuses %s with one line naming the field', (_what, change, field) => {
    const c = valid();
    change(c);
    let error: unknown;
    try { check(c); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(CheckpointError);
    const message = (error as Error).message;
    expect(message).toContain(`${PATH}: field "${field}" must be`);
    expect(message).not.toMatch(/[\n\r\u001b]/);
    if (process.env.SHOW) console.log(message);
  });

  it('shows a bad value quoted, as JSON, never as if it were text of ours', () => {
    const c = valid();
    c.step = '1500; rm -rf /\n12:00:00 worker #1 caught';
    expect(() => check(c)).toThrow(`field "step" must be a whole number ≥ 0, got "1500; rm -rf /\\n12:00:00 worker #1 caug…; restore`);
  });

  it('refuses a document that is no object', () => {
    for (const raw of [null, [], 'checkpoint', 7]) expect(() => check(raw)).toThrow(CheckpointError);
  });
});

describe('leftovers of a checkpoint write cut short', () => {
  it('are removed at start (and counted in the log); other files stay', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-leftover-'));
    for (const f of ['weights-40.bin.tmp-4242', 'checkpoint.json.tmp-4242', 'weights-40.bin', 'checkpoint.json', 'notes.tmp-1']) writeFileSync(join(dir, f), 'x');
    mkdirSync(join(dir, 'checkpoint.json.tmp-7')); // not a file: left alone
    const lines: string[] = [];
    expect(new Checkpointer(dir, (l) => lines.push(l)).removeLeftovers()).toBe(2);
    expect(readdirSync(dir).sort()).toEqual(['checkpoint.json', 'checkpoint.json.tmp-7', 'notes.tmp-1', 'weights-40.bin']);
    expect(lines).toEqual([`checkpoint: removed 2 leftover temp files of a write cut short from ${dir}`]);
    expect(new Checkpointer(join(dir, 'none'), () => {}).removeLeftovers()).toBe(0);
    expect(existsSync(join(dir, 'none'))).toBe(false);
  });
});
