// `tabtrain view FILE.jsonl [FILE.jsonl …]`: the dashboard, read-only, from --log files of
// finished or running runs, the runs overlaid and named by their files, as TensorBoard shows
// several run folders. No coordinator: a small HTTP server that serves the dashboard page and
//   GET /api/runs   JSON {runs: [{name, file, snapshot, problems, problemCount}]}
// Each file is read again when it has grown or changed, so a running run's log follows the run.
import { readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename, dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { asTyped, parseArgsMessage } from '@tabtrain/shared/cli-args';
import { printable } from '@tabtrain/shared/text';
import { ensurePageBuilt } from './page-build';
import { DEFAULT_STATIC_DIR, serveStatic } from './static';
import { UsageError } from './usage';
import { json, methodNotAllowed } from './window/http';
import { readLog, type LogRun } from './window/log-runs';

/** TensorBoard's port: a person who knows one knows where to look. */
export const VIEW_PORT = 6006;
/** A log larger than this is refused (a 100,000-step run's log is about 60 MB). */
export const MAX_LOG_BYTES = 1 << 30;

export const VIEW_HELP = `tabtrain view FILE.jsonl [FILE.jsonl …] [options]

Serves the dashboard, read-only, from the --log files of finished or running runs (serve --log FILE):
the runs' curves overlaid and named by their files, as TensorBoard shows several run folders. Open
http://HOST:PORT/dashboard. A file still being written is read again when it grows.

A line that is not a valid record is reported as FILE:LINE and skipped; the rest of the run draws.

Options:
  --port N      port to listen on (default ${VIEW_PORT}; 0 = any free port)
  --host H      address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares it)
  -h, --help    this text

Example:
  tabtrain serve --epochs 2 --log runs/a.jsonl   (and later: --lr 0.05 --log runs/b.jsonl)
  tabtrain view runs/a.jsonl runs/b.jsonl`;

export interface RunFile { name: string; file: string }

/** The runs' names: the file names without .jsonl; the folder too where two files share a name. */
export function runNames(files: string[]): RunFile[] {
  const base = (f: string) => basename(f).replace(/\.jsonl$/i, '');
  const counts = new Map<string, number>();
  for (const f of files) counts.set(base(f), (counts.get(base(f)) ?? 0) + 1);
  return files.map((f) => ({ file: resolve(f), name: counts.get(base(f))! > 1 ? `${basename(dirname(resolve(f)))}/${base(f)}` : base(f) }));
}

/** The runs, each read again when its file changed since the last read. */
export class LogRuns {
  private readonly cache = new Map<string, { key: string; run: LogRun }>();

  constructor(readonly files: RunFile[]) {}

  /** Reads every file now: a file that cannot be read is an error that names it. */
  check(): void {
    for (const f of this.files) this.read(f);
  }

  read(f: RunFile): LogRun {
    let key: string;
    try {
      const st = statSync(f.file);
      if (!st.isFile()) throw new Error('not a file');
      if (st.size > MAX_LOG_BYTES) throw new Error(`${st.size} bytes; at most ${MAX_LOG_BYTES}`);
      key = `${st.size}:${st.mtimeMs}`;
    } catch (e) {
      throw new UsageError(`view: cannot read ${f.file}: ${(e as Error).message}`);
    }
    const had = this.cache.get(f.file);
    if (had?.key === key) return had.run;
    const run = readLog(readFileSync(f.file, 'utf8'), f.name);
    this.cache.set(f.file, { key, run });
    return run;
  }

  /** GET /api/runs's body. A file gone since the start is reported in its run's problems. */
  runs() {
    return this.files.map((f) => {
      try {
        return { name: f.name, file: f.file, ...this.read(f) };
      } catch (e) {
        const had = this.cache.get(f.file)?.run;
        return { name: f.name, file: f.file, snapshot: had?.snapshot ?? null, problems: [(e as Error).message], problemCount: 1 };
      }
    });
  }
}

/** The view's HTTP answers: /api/runs, the dashboard page and its assets; / goes to /dashboard. */
export function viewHandler(runs: LogRuns, root = DEFAULT_STATIC_DIR) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split(/[?#]/, 1)[0];
    const get = req.method === 'GET' || req.method === 'HEAD';
    if (path === '/api/runs') {
      if (!get) { methodNotAllowed(res, 'GET, HEAD'); return; }
      return json(res, 200, { mode: 'view', runs: runs.runs() });
    }
    if (path === '/' || path === '/dashboard/') {
      res.writeHead(302, { location: '/dashboard' });
      res.end();
      return;
    }
    if (path === '/api/events' || path === '/api/control' || path === '/api/log' || path === '/api/status') {
      return json(res, 404, { error: 'tabtrain view is read-only: it serves /api/runs from --log files, and has no live run' });
    }
    serveStatic(req, res, root);
  };
}

/** `tabtrain view ARGS`: serves until interrupted; resolves with the exit code. */
export async function view(args: string[], log: (line: string) => void = (l) => console.log(l)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options: { port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    throw new UsageError(parseArgsMessage(e as Error & { code?: string }, 'view', ['port', 'host', 'help']));
  }
  const { values: v, positionals: files } = parsed;
  if (v.help) {
    log(asTyped(VIEW_HELP));
    return 0;
  }
  if (files.length === 0) throw new UsageError('view: name at least one --log file: tabtrain view runs/a.jsonl [runs/b.jsonl …] (tabtrain view --help)');
  const port = v.port === undefined ? VIEW_PORT : Number(v.port);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new UsageError(`view: --port must be a whole number from 0 to 65535, got '${v.port}'`);
  const host = v.host ?? '127.0.0.1';
  const runs = new LogRuns(runNames(files));
  runs.check();
  for (const r of runs.runs()) {
    const s = r.snapshot;
    log(`${r.name}: ${s?.header.model ?? '?'}, ${s?.steps.length ?? 0} steps, ${s?.epochs.length ?? 0} epochs, ${s?.header.state ?? '?'}${r.problemCount ? `; ${r.problemCount} line(s) skipped:` : ''}`);
    for (const p of r.problems.slice(0, 5)) log(`  ${printable(p)}`);
    if (r.problemCount > 5) log(`  … and ${r.problemCount - 5} more (the page lists the first ${r.problems.length})`);
  }
  await ensurePageBuilt(log);
  const server = createServer(viewHandler(runs));
  await new Promise<void>((ok, fail) => {
    server.once('error', (e: NodeJS.ErrnoException) => fail(e.code === 'EADDRINUSE' ? new UsageError(`view: port ${port} is in use; choose another with --port`) : e));
    server.listen(port, host, () => ok());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log(`dashboard of ${runs.files.length} run(s), read-only: http://${host.includes(':') ? `[${host}]` : host}:${bound}/dashboard  (Ctrl-C to stop)`);
  await new Promise<void>((done) => {
    const stop = () => { server.close(); server.closeAllConnections(); done(); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
