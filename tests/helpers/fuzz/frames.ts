// Protocol frames for the fuzzer: templates of every message a worker may send (and some it may
// not), mutated field by field and byte by byte. A gradient that could be accepted never carries
// real numbers (poisonGradient).
import { MSG, PROTOCOL_VERSION, decodeFrame, zooHashes } from '@tabtrain/shared';
import { rawFrame } from '../liars';
import type { Rng } from './rng';
import { describeValue, multibyte, weirdString, weirdValue } from './values';

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

export function f32(n: number, nanAt = 0): Uint8Array {
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) g[i] = (i % 7) * 1e-3;
  if (n) g[Math.min(nanAt, n - 1)] = NaN;
  return new Uint8Array(g.buffer);
}

export type Header = Record<string, unknown>;

export function helloHeader(rng: Rng, id: string): Header {
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

export function mutatedMessage(rng: Rng, t: Target, id: string, notes: string[], opts: { only?: string; allowHuge?: boolean; mutate?: boolean } = {}): Uint8Array {
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
