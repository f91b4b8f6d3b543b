// Workers this process starts itself (--local-workers, tests, benchmarks) are established from
// the start: they present this key, which never leaves the machine (it travels in the child's
// environment, and the child connects over loopback), so no stranger can claim it.
import { randomBytes } from 'node:crypto';

export const LOCAL_KEY_ENV = 'TABTRAIN_LOCAL_KEY';
export const LOCAL_KEY = process.env[LOCAL_KEY_ENV] ?? randomBytes(16).toString('hex');
// Every worker process spawned from here inherits it.
process.env[LOCAL_KEY_ENV] = LOCAL_KEY;
