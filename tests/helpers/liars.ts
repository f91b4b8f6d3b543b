// Helpers for hostile and Byzantine tests: raw frames and sockets, honest worker cores whose
// outgoing frames a test rewrites (liars), and small HTTP/TCP probes of a live coordinator. The
// peers (join, liar, colluder, churn, badFrames) connect to a URL over a real socket, or to an
// in-process run over its in-memory wire (peer-link.ts).
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import WebSocket from 'ws';
import { Packr } from 'msgpackr';
import { PROTOCOL_VERSION, decodeFrame, encode, getModel, paramLayout, zooHashes, type Assign, type Message, type Welcome } from '@tabtrain/shared';
import { NO_COMPRESSION, planSegments } from '@tabtrain/shared/compress';
import { WorkerCore } from '../../client/src/core';
import { Coordinator, DEFAULTS } from '../../server/src/coordinator';
import type { Dataset } from '../../server/src/data';
import * as dashboardModule from '../../server/src/dashboard';
import { data, type TestRunOptions } from './run';
import { dial, socketOf, type Closed, type Link, type Target } from './peer-link';

export type { Closed } from './peer-link';

const packr = new Packr({ useRecords: false });

/** A frame with an arbitrary header, bypassing encode()'s types. */
export function rawFrame(header: unknown, body: ArrayLike<number> = []): Uint8Array {
  const head = packr.pack(header);
  const at = (4 + head.length + 3) & ~3;
  const f = new Uint8Array(at + body.length);
  new DataView(f.buffer).setUint32(0, head.length, true);
  f.set(head, 4);
  f.set(body, at);
  return f;
}

/** A valid hello (a random workerId), with fields overridden. */
export const hello = (over: Record<string, unknown> = {}) => rawFrame({
  type: 'hello', protocol: PROTOCOL_VERSION, workerId: `hostile-${Math.random()}`, kind: 'node', backend: 'evil', adapter: null, modelHashes: zooHashes(), ...over,
});

/** Opens a socket, runs `act`, resolves with the close code and reason the coordinator sent. */
export function attack(url: string, act: (ws: WebSocket) => void, timeoutMs = 20_000): Promise<Closed> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no close within ${timeoutMs} ms`)); }, timeoutMs);
    ws.on('open', () => act(ws));
    ws.on('close', (code, reason) => { clearTimeout(timer); resolve({ code, reason: reason.toString() }); });
    ws.on('error', () => {});
  });
}

/** A peer that said hello and is kept open: its welcome, its frames, its close. */
export interface JoinedPeer {
  link: Link;
  welcome: Promise<Welcome>;
  /** Headers of every frame the coordinator sent it. */
  received: Message[];
  closed: Promise<Closed>;
}

/** A JoinedPeer on a real socket. */
export interface Joined extends JoinedPeer { ws: WebSocket }

/**
 * Connects and sends `helloFrame` (when given) as soon as it is open; never answers anything else.
 * To a URL, a real socket (`ws`); to an in-process run, its in-memory wire.
 */
export function join(url: string, helloFrame?: Uint8Array): Joined;
export function join(to: Target, helloFrame?: Uint8Array): JoinedPeer;
export function join(to: Target, helloFrame?: Uint8Array): JoinedPeer & { ws?: WebSocket } {
  // No cap of our own on frames: the ws default (100 MiB), as a plain client has.
  const link = dial(to, 100 << 20);
  const received: Message[] = [];
  let gotWelcome: (w: Welcome) => void = () => {};
  const welcome = new Promise<Welcome>((r) => { gotWelcome = r; });
  void link.opened.then(() => { if (helloFrame) void link.send(helloFrame); });
  link.onFrame((d) => {
    const m = decodeFrame(d).header as Message;
    received.push(m);
    if (m.type === 'welcome') gotWelcome(m as Welcome);
  });
  return { link, ws: socketOf(link), welcome, received, closed: link.closed };
}

export const opened = (ws: WebSocket) => new Promise<void>((r, j) => {
  if (ws.readyState === WebSocket.OPEN) return r();
  ws.once('open', () => r());
  ws.once('error', j);
});

/** Rewrites one outgoing frame of an honest core into the frames actually sent (none to drop it). */
export type Tamper = (frame: Uint8Array, msg: Message) => Uint8Array[];

/** A real worker core in this process (the test's tfjs backend) whose outgoing frames are rewritten. */
export interface Liar {
  /** Results it sent, per task: how many shards it computed before it was closed. */
  sent: { train: number; eval: number };
  welcome: Promise<Welcome>;
  /** The workerId the coordinator gave it (once welcomed). */
  workerId: () => string;
  closed: Promise<Closed>;
  link: Link;
}

/** A liar connected to `to` (a URL: a real socket; an in-process run: its in-memory wire). Without `local` or `token` it is a stranger, on probation. */
export function liar(to: Target, tamper: Tamper, identity: { workerId?: string; token?: string; local?: string } = {}): Liar {
  const link = dial(to);
  const sent = { train: 0, eval: 0 };
  let id = identity.workerId ?? `liar-${Math.random().toString(36).slice(2)}`;
  let gotWelcome: (w: Welcome) => void = () => {};
  const welcome = new Promise<Welcome>((r) => { gotWelcome = r; });
  const send = async (frame: Uint8Array) => {
    const out = tamper(frame, decodeFrame(frame).header as Message);
    for (const f of out) {
      const m = decodeFrame(f).header as Message;
      if (m.type === 'result') sent[m.task]++;
    }
    if (!link.isOpen) return;
    await Promise.all(out.map((f) => link.send(f)));
  };
  const core = new WorkerCore({ workerId: id, kind: 'node', backend: 'cpu', adapter: null, token: identity.token, local: identity.local }, send);
  const closed = link.closed.then((c) => { core.dispose(); return c; });
  void link.opened.then(() => link.send(core.hello()));
  link.onFrame((d) => {
    const m = decodeFrame(d).header as Message;
    if (m.type === 'welcome') { id = (m as Welcome).workerId; gotWelcome(m as Welcome); }
    core.receive(d).catch(() => {});
  });
  return { sent, welcome, workerId: () => id, closed, link };
}

/** Honest: every frame as the core made it. */
export const honest: Tamper = (f) => [f];

/** A tiny seeded PRNG (mulberry32), so a liar's garbage is reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The fp32 body of a gradient frame, copied (the core reuses its frames). */
export function gradientBody(frame: Uint8Array): Float32Array {
  return new Float32Array(decodeFrame(frame).body.slice().buffer);
}

/** Liar (a): garbage but finite gradient values, uniform in ±1e3. */
export function garbageGradient(seed = 1): Tamper {
  const rnd = prng(seed);
  return (f, m) => {
    if (m.type !== 'gradient') return [f];
    const g = gradientBody(f);
    for (let i = 0; i < g.length; i++) g[i] = (rnd() * 2 - 1) * 1e3;
    return [encode(m, g)];
  };
}

/** Liar (b): the honest gradient × k. */
export function scaledGradient(k = 1000): Tamper {
  return (f, m) => {
    if (m.type !== 'gradient') return [f];
    const g = gradientBody(f);
    for (let i = 0; i < g.length; i++) g[i] *= k;
    return [encode(m, g)];
  };
}

/**
 * Honest for its first `shards` train results (its probation and then some), then `tamper`: a liar
 * that waits until it is trusted. `lies.frames` counts the frames it rewrote.
 */
export function afterShards(shards: number, tamper: Tamper): Tamper & { lies: { frames: number; from: number } } {
  let results = 0;
  const lies = { frames: 0, from: -1 };
  const t = ((f, m) => {
    if (m.type === 'result' && m.task === 'train') results++;
    if (results < shards || m.type !== 'gradient') return [f];
    const out = tamper(f, m);
    if (out[0] !== f) { lies.frames++; if (lies.from < 0) lies.from = m.step; }
    return out;
  }) as Tamper & { lies: { frames: number; from: number } };
  t.lies = lies;
  return t;
}

/** Liar (d): the honest fp32 gradient negated: the same norm, the opposite direction. */
export const negatedGradient: Tamper = (f, m) => {
  if (m.type !== 'gradient' || (m.codec ?? 'fp32') !== 'fp32') return [f];
  const g = gradientBody(f);
  for (let i = 0; i < g.length; i++) g[i] = -g[i];
  return [encode(m, g)];
};

/** Liar (e): a random direction with each fp32 frame's norm (Gaussian, seeded). */
export function randomDirection(seed = 1): Tamper {
  const rnd = prng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  return (f, m) => {
    if (m.type !== 'gradient' || (m.codec ?? 'fp32') !== 'fp32') return [f];
    const g = gradientBody(f);
    let n2 = 0, r2 = 0;
    const r = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) { n2 += g[i] * g[i]; r[i] = gauss(); r2 += r[i] * r[i]; }
    const k = Math.sqrt(n2 / r2);
    for (let i = 0; i < g.length; i++) r[i] *= k;
    return [encode(m, r)];
  };
}

/**
 * Liar (f): a compressed frame negated: int8 codes (the scales stay, so its norm bound is the
 * honest one), or fp16 halves' sign bits. Its fp32 probation copies are honest.
 */
export function negatedCodes(codec: 'int8' | 'fp16', pieces: (offset: number) => number): Tamper {
  return (f, m) => {
    if (m.type !== 'gradient' || m.codec !== codec) return [f];
    const body = decodeFrame(f).body.slice();
    if (codec === 'int8') {
      const at = 4 * pieces(m.offset);
      const codes = new Int8Array(body.buffer, at, body.byteLength - at);
      for (let i = 0; i < codes.length; i++) codes[i] = -codes[i];
    } else {
      const h = new Uint16Array(body.buffer, 0, body.byteLength >> 1);
      for (let i = 0; i < h.length; i++) h[i] ^= 0x8000;
    }
    return [encode(m, body)];
  };
}

/** Liar (c): eval results claim every example correct; honest otherwise. */
export const forgedEval: Tamper = (f, m) => (m.type === 'result' && m.task === 'eval' ? [encode({ ...m, correct: m.count })] : [f]);

/** Rewrites the result header's fields (any values, bypassing types). */
export function forgedResult(over: Record<string, unknown>, task: 'train' | 'eval' = 'train'): Tamper {
  return (f, m) => (m.type === 'result' && m.task === task ? [rawFrame({ ...m, ...over })] : [f]);
}

// ---- HTTP and raw TCP ----

/** The coordinator's dashboard routes (/api/status, /api/control, /api/events): attached once if the coordinator does not attach them itself. */
export function ensureDashboard(coord: Coordinator): void {
  const c = coord as unknown as { dashboard?: unknown; routes?: unknown[] };
  if (c.dashboard !== undefined) return; // the coordinator makes its own
  if (Array.isArray(c.routes) && c.routes.length > 0) return; // someone attached one already
  const D = (dashboardModule as unknown as { Dashboard: new (c: Coordinator) => unknown }).Dashboard;
  new D(coord);
}

/** startCoordinator (helpers/run.ts) on any dataset (a subset: short epochs with evaluation), with its dashboard routes. */
export async function startOn(dataset: Dataset | null, opts: TestRunOptions): Promise<{ coord: Coordinator; port: number; url: string; base: string; lines: string[] }> {
  const lines: string[] = [];
  const coord = new Coordinator({
    epochs: 1, batch: 16, seed: 7, balance: 'equal', port: 0, host: '127.0.0.1', minWorkers: 1, evalExamples: 1000,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {}, ...opts,
  }, dataset ?? data());
  ensureDashboard(coord);
  const port = await coord.listen();
  return { coord, port, url: `ws://127.0.0.1:${port}/ws`, base: `http://127.0.0.1:${port}`, lines };
}

/** GET a path: status, body text, bytes and milliseconds. */
export async function get(base: string, path: string, init: RequestInit = {}): Promise<{ status: number; text: string; bytes: number; ms: number; headers: Headers }> {
  const t0 = performance.now();
  const r = await fetch(`${base}${path}`, init);
  const text = await r.text();
  return { status: r.status, text, bytes: Buffer.byteLength(text), ms: performance.now() - t0, headers: r.headers };
}

/** Sends raw bytes over TCP; resolves with everything the server sent until it closed (or `until` matched, or timeout). */
export function rawHttp(port: number, bytes: string | Buffer, opts: { until?: RegExp; timeoutMs?: number; keepSending?: (s: Socket) => void } = {}): Promise<{ text: string; ended: boolean; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = connect(port, '127.0.0.1');
    let text = '';
    let done = false;
    const finish = (ended: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text, ended, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5000);
    s.on('connect', () => { s.write(bytes); opts.keepSending?.(s); });
    s.on('data', (d) => { text += d.toString('latin1'); if (opts.until?.test(text)) finish(true); });
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
  });
}

/** The status code of an HTTP response text, or -1. */
export const statusOf = (text: string) => Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? -1);

/** An HTTP request over node:http with an explicit method; resolves when the response has ended. */
export function httpRequest(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: Record<string, unknown>; text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? -1, headers: res.headers, text, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds (true) or `ms` pass (false). */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

/** The WebSocket upgrade request a browser would send, for any request target. */
export function upgradeRequest(target: string, extra = ''): string {
  return `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`;
}

/** A masked client→server WebSocket binary frame (RFC 6455 §5.2), for raw-TCP clients. */
export function maskedFrame(payload: Uint8Array, opcode = 0x2): Buffer {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.alloc(head + 4 + n);
  out[0] = 0x80 | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) { out[1] = 0x80 | 126; out.writeUInt16BE(n, 2); }
  else { out[1] = 0x80 | 127; out.writeBigUInt64BE(BigInt(n), 2); }
  const mask = [0x12, 0x34, 0x56, 0x78];
  out.set(mask, head);
  for (let i = 0; i < n; i++) out[head + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

// ---- identities that come back ----

/** `n` short connections that say hello and leave once welcomed: churn that pushes older rows out of the status table (it keeps 64 lost ones). */
export async function churn(to: Target, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const j = join(to, hello({ workerId: `churn-${i}-${Math.random()}` }));
    await Promise.race([j.welcome, j.closed]);
    j.link.close();
    await j.closed;
  }
}

/**
 * A worker that answers every shard it is given with an invalid gradient frame (a slice at the
 * wrong offset: the coordinator closes it 4009) and reconnects under its workerId with the session
 * secret of its last welcome, for up to `tries` connections or until it is refused (4016).
 * Resolves with the close of each connection.
 */
export async function badFrames(to: Target, tries: number, token?: string): Promise<Closed[]> {
  const workerId = `bad-frames-${Math.random().toString(36).slice(2)}`;
  const closes: Closed[] = [];
  let session: string | undefined;
  for (let i = 0; i < tries; i++) {
    const j = join(to, hello({ workerId, ...(session ? { session } : {}), ...(token ? { token } : {}) }));
    j.link.onFrame((d) => {
      const m = decodeFrame(d).header as Message;
      if (m.type === 'assign') void j.link.send(rawFrame({ type: 'gradient', step: m.step, shard: m.shard, offset: 4, total: 4 }, new Uint8Array(16)));
    });
    const w = await Promise.race([j.welcome, j.closed.then(() => null)]);
    if (w) session = w.session;
    const closed = await j.closed;
    closes.push(closed);
    if (closed.code === 4016) break;
  }
  return closes;
}

/**
 * A stranger that computes nothing: every shard it is given (a probation shadow, an fp32 one in
 * compressed runs) it answers with the same fabricated fp32 gradient (every float `value`) and a
 * perfect score. Two of them agree with each other on every shard: colluders.
 */
export function colluder(to: Target, model: string, value = 1e-3): JoinedPeer & { answered: () => number } {
  const { params, total } = paramLayout(getModel(model));
  const plan = planSegments(params, total, NO_COMPRESSION);
  const j = join(to, hello({ workerId: `colluder-${Math.random().toString(36).slice(2)}` }));
  let answered = 0;
  j.link.onFrame((d) => {
    const m = decodeFrame(d).header as Message;
    if (m.type !== 'assign') return;
    const a = m as Assign;
    if (a.task === 'train') for (const s of plan) void j.link.send(encode({ type: 'gradient', step: a.step, shard: a.shard, offset: s.offset, total }, new Float32Array(s.count).fill(value)));
    void j.link.send(encode({ type: 'result', task: a.task, step: a.step, shard: a.shard, lossSum: 0.01 * a.count, correct: a.count, count: a.count, timings: { computeMs: 1, encodeMs: 0, sendMs: 0 } }));
    answered++;
  });
  return { ...j, answered: () => answered };
}
