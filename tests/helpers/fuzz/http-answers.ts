// Reading the answers: every input must be answered. An HTTP request gets a status line (before or
// after the client half-closes); a response that is not an event stream must end (a pipelined
// probe behind it is answered, or the server closes). WebSocket inputs: ws-answers.ts.
import net from 'node:net';
import type { Target } from './frames';
import type { HttpInput } from './http-inputs';

export interface Head { status: number; headers: Record<string, string>; end: number }

/** Parses one HTTP response head at the start of `buf`, or null while incomplete. */
export function parseHead(buf: Buffer): Head | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/\d\.\d (\d{3})/.exec(lines[0]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) { const i = l.indexOf(':'); if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim(); }
  return { status: m ? Number(m[1]) : -1, headers, end: end + 4 };
}

/** Where the response body that starts at `from` ends, or -1 while incomplete, or Infinity if it runs until close. */
function bodyEnd(buf: Buffer, from: number, head: Head, method: string): number {
  if (method === 'HEAD' || head.status === 204 || head.status === 304 || (head.status >= 100 && head.status < 200)) return from;
  if (/chunked/i.test(head.headers['transfer-encoding'] ?? '')) {
    let at = from;
    for (;;) {
      const nl = buf.indexOf('\r\n', at);
      if (nl < 0) return -1;
      const size = parseInt(buf.subarray(at, nl).toString('latin1'), 16);
      if (!Number.isFinite(size)) return Infinity;
      if (size === 0) { const fin = buf.indexOf('\r\n\r\n', nl); return fin < 0 ? (buf.length >= nl + 4 && buf.subarray(nl, nl + 4).toString() === '\r\n\r\n' ? nl + 4 : -1) : fin + 4; }
      at = nl + 2 + size + 2;
      if (at > buf.length) return -1;
    }
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) { const n = Number(cl); return buf.length >= from + n ? from + n : -1; }
  return Infinity;
}

/**
 * Whether our own request bytes frame exactly one request that ends where the bytes end, so that a
 * pipelined probe behind it is read as the next request. Anything doubtful is not probed.
 */
function cleanlyFramed(bytes: Uint8Array): { framed: boolean; declared: number | null; sent: number; method: string; line: string } {
  const s = Buffer.from(bytes).toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  const line = s.slice(0, Math.max(0, s.indexOf('\r\n')));
  const method = line.split(' ')[0];
  if (end < 0) return { framed: false, declared: null, sent: 0, method, line };
  const lines = s.slice(0, end).split('\r\n');
  const sent = bytes.length - end - 4;
  let framed = /^[A-Z]+ \/[!-~]* HTTP\/1\.1$/.test(lines[0]);
  let declared: number | null = null;
  for (const l of lines.slice(1)) {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([ -~\t]*)$/.exec(l);
    if (!m) { framed = false; continue; }
    const k = m[1].toLowerCase();
    if (k === 'content-length') {
      if (declared !== null || !/^\d{1,15}$/.test(m[2].trim())) framed = false;
      declared = Number(m[2].trim());
    }
    if (k === 'transfer-encoding' || k === 'upgrade' || k === 'expect' || (k === 'connection' && /upgrade|close/i.test(m[2]))) framed = false;
  }
  if ((declared ?? 0) !== sent) framed = false;
  return { framed, declared, sent, method, line };
}

export interface Outcome {
  /** What answered it: 'close 4002 badField', 'http 404', 'upgrade 400', 'welcome' … */
  answer: string;
  /** Why the answer is not good enough, if it is not. */
  failure?: string;
  ms: number;
}

const PROBE = 'GET /fuzz-probe HTTP/1.1\r\nHost: probe\r\n\r\n';

export interface Timeouts { answerMs: number; afterFinMs: number; probeMs: number; wsMs: number }
export const DEFAULT_TIMEOUTS: Timeouts = { answerMs: 2500, afterFinMs: 2500, probeMs: 2500, wsMs: 6000 };

export function runHttp(input: HttpInput, t: Target, to: Timeouts = DEFAULT_TIMEOUTS): Promise<Outcome> {
  const t0 = performance.now();
  const info = cleanlyFramed(input.bytes);
  const toControl = /^POST \/api\/control[ ?]/.test(info.line);
  const hugeUnsent = info.declared !== null && info.declared > 1024 && info.sent < info.declared;
  // Nothing but blank lines is no request at all: closing after the client's FIN is the answer.
  const noRequest = /^[\r\n\t ]*$/.test(Buffer.from(input.bytes).toString('latin1'));
  return new Promise((resolve) => {
    const s = net.connect(t.port, t.host);
    let buf: Buffer = Buffer.alloc(0);
    let first: Head | null = null;
    let firstEnd = -1;
    let phase: 'answer' | 'fin' | 'probe' | 'held' = 'answer';
    let done = false;
    let timer: NodeJS.Timeout | null = null;
    const arm = (ms: number, f: () => void) => { if (timer) clearTimeout(timer); timer = setTimeout(f, ms); };
    const finish = (o: Omit<Outcome, 'ms'>) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      s.destroy();
      resolve({ ...o, ms: performance.now() - t0 });
    };
    const answer = () => (first ? `http ${first.status}` : 'none');
    const onFirst = () => {
      // Interim 100 Continue: skip it and read the final head.
      while (first && first.status >= 100 && first.status < 200 && first.status !== 101) {
        buf = buf.subarray(first.end);
        first = parseHead(buf);
      }
      if (!first) return;
      if (first.status === 101) return finish({ answer: 'http 101 (upgraded)' });
      const sse = /text\/event-stream/.test(first.headers['content-type'] ?? '') && info.method !== 'HEAD';
      if (toControl && hugeUnsent) {
        // It answered without the body; it must not go on reading the rest of it either.
        phase = 'held';
        return arm(to.probeMs, () => finish({ answer: answer(), failure: `answered ${first!.status} but kept the connection open to read a ${info.declared}-byte body (${info.sent} sent)` }));
      }
      if (hugeUnsent && !sse) {
        // Elsewhere this is only noted: the distribution shows whether the server reads on.
        phase = 'held';
        return arm(to.probeMs, () => finish({ answer: `${answer()}, then kept reading the declared body` }));
      }
      if (sse || !info.framed || /close/i.test(first.headers.connection ?? '')) return finish({ answer: answer() });
      phase = 'probe';
      s.write(PROBE);
      arm(to.probeMs, () => finish({ answer: answer(), failure: `the response never ended: a pipelined request behind it got no answer in ${to.probeMs} ms` }));
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!first) {
        first = parseHead(buf);
        if (first) onFirst();
        return;
      }
      if (phase === 'probe') {
        if (firstEnd < 0) firstEnd = bodyEnd(buf, first.end, first, info.method);
        if (firstEnd === Infinity) return finish({ answer: answer() });
        if (firstEnd >= 0 && parseHead(buf.subarray(firstEnd))) finish({ answer: answer() });
      }
    });
    const onGone = (why: string) => {
      if (done) return;
      if (first) return finish({ answer: answer() });
      if (noRequest && phase === 'fin') return finish({ answer: 'closed after the FIN (no request was sent)' });
      if (phase === 'answer') return finish({ answer: 'none', failure: `closed (${why}) without a status line` });
      finish({ answer: 'none', failure: `closed (${why}) without a status line after the client's FIN` });
    };
    s.on('error', (e: NodeJS.ErrnoException) => onGone(e.code ?? e.message));
    s.on('close', () => onGone('close'));
    s.on('connect', () => {
      s.write(input.bytes);
      arm(to.answerMs, () => {
        if (first) return;
        // No answer yet: maybe it waits for the rest of a request. Half-close and wait again.
        phase = 'fin';
        s.end();
        arm(to.afterFinMs, () => finish({ answer: 'none', failure: `no status line within ${to.answerMs} ms, nor ${to.afterFinMs} ms after the client's FIN` }));
      });
    });
  });
}
