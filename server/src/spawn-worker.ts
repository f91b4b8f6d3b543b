// Starts a `tabtrain worker` process on this machine: --local-workers, tests and benchmarks. It
// goes through the command line (bin/tabtrain), which runs the client package's worker: the server
// package never loads worker code itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOCAL_KEY, LOCAL_KEY_ENV } from './secrets';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(ROOT, 'bin/tabtrain');

/**
 * Spawns `tabtrain worker --url URL --local ARGS`. An IPC channel lets the worker notice its
 * parent's death (even by SIGKILL) and exit with it. The local key (secrets.ts) travels in the
 * child's environment only.
 */
export function spawnWorker(url: string, args: string[] = [], stdio: 'inherit' | 'pipe' = 'inherit'): ChildProcess {
  return spawn(BIN, ['worker', '--url', url, '--local', ...args], {
    cwd: ROOT, stdio: [stdio, stdio, stdio, 'ipc'], env: { ...process.env, [LOCAL_KEY_ENV]: LOCAL_KEY },
  });
}
