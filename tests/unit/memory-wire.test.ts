// The in-memory wire (server/src/memory-wire.ts): what a socket gives the coordinator (frames in
// order, copied, asynchronous; a refused frame closes with its code; the handler hears of a close
// once), without a socket. The handler here only records what the wire tells it.
import { describe, expect, it } from 'vitest';
import { CLOSE, MSG, ProtocolError, decodeFrame, encode, type Message } from '@tabtrain/shared';
import { MemoryWire, type Endpoint } from '../../server/src/memory-wire';
import type { Peer, PeerHandler } from '../../server/src/wire';

interface Rec extends Peer { joinedAt: number | null }

/** A handler that records every call; `refuse` makes message() throw. */
function recorder(refuse?: (msg: Message) => Error | null) {
  const messages: { id: number; msg: Message; body: Uint8Array }[] = [];
  const gone: { id: number; code: number; reason: string; byUs: boolean }[] = [];
  const handler: PeerHandler<Rec> = {
    open: (p) => ({ ...p, joinedAt: null }),
    message: (p, msg, body) => {
      const e = refuse?.(msg);
      if (e) throw e;
      if (msg.type === MSG.hello) p.joinedAt = Date.now();
      messages.push({ id: p.id, msg, body });
    },
    gone: (p, code, reason, byUs) => { gone.push({ id: p.id, code, reason, byUs }); },
    joined: (p) => p.joinedAt !== null,
    idle: () => true,
  };
  return { handler, messages, gone };
}

async function wireWith(refuse?: (msg: Message) => Error | null, helloTimeoutMs = 60_000) {
  const log: string[] = [];
  const r = recorder(refuse);
  let peers: Rec[] = [];
  const wire = new MemoryWire<Rec>({ helloTimeoutMs, log: (l) => log.push(l) }, {
    ...r.handler, open: (p) => { const rec = r.handler.open(p); peers.push(rec); return rec; },
  });
  await wire.listen();
  return { wire, log, peers: () => peers, ...r, reset: () => { peers = []; } };
}

/** What an endpoint receives, and its close. */
function listen(e: Endpoint) {
  const frames: Uint8Array[] = [];
  const closes: { code: number; reason: string }[] = [];
  e.onFrame = (f) => frames.push(f);
  e.onClose = (code, reason) => closes.push({ code, reason });
  return { frames, closes };
}

/**
 * Lets every delivery under way happen: each pipe hands over one frame per macrotask
 * (setImmediate), so rounds of setImmediate, not a wall-clock wait that a loaded machine outruns.
 */
const tick = async () => { for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r)); };
const status = (tensors: number) => encode({ type: MSG.status, tensors, bytes: 0 });

describe('MemoryWire', () => {
  it('an invalid frame closes the peer with the named code, one log line as the transport\'s, and the handler hears gone once', async () => {
    const w = await wireWith();
    const e = w.wire.connect();
    const heard = listen(e);
    await e.send(new Uint8Array([1, 2, 3]));
    await e.send(status(1)); // behind the bad frame: never read
    await tick();
    expect(w.messages).toEqual([]);
    expect(w.gone).toEqual([{ id: 1, code: CLOSE.malformed, reason: 'frame of 3 bytes is shorter than its length prefix', byUs: true }]);
    expect(w.log).toEqual([`worker #1 (memory) closed: malformed (${CLOSE.malformed}) frame of 3 bytes is shorter than its length prefix`]);
    expect(heard.closes).toEqual([{ code: CLOSE.malformed, reason: 'frame of 3 bytes is shorter than its length prefix' }]);
    expect(e.closed).toBe(true);
    await expect(e.send(status(2))).rejects.toThrow(/closed/);
    // A later close from either side tells no one again.
    e.close(1000, 'bye');
    w.wire.drop(w.peers()[0], CLOSE.unexpected, 'again');
    await w.wire.close(CLOSE.finished, 'run finished');
    await tick();
    expect(w.gone).toHaveLength(1);
    expect(heard.closes).toHaveLength(1);
  });

  it('what the handler refuses closes with its ProtocolError\'s code; any other error with malformed, "internal: …"', async () => {
    const w = await wireWith((m) => m.type !== MSG.status ? null : (m.tensors === 1 ? new ProtocolError(CLOSE.unexpected, 'not now') : new Error('boom')));
    const a = w.wire.connect();
    const b = w.wire.connect();
    const ha = listen(a), hb = listen(b);
    await a.send(status(1));
    await b.send(status(2));
    await tick();
    expect(w.gone).toEqual([
      { id: 1, code: CLOSE.unexpected, reason: 'not now', byUs: true },
      { id: 2, code: CLOSE.malformed, reason: 'internal: boom', byUs: true },
    ]);
    expect(ha.closes).toEqual([{ code: CLOSE.unexpected, reason: 'not now' }]);
    expect(hb.closes).toEqual([{ code: CLOSE.malformed, reason: 'internal: boom' }]);
  });

  it('frames arrive in order, later than sent, each a copy, both ways; queued() is what is not yet delivered', async () => {
    const w = await wireWith();
    const e = w.wire.connect();
    const heard = listen(e);
    // Worker → coordinator: one buffer reused for every frame, as WorkerCore reuses its gradient
    // frames once a send resolves; the coordinator keeps the bodies it was handed (as it keeps a
    // shard's gradient frames until the step is applied).
    const buf = encode({ type: MSG.status, tensors: 0, bytes: 0 }, new Uint8Array(4));
    for (let i = 0; i < 5; i++) {
      buf.set(encode({ type: MSG.status, tensors: i, bytes: 0 }, new Uint8Array(4).fill(i)));
      const sent = e.send(buf);
      expect(w.messages).toHaveLength(i); // not delivered within send
      await sent; // resolved: the coordinator has it
      expect(w.messages).toHaveLength(i + 1);
    }
    expect(w.messages.map((m) => (m.msg as { tensors: number }).tensors)).toEqual([0, 1, 2, 3, 4]);
    expect(w.messages.map((m) => [...m.body])).toEqual([0, 1, 2, 3, 4].map((i) => [i, i, i, i]));
    // Coordinator → workers: one cached frame sent to two peers, then overwritten.
    const f = w.wire.connect();
    const heardF = listen(f);
    const [p1, p2] = w.peers();
    const frame = encode({ type: MSG.notice, state: 'running', message: 'first' }, new Uint8Array([7, 7, 7, 7]));
    w.wire.send(p1, frame);
    w.wire.send(p2, frame);
    w.wire.send(p1, encode({ type: MSG.notice, state: 'running', message: 'second' }));
    expect(w.wire.queued(p1)).toBe(frame.byteLength + encode({ type: MSG.notice, state: 'running', message: 'second' }).byteLength);
    frame.fill(0);
    await tick();
    expect(w.wire.queued(p1)).toBe(0);
    const read = (x: Uint8Array) => { const { header, body } = decodeFrame(x); return [(header as { message: string }).message, [...body]]; };
    expect(heard.frames.map(read)).toEqual([['first', [7, 7, 7, 7]], ['second', []]]);
    expect(heardF.frames.map(read)).toEqual([['first', [7, 7, 7, 7]]]);
    expect(heard.frames[0]).not.toBe(heardF.frames[0]);
    expect(w.wire.bytesOut).toBe(p1.bytesOut + p2.bytesOut);
    expect(w.wire.bytesIn).toBe(5 * buf.byteLength);
    expect(w.wire.opened).toBe(2);
  });

  it('a worker\'s close reaches the coordinator behind the frames it sent before (gone, not by us); close() ends every peer', async () => {
    const w = await wireWith();
    const a = w.wire.connect('a');
    const b = w.wire.connect('b');
    const ha = listen(a), hb = listen(b);
    await a.send(status(1));
    a.close(1006, 'killed');
    await tick();
    expect(w.messages.map((m) => m.id)).toEqual([1]);
    expect(w.gone).toEqual([{ id: 1, code: 1006, reason: 'killed', byUs: false }]);
    expect(ha.closes).toEqual([{ code: 1006, reason: 'killed' }]);
    w.wire.send(w.peers()[1], status(9));
    await w.wire.close(CLOSE.finished, 'run finished');
    expect(w.gone[1]).toEqual({ id: 2, code: CLOSE.finished, reason: 'run finished', byUs: true });
    await tick();
    expect(hb.frames).toHaveLength(1); // the frame sent before the close came first
    expect(hb.closes).toEqual([{ code: CLOSE.finished, reason: 'run finished' }]);
    expect(() => w.wire.connect()).toThrow(/not listening/);
  });

  it('a peer that says no hello within helloTimeoutMs is closed helloTimeout; one that did is not', async () => {
    const w = await wireWith(undefined, 300);
    const silent = listen(w.wire.connect());
    const hello = w.wire.connect();
    listen(hello);
    await hello.send(encode({ type: MSG.hello, protocol: 1, workerId: 'w', kind: 'node', backend: 'cpu', adapter: null, modelHashes: {} } as Message));
    await tick();
    expect(w.messages.map((m) => m.msg.type)).toEqual([MSG.hello]);
    await new Promise((r) => setTimeout(r, 600));
    await tick();
    expect(w.gone).toEqual([{ id: 1, code: CLOSE.helloTimeout, reason: 'no hello within 300 ms', byUs: true }]);
    expect(silent.closes).toEqual([{ code: CLOSE.helloTimeout, reason: 'no hello within 300 ms' }]);
  });
});
