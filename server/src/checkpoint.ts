// Checkpoints: everything needed to continue a run exactly where it was, written atomically.
//
// Layout of DIR:  checkpoint.json  → names weights-<step>.bin and its SHA-256
//                 weights-<step>.bin  raw fp32 little-endian, parameter order
// The weights file is written under a temp name and renamed, then checkpoint.json likewise; only
// then are older weights files deleted. A crash at any instant leaves a complete checkpoint.
import { existsSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { NO_COMPRESSION, type Compression } from '@tabtrain/shared/compress';
import type { Coordinator, EpochMetrics } from './coordinator';
import { weightsSha256, writeFileAtomic } from './files';
import { makeDirs } from './output-paths';

export { writeFileAtomic };

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
  config: { epochs: number; batch: number; lr: number; seed: number; balance: string; compress?: Compression };
  /** Plain SGD without momentum keeps no state beyond the learning rate. */
  optimizer: { kind: 'sgd'; lr: number };
  step: number;
  epoch: number;
  /** The data order of every epoch is epochOrder(train size, seed, epoch): the seed is all it needs. */
  dataOrderSeed: number;
  epochAcc: Coordinator['epochAcc'];
  history: EpochMetrics[];
  weightsFile: string;
  weightsSha256: string;
  savedAt: string;
}

export function saveCheckpoint(dir: string, c: Coordinator): Checkpoint {
  makeDirs(dir); // not mkdirSync's recursive mode: it never returns for some paths (/proc/x)
  const weightsFile = `weights-${c.step}.bin`;
  const w = c.weights;
  writeFileAtomic(join(dir, weightsFile), new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
  const ckpt: Checkpoint = {
    format: 'tabtrain-checkpoint', version: CHECKPOINT_VERSION,
    model: c.run.model, modelHash: c.run.modelHash, paramCount: c.run.paramCount,
    config: { epochs: c.opts.epochs, batch: c.opts.batch, lr: c.run.lr, seed: c.opts.seed, balance: c.opts.balance, compress: c.run.compress ?? NO_COMPRESSION },
    optimizer: { kind: 'sgd', lr: c.run.lr },
    step: c.step, epoch: c.epoch, dataOrderSeed: c.opts.seed, epochAcc: { ...c.epochAcc }, history: [...c.history],
    weightsFile, weightsSha256: weightsSha256(w), savedAt: new Date().toISOString(),
  };
  writeFileAtomic(join(dir, 'checkpoint.json'), JSON.stringify(ckpt, null, 2) + '\n');
  for (const f of readdirSync(dir)) {
    if (/^weights-\d+\.bin$/.test(f) && f !== weightsFile) unlinkSync(join(dir, f));
  }
  return ckpt;
}

export class CheckpointError extends Error {}

export function loadCheckpoint(dir: string): { ckpt: Checkpoint; weights: Float32Array } {
  const path = join(dir, 'checkpoint.json');
  if (!existsSync(path)) throw new CheckpointError(`${path} does not exist; --resume needs a folder written by --checkpoint`);
  let ckpt: Checkpoint;
  try {
    ckpt = JSON.parse(readFileSync(path, 'utf8')) as Checkpoint;
  } catch (e) {
    throw new CheckpointError(`${path} is not valid JSON (${(e as Error).message})`);
  }
  if (ckpt.format !== 'tabtrain-checkpoint' || ckpt.version !== CHECKPOINT_VERSION) throw new CheckpointError(`${path} is not a tabtrain checkpoint of version ${CHECKPOINT_VERSION}`);
  const wpath = join(dir, ckpt.weightsFile);
  if (!existsSync(wpath)) throw new CheckpointError(`${wpath}, named by ${path}, is missing`);
  const bytes = readFileSync(wpath);
  if (bytes.byteLength !== ckpt.paramCount * 4) throw new CheckpointError(`${wpath} has ${bytes.byteLength} bytes, expected ${ckpt.paramCount * 4}`);
  const weights = new Float32Array(ckpt.paramCount);
  new Uint8Array(weights.buffer).set(bytes);
  if (weightsSha256(weights) !== ckpt.weightsSha256) throw new CheckpointError(`${wpath} does not match the SHA-256 in ${path}; the checkpoint is corrupt`);
  return { ckpt, weights };
}
