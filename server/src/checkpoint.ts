// Checkpoints: everything needed to continue a run exactly where it was, written atomically.
//
// Layout of DIR:  checkpoint.json  → names weights-<step>.bin and its SHA-256
//                 weights-<step>.bin  raw fp32 little-endian, parameter order
// The weights file is written under a temp name and renamed, then checkpoint.json likewise; only
// then are older weights files deleted. A crash at any instant leaves a complete checkpoint, and a
// write that fails (a full disk, no file descriptors left) leaves the previous one: the Checkpointer
// logs it, shows it on /api/status and the dashboard, and tries again at the next checkpoint.
import { existsSync, lstatSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { stepsPerEpoch } from '@tabtrain/shared';
import { NO_COMPRESSION } from '@tabtrain/shared/compress';
import type { Coordinator } from './coordinator';
import { CHECKPOINT_VERSION, CheckpointError, checkCheckpoint, checkPosition, type Checkpoint } from './checkpoint-check';
import { TEMP_NAME, weightsSha256, writeFileAtomic } from './files';
import { makeDirs } from './output-paths';

export { CheckpointError, writeFileAtomic };

export { CHECKPOINT_VERSION, type Checkpoint };

export function saveCheckpoint(dir: string, c: Coordinator): Checkpoint {
  makeDirs(dir); // not mkdirSync's recursive mode: it never returns for some paths (/proc/x)
  const weightsFile = `weights-${c.step}.bin`;
  const w = c.weights;
  writeFileAtomic(join(dir, weightsFile), new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
  const ckpt: Checkpoint = {
    format: 'tabtrain-checkpoint', version: CHECKPOINT_VERSION,
    model: c.run.model, modelHash: c.run.modelHash, paramCount: c.run.paramCount,
    config: { epochs: c.opts.epochs, batch: c.opts.batch, lr: c.run.lr, seed: c.opts.seed, balance: c.opts.balance, compress: c.run.compress ?? NO_COMPRESSION, ...(c.auto ? { autoRank: c.opts.autoRank, ...(c.opts.autoFactors ? { autoFactors: c.opts.autoFactors } : {}) } : {}) },
    optimizer: { kind: 'sgd', lr: c.run.lr },
    step: c.step, epoch: Math.floor(c.step / stepsPerEpoch(c.data.train.count, c.opts.batch)), dataOrderSeed: c.opts.seed,
    epochAcc: { ...c.epochAcc }, history: [...c.history],
    weightsFile, weightsSha256: weightsSha256(w), savedAt: new Date().toISOString(),
  };
  writeFileAtomic(join(dir, 'checkpoint.json'), JSON.stringify(ckpt, null, 2) + '\n');
  // The checkpoint is complete; older weights (and those of a write that failed) go. One that
  // cannot be deleted now is deleted by a later checkpoint.
  for (const f of readdirSync(dir)) {
    if (/^weights-\d+\.bin$/.test(f) && f !== weightsFile) try { unlinkSync(join(dir, f)); } catch { /* next time */ }
  }
  return ckpt;
}

export function loadCheckpoint(dir: string): { ckpt: Checkpoint; weights: Float32Array } {
  const path = join(dir, 'checkpoint.json');
  if (!existsSync(path)) throw new CheckpointError(`${path} does not exist; --resume needs a folder written by --checkpoint`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${path} is not valid JSON (${(e as Error).message})`);
  }
  const ckpt = checkCheckpoint(raw, path, CHECKPOINT_VERSION);
  // checkCheckpoint allows only weights-<step>.bin: a plain name inside `dir`, never a path out of it.
  const wpath = join(dir, ckpt.weightsFile);
  if (!existsSync(wpath) || !lstatSync(wpath).isFile()) throw new CheckpointError(`${wpath}, named by ${path}, is missing or not a plain file`);
  const bytes = readFileSync(wpath);
  if (bytes.byteLength !== ckpt.paramCount * 4) throw new CheckpointError(`${wpath} has ${bytes.byteLength} bytes, expected ${ckpt.paramCount * 4}`);
  const weights = new Float32Array(ckpt.paramCount);
  new Uint8Array(weights.buffer).set(bytes);
  if (weightsSha256(weights) !== ckpt.weightsSha256) throw new CheckpointError(`${wpath} does not match the SHA-256 in ${path}; the checkpoint is corrupt`);
  return { ckpt, weights };
}

/** The checks of a loaded checkpoint that need the data set (see checkPosition); throws CheckpointError. */
export function checkResumedPosition(ckpt: Checkpoint, dir: string, trainCount: number, perEpoch: number): void {
  checkPosition(ckpt, join(dir, 'checkpoint.json'), trainCount, perEpoch);
}

/** A leftover of a checkpoint write cut short (SIGKILL, power loss): `weights-N.bin.tmp-PID`, `checkpoint.json.tmp-PID`. */
const LEFTOVER = new RegExp(`^(weights-\\d+\\.bin|checkpoint\\.json)${TEMP_NAME.source}$`);

/** Where the run's checkpoints stand: /api/status's `checkpoint`, the dashboard's warning. */
export interface CheckpointStatus {
  dir: string;
  /** The step of the latest checkpoint written by this coordinator, null before the first. */
  savedStep: number | null;
  savedAt: string | null;
  /** Writes that failed since the coordinator started. */
  failures: number;
  /** The latest write, if it failed: the step, the file and the error. Cleared by a write that succeeds. */
  error: { step: number; path: string; message: string; at: string } | null;
}

/**
 * Writes a run's checkpoints and never lets a failed write end the run: the error is logged in one
 * line (the file and the error), kept for /api/status and the dashboard, and the next write tries again.
 */
export class Checkpointer {
  private readonly state: CheckpointStatus;

  constructor(readonly dir: string, private readonly log: (line: string) => void) {
    this.state = { dir, savedStep: null, savedAt: null, failures: 0, error: null };
  }

  /** Deletes the temp files of writes cut short (at start: no write of ours is under way); returns how many. */
  removeLeftovers(): number {
    if (!existsSync(this.dir)) return 0;
    let removed = 0;
    for (const f of readdirSync(this.dir)) {
      if (!LEFTOVER.test(f)) continue;
      try {
        if (!lstatSync(join(this.dir, f)).isFile()) continue;
        unlinkSync(join(this.dir, f));
        removed++;
      } catch (e) {
        this.log(`checkpoint: could not remove the leftover ${join(this.dir, f)} (${(e as Error).message}); remove it by hand`);
      }
    }
    if (removed > 0) this.log(`checkpoint: removed ${removed} leftover temp file${removed === 1 ? '' : 's'} of a write cut short from ${this.dir}`);
    return removed;
  }

  /**
   * Checkpoints `coord` after every `every` steps and at each epoch's end (its epoch accumulator
   * has just been reset), and shows the checkpoints' state on `dashboard`.
   */
  attach(coord: Coordinator, every: number, dashboard?: { checkpoint: Checkpointer | null }): void {
    if (dashboard) dashboard.checkpoint = this;
    coord.afterStep = (c) => {
      if (c.step % every === 0 || c.epochAcc.steps === 0) this.save(c);
    };
  }

  /** Writes a checkpoint of `c` now; false (logged, kept in status()) if it could not be written. */
  save(c: Coordinator): boolean {
    try {
      const ckpt = saveCheckpoint(this.dir, c);
      if (this.state.error) this.log(`checkpoint at step ${ckpt.step} written to ${this.dir}: checkpoints work again after ${this.state.failures} failed`);
      Object.assign(this.state, { savedStep: ckpt.step, savedAt: ckpt.savedAt, error: null });
      return true;
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { dest?: string };
      const path = err.dest ?? err.path ?? this.dir;
      // Node's message repeats the path ("EMFILE: too many open files, open '/x'"): the line names it once.
      const message = (err.code ? `${err.code}: ` : '') + String(err.message ?? e).replace(/^[A-Z]+: /, '').replace(/ '[^']*'( -> '[^']*')?$/, '').replace(/[\u0000-\u001f\u007f]/g, ' ');
      this.state.failures++;
      this.state.error = { step: c.step, path, message, at: new Date().toISOString() };
      this.log(`checkpoint at step ${c.step} failed writing ${path} (${message}); ${this.kept()}, the run goes on and the next checkpoint tries again`);
      return false;
    }
  }

  status(): CheckpointStatus {
    return { ...this.state, error: this.state.error && { ...this.state.error } };
  }

  /** The latest failure in one line for the dashboard, '' when the latest write succeeded. */
  problem(): string {
    const e = this.state.error;
    return e ? `checkpoint at step ${e.step} failed: ${e.message}; ${this.kept()}` : '';
  }

  private kept(): string {
    return this.state.savedStep === null ? `${this.dir} keeps the checkpoint it had` : `${this.dir} keeps step ${this.state.savedStep}'s`;
  }
}
