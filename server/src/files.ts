// Files the coordinator writes (checkpoints, summaries, weights, exports): atomic writes, and the
// weights' fingerprint that names a result in summaries and checkpoints.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';

/** The suffix of writeFileAtomic's temp files: `.tmp-PID`. */
export const TEMP_NAME = /\.tmp-\d+/;

/**
 * Writes `data` to `path` via a temp file, fsync and rename: a crash leaves the old file or the new
 * one, never half. A write that fails removes its temp file and throws; `path` is untouched.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, data);
    const fd = openSync(tmp, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* never written, or a directory in the way */ }
    throw e;
  }
}

/** SHA-256 of the raw fp32 weights: equal hashes, bit-identical weights. */
export function weightsSha256(w: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(w.buffer, w.byteOffset, w.byteLength)).digest('hex');
}
