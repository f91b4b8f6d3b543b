// A seeded mutation fuzzer for the coordinator's two front doors, the WebSocket protocol and the
// HTTP routes. Both go over raw TCP (node:net), so that anything at all can be sent: broken
// request lines, absurd headers, bodies shorter or longer than they claim, WebSocket frames that
// no library would write, and protocol frames mutated from valid ones (frames.ts, ws-inputs.ts,
// http-inputs.ts). Every input must be answered (http-answers.ts, ws-answers.ts). Every input
// comes from its own PRNG stream (seed, index), so one input replays alone: FUZZ_SEED=s FUZZ_ONLY=i,j.
// This file runs them, finds the input behind a crash, and describes inputs for the report.
import type { Target } from './frames';
import { runHttp, type Outcome, type Timeouts } from './http-answers';
import { httpInput, type HttpInput } from './http-inputs';
import { Rng } from './rng';
import { runWs } from './ws-answers';
import { wsInput, type WsInput } from './ws-inputs';

export type Input = WsInput | HttpInput;

/** Input `idx` of the fuzz run seeded `seed`: the same input whenever it is regenerated. */
export function makeInput(seed: number, idx: number, t: Target): Input {
  const rng = new Rng(seed, idx + 1);
  return rng.chance(0.62) ? wsInput(rng, t, idx, String(seed)) : httpInput(rng, t);
}

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

