// Files the coordinator writes (checkpoints, summaries, weights, exports): atomic writes, and the
// weights' fingerprint that names a result in summaries and checkpoints.
import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';

/** Writes `data` to `path` via a temp file, fsync and rename: a crash leaves the old file or the new one, never half. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  const fd = openSync(tmp, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
}

/** SHA-256 of the raw fp32 weights: equal hashes, bit-identical weights. */
export function weightsSha256(w: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(w.buffer, w.byteOffset, w.byteLength)).digest('hex');
}
