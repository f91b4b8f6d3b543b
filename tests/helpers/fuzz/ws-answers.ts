// Reading the answers to WebSocket inputs: an upgrade gets a status line (101 or another); after a
// 101 the coordinator either closes with a close frame (its code is the answer) or welcomes the
// hello, and the fuzzer then closes the worker itself within about a second. A socket that closes
// without a close frame (1006) is a failure, except after a frame over the payload limit that the
// ws library kills.
import net from 'node:net';
import { CLOSE_NAMES, MSG, decodeFrame } from '@tabtrain/shared';
import { rawFrame } from '../liars';
import { f32, poisonGradient, type Target } from './frames';
import { DEFAULT_TIMEOUTS, parseHead, type Outcome, type Timeouts } from './http-answers';
import { Rng } from './rng';
import { bin, closeFrame, wsFrame, type WsInput } from './ws-inputs';

/**
 * What our own frames claim, read as the server reads them: a frame that declares more payload
 * than we send leaves the server waiting for the rest (it may then never see our close), and one
 * that declares more than the payload limit may be killed by the library without a close frame.
 */
export function wireClaims(frames: Buffer[], limit = 16 * 1024 * 1024): { incomplete: boolean; oversize: boolean } {
  const b = Buffer.concat(frames);
  let at = 0;
  while (at < b.length) {
    if (b.length - at < 2) return { incomplete: true, oversize: false };
    let len = BigInt(b[at + 1] & 0x7f);
    let off = 2;
    if (len === 126n) { if (b.length - at < 4) return { incomplete: true, oversize: false }; len = BigInt(b.readUInt16BE(at + 2)); off = 4; }
    else if (len === 127n) { if (b.length - at < 10) return { incomplete: true, oversize: false }; len = b.readBigUInt64BE(at + 2); off = 10; }
    if (len > BigInt(limit)) return { incomplete: true, oversize: true };
    if (b[at + 1] & 0x80) off += 4;
    if (BigInt(b.length - at - off) < len) return { incomplete: true, oversize: false };
    at += off + Number(len);
  }
  return { incomplete: false, oversize: false };
}

export function runWs(input: WsInput, t: Target, to: Timeouts = DEFAULT_TIMEOUTS): Promise<Outcome> {
  const t0 = performance.now();
  const claims = wireClaims(input.frames);
  const oversize = input.oversize || claims.oversize;
  const P = t.paramCount;
  return new Promise((resolve) => {
    const s = net.connect(t.port, t.host);
    let buf: Buffer = Buffer.alloc(0);
    let upgraded = false;
    let welcomed = false;
    let done = false;
    let weClosed = false;
    let attacked = false;
    let hold: NodeJS.Timeout | null = null;
    const timer = setTimeout(() => finish(upgraded && claims.incomplete && !oversize ? { answer: 'waits for the rest of a frame it was promised' } : {
      answer: welcomed ? 'welcome' : 'none',
      failure: welcomed ? `welcomed, then no close frame within ${to.wsMs} ms: none for what followed the hello, none in answer to the client's own close` : upgraded ? `no close frame (and no welcome) within ${to.wsMs} ms` : `upgrade: no status line within ${to.wsMs} ms`,
    }), to.wsMs);
    const clientClosed = input.notes.includes('client close') || input.notes.includes('close 1 byte');
    const finish = (o: Omit<Outcome, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (hold) clearTimeout(hold);
      // Let a close handshake finish on its own; then make sure the socket is gone.
      if (o.failure || !upgraded) s.destroy(); else setTimeout(() => s.destroy(), 300).unref();
      resolve({ ...o, ms: performance.now() - t0 });
    };
    const send = (b: Uint8Array) => { if (!s.destroyed && s.writable) s.write(b); };
    const onServerFrame = (op: number, p: Buffer) => {
      if (op === 0x8) {
        const code = p.length >= 2 ? p.readUInt16BE(0) : 1005;
        const reason = p.subarray(2);
        if (!weClosed) send(closeFrame(code === 1005 ? 1000 : code));
        s.end();
        if (weClosed) return finish({ answer: 'welcome' });
        const name = CLOSE_NAMES[code] ?? ({ 1002: 'protocolError', 1007: 'invalidPayload', 1011: 'internal' } as Record<number, string>)[code] ?? '';
        const failure = reason.length > 123 ? `close reason of ${reason.length} bytes` : undefined;
        const label = [`close ${code}`, name, clientClosed ? '(echo of the client\'s close)' : welcomed ? '(after welcome)' : ''].filter(Boolean).join(' ');
        return finish({ answer: label, failure });
      }
      if (op === 0x9) return send(wsFrame(0xa, p));
      if (op !== 0x2) return;
      let type: unknown;
      let header: Record<string, unknown> = {};
      try { header = decodeFrame(p).header as Record<string, unknown>; type = header.type; } catch { return; }
      if (type === MSG.welcome && !welcomed) {
        welcomed = true;
        hold = setTimeout(() => { weClosed = true; send(closeFrame(1000)); }, input.holdMs);
      }
      if (type === MSG.assign && input.attack && !attacked) {
        attacked = true;
        // Answers its real shard with something that must be refused: NaN, a wrong length, a
        // result without the gradient, a wrong count, a slice out of order.
        const a = header as { step: number; shard: number; task: string; count: number };
        const g = (h: Record<string, unknown>, n: number) => bin(poisonGradient(rawFrame({ type: MSG.gradient, step: a.step, shard: a.shard, offset: 0, total: P, ...h }, f32(n))));
        const res = (h: Record<string, unknown> = {}) => bin(rawFrame({ type: MSG.result, task: a.task, step: a.step, shard: a.shard, lossSum: 1, correct: 0, count: a.count, timings: { computeMs: 1, encodeMs: 0, sendMs: 0 }, ...h }));
        const r = new Rng(a.step * 131 + a.shard, P);
        const which = r.pick(['nan', 'short', 'long', 'result only', 'count', 'offset', 'codec', 'total']);
        input.notes.push(`attack: ${which} on shard ${a.step}/${a.shard}`);
        if (which === 'nan') send(g({}, P)), send(res());
        if (which === 'short') send(g({}, P - 1)), send(res());
        if (which === 'long') send(g({}, P + 1)), send(res());
        if (which === 'result only') send(res());
        if (which === 'count') send(g({}, P)), send(res({ count: a.count + 1 }));
        if (which === 'offset') send(g({ offset: 4 }, P - 4)), send(res());
        if (which === 'codec') send(g({ codec: 'fp16' }, P >> 1)), send(res());
        if (which === 'total') send(g({ total: P + 1 }, P)), send(res());
      }
    };
    const readFrames = () => {
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf[1] & 0x80) off += 4; // servers never mask; tolerate it anyway
        if (buf.length < off + len) return;
        const p = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        onServerFrame(op, Buffer.from(p));
        if (done) return;
      }
    };
    s.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      if (!upgraded) {
        const head = parseHead(buf);
        if (!head) return;
        if (head.status !== 101) return finish({ answer: `upgrade ${head.status}` });
        upgraded = true;
        buf = buf.subarray(head.end);
        for (const f of input.frames) send(f);
      }
      readFrames();
    });
    const onGone = (why: string) => {
      if (done) return;
      if (!upgraded) return finish({ answer: 'none', failure: `upgrade: closed (${why}) without a status line` });
      if (oversize) return finish({ answer: 'killed without a close frame after an oversize frame' });
      finish({ answer: '1006', failure: `closed (${why}) without a close frame${welcomed ? ' after the welcome' : ''}` });
    };
    s.on('error', (e: NodeJS.ErrnoException) => onGone(e.code ?? e.message));
    s.on('close', () => onGone('close'));
    s.on('connect', () => s.write(input.upgrade));
  });
}
