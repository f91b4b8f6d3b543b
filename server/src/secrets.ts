// Secrets: the constant-time comparison every token, session and key goes through, and the local key.
//
// Workers this process starts itself (--local-workers, tests, benchmarks) are established from
// the start: they present this key, which never leaves the machine (it travels in the child's
// environment, and the child connects over loopback), so no stranger can claim it.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const LOCAL_KEY_ENV = 'TABTRAIN_LOCAL_KEY';
export const LOCAL_KEY = process.env[LOCAL_KEY_ENV] ?? randomBytes(16).toString('hex');
// Every worker process spawned from here inherits it.
process.env[LOCAL_KEY_ENV] = LOCAL_KEY;

/** Constant-time comparison of a presented secret with the expected one. */
export function sameSecret(given: unknown, expected: string): boolean {
  if (typeof given !== 'string') return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
