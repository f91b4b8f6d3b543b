// checkpoint.json: its format (Checkpoint), read as strictly as a network message: it is also what a person copies
// between machines and edits by hand, so every field is checked before anything trusts it, and a
// bad one is refused with one line that names the field, what it holds and what it must hold.
// Two stages: checkCheckpoint needs only the file; checkPosition needs the data set (steps per epoch).
import { MODELS, modelHash, paramLayout } from '@tabtrain/shared';
import { COMPRESS_MODES, NO_COMPRESSION, parseCompression, type Compression, type FactorCodec } from '@tabtrain/shared/compress';
import type { Coordinator, EpochMetrics } from './coordinator';

export const CHECKPOINT_VERSION = 1;

export interface Checkpoint {
  format: 'tabtrain-checkpoint';
  version: typeof CHECKPOINT_VERSION;
  model: string;
  modelHash: string;
  paramCount: number;
  /**
   * compress: how gradients and updates travel. Its error-feedback residuals are not saved (they
   * live on every worker), so a resumed compressed run is close to, not bit-equal with, an unbroken one.
   */
  config: { epochs: number; batch: number; lr: number; seed: number; balance: string; compress?: Compression; autoRank?: number; autoFactors?: FactorCodec };
  /** Plain SGD without momentum keeps no state beyond the learning rate. */
  optimizer: { kind: 'sgd'; lr: number };
  step: number;
  /** Epochs finished by `step` (older tabtrains wrote the 0-based epoch of the latest step). */
  epoch: number;
  /** The data order of every epoch is epochOrder(train size, seed, epoch): the seed is all it needs. */
  dataOrderSeed: number;
  epochAcc: Coordinator['epochAcc'];
  history: EpochMetrics[];
  weightsFile: string;
  weightsSha256: string;
  savedAt: string;
}

export class CheckpointError extends Error {}

/** What a person can do about any bad field: the file was damaged or edited. */
const FIX = 'restore checkpoint.json from the run that wrote it, or start again without --resume';

/** A value as the refusal line shows it: JSON, short, no control characters (it reaches the terminal). */
function shown(v: unknown): string {
  let s: string;
  try { s = v === undefined ? 'nothing' : JSON.stringify(v) ?? String(v); } catch { s = typeof v; }
  s = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

const UNSHOWN = Symbol('unshown');

class Fields {
  constructor(private readonly path: string) {}

  fail(field: string, want: string, got: unknown = UNSHOWN, fix = FIX): never {
    throw new CheckpointError(`${this.path}: field "${field}" must be ${want}${got === UNSHOWN ? '' : `, got ${shown(got)}`}; ${fix}`);
  }

  object(v: unknown, field: string, keys: { required: readonly string[]; optional?: readonly string[] }): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, 'an object', v);
    const o = v as Record<string, unknown>;
    for (const k of keys.required) if (!(k in o)) this.fail(field ? `${field}.${k}` : k, 'present');
    const known = new Set([...keys.required, ...(keys.optional ?? [])]);
    for (const k of Object.keys(o)) if (!known.has(k)) this.fail(field ? `${field}.${k}` : k, `absent (${field || 'a checkpoint'} has no such field)`, o[k]);
    return o;
  }

  int(v: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      this.fail(field, max < Number.MAX_SAFE_INTEGER ? `a whole number from ${min} to ${max}` : `a whole number ≥ ${min}`, v);
    }
    return v;
  }

  num(v: unknown, field: string, min: number, max = Infinity, open = false): number {
    if (typeof v !== 'number' || !Number.isFinite(v) || (open ? v <= min : v < min) || v > max) {
      this.fail(field, `a finite number ${open ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}`, v);
    }
    return v;
  }

  str(v: unknown, field: string, re: RegExp, want: string): string {
    if (typeof v !== 'string' || !re.test(v)) this.fail(field, want, v);
    return v;
  }
}

/** A fraction a float sum may overshoot by rounding (correct = Σ acc × count). */
const SLACK = 1e-6;

/**
 * Checks every field of a parsed checkpoint.json (from `path`) and returns it typed. What it
 * cannot check without the data set (where the step falls in its epoch) is checkPosition's.
 */
export function checkCheckpoint(raw: unknown, path: string, version: number): Checkpoint {
  const f: Fields = new Fields(path);
  const o = f.object(raw, '', {
    required: ['format', 'version', 'model', 'modelHash', 'paramCount', 'config', 'optimizer', 'step', 'epoch', 'dataOrderSeed', 'epochAcc', 'history', 'weightsFile', 'weightsSha256', 'savedAt'],
  });
  if (o.format !== 'tabtrain-checkpoint') f.fail('format', '"tabtrain-checkpoint"', o.format, '--resume needs a folder written by --checkpoint');
  if (o.version !== version) f.fail('version', String(version), o.version, `this tabtrain reads checkpoints of version ${version}: resume with the tabtrain that wrote it`);
  if (typeof o.model !== 'string' || !Object.hasOwn(MODELS, o.model)) f.fail('model', `one of ${Object.keys(MODELS).join(', ')}`, o.model);
  const spec = MODELS[o.model];
  const hash = modelHash(spec);
  f.str(o.modelHash, 'modelHash', /^[0-9a-f]{1,128}$/, 'a hex string');
  if (o.modelHash !== hash) f.fail('modelHash', `${hash}, the hash of ${spec.name} in this tabtrain`, o.modelHash, 'the checkpoint was written for another definition of the model: resume it with the tabtrain that wrote it');
  const params = paramLayout(spec).total;
  if (o.paramCount !== params) f.fail('paramCount', `${params}, the parameter count of ${spec.name}`, o.paramCount);

  const c = f.object(o.config, 'config', { required: ['epochs', 'batch', 'lr', 'seed', 'balance'], optional: ['compress', 'autoRank', 'autoFactors'] });
  f.int(c.epochs, 'config.epochs', 1);
  f.int(c.batch, 'config.batch', 1);
  const lr = f.num(c.lr, 'config.lr', 0, Infinity, true);
  const seed = f.int(c.seed, 'config.seed', 0);
  if (c.balance !== 'speed' && c.balance !== 'equal' && c.balance !== 'cost') f.fail('config.balance', '"speed", "equal" or "cost"', c.balance);
  // --compress auto: the rank it may choose powersgd at; compress is then the mode it was in.
  if (c.autoRank !== undefined) f.int(c.autoRank, 'config.autoRank', 1, 64);
  if (c.autoFactors !== undefined && c.autoFactors !== 'fp16') f.fail('config.autoFactors', '"fp16" or absent', c.autoFactors);
  let compress: Compression = NO_COMPRESSION;
  if (c.compress !== undefined) {
    const k = f.object(c.compress, 'config.compress', { required: ['mode', 'rank'], optional: ['factors'] });
    if (typeof k.mode !== 'string' || !(COMPRESS_MODES as readonly string[]).includes(k.mode)) f.fail('config.compress.mode', `one of ${COMPRESS_MODES.map((m) => `"${m}"`).join(', ')}`, k.mode);
    if (k.mode === 'powersgd') f.int(k.rank, 'config.compress.rank', 1, 64);
    else if (k.rank !== 0) f.fail('config.compress.rank', `0 for mode "${k.mode}"`, k.rank);
    if (k.factors !== undefined && !(k.mode === 'powersgd' && k.factors === 'fp16')) f.fail('config.compress.factors', '"fp16" (powersgd only) or absent', k.factors);
    compress = parseCompression(k.mode, k.mode === 'powersgd' ? (k.rank as number) : undefined, k.factors === undefined ? 'fp32' : 'fp16');
  }

  const opt = f.object(o.optimizer, 'optimizer', { required: ['kind', 'lr'] });
  if (opt.kind !== 'sgd') f.fail('optimizer.kind', '"sgd"', opt.kind);
  if (opt.lr !== lr) f.fail('optimizer.lr', `equal to config.lr (${lr})`, opt.lr);

  const step = f.int(o.step, 'step', 0);
  f.int(o.epoch, 'epoch', 0);
  if (o.dataOrderSeed !== seed) f.fail('dataOrderSeed', `equal to config.seed (${seed})`, o.dataOrderSeed);

  const a = f.object(o.epochAcc, 'epochAcc', { required: ['steps', 'examples', 'lossSum', 'correct', 'seconds'] });
  const accSteps = f.int(a.steps, 'epochAcc.steps', 0, step);
  const accExamples = f.int(a.examples, 'epochAcc.examples', 0);
  f.num(a.lossSum, 'epochAcc.lossSum', 0);
  f.num(a.correct, 'epochAcc.correct', 0, accExamples * (1 + SLACK));
  f.num(a.seconds, 'epochAcc.seconds', 0);
  if ((accSteps === 0) !== (accExamples === 0)) f.fail('epochAcc.examples', `0 exactly when epochAcc.steps is 0 (steps ${accSteps})`, accExamples);

  if (!Array.isArray(o.history)) f.fail('history', 'an array of finished epochs', o.history);
  o.history.forEach((e: unknown, i: number) => {
    const at = `history[${i}]`;
    const m = f.object(e, at, { required: ['epoch', 'steps', 'examples', 'loss', 'trainAcc', 'testAcc', 'examplesPerSec', 'seconds'] });
    if (m.epoch !== i + 1) f.fail(`${at}.epoch`, `${i + 1} (epochs are listed in order from 1)`, m.epoch);
    f.int(m.steps, `${at}.steps`, 1);
    f.int(m.examples, `${at}.examples`, 1);
    f.num(m.loss, `${at}.loss`, 0);
    f.num(m.trainAcc, `${at}.trainAcc`, 0, 1 + SLACK);
    if (m.testAcc !== null) f.num(m.testAcc, `${at}.testAcc`, 0, 1);
    f.num(m.examplesPerSec, `${at}.examplesPerSec`, 0);
    f.num(m.seconds, `${at}.seconds`, 0);
  });

  // A plain file name in the checkpoint folder, the one saveCheckpoint gives it: never a path.
  if (o.weightsFile !== `weights-${step}.bin`) f.fail('weightsFile', `"weights-${step}.bin", the weights of step ${step} in the checkpoint folder`, o.weightsFile);
  f.str(o.weightsSha256, 'weightsSha256', /^[0-9a-f]{64}$/, '64 lowercase hex digits (a SHA-256)');
  if (typeof o.savedAt !== 'string' || o.savedAt.length > 40 || !Number.isFinite(Date.parse(o.savedAt))) f.fail('savedAt', 'an ISO 8601 time', o.savedAt);
  const ckpt = o as unknown as Checkpoint;
  ckpt.config.compress = compress;
  return ckpt;
}

/**
 * Checks the fields that depend on the data set: the step's place in its epoch against the finished
 * epochs and the open epoch's totals, as train() and saveCheckpoint keep them.
 */
export function checkPosition(ckpt: Checkpoint, path: string, trainCount: number, perEpoch: number): void {
  const f: Fields = new Fields(path);
  const { step, history, epochAcc: a, config } = ckpt;
  const done = Math.floor(step / perEpoch);
  // Older tabtrains saved the 0-based epoch of the latest step: one less at an epoch's end.
  if (ckpt.epoch !== done && ckpt.epoch !== Math.floor(Math.max(0, step - 1) / perEpoch)) f.fail('epoch', `${done}, the epochs finished by step ${step} (${perEpoch} steps each)`, ckpt.epoch);
  if (history.length !== done) f.fail('history', `a list of ${done} finished epochs at step ${step} (${perEpoch} steps each)`, `${history.length} entries`);
  history.forEach((e, i) => {
    if (e.steps !== perEpoch) f.fail(`history[${i}].steps`, `${perEpoch}, the steps of one epoch`, e.steps);
    if (e.examples !== trainCount) f.fail(`history[${i}].examples`, `${trainCount}, the examples of one epoch`, e.examples);
  });
  if (a.steps !== step - done * perEpoch) f.fail('epochAcc.steps', `${step - done * perEpoch}, the steps of step ${step}'s epoch so far`, a.steps);
  // Only an epoch's last step has a short batch, and that step closes the epoch.
  if (a.examples !== a.steps * config.batch) f.fail('epochAcc.examples', `${a.steps * config.batch} (epochAcc.steps × config.batch)`, a.examples);
}
