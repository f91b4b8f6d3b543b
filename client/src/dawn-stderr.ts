// Dawn and Mesa write their own warnings straight to the process's stderr from native code
// ("Warning: … artificially reduced", "error: XDG_RUNTIME_DIR is invalid", Vulkan's refusals with
// their .cpp line): a dozen lines at every start that a person cannot act on. They matter only
// when no adapter was found, as the reason. Node cannot redirect its own file descriptor 2, so a
// `--backend webgpu` worker runs as a child of itself with stderr piped through this filter:
// Dawn's lines are held back and printed only before the "no WebGPU adapter" error.
// TABTRAIN_DAWN_STDERR=all shows everything as it comes.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** Lines that Dawn or Mesa print on their own (the JS side's errors never look like these). */
const NATIVE = [/^Warning: /, /^(error|Error): XDG_RUNTIME_DIR /, /^ - While /, /^\s+at \w+ \(.*\.(cpp|cc|h):\d+\)$/];
const HELD = 200;
export const FILTERED_ENV = 'TABTRAIN_DAWN_FILTERED';

/** Copies `from` to `to` line by line, holding back Dawn's own lines until a line says no adapter was found. */
export function filterDawnStderr(from: Readable, to: Writable): Promise<void> {
  const held: string[] = [];
  let afterNative = false;
  const lines = createInterface({ input: from, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (NATIVE.some((re) => re.test(line)) || (afterNative && line === '')) {
      afterNative = true;
      if (held.length < HELD) held.push(line);
      return;
    }
    afterNative = false;
    if (/no WebGPU adapter from Dawn/.test(line) && held.length) to.write(`Dawn's own messages (why each backend refused):\n${held.splice(0).join('\n')}\n`);
    to.write(`${line}\n`);
  });
  return new Promise((resolve) => lines.on('close', resolve));
}

/**
 * Runs this worker again as a child whose stderr goes through the filter, when it will load Dawn;
 * resolves with the child's exit code, or null where the worker should just run here (not webgpu,
 * already the child, or TABTRAIN_DAWN_STDERR=all).
 */
export function runWithDawnFiltered(argv: string[]): Promise<number> | null {
  const webgpu = argv.some((a, i) => a === '--backend=webgpu' || (a === '--backend' && argv[i + 1] === 'webgpu'));
  if (!webgpu || process.env[FILTERED_ENV] || process.env.TABTRAIN_DAWN_STDERR === 'all' || argv.includes('--help') || argv.includes('-h')) return null;
  // The child keeps an IPC channel to this process: it exits when this one is gone (even by
  // SIGKILL), and a local worker's coordinator watches this process's own channel as before.
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'pipe', 'ipc'], env: { ...process.env, [FILTERED_ENV]: '1' },
  });
  const filtered = filterDawnStderr(child.stderr!, process.stderr);
  // Ctrl-C in a terminal reaches both processes (one process group): the child handles it; this
  // one waits for it. A signal sent to this process alone is passed on.
  process.on('SIGINT', () => {});
  for (const s of ['SIGTERM', 'SIGHUP'] as const) process.on(s, () => child.kill(s));
  process.on('disconnect', () => child.kill('SIGTERM'));
  return new Promise((resolve) => child.on('exit', (code, signal) => {
    void filtered.then(() => resolve(code ?? (signal === 'SIGINT' ? 130 : 1)));
  }));
}

/** In the child: exit with the parent that filters its stderr. */
export function exitWithFilteringParent(): void {
  if (process.env[FILTERED_ENV] && process.send) process.on('disconnect', () => process.exit(0));
}
