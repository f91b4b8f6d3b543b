// POST /api/control: pause, resume, stop or export the run, with `Authorization: Bearer <--admin-token>`.
// Without a token the dashboard is read-only; wrong tokens are limited per address (control-limit.ts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CONTROL_ACTIONS, type ControlAction } from '@tabtrain/shared/dashboard-wire';
import { ControlLimit } from '../control-limit';
import type { Coordinator } from '../coordinator';
import { sameSecret } from '../secrets';
import { json } from './http';
import { DASHBOARD, TERMINAL } from './settings';

export class RunControl {
  private readonly limit: ControlLimit;

  constructor(private readonly coord: Coordinator) {
    this.limit = new ControlLimit(coord.opts.log);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A refusal closes the connection: the body the peer may still be sending is never read.
    const refuse = (status: number, body: unknown, headers: Record<string, string> = {}) => json(res, status, body, { connection: 'close', ...headers });
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!(declared <= DASHBOARD.maxControlBytes)) return refuse(413, { error: `a control body is at most ${DASHBOARD.maxControlBytes} bytes` });
    const token = this.coord.opts.adminToken;
    if (!token) return refuse(403, { error: 'read-only: the coordinator was started without --admin-token' });
    // Before the token is compared: an address past its tries learns nothing about the token.
    const address = req.socket.remoteAddress ?? '?';
    const wait = this.limit.retryAfter(address);
    if (wait > 0) return refuse(429, { error: `too many wrong admin tokens from ${address}: try again in ${wait} s` }, { 'retry-after': String(wait) });
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!sameSecret(given, token)) {
      this.limit.refuse(address);
      return refuse(401, { error: 'missing or wrong admin token' }, { 'www-authenticate': 'Bearer' });
    }
    // JSON only: a cross-site form cannot send it without a preflight, which we never answer.
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) return refuse(415, { error: 'send {"action": ...} as application/json' });
    let action: ControlAction;
    try {
      const body = JSON.parse(await readBody(req, DASHBOARD.maxControlBytes)) as { action?: unknown };
      if (!CONTROL_ACTIONS.includes(body?.action as ControlAction)) throw new Error(`action must be one of ${CONTROL_ACTIONS.join(', ')}`);
      action = body.action as ControlAction;
    } catch (e) {
      if (e instanceof BodyTooLarge) return refuse(413, { error: e.message });
      if (e instanceof BodyTimeout) return refuse(408, { error: e.message });
      return refuse(400, { error: (e as Error).message });
    }
    const c = this.coord;
    if (action === 'export') {
      if (!c.opts.exportDir) return json(res, 409, { error: 'start the coordinator with --export DIR to export on demand' });
      try {
        const step = await c.exportNow();
        return json(res, 200, { ok: true, action, step, dir: c.opts.exportDir });
      } catch (e) {
        return json(res, 500, { error: `export failed: ${(e as Error).message}` });
      }
    }
    if (TERMINAL.includes(c.state)) return json(res, 409, { error: `the run is already ${c.state}`, state: c.state, reason: c.stateReason });
    const who = `from the dashboard (${req.socket.remoteAddress ?? '?'})`;
    if (action === 'pause') c.pause(`paused ${who}`);
    else if (action === 'resume') c.resume();
    else c.stop(`stopped ${who}`);
    json(res, 200, { ok: true, action, state: c.state, reason: c.stateReason });
  }

  /** Writes the last summary line of refused tokens. */
  close(): void {
    this.limit.close();
  }
}

class BodyTooLarge extends Error {}
class BodyTimeout extends Error {}

/** A control body is tiny: one that has not arrived whole by then never will (a truncated or trickled body). */
const BODY_TIMEOUT_MS = 2000;

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      reject(new BodyTimeout(`the control body did not arrive whole within ${BODY_TIMEOUT_MS} ms`));
      req.pause();
      req.removeAllListeners('data');
    }, BODY_TIMEOUT_MS);
    timer.unref();
    req.on('close', () => clearTimeout(timer));
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new BodyTooLarge(`a control body is at most ${limit} bytes`));
        // Read no more of it; the 413 goes out with connection: close, which ends the socket.
        req.pause();
        req.removeAllListeners('data');
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => { clearTimeout(timer); resolveBody(Buffer.concat(chunks).toString('utf8')); });
    req.on('error', reject);
  });
}
