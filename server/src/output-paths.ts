// Output paths (--summary, --weights-out, --checkpoint, --export, --log) are checked before the
// first step, so that a run never trains for hours and then fails to write its result.
import { closeSync, existsSync, mkdirSync, openSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export class OutputPathError extends Error {}

const why = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/**
 * mkdir -p that never hangs: Node's recursive mkdirSync loops forever on some paths
 * (`/proc/x`: ENOENT for a folder whose parent exists). Creates each missing level in turn.
 */
export function makeDirs(dir: string, mode = 0o777): void {
  const abs = resolve(dir);
  const missing: string[] = [];
  let p = abs;
  while (!existsSync(p)) {
    missing.unshift(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  if (existsSync(p) && !statSync(p).isDirectory()) throw Object.assign(new Error(`${p} is a file, not a folder`), { code: 'ENOTDIR' });
  for (const m of missing) {
    try {
      mkdirSync(m, { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/** Writes and removes a probe file: the only sure test that a file can be created there. */
function probe(file: string): void {
  const fd = openSync(file, 'wx');
  try { writeSync(fd, 'tabtrain'); } finally { closeSync(fd); }
  unlinkSync(file);
}

/** A file that will be written whole at the end (via a temp file beside it and a rename). */
export function checkOutputFile(flag: string, path: string): void {
  if (existsSync(path) && statSync(path).isDirectory()) throw new OutputPathError(`${flag} ${path} is a folder; give a file name in it, e.g. ${path.replace(/\/+$/, '')}/${flag === '--summary' ? 'summary.json' : 'weights.bin'}`);
  const dir = dirname(resolve(path));
  try {
    makeDirs(dir);
    probe(`${resolve(path)}.tmp-check-${process.pid}`);
  } catch (e) {
    throw new OutputPathError(`${flag} ${path}: cannot write there (${why(e)}); choose a path in a folder you can write to`);
  }
}

/** A folder that files will be written into (--checkpoint, --export). */
export function checkOutputDir(flag: string, dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new OutputPathError(`${flag} ${dir} is a file; give a folder (it is created if missing)`);
  try {
    makeDirs(dir);
    probe(resolve(dir, `.tabtrain-check-${process.pid}`));
  } catch (e) {
    throw new OutputPathError(`${flag} ${dir}: cannot create or write that folder (${why(e)}); choose a folder you can write to`);
  }
}

/** A file that lines are appended to (--log). */
export function checkAppendFile(flag: string, path: string): void {
  if (existsSync(path) && statSync(path).isDirectory()) throw new OutputPathError(`${flag} ${path} is a folder; give a file name, e.g. ${path.replace(/\/+$/, '')}/run.jsonl`);
  try {
    makeDirs(dirname(resolve(path)));
    closeSync(openSync(path, 'a'));
  } catch (e) {
    throw new OutputPathError(`${flag} ${path}: cannot append to it (${why(e)}); choose a path in a folder you can write to`);
  }
}
