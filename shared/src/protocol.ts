// The wire protocol: one source of truth for both ends. See PROTOCOL.md for the grammar.
//
// Every WebSocket message is one binary frame:
//   u32 LE header length | msgpack header | zero padding to a multiple of 4 | raw body
// The body (fp32 weights/gradients, uint8 images) starts 4-byte aligned in the frame, so the
// receiver views it as a Float32Array without copying.
import { Packr } from 'msgpackr';
import type { Codec, Compression } from './codec-types';
import { hasControl, printable } from './text';

// 5: powersgd's factors may travel as fp16 (run.compress.factors, basis.codec), which a version-4
// worker would misread rather than ignore.
export const PROTOCOL_VERSION = 5;

/** Tensors larger than this travel as several frames, each a slice of the flat vector. */
export const CHUNK_FLOATS = 2 * 1024 * 1024; // 8 MiB of fp32: far under ws's payload limit, big enough that framing costs nothing
/** The largest frame either end accepts: one chunk plus its header, or one shard of images. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
export const IMAGE_BYTES = 28 * 28;

export const MSG = {
  /** worker: I am here; my protocol version, token, backend and the model hashes I can build. */
  hello: 'hello',
  /** coordinator: you are in; your id and the run you are joining. */
  welcome: 'welcome',
  /** coordinator: a slice [offset, offset+n) of the weights at `version`; body fp32. */
  weights: 'weights',
  /** coordinator: compute this shard (train: gradient; eval: forward only); body images ++ labels. */
  assign: 'assign',
  /** worker: a slice of my shard's gradient SUM; body fp32. */
  gradient: 'gradient',
  /** worker: my shard is done: loss sum, correct count, example count and timings. */
  result: 'result',
  /** coordinator: the run is over (or paused); why, in words. */
  notice: 'notice',
  /** worker: my health after a shard: live tensors and bytes on my backend (shown on the dashboard). */
  status: 'status',
  /**
   * coordinator (compressed runs): a segment of step `version`'s encoded gradient sum; applying it
   * with SGD turns weights `version − 1` into `version`, bit for bit as the coordinator did.
   */
  update: 'update',
  /** worker: my replica's hash differs from the assign's; send me the full weights of `version`. */
  resync: 'resync',
  /**
   * coordinator (powersgd runs, powersgd.ts): a slice of a round's broadcast for the step that
   * makes `version`. Round 1: P̂ and the fp32 tensors' sums (workers need it for round 2). Round 2:
   * ΣQ_i; with round 1's it turns weights `version − 1` into `version`, and it warm-starts the next Q.
   */
  basis: 'basis',
  /**
   * coordinator: where the run stands and what you did for it, after each step, epoch and change
   * of the run's state (the worker page shows it; the Node worker ignores it).
   */
  progress: 'progress',
} as const;
export type MsgType = (typeof MSG)[keyof typeof MSG];

/** Close codes, each with a reason string sent beside it. 1009 is ws's own "message too big". */
export const CLOSE = {
  /** The run finished (or was stopped: the reason says "run stopped: …"); thank you. */
  finished: 1000,
  /** From a worker: its operator stopped it (Ctrl-C); it leaves the run and will not reconnect. */
  leaving: 1001,
  /** A frame was larger than MAX_FRAME_BYTES. */
  tooBig: 1009,
  /** The frame is not header+body, or the header is not msgpack. */
  malformed: 4000,
  /** The header's type is not one of MSG. */
  unknownType: 4001,
  /** A field is missing or of the wrong type or range. */
  badField: 4002,
  /** The hello's protocol version is not ours. */
  protocolMismatch: 4003,
  /** The worker cannot build this run's model (hash differs or absent). */
  modelMismatch: 4004,
  /** Missing or wrong token. */
  unauthorized: 4005,
  /** No hello within the hello timeout. */
  helloTimeout: 4006,
  /** A gradient or result for a step/shard this worker does not own. */
  notOwner: 4007,
  /** A second result for a shard already done. */
  duplicate: 4008,
  /** A gradient of the wrong length, or with NaN/Inf. */
  badGradient: 4009,
  /** Too many messages too fast. */
  flood: 4010,
  /** The worker does not read what we send it; its buffer grew past the limit. */
  slowReader: 4011,
  /** The same worker identity connected again; this older socket is dropped. */
  replaced: 4012,
  /** The worker missed its step deadline or heartbeat. */
  timeout: 4013,
  /** The coordinator is shutting down. */
  shutdown: 4014,
  /** A message that is valid but not allowed now (e.g. a second hello). */
  unexpected: 4015,
  /** Your results disagreed with other workers' recomputation of the same shards; you are refused for this run. */
  untrusted: 4016,
} as const;
export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];
export const CLOSE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(CLOSE).map(([k, v]) => [v, k]));

/** RFC 6455 §5.5: a close frame's payload is ≤ 125 bytes, 2 of them the code. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A close reason that fits a close frame: cut to MAX_CLOSE_REASON_BYTES of UTF-8 at a character
 * boundary (ws throws a RangeError on a longer one, and attacker text reaches reasons).
 */
export function closeReason(text: string): string {
  const bytes = utf8.encode(text);
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return text;
  let end = MAX_CLOSE_REASON_BYTES - 3; // room for '…' (3 bytes)
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // back up to the start of a character
  return `${utf8d.decode(bytes.subarray(0, end))}…`;
}
const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

/** Limits on the strings a peer sends: what the status API, the dashboard and logs echo stays small. */
export const LIMITS = {
  /** Any string field (ids, backend names, hashes, messages), in UTF-8 bytes. */
  stringBytes: 200,
  /** hello.adapter, as JSON (a WebGPU adapter's info is ~300 bytes). */
  adapterBytes: 4096,
  /** hello.modelHashes entries (the zoo has 7 models). */
  modelHashes: 64,
} as const;

export type WorkerKind = 'node' | 'browser';

export interface Hello {
  type: typeof MSG.hello;
  protocol: number;
  /** Stable identity across reconnects (a tab keeps it in sessionStorage, a process for its life). */
  workerId: string;
  kind: WorkerKind;
  backend: string;
  adapter: Record<string, unknown> | null;
  modelHashes: Record<string, string>;
  token?: string;
  /** The session secret a previous welcome gave this workerId; without it a reused workerId joins as a new worker. */
  session?: string;
  /** The key the coordinator hands the workers it starts itself (TABTRAIN_LOCAL_KEY); such workers count as established. */
  local?: string;
}

export interface RunInfo {
  model: string;
  modelHash: string;
  seed: number;
  batch: number;
  lr: number;
  paramCount: number;
  /** How gradients travel (compress.ts); absent = fp32. Workers build the same segment plan from it. */
  compress?: Compression;
}

export interface Welcome {
  type: typeof MSG.welcome;
  /** The identity to use from now on: the hello's, or a fresh one when the hello's belongs to someone else. */
  workerId: string;
  run: RunInfo;
  /** Present it in the hello of a reconnect to be this worker again (its speed, its trust). Never shown anywhere. */
  session?: string;
}
export interface Weights { type: typeof MSG.weights; version: number; offset: number; total: number }
export interface Update {
  type: typeof MSG.update; version: number; offset: number; total: number;
  /** Examples in the step: SGD divides the gradient sum by it. */
  batch: number;
  codec?: Codec;
}
export interface Assign {
  type: typeof MSG.assign;
  task: 'train' | 'eval';
  step: number;
  shard: number;
  /** Weights version the shard must be computed at. */
  version: number;
  /** Index of the shard's first example in the global batch (seeds its dropout masks). */
  position: number;
  count: number;
  /** replicaHash of the weights at `version`, every --verify-every versions of a compressed run. */
  hash?: string;
  /**
   * powersgd runs: which round of the shard to send. 1 (absent): compute the gradient, send P_i.
   * 2: send Q_i, from the M this worker kept in round 1, or (body present) from the shard's
   * gradient recomputed at `version`, when round 1 was another worker's.
   */
  round?: 1 | 2;
  /**
   * Compressed runs: send this shard's plain fp32 gradient sum (frames as in an fp32 run), leaving
   * any error feedback and PowerSGD state alone. A probation check: two such copies of one shard
   * can be compared float by float, which two compressed copies cannot.
   */
  fp32?: boolean;
}
export interface Gradient {
  type: typeof MSG.gradient; step: number; shard: number; offset: number; total: number;
  /** The body's encoding when not raw fp32 (compress.ts); must match the run's segment plan. */
  codec?: Codec;
  /** powersgd runs: the body is a slice of this round's factor vector (total = its floats), not of the gradient. */
  round?: 1 | 2;
}
export interface Basis {
  type: typeof MSG.basis; version: number; round: 1 | 2; offset: number; total: number;
  /** Examples in the step: the update divides by it. */
  batch: number;
  /** The body's encoding when not raw fp32 (fp16 factors: compress.factors); must match the run's round segments. */
  codec?: Codec;
}
export interface Timings { computeMs: number; encodeMs: number; sendMs: number }
export interface Result {
  type: typeof MSG.result;
  task: 'train' | 'eval';
  step: number;
  shard: number;
  lossSum: number;
  correct: number;
  count: number;
  timings: Timings;
}
export interface Notice { type: typeof MSG.notice; state: string; message: string }

export interface Status {
  type: typeof MSG.status; tensors: number; bytes: number;
  /** powersgd: the largest |working − exact| of our weights at our last refresh (the working copy on our device drifts from the exact one by rounding). */
  drift?: number;
}
export interface Resync { type: typeof MSG.resync; version: number }

/** Steps a progress message's share counts: this worker's part of the last PROGRESS_SHARE_STEPS steps' examples. */
export const PROGRESS_SHARE_STEPS = 20;
/** Points of the loss curve the first progress after a welcome carries (the run so far, thinned). */
export const PROGRESS_CURVE_POINTS = 200;
/** What a worker is to the run: computing shards, left out by --balance cost, or on probation (its results checked). */
export type ProgressRole = 'established' | 'benched' | 'probation';
export interface Progress {
  type: typeof MSG.progress;
  /** The run's state (running, paused, evaluating, waiting, finished, stopped, failed) and why, '' when no reason. */
  state: string;
  reason: string;
  /** Steps applied so far (the coordinator's numbering: step n is the n-th applied), of totalSteps. */
  step: number;
  totalSteps: number;
  /** 1-based epoch in progress, of epochs. */
  epoch: number;
  epochs: number;
  /** The latest step's mean loss and train accuracy (absent when not finite, or before the first step). */
  loss?: number;
  acc?: number;
  /** The latest epoch's test accuracy. */
  testAcc?: number;
  /** Train examples this worker identity computed and the run applied. */
  examples: number;
  /** Its fraction of the examples of the last `shareSteps` steps (0..1). */
  share: number;
  shareSteps: number;
  role: ProgressRole;
  /** Why it has that role, in words ('' for established). */
  why: string;
  /** First progress after a welcome: the run's loss so far as [step, loss, step, loss, …], at most PROGRESS_CURVE_POINTS pairs. */
  curve?: number[];
}

export type Message = Hello | Welcome | Weights | Assign | Gradient | Result | Notice | Status | Update | Resync | Basis | Progress;

const packr = new Packr({ useRecords: false });

/** Encodes one frame. `body` is copied once into the frame, after the aligned header. */
export function encode(header: Message, body?: ArrayBufferView): Uint8Array {
  const head = packr.pack(header);
  const bodyAt = align4(4 + head.length);
  const bodyBytes = body ? body.byteLength : 0;
  const frame = new Uint8Array(bodyAt + bodyBytes);
  new DataView(frame.buffer).setUint32(0, head.length, true);
  frame.set(head, 4);
  if (body) frame.set(new Uint8Array(body.buffer, body.byteOffset, body.byteLength), bodyAt);
  return frame;
}

export class ProtocolError extends Error {
  constructor(public code: CloseCode, message: string) { super(message); }
}

/** Splits a frame into its header (unvalidated) and a view of its body. Throws ProtocolError. */
export function decodeFrame(frame: Uint8Array): { header: unknown; body: Uint8Array } {
  if (frame.byteLength < 5) throw new ProtocolError(CLOSE.malformed, `frame of ${frame.byteLength} bytes is shorter than its length prefix`);
  const headLen = new DataView(frame.buffer, frame.byteOffset, 4).getUint32(0, true);
  if (4 + headLen > frame.byteLength) throw new ProtocolError(CLOSE.malformed, `header length ${headLen} exceeds frame of ${frame.byteLength} bytes`);
  let header: unknown;
  try {
    header = packr.unpack(frame.subarray(4, 4 + headLen));
  } catch (e) {
    throw new ProtocolError(CLOSE.malformed, `header is not msgpack: ${(e as Error).message}`);
  }
  const bodyAt = Math.min(align4(4 + headLen), frame.byteLength);
  return { header, body: frame.subarray(bodyAt) };
}

/** Views a body as fp32 without copying when it is aligned (it is, for frames from encode()). */
export function asFloat32(body: Uint8Array): Float32Array {
  if (body.byteLength % 4 !== 0) throw new ProtocolError(CLOSE.badGradient, `fp32 body of ${body.byteLength} bytes is not a multiple of 4`);
  if (body.byteOffset % 4 === 0) return new Float32Array(body.buffer, body.byteOffset, body.byteLength / 4);
  // A copy: Buffer#slice is a view, so copy through Uint8Array to get an aligned buffer of our own.
  return new Float32Array(new Uint8Array(body).buffer);
}

function align4(n: number): number { return (n + 3) & ~3; }

// ---- validation: everything that arrives is untrusted ----

type Check = 'int' | 'positive' | 'num' | 'str' | 'obj' | 'bool' | 'task' | 'nonneg' | 'round' | 'fraction' | 'role' | 'curve';
const SCHEMA: Record<MsgType, Record<string, Check>> = {
  hello: { protocol: 'int', workerId: 'str', kind: 'str', backend: 'str', modelHashes: 'obj' },
  welcome: { workerId: 'str', run: 'obj' },
  weights: { version: 'int', offset: 'int', total: 'int' },
  assign: { task: 'task', step: 'int', shard: 'int', version: 'int', position: 'int', count: 'int' },
  gradient: { step: 'int', shard: 'int', offset: 'int', total: 'int' },
  result: { task: 'task', step: 'int', shard: 'int', lossSum: 'nonneg', correct: 'int', count: 'int', timings: 'obj' },
  notice: { state: 'str', message: 'str' },
  status: { tensors: 'int', bytes: 'int' },
  // batch divides the update: 0 would turn every replica's weights into NaN.
  update: { version: 'int', offset: 'int', total: 'int', batch: 'positive' },
  resync: { version: 'int' },
  basis: { version: 'int', round: 'round', offset: 'int', total: 'int', batch: 'positive' },
  progress: {
    state: 'str', reason: 'str', step: 'int', totalSteps: 'int', epoch: 'int', epochs: 'int', examples: 'int',
    share: 'fraction', shareSteps: 'int', role: 'role', why: 'str',
  },
};
/** Optional fields: checked when present. */
const OPTIONAL: Partial<Record<MsgType, Record<string, Check>>> = {
  assign: { round: 'round', fp32: 'bool' },
  gradient: { round: 'round' },
  status: { drift: 'nonneg' },
  progress: { loss: 'nonneg', acc: 'fraction', testAcc: 'fraction', curve: 'curve' },
};
const MSG_TYPES = new Set<string>(Object.values(MSG));

function ok(v: unknown, c: Check): boolean {
  switch (c) {
    case 'int': return Number.isSafeInteger(v) && (v as number) >= 0;
    case 'positive': return Number.isSafeInteger(v) && (v as number) >= 1;
    case 'num': return typeof v === 'number' && Number.isFinite(v);
    case 'str': return typeof v === 'string' && byteLength(v) <= LIMITS.stringBytes;
    case 'nonneg': return typeof v === 'number' && Number.isFinite(v) && v >= 0;
    case 'obj': return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'bool': return typeof v === 'boolean';
    case 'task': return v === 'train' || v === 'eval';
    case 'round': return v === 1 || v === 2;
    case 'fraction': return typeof v === 'number' && v >= 0 && v <= 1;
    case 'role': return v === 'established' || v === 'benched' || v === 'probation';
    // [step, loss, …] pairs: steps whole, losses finite and ≥ 0.
    case 'curve': return Array.isArray(v) && v.length % 2 === 0 && v.length <= 2 * PROGRESS_CURVE_POINTS
      && v.every((x, i) => (i % 2 === 0 ? Number.isSafeInteger(x) && x >= 0 : typeof x === 'number' && Number.isFinite(x) && x >= 0));
  }
}

/** UTF-8 length, without allocating for the common short ASCII string. */
function byteLength(s: string): number {
  return s.length * 3 <= LIMITS.stringBytes ? s.length : utf8.encode(s).length;
}

/** What an error message may quote of a peer's value: short, and never the whole of a huge one. */
function quote(v: unknown): string {
  // JSON escapes C0 only: printable() also writes out C1 and bidi controls.
  if (typeof v === 'string') return printable(JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v));
  try { return printable(JSON.stringify(v)?.slice(0, 40) ?? String(v)); } catch { return typeof v; }
}

/** The hello's optional and nested fields, which SCHEMA's flat checks don't cover. */
function validateHello(h: Record<string, unknown>): void {
  const bad = (field: string, why: string) => new ProtocolError(CLOSE.badField, `hello.${field} ${why}`);
  if (h.workerId === '') throw bad('workerId', 'must not be empty');
  if (h.kind !== 'node' && h.kind !== 'browser') throw bad('kind', `must be node or browser, got ${quote(h.kind)}`);
  for (const f of ['token', 'session', 'local'] as const) if (h[f] !== undefined && !ok(h[f], 'str')) throw bad(f, `must be a string of at most ${LIMITS.stringBytes} bytes`);
  // The hello's strings reach the log, /api/status and the dashboard: a line break or an escape
  // sequence in them would forge log lines or drive the operator's terminal (text.ts).
  const controls = 'must not hold control characters (line breaks, ESC, bidi overrides)';
  for (const f of ['workerId', 'backend', 'token', 'session', 'local'] as const) if (typeof h[f] === 'string' && hasControl(h[f] as string)) throw bad(f, `${controls}, got ${quote(h[f])}`);
  const a = h.adapter;
  if (a !== null && a !== undefined) {
    if (!ok(a, 'obj')) throw bad('adapter', 'must be a map or null');
    let json: string;
    let tainted = false;
    const look = (k: string, v: unknown) => { if (hasControl(k) || (typeof v === 'string' && hasControl(v))) tainted = true; return v; };
    try { json = JSON.stringify(a, look); } catch { throw bad('adapter', 'is not plain data'); }
    if (json.length > LIMITS.adapterBytes || utf8.encode(json).length > LIMITS.adapterBytes) throw bad('adapter', `is over ${LIMITS.adapterBytes} bytes as JSON`);
    if (tainted) throw bad('adapter', controls);
  }
  const hashes = Object.entries(h.modelHashes as Record<string, unknown>);
  if (hashes.length > LIMITS.modelHashes) throw bad('modelHashes', `has ${hashes.length} entries, at most ${LIMITS.modelHashes}`);
  for (const [k, v] of hashes) if (!ok(k, 'str') || !ok(v, 'str')) throw bad('modelHashes', 'must map model names to hash strings');
  if (hashes.some(([k, v]) => hasControl(k) || hasControl(v as string))) throw bad('modelHashes', controls);
}

/** Checks a decoded header's type and the type of every required field. Throws ProtocolError. */
export function validate(header: unknown): Message {
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new ProtocolError(CLOSE.malformed, 'header is not a map');
  const type = (header as { type?: unknown }).type;
  if (typeof type !== 'string' || !MSG_TYPES.has(type)) throw new ProtocolError(CLOSE.unknownType, `unknown message type ${quote(type)}`);
  for (const [field, check] of Object.entries(SCHEMA[type as MsgType])) {
    if (!ok((header as Record<string, unknown>)[field], check)) throw new ProtocolError(CLOSE.badField, `${type}.${field} must be ${check}, got ${quote((header as Record<string, unknown>)[field])}`);
  }
  for (const [field, check] of Object.entries(OPTIONAL[type as MsgType] ?? {})) {
    const v = (header as Record<string, unknown>)[field];
    if (v !== undefined && !ok(v, check)) throw new ProtocolError(CLOSE.badField, `${type}.${field} must be ${check}, got ${quote(v)}`);
  }
  if (type === MSG.hello) validateHello(header as Record<string, unknown>);
  if (type === MSG.result) {
    const t = (header as Result).timings;
    for (const k of ['computeMs', 'encodeMs', 'sendMs'] as const) if (!ok(t[k], 'nonneg')) throw new ProtocolError(CLOSE.badField, `result.timings.${k} must be a finite number`);
  }
  return header as Message;
}

/**
 * A fingerprint of a weights replica (not a cryptographic hash: it guards against replicas that
 * drift, not against forgery). Pure JS, so a page on plain http (no crypto.subtle) computes it
 * too: two multiply-xor lanes over the raw fp32 bits, about 0.1 s for AlexNet.
 */
export function replicaHash(w: Float32Array): string {
  const u = new Uint32Array(w.buffer, w.byteOffset, w.length);
  let a = 0x811c9dc5 ^ u.length, b = 0x9e3779b9;
  const n = u.length & ~1;
  for (let i = 0; i < n; i += 2) {
    a = Math.imul(a ^ u[i], 0x01000193);
    b = Math.imul(b ^ u[i + 1], 0x5bd1e995);
  }
  if (n < u.length) a = Math.imul(a ^ u[n], 0x01000193);
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

/** Splits a flat vector into CHUNK_FLOATS-sized [offset, end) ranges. */
export function chunkRanges(total: number, chunk = CHUNK_FLOATS): [number, number][] {
  const out: [number, number][] = [];
  for (let o = 0; o < total; o += chunk) out.push([o, Math.min(total, o + chunk)]);
  if (total === 0) out.push([0, 0]);
  return out;
}
