// Workers that lie about their pace (issue 24): a real core in this process computing with the
// synthetic net (the benchmark's stand-in GPU, synthetic.ts: a sleep per example and a fixed
// gradient, the same as honest `--synthetic-ms-per-example` workers send), whose timings claims and
// upload are rewritten. Only what the coordinator measures can expose them.
import WebSocket from 'ws';
import { decodeFrame, encode, type Message, type Welcome } from '@tabtrain/shared';
import { WorkerCore, type WorkerIdentity } from '../../client/src/core';
import { LOCAL_KEY } from '../../server/src/secrets';
import { dial, socketOf, type Closed, type Link, type Target } from './peer-link';

export interface PaceLiarOptions {
  /** Its compute: the synthetic net (synthetic.ts) at this many ms per example, so that no tfjs work blocks the test process's clock. */
  msPerExample: number;
  /** The timings it reports in every result, whatever it measured. */
  claim?: { computeMs: number; encodeMs: number; sendMs: number };
  /** Sends each gradient message as this many WebSocket fragments, `fragmentGapMs` apart, with a ping before the last. */
  fragments?: number;
  fragmentGapMs?: number;
  /** Sends nothing more after this many train results (a staller). */
  stallAfter?: number;
  /** Asks for the full weights (resync) at every train assign, as a replica that never matches would. */
  resyncEveryAssign?: boolean;
  /** Who it is: pass the same object again to reconnect as the same worker (its session secret is kept in it). Default: a new identity with the local key. */
  identity?: WorkerIdentity;
}

export interface PaceLiar {
  welcome: Promise<Welcome>;
  /** Gradient bytes it sent, and the ms from each gradient message's first fragment to its last. */
  upload: { bytes: number; ms: number };
  /** Full copies of the weights it was sent (weights frames: one per copy for a model under CHUNK_FLOATS). */
  copies: () => number;
  link: Link;
  closed: Promise<Closed>;
  /** Gone without a close frame. */
  close: () => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A worker with the local key (established: its shards count at once) that lies about its pace,
 * connected to `to` (a URL: a real socket; an in-process run: its in-memory wire). Fragments need
 * the socket: the in-memory wire carries whole messages.
 */
export function paceLiar(to: Target, o: PaceLiarOptions): PaceLiar {
  const link = dial(to);
  const ws = socketOf(link);
  if ((o.fragments ?? 1) > 1 && !ws) throw new Error('fragments are a socket\'s: paceLiar needs a ws:// URL for them');
  const upload = { bytes: 0, ms: 0 };
  let results = 0;
  const send = async (frame: Uint8Array) => {
    const m = decodeFrame(frame).header as Message;
    if (o.stallAfter !== undefined && results >= o.stallAfter) return;
    if (m.type === 'result' && m.task === 'train') results++;
    if (m.type === 'result' && o.claim) return link.send(encode({ ...m, timings: o.claim }));
    const k = o.fragments ?? 1;
    if (m.type !== 'gradient' || k <= 1 || !ws) return link.send(frame);
    const sendOne = (data: Uint8Array, fin: boolean) => new Promise<void>((res) => {
      if (ws.readyState !== WebSocket.OPEN) return res();
      ws.send(Buffer.from(data), { binary: true, fin }, () => res());
    });
    const t0 = performance.now();
    const size = Math.ceil(frame.byteLength / k);
    for (let i = 0; i < k; i++) {
      if (i > 0) await sleep(o.fragmentGapMs ?? 0);
      // A ping before the last fragment: it must not restart the coordinator's timing of the message.
      if (i === k - 1 && ws.readyState === WebSocket.OPEN) ws.ping();
      await sendOne(frame.subarray(i * size, Math.min(frame.byteLength, (i + 1) * size)), i === k - 1);
    }
    upload.bytes += frame.byteLength;
    upload.ms += performance.now() - t0;
  };
  const identity = o.identity ?? { workerId: `pace-liar-${Math.random().toString(36).slice(2)}`, kind: 'node', backend: 'cpu', adapter: null, local: LOCAL_KEY };
  const core = new WorkerCore(identity, send, { syntheticMsPerExample: o.msPerExample });
  let gotWelcome: (w: Welcome) => void = () => {};
  const welcome = new Promise<Welcome>((r) => { gotWelcome = r; });
  void link.opened.then(() => link.send(core.hello()));
  let copies = 0;
  link.onFrame((d) => {
    const m = decodeFrame(d).header as Message;
    if (m.type === 'welcome') gotWelcome(m as Welcome);
    if (m.type === 'weights') copies++;
    if (m.type === 'assign' && m.task === 'train' && o.resyncEveryAssign) void link.send(encode({ type: 'resync', version: m.version }));
    core.receive(d).catch(() => {});
  });
  const closed = link.closed.then((c) => { core.dispose(); return c; });
  return { welcome, upload, copies: () => copies, link, closed, close: () => link.terminate() };
}
