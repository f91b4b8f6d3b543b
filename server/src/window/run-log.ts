// The --log JSONL metrics log: one line per run header, step, epoch and state change, appended as
// they happen, and served as written so far on GET /api/log.
import { closeSync, createReadStream, fstatSync, openSync, writeSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Coordinator } from '../coordinator';
import { json } from './http';

export class RunLog {
  private fd: number | null = null;

  /** Opens --log for appending; throws, naming the file, when it cannot. Without --log it writes nothing. */
  constructor(private readonly coord: Coordinator) {
    const file = coord.opts.metricsLog;
    if (!file) return;
    try {
      this.fd = openSync(file, 'a');
    } catch (e) {
      throw new Error(`--log ${file}: cannot open for appending (${(e as Error).message})`);
    }
  }

  /** The file is open: the page offers its full log. */
  get writing(): boolean {
    return this.fd !== null;
  }

  write(record: Record<string, unknown>): void {
    if (this.fd === null) return;
    // Synchronous and whole lines: a crash leaves every line written so far complete (~20 µs a step).
    writeSync(this.fd, `${JSON.stringify({ at: Date.now(), ...record })}\n`);
  }

  /**
   * GET /api/log: the --log file up to its size now. Every line up to there is whole (each is one
   * synchronous write), so a download taken mid-run parses. It holds every step, unthinned, and a
   * file appended to by earlier sessions of a resumed run holds theirs too.
   */
  serve(req: IncomingMessage, res: ServerResponse): void {
    if (this.fd === null) {
      return json(res, 404, { error: 'the coordinator was started without --log FILE; the page\'s CSV and JSONL downloads hold the points the page has' });
    }
    const size = fstatSync(this.fd).size;
    res.writeHead(200, {
      'content-type': 'application/x-ndjson; charset=utf-8', 'content-length': String(size), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff',
      'content-disposition': `attachment; filename="tabtrain-${this.coord.run.model.replace(/[^\w.-]/g, '_')}-log.jsonl"`,
    });
    if (req.method === 'HEAD' || size === 0) { res.end(); return; }
    const file = this.coord.opts.metricsLog!;
    const stream = createReadStream(file, { start: 0, end: size - 1 });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
