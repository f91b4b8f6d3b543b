// A seeded mutation fuzzer for the coordinator's two front doors, the WebSocket protocol and the
// HTTP routes. Both go over raw TCP (node:net), so that anything at all can be sent: broken
// request lines, absurd headers, bodies shorter or longer than they claim, WebSocket frames that
// no library would write, and protocol frames mutated from valid ones.
//
// Every input must be answered. An HTTP request gets a status line (before or after the client
// half-closes); a response that is not an event stream must end (a pipelined probe behind it is
// answered, or the server closes). A WebSocket upgrade gets a status line (101 or another); after
// a 101 the coordinator either closes with a close frame (its code is the answer) or welcomes
// the hello, and the fuzzer then closes the worker itself within about a second. A socket that
// closes without a close frame (1006) is a failure, except after a frame over the payload limit
// that the ws library kills. Every input comes from its own PRNG stream (seed, index), so one
// input replays alone: FUZZ_SEED=s FUZZ_ONLY=i,j.
import net from 'node:net';
import { CLOSE_NAMES, MSG, PROTOCOL_VERSION, decodeFrame, zooHashes } from '@tabtrain/shared';
import { colluder, hello as helloFrame, join, rawFrame, type Closed } from './liars';

// ---- strangers beside the inputs: colluders that arrive first, a leaver on probation ----

/**
 * Two strangers that connect before the run's own workers and agree with each other: each answers
 * every shard it is given with the same fabricated gradient and a perfect score (liars.ts,
 * colluder). Agreement among workers nobody vouches for must count for nothing: they only ever get
 * probation shadows, judged against an established worker's copy. Resolves once both are welcomed.
 */
export async function earlyColluders(url: string, model: string): Promise<{ closed: Promise<Closed[]>; answered: () => number }> {
  const cs = [colluder(url, model), colluder(url, model)];
  await Promise.all(cs.map((c) => c.welcome));
  return { closed: Promise.all(cs.map((c) => c.closed)), answered: () => cs.reduce((a, c) => a + c.answered(), 0) };
}

/** A stranger that leaves (without a close frame) as soon as it is given its first probation shard; resolves with that shard's step. */
export function leaverOnProbation(url: string): Promise<number> {
  const j = join(url, helloFrame({ workerId: `fuzz-leaver-${Math.random()}` }));
  return new Promise((resolve) => j.ws.on('message', (d: Buffer) => {
    const m = decodeFrame(d).header as { type: string; step?: number };
    if (m.type === MSG.assign) { j.ws.terminate(); resolve(m.step!); }
  }));
}

// ---- a seeded PRNG (sfc32), one stream per input ----

export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number, stream = 0) {
    this.a = seed >>> 0; this.b = (stream * 0x9e3779b9) >>> 0; this.c = 0x6a09e667 ^ stream; this.d = 1;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  float(): number { return this.u32() / 2 ** 32; }
  /** 0 ≤ int(n) < n */
  int(n: number): number { return Math.floor(this.float() * n); }
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.float() < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]; }
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let r = this.float() * items.reduce((a, [w]) => a + w, 0);
    for (const [w, v] of items) { if ((r -= w) < 0) return v; }
    return items[items.length - 1][1];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 255;
    }
    return out;
  }
  /** A size on a log scale between lo and hi. */
  logSize(lo: number, hi: number): number { return Math.round(lo * (hi / lo) ** this.float()); }
}

/** FUZZ_SEED if set, else a fresh random seed. */
export function fuzzSeed(env = process.env.FUZZ_SEED): number {
  if (env !== undefined && env !== '') {
    const s = Number(env);
    if (!Number.isInteger(s) || s < 0 || s >= 2 ** 32) throw new Error(`FUZZ_SEED must be an integer in [0, 2^32), got ${env}`);
    return s;
  }
  return (Math.random() * 2 ** 32) >>> 0;
}

// ---- values ----

const MULTIBYTE = ['é', 'ñ', 'ß', 'Ω', 'Ж', '中', '文', '字', '漢', 'の', '한', '😀', '🦄', '🔥', '👩‍👩‍👧‍👦', '🏳️‍🌈', 'e\u0301', 'a\u0308\u0323', 'Z\u0335\u0321\u0334', '\u200d', '\ufeff', '\u202e', 'ﷺ', '\u{10ffff}', '\ud800', '\0'];

/** A string of `n` multi-byte characters (emoji, CJK, combining marks, a lone surrogate, NUL). */
function multibyte(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(MULTIBYTE);
  return s;
}

/** Strings of every kind: empty, ASCII, multi-byte (often longer than a 123-byte close reason), long. */
function weirdString(rng: Rng, allowHuge: boolean): string {
  return rng.weighted<() => string>([
    [1, () => ''],
    [1, () => 'x'],
    [1, () => ' '],
    [2, () => multibyte(rng, rng.range(1, 8))],
    [4, () => multibyte(rng, rng.range(30, 300))],
    [1, () => 'A'.repeat(rng.pick([255, 256, 257, 1000, 65_536]))],
    [1, () => '中'.repeat(rng.pick([41, 42, 100, 256, 257]))],
    [1, () => rng.pick(['hello', 'gradient', 'result', 'train', 'eval', 'node', 'browser', '__proto__', 'constructor', 'toString', 'null', 'NaN', '-1', '0x10', '1e308', '%s%n', '${x}', '\r\n\r\n', '<script>', 'alexnet-tiny', 'welcome'])],
    [allowHuge ? 0.2 : 0, () => rng.pick(['a', '中', '😀']).repeat(rng.logSize(1 << 19, 10 << 20) >> 1)],
  ])();
}

/** A value of some type, meant to replace a field of another type. */
export function weirdValue(rng: Rng, allowHuge = false): unknown {
  return rng.weighted<() => unknown>([
    [4, () => weirdString(rng, allowHuge)],
    [1, () => rng.pick([0, -1, 1, 2, 3, 7, 255, 256, 65_535, 2 ** 31, 2 ** 32, 2 ** 32 - 1])],
    [1, () => rng.pick([-0, 0.5, -1.5, 1e-308, 5e-324, 1e308, -1e308, 1.7976931348623157e308])],
    [1, () => rng.pick([NaN, Infinity, -Infinity])],
    [1, () => rng.pick([2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 64, -(2 ** 63), Number.MAX_SAFE_INTEGER])],
    // msgpack uint64/int64: they decode as BigInt, which JSON.stringify refuses.
    [1, () => rng.pick([2n ** 64n - 1n, 2n ** 63n, -(2n ** 63n), 5n, 0n])],
    [1, () => rng.pick([null, undefined, true, false])],
    [1, () => rng.pick([[], [1, 2, 3], [null], ['hello'], [[[[]]]]])],
    [1, () => rng.pick<Record<string, unknown>>([{}, { a: 1 }, { type: 'hello' }, { __proto__x: 1, constructor: 'x' }])],
    [0.5, () => new Date(rng.pick([0, NaN, 8.64e15, -1]))],
    [0.5, () => new Uint8Array(rng.pick([0, 1, 7, 4096]))],
    [0.3, () => nested(rng.pick([100, 1000, 3000, 5000, 20_000]))],
    [allowHuge ? 0.3 : 0, () => (rng.chance(0.5) ? new Uint8Array(rng.logSize(1 << 20, 10 << 20)) : Array.from({ length: rng.logSize(10_000, 300_000) }, (_, i) => i))],
  ])();
}

function nested(depth: number): unknown {
  let v: unknown = null;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

// ---- protocol frames ----



export interface Target {
  host: string;
  port: number;
  /** The run's parameter count (gradient lengths). */
  paramCount: number;
  /** The run's step now (templates aim at it). */
  step: () => number;
  /** The admin token the coordinator was started with (the fuzzer never sends pause/resume/stop with it). */
  adminToken: string;
  /** A static file that exists under the coordinator's static dir, e.g. /assets/app.js. */
  staticFile: string;
}

function f32(n: number, nanAt = 0): Uint8Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = (i % 7) * 1e-3;
  if (n) g[Math.min(nanAt, n - 1)] = NaN;
  return new Uint8Array(g.buffer);
}

type Header = Record<string, unknown>;

function helloHeader(rng: Rng, id: string): Header {
  return {
    type: MSG.hello, protocol: PROTOCOL_VERSION, workerId: id, kind: rng.pick(['node', 'browser']), backend: rng.pick(['fuzz', 'wasm', 'webgpu']),
    adapter: rng.pick([null, { description: 'fuzz adapter', vendor: 'fuzz', architecture: 'x', backendType: 'vulkan', isFallbackAdapter: true }]),
    modelHashes: zooHashes(),
  };
}

/** Templates of every message a worker may send, plus server-only and unknown types. */
function templates(rng: Rng, t: Target, id: string): { name: string; header: Header; body?: Uint8Array }[] {
  const P = t.paramCount;
  const step = t.step();
  const anyStep = () => rng.pick([step, step + 1, 0, 999_999, step > 0 ? step - 1 : 0]);
  const timings = { computeMs: 12.5, encodeMs: 0.5, sendMs: 0.25 };
  return [
    { name: 'hello', header: helloHeader(rng, id) },
    // powersgd's rounds ride on gradient frames; an fp32 run must refuse any round, a powersgd run the wrong one.
    { name: 'gradient', header: { type: MSG.gradient, step: anyStep(), shard: rng.int(4), offset: rng.pick([0, 0, 1, P - 1, P, 2 ** 31]), total: rng.pick([P, P, P + 1, P - 1, 1, 0]), ...(rng.chance(0.3) ? { round: rng.pick([1, 2, 0, 3, '1', null]) } : {}) }, body: f32(rng.pick([1, 16, P, P - 1, P + 1]), rng.int(P)) },
    { name: 'result', header: { type: MSG.result, task: rng.pick(['train', 'eval']), step: anyStep(), shard: rng.int(4), lossSum: 18.4, correct: rng.int(9), count: rng.pick([8, 16, 5, 0]), timings } },
    { name: 'status', header: { type: MSG.status, tensors: 42, bytes: 1 << 20 } },
    { name: 'resync', header: { type: MSG.resync, version: anyStep() } },
    { name: 'server type', header: { type: rng.pick([MSG.welcome, MSG.weights, MSG.assign, MSG.notice, MSG.update, MSG.basis]), version: step, offset: 0, total: P, step, shard: 0, task: 'train', position: 0, count: 8, workerId: id, run: {}, state: 'x', message: 'y', batch: 16, round: rng.pick([1, 2]) }, body: rng.chance(0.5) ? f32(16) : undefined },
    { name: 'unknown type', header: { type: rng.pick(['launch', '', 'HELLO', 'hello ', 'gradient\0', 'constructor', '__proto__', 'toString']), step } },
  ];
}

/** The field paths of a header that structured mutations may touch (nested maps included). */
function paths(h: Header): string[][] {
  const out: string[][] = [];
  for (const [k, v] of Object.entries(h)) {
    out.push([k]);
    if (v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)) for (const k2 of Object.keys(v)) out.push([k, k2]);
  }
  return out;
}

function setPath(h: Header, p: string[], v: unknown, del = false): void {
  let o = h as Record<string, unknown>;
  for (let i = 0; i < p.length - 1; i++) {
    const next = o[p[i]];
    o[p[i]] = next && typeof next === 'object' ? { ...(next as object) } : {};
    o = o[p[i]] as Record<string, unknown>;
  }
  if (del) delete o[p[p.length - 1]];
  else o[p[p.length - 1]] = v;
}

function describeValue(v: unknown): string {
  if (typeof v === 'string') return v.length > 24 ? `string(${v.length} chars, ${Buffer.byteLength(v)} bytes: ${JSON.stringify(v.slice(0, 6))}…)` : JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `bin(${v.length})`;
  if (v instanceof Date) return `Date(${v.getTime()})`;
  if (Array.isArray(v)) return v.length > 8 ? `array(${v.length})` : `array depth ${depth(v)}`;
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  return v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v);
}
function depth(v: unknown): number { let d = 0; while (Array.isArray(v) && d < 1e6) { v = v[0]; d++; } return d; }

/** Structured mutations: fields replaced by other types, deleted, added; the header replaced whole. */
function mutateHeader(rng: Rng, h: Header, notes: string[], allowHuge: boolean): unknown {
  const n = rng.range(1, 2);
  let out: unknown = { ...h };
  for (let i = 0; i < n; i++) {
    const cur = out as Header;
    const kind = rng.weighted<string>([[6, 'replace'], [1, 'delete'], [1, 'add'], [0.6, 'whole'], [1, 'type']]);
    if (kind === 'whole') {
      const v = weirdValue(rng, allowHuge);
      notes.push(`header := ${describeValue(v)}`);
      return v;
    }
    if (kind === 'type') {
      const v = rng.chance(0.6) ? weirdString(rng, false) : weirdValue(rng);
      notes.push(`type := ${describeValue(v)}`);
      cur.type = v;
      continue;
    }
    const ps = paths(cur);
    if (kind === 'add' || ps.length === 0) {
      const key = rng.chance(0.5) ? rng.pick(['__proto__', 'constructor', 'token', 'session', 'local', 'x', '', 'workerId', 'codec', 'hash']) : multibyte(rng, rng.range(1, 40));
      const v = weirdValue(rng, allowHuge);
      notes.push(`add ${JSON.stringify(key.slice(0, 12))} := ${describeValue(v)}`);
      cur[key] = v;
      continue;
    }
    const p = rng.pick(ps);
    if (kind === 'delete') { notes.push(`delete ${p.join('.')}`); setPath(cur, p, undefined, true); continue; }
    const v = weirdValue(rng, allowHuge);
    notes.push(`${p.join('.')} := ${describeValue(v)}`);
    setPath(cur, p, v);
  }
  return out;
}

/** Byte mutations of a whole frame: bit flips, bytes set, truncation, extension, a wrong length prefix. */
export function mutateBytes(rng: Rng, f: Uint8Array, notes: string[], allowHuge = false): Uint8Array {
  const n = rng.range(1, 3);
  let out: Uint8Array = Uint8Array.from(f);
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted<string>([[5, 'flip'], [2, 'set'], [2, 'truncate'], [2, 'extend'], [1, 'length'], [1, 'insert'], [1, 'delete']]);
    // Mutations aim at the front more often: that is where the header lives.
    const pos = () => (out.length === 0 ? 0 : rng.chance(0.7) ? rng.int(Math.min(out.length, 96)) : rng.int(out.length));
    if (kind === 'flip' && out.length) {
      const k = rng.range(1, 8);
      const at: number[] = [];
      for (let j = 0; j < k; j++) { const p = pos(); const bit = rng.int(8); out[p] ^= 1 << bit; at.push(p * 8 + bit); }
      notes.push(`flip bits ${at.join(',')}`);
    } else if (kind === 'set' && out.length) {
      const p = pos(); const v = rng.pick([0x00, 0xff, 0x7f, 0x80, 0xc1, 0xd9, 0xdb, 0xdf, 0xdd, 0xc7, 0xd4, rng.int(256)]);
      out[p] = v;
      notes.push(`byte ${p} := 0x${v.toString(16)}`);
    } else if (kind === 'truncate') {
      const at = rng.int(out.length + 1);
      out = out.slice(0, at);
      notes.push(`truncate to ${at}`);
    } else if (kind === 'extend') {
      const k = allowHuge && rng.chance(0.05) ? rng.logSize(1 << 16, 8 << 20) : rng.range(1, 64);
      const ext = rng.chance(0.5) ? new Uint8Array(k) : rng.bytes(k);
      const o = new Uint8Array(out.length + k); o.set(out); o.set(ext, out.length); out = o;
      notes.push(`extend by ${k}`);
    } else if (kind === 'length' && out.length >= 4) {
      const real = new DataView(out.buffer, out.byteOffset).getUint32(0, true);
      const v = rng.pick([0, 1, real - 1, real + 1, real + 4, out.length, 0x7fffffff, 0xffffffff, 0xfffffffc]) >>> 0;
      new DataView(out.buffer, out.byteOffset).setUint32(0, v, true);
      notes.push(`header length := ${v}`);
    } else if (kind === 'insert') {
      const p = pos(); const ins = rng.bytes(rng.range(1, 8));
      const o = new Uint8Array(out.length + ins.length); o.set(out.subarray(0, p)); o.set(ins, p); o.set(out.subarray(p), p + ins.length); out = o;
      notes.push(`insert ${ins.length} at ${p}`);
    } else if (kind === 'delete' && out.length) {
      const p = pos(); const k = Math.min(rng.range(1, 8), out.length - p);
      const o = new Uint8Array(out.length - k); o.set(out.subarray(0, p)); o.set(out.subarray(p + k), p); out = o;
      notes.push(`delete ${k} at ${p}`);
    }
  }
  return out;
}

/**
 * A gradient that could be accepted in full must never carry real numbers: a fuzzed worker that
 * happens to own a shard would otherwise hand the run a wrong (finite, well-formed) gradient,
 * which no validation can tell from a right one. So any frame that decodes as a gradient gets
 * a NaN in its first float (fp32), which also lands in the first fp16 lane and in an int8 scale.
 */
export function poisonGradient(frame: Uint8Array): Uint8Array {
  try {
    const { header, body } = decodeFrame(frame);
    if (typeof header === 'object' && header !== null && (header as { type?: unknown }).type === MSG.gradient && body.byteLength >= 4) {
      body.set([0x00, 0x00, 0xc0, 0x7f], 0);
      for (let i = 4; i + 4 <= body.byteLength; i += 4096) body.set([0x00, 0x00, 0xc0, 0x7f], i);
    }
  } catch { /* not a frame: nothing to poison */ }
  return frame;
}

/** A mutated protocol frame: structured mutations of a template, then byte mutations. */
function mutatedMessage(rng: Rng, t: Target, id: string, notes: string[], opts: { only?: string; allowHuge?: boolean; mutate?: boolean } = {}): Uint8Array {
  const all = templates(rng, t, id);
  const tpl = opts.only ? all.find((x) => x.name === opts.only)! : rng.pick(all.filter((x) => x.name !== 'hello' || rng.chance(0.3)));
  notes.push(tpl.name);
  const mutate = opts.mutate ?? true;
  let frame: Uint8Array;
  let header: unknown = tpl.header;
  if (mutate && rng.chance(0.65)) header = mutateHeader(rng, tpl.header, notes, opts.allowHuge ?? false);
  try {
    frame = rawFrame(header, tpl.body);
  } catch (e) {
    notes.push(`(unpackable: ${(e as Error).message.slice(0, 40)}; template sent)`);
    frame = rawFrame(tpl.header, tpl.body);
  }
  if (mutate && (header === tpl.header || rng.chance(0.4))) frame = mutateBytes(rng, frame, notes, opts.allowHuge);
  return poisonGradient(frame);
}

// ---- WebSocket framing (client side: masked) ----

export function wsFrame(opcode: number, payload: Uint8Array, o: { fin?: boolean; mask?: boolean; rsv?: number; declared?: bigint } = {}): Buffer {
  const fin = o.fin ?? true;
  const mask = o.mask ?? true;
  const len = o.declared ?? BigInt(payload.length);
  const head: number[] = [(fin ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (opcode & 0x0f)];
  const m = mask ? 0x80 : 0;
  if (len < 126n) head.push(m | Number(len));
  else if (len < 65_536n) head.push(m | 126, Number(len >> 8n) & 255, Number(len) & 255);
  else { head.push(m | 127); for (let i = 7; i >= 0; i--) head.push(Number((len >> BigInt(8 * i)) & 255n)); }
  const key = mask ? [0x12, 0x34, 0x56, 0x78] : [];
  const out = Buffer.alloc(head.length + key.length + payload.length);
  out.set(head, 0);
  out.set(key, head.length);
  for (let i = 0; i < payload.length; i++) out[head.length + key.length + i] = mask ? payload[i] ^ key[i & 3] : payload[i];
  return out;
}
const bin = (p: Uint8Array) => wsFrame(0x2, p);
const closeFrame = (code: number, reason: Uint8Array = new Uint8Array(0)) => {
  const p = new Uint8Array(2 + reason.length);
  p[0] = code >> 8; p[1] = code & 255; p.set(reason, 2);
  return wsFrame(0x8, p);
};

function upgradeRequest(t: Target, path = '/ws', extra: string[] = []): string {
  return [`GET ${path} HTTP/1.1`, `Host: ${t.host}:${t.port}`, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', ...extra, '', ''].join('\r\n');
}

// ---- inputs ----

export interface WsInput {
  kind: 'ws';
  plan: string;
  notes: string[];
  upgrade: Uint8Array;
  /** Sent right after the 101, in order. */
  frames: Buffer[];
  /** After a welcome, how long the worker stays before the fuzzer closes it. */
  holdMs: number;
  /** On an assign, answer with a gradient or result that must be refused. */
  attack: boolean;
  /** A frame over the payload limit: the library may kill the socket. */
  oversize: boolean;
}

export interface HttpInput {
  kind: 'http';
  plan: string;
  notes: string[];
  bytes: Uint8Array;
}

export type Input = WsInput | HttpInput;

const WS_PLANS = [
  [12, 'message before hello'], [22, 'hello'], [26, 'hello + messages'], [6, 'hello + attack its shard'], [12, 'websocket framing'],
  [3, 'silent'], [2, 'flood'], [8, 'upgrade'], [1.2, 'huge hello'], [6, 'order'],
] as const;

function wsInput(rng: Rng, t: Target, idx: number, tag: string): WsInput {
  const plan = rng.weighted(WS_PLANS);
  const notes: string[] = [];
  const id = `fuzz-${tag}-${idx}`;
  const hello = () => bin(rawFrame(helloHeader(rng, id)));
  const hold = rng.chance(0.1) ? rng.range(300, 1000) : rng.range(0, 150);
  const input: WsInput = { kind: 'ws', plan, notes, upgrade: Buffer.from(upgradeRequest(t)), frames: [], holdMs: hold, attack: false, oversize: false };
  switch (plan) {
    case 'message before hello':
      input.frames.push(bin(mutatedMessage(rng, t, id, notes, { mutate: rng.chance(0.85) })));
      break;
    case 'hello':
      input.frames.push(bin(mutatedMessage(rng, t, id, notes, { only: 'hello', mutate: rng.chance(0.9) })));
      break;
    case 'hello + messages': {
      input.frames.push(hello());
      const n = rng.range(1, 3);
      for (let i = 0; i < n; i++) input.frames.push(bin(mutatedMessage(rng, t, id, notes, { mutate: rng.chance(0.85) })));
      break;
    }
    case 'hello + attack its shard':
      input.frames.push(hello());
      input.attack = true;
      input.holdMs = rng.range(300, 1000);
      break;
    case 'websocket framing': {
      if (rng.chance(0.5)) { input.frames.push(hello()); notes.push('after hello'); }
      const good = rawFrame(helloHeader(rng, `${id}-f`));
      const which = rng.weighted<string>([
        [2, 'text frame'], [1, 'text invalid utf-8'], [1, 'unmasked'], [1, 'rsv bits'], [1, 'bad opcode'], [1, 'big ping'], [1, 'fragmented ping'],
        [1, 'continuation first'], [1, 'unfinished message'], [1, 'interleaved message'], [1.5, 'oversize'], [0.5, 'length 2^63'],
        [1.5, 'client close'], [1, 'close 1 byte'], [1, 'pong'], [1, 'empty binary'], [1, 'fragmented hello'], [1, 'flipped frame'],
      ]);
      notes.push(which);
      const f = input.frames;
      switch (which) {
        case 'text frame': f.push(wsFrame(0x1, Buffer.from(rng.chance(0.5) ? 'hello?' : multibyte(rng, rng.range(1, 200))))); break;
        case 'text invalid utf-8': f.push(wsFrame(0x1, Uint8Array.from([0x68, 0xff, 0xfe, 0xc0, 0x80]))); break;
        case 'unmasked': f.push(wsFrame(0x2, good, { mask: false })); break;
        case 'rsv bits': f.push(wsFrame(0x2, good, { rsv: rng.range(1, 7) })); break;
        case 'bad opcode': f.push(wsFrame(rng.pick([0x3, 0x7, 0xb, 0xf]), good)); break;
        case 'big ping': f.push(wsFrame(0x9, new Uint8Array(rng.range(126, 4000)))); break;
        case 'fragmented ping': f.push(wsFrame(0x9, new Uint8Array(4), { fin: false })); break;
        case 'continuation first': f.push(wsFrame(0x0, good)); break;
        case 'unfinished message': f.push(wsFrame(0x2, good.subarray(0, 5), { fin: false })); break;
        case 'interleaved message': f.push(wsFrame(0x2, good.subarray(0, 5), { fin: false }), wsFrame(0x2, good)); break;
        case 'oversize': {
          // Only the frame header and a little of the body: ws refuses on the declared length.
          const declared = BigInt(rng.pick([16 * 1024 * 1024 + 1, 17 * 1024 * 1024, 100 * 1024 * 1024, 2 ** 32]));
          notes.push(`declared ${declared}`);
          f.push(wsFrame(0x2, rng.bytes(rng.range(0, 4096)), { declared }));
          input.oversize = true;
          break;
        }
        case 'length 2^63': f.push(wsFrame(0x2, new Uint8Array(8), { declared: 2n ** 63n + BigInt(rng.int(1000)) })); input.oversize = true; break;
        case 'client close': {
          const code = rng.pick([1000, 1001, 1005, 1006, 999, 0, 1015, 2999, 3000, 4999, 5000, 65535, 4002]);
          const reason = rng.chance(0.3) ? Uint8Array.from([0xff, 0xfe]) : Buffer.from(multibyte(rng, rng.range(0, 30)).slice(0, 40));
          notes.push(`code ${code}, reason ${reason.length} bytes`);
          f.push(closeFrame(code, reason.subarray(0, 123)));
          break;
        }
        case 'close 1 byte': f.push(wsFrame(0x8, Uint8Array.from([3]))); break;
        case 'pong': f.push(wsFrame(0xa, Buffer.from('unsolicited'))); break;
        case 'empty binary': f.push(wsFrame(0x2, new Uint8Array(0))); break;
        case 'fragmented hello': {
          const parts = rng.range(2, 12);
          const step = Math.ceil(good.length / parts);
          for (let i = 0, k = 0; i < good.length; i += step, k++) f.push(wsFrame(k === 0 ? 0x2 : 0x0, good.subarray(i, i + step), { fin: i + step >= good.length }));
          break;
        }
        case 'flipped frame': {
          const w = Uint8Array.from(wsFrame(0x2, good));
          const k = rng.range(1, 4);
          for (let i = 0; i < k; i++) { const p = rng.int(Math.min(w.length, 14)); w[p] ^= 1 << rng.int(8); notes.push(`ws byte ${p} flipped`); }
          // A flipped length may declare more than is sent, or more than the limit: see wireClaims.
          f.push(Buffer.from(w));
          break;
        }
      }
      break;
    }
    case 'silent':
      break;
    case 'flood': {
      input.frames.push(hello());
      const n = rng.range(900, 2500);
      notes.push(`${n} status frames`);
      const st = bin(rawFrame({ type: MSG.status, tensors: 0, bytes: 0 }));
      for (let i = 0; i < n; i++) input.frames.push(st);
      break;
    }
    case 'upgrade': {
      const req = mutatedUpgrade(rng, t, notes);
      input.upgrade = req;
      input.frames.push(hello());
      break;
    }
    case 'huge hello': {
      const h = helloHeader(rng, id);
      const size = rng.logSize(1 << 20, 10 << 20);
      const what = rng.pick(['adapter string', 'adapter bin', 'adapter array', 'adapter nested key', 'workerId', 'modelHash', 'backend', 'extra field']);
      notes.push(`${what} of ~${size} bytes`);
      const s = '中'.repeat(Math.floor(size / 3));
      if (what === 'adapter string') h.adapter = { description: s };
      else if (what === 'adapter bin') h.adapter = { blob: new Uint8Array(size) };
      else if (what === 'adapter array') h.adapter = { list: Array.from({ length: size >> 3 }, (_, i) => i * 1.5) };
      else if (what === 'adapter nested key') h.adapter = { [s.slice(0, 100_000)]: 1 };
      else if (what === 'workerId') h.workerId = s;
      else if (what === 'modelHash') h.modelHashes = { ...(h.modelHashes as object), 'alexnet-tiny': s };
      else if (what === 'backend') h.backend = s;
      else h.padding = s;
      input.frames.push(bin(rawFrame(h)));
      break;
    }
    case 'order': {
      const which = rng.pick(['two hellos', 'hello twice same id', 'gradient then hello', 'result before gradient', 'resync then hello', 'hello then welcome', 'hello then hello of another']);
      notes.push(which);
      const f = input.frames;
      if (which === 'two hellos' || which === 'hello twice same id') f.push(hello(), hello());
      else if (which === 'gradient then hello') f.push(bin(mutatedMessage(rng, t, id, notes, { only: 'gradient', mutate: false })), hello());
      else if (which === 'result before gradient') f.push(hello(), bin(mutatedMessage(rng, t, id, notes, { only: 'result', mutate: false })));
      else if (which === 'resync then hello') f.push(bin(rawFrame({ type: MSG.resync, version: 0 })), hello());
      else if (which === 'hello then welcome') f.push(hello(), bin(rawFrame({ type: MSG.welcome, workerId: id, run: {} })));
      else f.push(hello(), bin(rawFrame(helloHeader(rng, `${id}-other`))));
      break;
    }
  }
  return input;
}

function mutatedUpgrade(rng: Rng, t: Target, notes: string[]): Uint8Array {
  const kind = rng.weighted<string>([[3, 'path'], [2, 'header'], [2, 'bytes'], [1, 'method']]);
  if (kind === 'path') {
    const p = rng.pick(['//', 'http://x:99999/ws', 'http://[::1/ws', '/wsx', '/ws/', '/WS', '/ws?x=1', '/ws#f', '/ws%00', '*', '/', '/api/status', '/ws/../ws', `/ws?${'x'.repeat(10_000)}`, `/${multibyte(rng, 20)}`]);
    notes.push(`path ${JSON.stringify(p.slice(0, 40))}`);
    return Buffer.from(upgradeRequest(t, p), 'utf8');
  }
  if (kind === 'method') {
    const m = rng.pick(['POST', 'HEAD', 'PUT', 'OPTIONS', 'CONNECT', 'GET\x00']);
    notes.push(`method ${JSON.stringify(m)}`);
    return Buffer.from(upgradeRequest(t).replace(/^GET/, m));
  }
  if (kind === 'header') {
    const lines = upgradeRequest(t).split('\r\n').filter(Boolean);
    const which = rng.pick(['drop key', 'drop version', 'drop upgrade', 'drop connection', 'bad key', 'version 8', 'version x', 'deflate', 'protocol', 'huge header', 'multibyte header', 'http/1.0', 'key twice']);
    notes.push(which);
    const set = (name: string, v: string | null) => {
      const i = lines.findIndex((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
      if (v === null) lines.splice(i, 1); else lines[i] = `${name}: ${v}`;
    };
    if (which === 'drop key') set('Sec-WebSocket-Key', null);
    if (which === 'drop version') set('Sec-WebSocket-Version', null);
    if (which === 'drop upgrade') set('Upgrade', null);
    if (which === 'drop connection') set('Connection', null);
    if (which === 'bad key') set('Sec-WebSocket-Key', rng.pick(['', 'abc', 'x'.repeat(300), '中文']));
    if (which === 'version 8') set('Sec-WebSocket-Version', '8');
    if (which === 'version x') set('Sec-WebSocket-Version', rng.pick(['x', '13, 8', '-1', '99999999999999999999']));
    if (which === 'deflate') lines.push('Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits');
    if (which === 'protocol') lines.push(`Sec-WebSocket-Protocol: ${rng.pick(['a,,b', 'x y', '中'])}`);
    if (which === 'huge header') lines.push(`X-Fuzz: ${'a'.repeat(rng.pick([8000, 17_000, 70_000]))}`);
    if (which === 'multibyte header') lines.push(`X-Fuzz: ${multibyte(rng, 50)}`);
    if (which === 'http/1.0') lines[0] = lines[0].replace('HTTP/1.1', 'HTTP/1.0');
    if (which === 'key twice') lines.push('Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==');
    return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);
  }
  // Byte mutations of the request, kept whole at the end so that the server is not left waiting.
  const req = Buffer.from(upgradeRequest(t));
  const out = Buffer.from(req);
  const k = rng.range(1, 4);
  for (let i = 0; i < k; i++) { const p = rng.int(out.length - 4); out[p] ^= 1 << rng.int(8); notes.push(`upgrade bit ${p * 8}`); }
  return out;
}

// ---- HTTP inputs ----

interface Req {
  method: string; target: string; version: string; headers: [string, string][]; body: Uint8Array;
  /** Chunked bodies: 0 well formed, 1 a bad chunk size, 2 no last chunk. */
  bodyFor?: number;
  /** A Content-Length other than the body's (a number), or not a number at all (raw). */
  declare?: number; declareRaw?: string;
}

function httpTemplate(rng: Rng, t: Target): Req {
  const host: [string, string] = ['Host', `${t.host}:${t.port}`];
  const get = (path: string, method = rng.chance(0.75) ? 'GET' : 'HEAD'): Req => ({ method, target: path, version: 'HTTP/1.1', headers: [host], body: new Uint8Array(0) });
  const kind = rng.weighted<string>([
    [2, 'page'], [2, 'status'], [1.5, 'events'], [1.5, 'metrics'], [4, 'control'], [1, 'static'], [1, 'traversal'], [1, 'ws as http'], [1, 'other method'], [0.6, 'upgrade elsewhere'],
  ]);
  switch (kind) {
    case 'page': return get(rng.pick(['/', '/index.html', '/dashboard', '/dashboard/']));
    case 'status': return get(rng.pick(['/api/status', '/api/status?x=1', '/api/status/']));
    case 'events': return get('/api/events');
    case 'metrics': return get('/metrics');
    case 'static': return get(rng.pick([t.staticFile, '/missing.js', '/assets/', '/favicon.ico']));
    case 'traversal': return get(rng.pick(['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd', '/%2E%2E%5c', '/.env', '/link-out', '/%00', '/%', '/%zz', '/a%c0%af']));
    case 'ws as http': return get('/ws');
    case 'other method': return { ...get(rng.pick(['/', '/api/status', '/api/events', '/metrics', '/api/control', '/dashboard'])), method: rng.pick(['PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'POST', 'PROPFIND']) };
    case 'upgrade elsewhere': return { ...get(rng.pick(['/', '/api/status', '/api/events', '/metrics', '/api/control']), 'GET'), headers: [host, ['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']] };
    default: {
      // POST /api/control. With the right token only actions that cannot change the run are sent
      // (export is refused with 409: the coordinator has no --export dir); pause/resume/stop go
      // only with a wrong token or none.
      const auth = rng.weighted<string | null>([[4, t.adminToken], [2, 'WRONG-token-000000'], [1, null], [1, '']]);
      const right = auth === t.adminToken;
      const body = right
        ? rng.pick(['{"action":"export"}', '{"action":"launch"}', '{"action":null}', '{}', '[]', 'null', '"export"', '{"action":"export","x":1}', '{"action":"EXPORT"}', '{"action":"export"', '', '{"action":["export"]}', '{"action":1e999}', '\ufeff{"action":"export"}'])
        : rng.pick(['{"action":"pause"}', '{"action":"stop"}', '{"action":"resume"}', '{"action":"export"}']);
      const headers: [string, string][] = [host, ['Content-Type', rng.weighted([[6, 'application/json'], [1, 'text/plain'], [1, 'application/jsonx'], [1, 'application/json; charset=utf-16']])]];
      if (auth !== null) headers.push(['Authorization', `Bearer ${auth}`]);
      return { method: 'POST', target: '/api/control', version: 'HTTP/1.1', headers, body: Buffer.from(body) };
    }
  }
}

function mutateRequest(rng: Rng, r: Req, notes: string[]): void {
  const n = rng.range(1, 2);
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted<string>([[3, 'target'], [1, 'method'], [1, 'version'], [3, 'header'], [3, 'body'], [1, 'content-length']]);
    if (kind === 'target') {
      const v = rng.pick(['//', '///', 'http://x:99999/', 'http://x:99999/api/status', 'http://[::1/', 'http://127.0.0.1/api/status', '//api/status', '*', '/api//status', '/API/STATUS', '/api/status#x', `/api/status?${'q'.repeat(rng.pick([100, 9000, 70_000]))}`,
        `/${'a'.repeat(rng.pick([1000, 20_000, 80_000]))}`, `/${multibyte(rng, 20)}`, '/%E4%B8%AD', '/\x7f', '/?', '?', '/api/events?', '/metrics/', 'x', '/.', '/./api/status']);
      notes.push(`target ${JSON.stringify(v.slice(0, 40))}${v.length > 40 ? `… (${v.length})` : ''}`);
      r.target = v;
    } else if (kind === 'method') {
      const v = rng.pick(['get', 'GETT', 'G', '', 'CONNECT', 'M-SEARCH', 'X'.repeat(100), 'GE T', 'HEAD', 'PRI', multibyte(rng, 3)]);
      notes.push(`method ${JSON.stringify(v.slice(0, 20))}`);
      r.method = v;
    } else if (kind === 'version') {
      const v = rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1x', '', 'http/1.1', 'HTTP/1.', 'HTTP/9.9', 'HTTP/1.1 extra']);
      notes.push(`version ${JSON.stringify(v)}`);
      r.version = v;
    } else if (kind === 'header') {
      const which = rng.pick(['huge value', 'many headers', 'multibyte value', 'space in name', 'empty name', 'no host', 'two hosts', 'expect', 'chunked', 'te gzip', 'obs-fold', 'bare cr', 'nul', 'auth huge', 'auth multibyte', 'connection close', 'range', 'upgrade h2c', 'accept-encoding', 'cookie']);
      notes.push(`header: ${which}`);
      const H = r.headers;
      if (which === 'huge value') H.push(['X-Fuzz', 'v'.repeat(rng.pick([4000, 15_000, 70_000]))]);
      if (which === 'many headers') { const k = rng.pick([100, 1000, 3000]); for (let j = 0; j < k; j++) H.push([`X-F${j}`, 'y']); }
      if (which === 'multibyte value') H.push(['X-Fuzz', multibyte(rng, 40)]);
      if (which === 'space in name') H.push(['X Fuzz', '1']);
      if (which === 'empty name') H.push(['', 'x']);
      if (which === 'no host') r.headers = H.filter(([k]) => k !== 'Host');
      if (which === 'two hosts') H.push(['Host', 'evil.example']);
      if (which === 'expect') H.push(['Expect', rng.pick(['100-continue', 'nonsense'])]);
      if (which === 'chunked') { H.push(['Transfer-Encoding', 'chunked']); r.bodyFor = rng.int(3); }
      if (which === 'te gzip') H.push(['Transfer-Encoding', 'gzip']);
      if (which === 'obs-fold') H.push(['X-Fold', 'a\r\n b']);
      if (which === 'bare cr') H.push(['X-Cr', 'a\rb']);
      if (which === 'nul') H.push(['X-Nul', 'a\0b']);
      if (which === 'auth huge') H.push(['Authorization', `Bearer ${'t'.repeat(rng.pick([300, 20_000]))}`]);
      if (which === 'auth multibyte') H.push(['Authorization', `Bearer ${multibyte(rng, 10)}`]);
      if (which === 'connection close') H.push(['Connection', 'close']);
      if (which === 'range') H.push(['Range', rng.pick(['bytes=0-0', 'bytes=-1', 'bytes=99999999-', 'bytes=1-0,0-1'])]);
      if (which === 'upgrade h2c') H.push(['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA']);
      if (which === 'accept-encoding') H.push(['Accept-Encoding', 'gzip, br, *;q=0']);
      if (which === 'cookie') H.push(['Cookie', 'a=b; '.repeat(200)]);
    } else if (kind === 'body') {
      const which = rng.pick(['truncate', 'extend', 'replace json', 'multibyte', 'invalid utf-8', 'large', 'deep json']);
      notes.push(`body: ${which}`);
      const b = r.body;
      if (which === 'truncate') { r.body = b.subarray(0, rng.int(b.length + 1)); r.bodyFor = 1; notes.push(`(declared ${b.length}, sent ${r.body.length})`); r.declare = b.length; }
      if (which === 'extend') { const ext = rng.bytes(rng.range(1, 200)); const o = new Uint8Array(b.length + ext.length); o.set(b); o.set(ext, b.length); r.body = o; if (rng.chance(0.5)) r.declare = b.length; }
      if (which === 'replace json') {
        const v = weirdValue(rng);
        let text: string;
        try { text = JSON.stringify({ action: v }, (_, x) => (typeof x === 'bigint' ? Number(x) : x)); } catch { text = `{"action":${'['.repeat(5000)}`; }
        notes.push(`(action := ${describeValue(v)})`);
        r.body = Buffer.from(text);
      }
      if (which === 'multibyte') r.body = Buffer.from(JSON.stringify({ action: multibyte(rng, 200) }));
      if (which === 'invalid utf-8') r.body = Uint8Array.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0xc0, 0x80, 0x7d]);
      if (which === 'large') { const k = rng.pick([1025, 4096, 1 << 16, 1 << 20]); r.body = new Uint8Array(k).fill(0x20); notes.push(`(${k} bytes)`); }
      if (which === 'deep json') r.body = Buffer.from('['.repeat(1000) + ']'.repeat(1000));
    } else {
      const v = rng.pick(['-1', 'abc', '1e3', '0x10', ' 5', '99999999999999999999', String(100_000_000), String(2 ** 31), '', '1, 2', '+5']);
      notes.push(`content-length ${JSON.stringify(v)}`);
      r.declareRaw = v;
    }
  }
}
function serialize(r: Req): Uint8Array {
  const head: string[] = [`${r.method} ${r.target} ${r.version}`.replace(/ $/, '')];
  let body = r.body;
  const chunked = r.headers.some(([k, v]) => k.toLowerCase() === 'transfer-encoding' && v === 'chunked');
  if (chunked) {
    // A chunked body: well formed, with a bad size, or without its last chunk.
    const s = Buffer.from(body).toString('latin1');
    const enc = r.bodyFor === 0 ? `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n` : r.bodyFor === 1 ? `zz\r\n${s}\r\n0\r\n\r\n` : `${s.length.toString(16)}\r\n${s}\r\n`;
    body = Buffer.from(enc, 'latin1');
  }
  for (const [k, v] of r.headers) head.push(`${k}: ${v}`);
  if (!chunked) {
    if (r.declareRaw !== undefined) head.push(`Content-Length: ${r.declareRaw}`);
    else if (r.declare !== undefined || body.length > 0 || r.method === 'POST') head.push(`Content-Length: ${r.declare ?? body.length}`);
  }
  const h = Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'utf8');
  const out = new Uint8Array(h.length + body.length);
  out.set(h); out.set(body, h.length);
  return out;
}

/** Never sends pause/resume/stop with the right token, however the bytes were mutated. */
function guardControl(bytes: Uint8Array, token: string, notes: string[]): Uint8Array {
  const s = Buffer.from(bytes).toString('latin1');
  if (!s.includes(token) || !/pause|resume|stop|\\u/i.test(s)) return bytes;
  notes.push('(right token replaced: the body could name a run-changing action)');
  return Buffer.from(s.split(token).join(token.toUpperCase() === token ? token.toLowerCase() : token.toUpperCase()), 'latin1');
}

function httpInput(rng: Rng, t: Target): HttpInput {
  const notes: string[] = [];
  const kind = rng.weighted<string>([[6, 'request'], [2, 'mutated request'], [1.5, 'bytes'], [1, 'random line'], [0.7, 'huge content-length']]);
  const r = httpTemplate(rng, t);
  notes.push(`${r.method} ${r.target}${r.headers.some(([k]) => k === 'Authorization') ? ` auth=${r.headers.find(([k]) => k === 'Authorization')![1].slice(7, 20)}` : ''}`);
  let bytes: Uint8Array;
  if (kind === 'request') {
    if (rng.chance(0.3)) mutateRequest(rng, r, notes);
    bytes = serialize(r);
  } else if (kind === 'mutated request') {
    mutateRequest(rng, r, notes);
    mutateRequest(rng, r, notes);
    bytes = serialize(r);
  } else if (kind === 'bytes') {
    bytes = mutateBytes(rng, serialize(r), notes);
  } else if (kind === 'random line') {
    const line = rng.weighted<() => Uint8Array>([
      [2, () => rng.bytes(rng.range(1, 80))],
      [2, () => Buffer.from(`${rng.pick(['GET', 'POST', 'HEAD', 'X'])} ${Buffer.from(rng.bytes(rng.range(1, 30))).toString('latin1')} HTTP/1.1`, 'latin1')],
      [1, () => Buffer.from(multibyte(rng, rng.range(1, 50)))],
      [1, () => Buffer.from(`GET ${'/'.repeat(rng.range(1, 5))}${rng.pick(['', 'x', '..', '%', '\t'])} HTTP/1.1`, 'latin1')],
      [1, () => Buffer.from(rng.pick(['PRI * HTTP/2.0', 'GET / HTTP/1.1 x', 'GET  / HTTP/1.1', ' GET / HTTP/1.1', 'GET /', '\r\nGET / HTTP/1.1', 'GET / HTTP/1.1\n', 'SSH-2.0-OpenSSH_9.2', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03']))],
    ])();
    notes.push(`line ${JSON.stringify(Buffer.from(line).toString('latin1').slice(0, 60))}`);
    const tail = Buffer.from(rng.chance(0.7) ? `\r\nHost: ${t.host}\r\n\r\n` : '\r\n\r\n');
    bytes = new Uint8Array(line.length + tail.length); bytes.set(line); bytes.set(tail, line.length);
  } else {
    // Declares far more body than it sends: the answer must come without the body.
    const big = rng.pick([1 << 20, 100_000_000, 2 ** 32, 9_007_199_254_740_991]);
    if (r.method === 'GET' || r.method === 'HEAD') { r.method = 'POST'; r.target = rng.chance(0.7) ? '/api/control' : r.target; }
    r.declare = big;
    const prefix = rng.logSize(32, 256 << 10);
    const b = new Uint8Array(prefix).fill(0x41);
    b.set(Buffer.from('{"action":"export"'), 0);
    r.body = b;
    notes.push(`POST ${r.target} declares ${big} bytes, sends ${prefix}`);
    bytes = serialize(r);
  }
  return { kind: 'http', plan: kind, notes, bytes: guardControl(bytes, t.adminToken, notes) };
}

/** Input `idx` of the fuzz run seeded `seed`: the same input whenever it is regenerated. */
export function makeInput(seed: number, idx: number, t: Target): Input {
  const rng = new Rng(seed, idx + 1);
  return rng.chance(0.62) ? wsInput(rng, t, idx, String(seed)) : httpInput(rng, t);
}

// ---- reading the answers ----

interface Head { status: number; headers: Record<string, string>; end: number }

/** Parses one HTTP response head at the start of `buf`, or null while incomplete. */
function parseHead(buf: Buffer): Head | null {
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

// ---- the run ----

export interface FuzzRecord { id: number; input: Input; outcome: Outcome }

export interface Crash {
  error: string;
  stack: string;
  /** Inputs in flight when it was thrown. */
  inFlight: number[];
  /** How many inputs had been started when it was thrown (FuzzReport.started is their order). */
  startedBefore: number;
}

export interface FuzzReport {
  seed: number;
  inputs: number;
  seconds: number;
  perSecond: number;
  answers: Record<string, number>;
  failures: FuzzRecord[];
  crashes: Crash[];
  /** Every input's record, in the order they finished. */
  records: FuzzRecord[];
  /** Input indices in the order they were started. */
  started: number[];
}

/** Runs inputs [0, count) (or just `only`) of seed `seed`, `concurrency` at a time. */
export async function fuzz(t: Target, o: { seed: number; count: number; concurrency: number; only?: number[]; timeouts?: Timeouts; onRecord?: (r: FuzzRecord) => void }): Promise<FuzzReport> {
  const ids = o.only ?? Array.from({ length: o.count }, (_, i) => i);
  const inFlight = new Set<number>();
  const started: number[] = [];
  const crashes: Crash[] = [];
  const onCrash = (e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    crashes.push({ error: `${err.name}: ${err.message}`.slice(0, 300), stack: (err.stack ?? '').split('\n').slice(1, 5).map((l) => l.trim()).join(' | '), inFlight: [...inFlight], startedBefore: started.length });
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const answers: Record<string, number> = {};
  const failures: FuzzRecord[] = [];
  const records: FuzzRecord[] = [];
  const t0 = performance.now();
  let next = 0;
  try {
    await Promise.all(Array.from({ length: o.concurrency }, async () => {
      while (next < ids.length) {
        const id = ids[next++];
        const input = makeInput(o.seed, id, t);
        inFlight.add(id);
        started.push(id);
        const outcome = input.kind === 'ws' ? await runWs(input, t, o.timeouts) : await runHttp(input, t, o.timeouts);
        inFlight.delete(id);
        const key = `${input.kind === 'ws' ? 'ws ' : ''}${outcome.answer}`;
        answers[key] = (answers[key] ?? 0) + 1;
        const r = { id, input, outcome };
        records.push(r);
        if (outcome.failure) failures.push(r);
        o.onRecord?.(r);
      }
    }));
  } finally {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seed: o.seed, inputs: ids.length, seconds, perSecond: ids.length / seconds, answers, failures, crashes, records, started };
}

/** A coordinator of its own for triage, with the fuzzed run's options and no run. */
export interface Fresh { target: Target; close: () => Promise<void> }

const TRIAGE_TIMEOUTS: Timeouts = { answerMs: 400, afterFinMs: 400, probeMs: 400, wsMs: 1000 };

/**
 * Finds the input behind an uncaught exception. An input may leave state behind that throws only
 * later, in another handler (a hello whose adapter /api/status cannot serialise), so the input in
 * flight when it was thrown is not always the cause. On a fresh coordinator, the inputs in flight
 * are replayed one at a time, then the earlier inputs that could have left state behind (welcomed
 * workers, control requests), newest first, each followed by requests to the HTTP routes, until
 * the same exception is thrown.
 */
export async function triage(seed: number, crash: Crash, report: FuzzReport, fresh: () => Promise<Fresh>, budgetMs = 30_000): Promise<FuzzRecord | null> {
  const byId = new Map(report.records.map((r) => [r.id, r]));
  const stateful = (id: number) => {
    const r = byId.get(id);
    return !r || r.outcome.answer.includes('welcome') || (r.input.kind === 'http' && /^POST \/api\/control/.test(Buffer.from(r.input.bytes.subarray(0, 40)).toString('latin1')));
  };
  const earlier = report.started.slice(0, crash.startedBefore).filter((id) => !crash.inFlight.includes(id) && stateful(id)).reverse();
  const t0 = performance.now();
  const { target, close } = await fresh();
  const errors: string[] = [];
  const on = (e: unknown) => errors.push(e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) : String(e));
  process.on('uncaughtException', on);
  process.on('unhandledRejection', on);
  try {
    const canaries: HttpInput[] = ['GET /api/status', 'GET /metrics', 'GET /'].map((l) => ({
      kind: 'http', plan: 'canary', notes: [l], bytes: Buffer.from(`${l} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\n\r\n`),
    }));
    // In flight first (most crashes are the input's own), then the earlier ones, newest first.
    for (const id of [...crash.inFlight, ...earlier]) {
      if (performance.now() - t0 > budgetMs) break;
      const input = makeInput(seed, id, target);
      const outcome = input.kind === 'ws' ? await runWs(input, target, TRIAGE_TIMEOUTS) : await runHttp(input, target, TRIAGE_TIMEOUTS);
      for (const c of canaries) await runHttp(c, target, TRIAGE_TIMEOUTS);
      await new Promise((r) => setTimeout(r, 20));
      if (errors.includes(crash.error)) return { id, input, outcome };
    }
    return null;
  } finally {
    process.off('uncaughtException', on);
    process.off('unhandledRejection', on);
    await close();
  }
}

/** The bytes an input sends, printable: ASCII as is, the rest as \xNN, cut at `max`. */
export function preview(b: Uint8Array, max = 160): string {
  let s = '';
  for (let i = 0; i < Math.min(b.length, max); i++) {
    const c = b[i];
    s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : c === 0x0d ? '\\r' : c === 0x0a ? '\\n' : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return b.length > max ? `${s}… (${b.length} bytes)` : s;
}

/** One line per input, to replay or to report. */
export function describe(r: FuzzRecord): string {
  const i = r.input;
  const what = i.kind === 'ws'
    ? `ws/${i.plan}: ${i.notes.join('; ')}${i.upgrade.length && i.plan === 'upgrade' ? ` | upgrade ${preview(i.upgrade, 120)}` : ''}${i.frames.length ? ` | first frame ${preview(unmask(i.frames[i.frames.length > 1 && i.plan !== 'message before hello' && i.plan !== 'hello' ? 1 : 0]), 120)}` : ''}`
    : `http/${i.plan}: ${i.notes.join('; ')} | ${preview(i.bytes, 200)}`;
  return `#${r.id} → ${r.outcome.answer}${r.outcome.failure ? ` ✗ ${r.outcome.failure}` : ''} (${r.outcome.ms.toFixed(0)} ms) :: ${what}`;
}

/** The payload of one of our (masked) client frames, for printing. */
function unmask(f: Buffer): Uint8Array {
  if (f.length < 2) return f;
  let len = f[1] & 0x7f;
  let off = 2;
  if (len === 126) { len = f.readUInt16BE(2); off = 4; } else if (len === 127) { len = Number(f.readBigUInt64BE(2) & 0xffffffffn); off = 10; }
  if (!(f[1] & 0x80)) return f.subarray(off);
  const key = f.subarray(off, off + 4);
  const p = Uint8Array.from(f.subarray(off + 4, off + 4 + Math.min(len, 4096)));
  for (let i = 0; i < p.length; i++) p[i] ^= key[i & 3];
  return p;
}

