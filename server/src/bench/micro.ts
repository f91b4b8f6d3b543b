// `tabtrain bench micro`: the costs under one step, each next to the physical limit measured in
// the same run (a plain memory copy of the same bytes).
//
//   aggregation   N shards' gradients summed by the coordinator's streaming reducer (reducer.ts),
//                 in GB/s of gradient read, next to copying the same bodies; also the path it
//                 replaced (copy each slice into a per-shard buffer, check it, sum at the end)
//   codecs        per mode: the worker's encode of a whole gradient, the coordinator's check +
//                 decode + fold of one shard, bytes on the wire; frame header encode/decode; and
//                 fp16 and int8 encode and decode alone (SIMD kernels, and the plain JS loops),
//                 as fractions of the memory copy
//   framing       our header+raw-body frames against msgpackr with moreTypes for an 8 MiB chunk
//   websocket     loopback MB/s for one 187 MB message, worker → coordinator (masked) and back,
//                 as one frame with ws's defaults (the baseline) and as 8 MiB frames with bufferutil
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { CHUNK_FLOATS, decodeFrame, encode, getModel, MSG, paramLayout, sgdStep, validate } from '@tabtrain/shared';
import { COMPRESS_MODES, GradientEncoder, decodeInto, gradientFrame, parseCompression, planBytes, planSegments, roundSegments, uploadBytes, type CompressMode, type Segment } from '@tabtrain/shared/compress';
import { scalarCodecs } from '@tabtrain/shared/scalar-codecs';
import { availableParallelism } from 'node:os';
import { LowRankPool } from '@tabtrain/shared/low-rank-pool';
import { LowRankKernel, applyPowerSgd, powerSgdPlan, type PowerSgdPlan } from '@tabtrain/shared/powersgd';
import { startShareThread } from '../apply-threads';
import { orthonormaliseRound1 } from '@tabtrain/shared/powersgd-basis';
import type { ParamInfo } from '@tabtrain/shared';
import { fillGradient } from '@tabtrain/shared/synthetic-net';
import { firstNonFinite, sumInOrder } from '../aggregate';
import { StreamReducer } from '../reducer';
import type { PeerOptions } from './ws-peer';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export interface MicroOptions {
  model: string;
  shards: number;
  reps: number;
  modes: CompressMode[];
  rank: number;
  ws: boolean;
  wsReps: number;
  log: (line: string) => void;
}

export interface Timing { best: number; median: number; runs: number[] }

function time(reps: number, f: () => void, warmup = 1): Timing {
  for (let i = 0; i < warmup; i++) f();
  const runs: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    runs.push((performance.now() - t0) / 1000);
  }
  const sorted = runs.slice().sort((a, b) => a - b);
  return { best: sorted[0], median: sorted[Math.floor(sorted.length / 2)], runs };
}

const gbs = (bytes: number, s: number) => bytes / s / 1e9;

/** N shards of a gradient, each cut into the plan's fp32 bodies, every body its own buffer (as ws delivers them). */
function shardBodies(plan: Segment[], total: number, shards: number): Uint8Array[][] {
  const grad = new Float32Array(total);
  return Array.from({ length: shards }, (_, k) => {
    fillGradient(grad, k + 1);
    return plan.map((s) => new Uint8Array(grad.slice(s.offset, s.offset + s.count).buffer));
  });
}

export async function micro(o: MicroOptions) {
  const spec = getModel(o.model);
  const { params, total } = paramLayout(spec);
  const bytes = 4 * total;
  const res: Record<string, unknown> = { model: spec.name, floats: total, shards: o.shards };

  // ---- aggregation, next to a memory copy of the same bytes ----
  const plan = planSegments(params, total, parseCompression('none'));
  o.log(`aggregation: ${o.shards} shards × ${(bytes / 1e6).toFixed(1)} MB in ${plan.length} bodies each`);
  const bodies = shardBodies(plan, total, o.shards);
  const input = o.shards * bytes;
  const dst = new Float32Array(total);
  const copy = time(o.reps, () => {
    for (const b of bodies) plan.forEach((s, i) => dst.set(new Float32Array(b[i].buffer), s.offset));
  });
  const reducer = new StreamReducer(plan, total);
  const fold = (order: 'round-robin' | 'shard-major') => time(o.reps, () => {
    reducer.begin(o.shards);
    if (order === 'shard-major') bodies.forEach((b, k) => plan.forEach((s, i) => reducer.accept(k, { offset: s.offset, total }, b[i])));
    else plan.forEach((s, i) => bodies.forEach((b, k) => reducer.accept(k, { offset: s.offset, total }, b[i])));
    reducer.finish();
  });
  const rr = fold('round-robin');
  const sm = fold('shard-major');
  // The path the reducer replaced: each slice checked and copied into its shard's buffer, summed at the end.
  const bufs = Array.from({ length: o.shards }, () => new Float32Array(total));
  const old = time(Math.min(o.reps, 3), () => {
    bodies.forEach((b, k) => plan.forEach((s, i) => {
      const slice = new Float32Array(b[i].buffer);
      if (firstNonFinite(slice) >= 0) throw new Error('non-finite');
      bufs[k].set(slice, s.offset);
    }));
    sumInOrder(bufs, dst);
  });
  bufs.length = 0;
  const exact = sumInOrder(bodies.map((b) => { const v = new Float32Array(total); plan.forEach((s, i) => v.set(new Float32Array(b[i].buffer), s.offset)); return v; }), new Float32Array(total));
  reducer.begin(o.shards);
  plan.forEach((s, i) => bodies.forEach((b, k) => reducer.accept(k, { offset: s.offset, total }, b[i])));
  const same = reducer.finish().every((x, i) => Object.is(x, exact[i]));
  res.aggregation = {
    inputBytes: input, simd: reducer.simd, bitIdenticalToReference: same,
    memcpyGBs: gbs(input, copy.median), memcpyBestGBs: gbs(input, copy.best),
    reducerGBs: gbs(input, rr.median), reducerBestGBs: gbs(input, rr.best),
    reducerShardMajorGBs: gbs(input, sm.median),
    reducerVsMemcpy: copy.median / rr.median,
    oldPathGBs: gbs(input, old.median),
    timings: { copy, roundRobin: rr, shardMajor: sm, oldPath: old },
  };
  o.log(`  memory copy ${gbs(input, copy.median).toFixed(2)} GB/s | reducer ${gbs(input, rr.median).toFixed(2)} GB/s (${((100 * copy.median) / rr.median).toFixed(0)}% of copy; shard-major ${gbs(input, sm.median).toFixed(2)}) | old path ${gbs(input, old.median).toFixed(2)} GB/s | SIMD ${reducer.simd} | bit-identical to sumInOrder: ${same}`);
  bodies.length = 0;

  // ---- SGD: the coordinator's apply, SIMD (weights beside the sum in the arena) vs the plain loop ----
  {
    const r = new StreamReducer(plan, total, () => {}, 1);
    const [w, g] = [r.regions[0], r.sum];
    for (let i = 0; i < total; i += 7) { w[i] = (i % 13) * 1e-2 - 0.06; g[i] = (i % 11) * 1e-3 - 0.005; }
    const plainW = w.slice();
    const simd = time(o.reps, () => r.sgd(w, g, 0.01, 128));
    const plain = time(o.reps, () => sgdStep(plainW, g, 0.01, 128));
    const sameSgd = w.every((x, i) => Object.is(x, plainW[i]));
    res.sgd = { simdMs: 1000 * simd.median, plainMs: 1000 * plain.median, bitIdentical: sameSgd };
    o.log(`sgd over ${total.toLocaleString('en-US')} weights: SIMD ${(1000 * simd.median).toFixed(1)} ms, plain loop ${(1000 * plain.median).toFixed(1)} ms, bit-identical after ${o.reps + 1} steps: ${sameSgd}`);
  }

  // ---- codecs: encode on the worker, check + decode + fold on the coordinator, per mode ----
  const grad = new Float32Array(total);
  fillGradient(grad, 1);
  const codecs: Record<string, unknown>[] = [];
  const none = planBytes(plan, total);
  for (const mode of o.modes) {
    const c = parseCompression(mode, o.rank);
    if (mode === 'powersgd') { codecs.push(powerSgdStep(params, total, c.rank, none, o.log)); continue; }
    const p = planSegments(params, total, c);
    const enc = new GradientEncoder(p, total);
    const reps = o.reps;
    let frames: { frame: Uint8Array; body: Uint8Array }[] = [];
    const encodeT = time(reps, () => {
      frames = p.map((s) => { const f = gradientFrame(s, 1, 0, total); enc.encode(s, grad, f.body); return f; });
    });
    const r = new StreamReducer(p, total);
    const foldOne = (shards: number) => time(reps, () => {
      r.begin(shards);
      for (let k = 0; k < shards; k++) {
        frames.forEach((f, i) => {
          const d = decodeFrame(f.frame);
          r.accept(k, validate(d.header) as { offset: number; total: number; codec?: string }, d.body);
          void i;
        });
      }
      r.finish();
    });
    const first = foldOne(1);
    const two = foldOne(2);
    const wire = planBytes(p, total);
    const row = {
      mode, rank: c.rank, frames: p.length, bytesPerWorkerPerStep: wire, ratioToFp32: wire / none,
      encodeMs: 1000 * encodeT.median, encodeGBs: gbs(bytes, encodeT.median),
      decodeFirstMs: 1000 * first.median, decodeAddMs: 1000 * (two.median - first.median),
    };
    codecs.push(row);
    o.log(`  ${mode.padEnd(8)} ${(wire / 1e6).toFixed(2).padStart(7)} MB/worker/step (1/${(none / wire).toFixed(1)} of fp32) in ${p.length} frames | worker encode ${row.encodeMs.toFixed(0)} ms | coordinator fold: first shard ${row.decodeFirstMs.toFixed(0)} ms, each further shard ${row.decodeAddMs.toFixed(0)} ms`);
  }
  res.codecs = codecs;

  // ---- fp16 and int8 at memory speed: the codecs alone, beside the memory copy of this run ----
  // Encode: the whole gradient into reused frame bodies (as a worker does); decode: every body
  // into one fp32 vector. GB/s of fp32 gradient (4 bytes a float), medians over o.reps, for the
  // WebAssembly SIMD kernels and for the plain JavaScript loops they replaced (still the fallback),
  // timed in turn with a plain copy of the gradient so that all see the same load.
  const memcpyGBs = (res.aggregation as { memcpyGBs: number }).memcpyGBs;
  const codecRates: Record<string, unknown>[] = [];
  for (const mode of o.modes.filter((m) => m === 'fp16' || m === 'int8')) {
    const p = planSegments(params, total, parseCompression(mode));
    const enc = new GradientEncoder(p, total);
    const err = new Float32Array(total);
    const bodies = p.map((s) => gradientFrame(s, 1, 0, total).body);
    const out = new Float32Array(total);
    const check = (ok: boolean) => { if (!ok) throw new Error(`${mode} decoded to NaN/Inf`); };
    const runs: Record<string, () => void> = {
      copy: () => out.set(grad),
      encode: () => p.forEach((s, i) => enc.encode(s, grad, bodies[i])),
      decode: () => p.forEach((s, i) => check(decodeInto(s, bodies[i], out))),
      plainEncode: () => p.forEach((s, i) => (mode === 'fp16' ? scalarCodecs.encodeHalf(grad, s.offset, s.count, bodies[i]) : scalarCodecs.encodeInt8(s, grad, err, bodies[i]))),
      plainDecode: () => p.forEach((s, i) => check(mode === 'fp16' ? scalarCodecs.decodeHalf(bodies[i], s.count, out, s.offset) : (scalarCodecs.decodeInt8(s, bodies[i], out, s.offset), true))),
    };
    const t: Record<string, number[]> = {};
    for (let r = -1; r < o.reps; r++) { // r = −1 warms up
      for (const [name, f] of Object.entries(runs)) {
        const t0 = performance.now();
        f();
        if (r >= 0) (t[name] ??= []).push((performance.now() - t0) / 1000);
      }
    }
    const rate = (name: string) => gbs(bytes, t[name].slice().sort((x, y) => x - y)[Math.floor(t[name].length / 2)]);
    const row = {
      mode, simd: enc.simd,
      encodeGBs: rate('encode'), decodeGBs: rate('decode'),
      encodeVsMemcpy: rate('encode') / memcpyGBs, decodeVsMemcpy: rate('decode') / memcpyGBs,
      plainEncodeGBs: rate('plainEncode'), plainDecodeGBs: rate('plainDecode'),
      copyBesideGBs: rate('copy'),
    };
    codecRates.push(row);
    const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
    o.log(`  ${mode} codec alone: encode ${row.encodeGBs.toFixed(2)} GB/s (${pct(row.encodeVsMemcpy)} of memory copy), decode ${row.decodeGBs.toFixed(2)} GB/s (${pct(row.decodeVsMemcpy)}) | plain JS ${row.plainEncodeGBs.toFixed(2)} / ${row.plainDecodeGBs.toFixed(2)} GB/s | memory copy ${memcpyGBs.toFixed(2)} GB/s (copy of the gradient timed beside these: ${row.copyBesideGBs.toFixed(2)}) | SIMD ${row.simd}`);
  }
  res.codecRates = codecRates;

  // ---- framing: our frames against msgpackr's typed-array extension, one 8 MiB chunk ----
  const chunk = grad.subarray(0, CHUNK_FLOATS);
  const header = { type: MSG.gradient, step: 1, shard: 0, offset: 0, total } as const;
  const n = 20;
  let frame = encode(header, chunk);
  const ours = time(o.reps, () => { for (let i = 0; i < n; i++) frame = encode(header, chunk); });
  const oursDecode = time(o.reps, () => { for (let i = 0; i < n; i++) { const d = decodeFrame(frame); validate(d.header); new Float32Array(d.body.buffer, d.body.byteOffset, d.body.byteLength / 4); } });
  const packr = new Packr({ moreTypes: true, useRecords: false });
  let packed = packr.pack({ ...header, body: chunk });
  const mp = time(o.reps, () => { for (let i = 0; i < n; i++) packed = packr.pack({ ...header, body: chunk }); });
  const mpDecode = time(o.reps, () => { for (let i = 0; i < n; i++) packr.unpack(packed); });
  const small = encode({ type: MSG.result, task: 'train', step: 1, shard: 0, lossSum: 1, correct: 1, count: 16, timings: { computeMs: 1, encodeMs: 1, sendMs: 1 } });
  const hdr = time(o.reps, () => { for (let i = 0; i < 10000; i++) validate(decodeFrame(small).header); });
  const chunkBytes = 4 * CHUNK_FLOATS * n;
  res.framing = {
    chunkBytes: 4 * CHUNK_FLOATS,
    oursEncodeGBs: gbs(chunkBytes, ours.median), oursDecodeGBs: gbs(chunkBytes, oursDecode.median),
    msgpackrEncodeGBs: gbs(chunkBytes, mp.median), msgpackrDecodeGBs: gbs(chunkBytes, mpDecode.median),
    smallMessageDecodeUs: (1e6 * hdr.median) / 10000,
  };
  o.log(`  framing, 8 MiB chunk: ours encode ${gbs(chunkBytes, ours.median).toFixed(2)} GB/s (one copy), decode ${gbs(chunkBytes, oursDecode.median).toFixed(0)} GB/s (a view) | msgpackr moreTypes pack ${gbs(chunkBytes, mp.median).toFixed(2)} GB/s, unpack ${gbs(chunkBytes, mpDecode.median).toFixed(2)} GB/s | small message decode+validate ${((1e6 * hdr.median) / 10000).toFixed(1)} µs`);

  // ---- loopback WebSocket ----
  if (o.ws) {
    const msg = bytes;
    const variants: { name: string; frameBytes: number; bufferutil: boolean; mask?: 'zero'; only?: 'up' }[] = [
      { name: 'one frame, no bufferutil (baseline)', frameBytes: msg, bufferutil: false },
      { name: 'one frame, bufferutil', frameBytes: msg, bufferutil: true },
      { name: '8 MiB frames, no bufferutil', frameBytes: 4 * CHUNK_FLOATS, bufferutil: false },
      { name: '8 MiB frames, bufferutil (tabtrain)', frameBytes: 4 * CHUNK_FLOATS, bufferutil: true },
      // For scale only, not used: RFC 6455 requires a fresh random key; a zero key skips masking.
      { name: '8 MiB frames, zero masking key (not used)', frameBytes: 4 * CHUNK_FLOATS, bufferutil: true, mask: 'zero', only: 'up' },
    ];
    const rows: Record<string, unknown>[] = [];
    for (const v of variants) {
      for (const direction of ['up', 'down'] as const) {
        if (v.only && v.only !== direction) continue;
        const r = await wsLoopback({ direction, bytes: msg, frameBytes: v.frameBytes, reps: o.wsReps, mask: v.mask }, v.bufferutil);
        const sorted = r.times.slice().sort((a, b) => a - b);
        const median = sorted[Math.floor(sorted.length / 2)];
        const row = { variant: v.name, direction, messageBytes: r.total, medianMBs: r.total / median / 1e6, bestMBs: r.total / sorted[0] / 1e6, times: r.times };
        rows.push(row);
        o.log(`  websocket ${direction === 'up' ? 'worker → coordinator (masked)' : 'coordinator → worker'}, ${v.name}: ${row.medianMBs.toFixed(0)} MB/s median, ${row.bestMBs.toFixed(0)} best (${o.wsReps} messages of ${(r.total / 1e6).toFixed(1)} MB)`);
      }
    }
    res.websocket = rows;
  }
  return res;
}

/** Workers whose factors the powersgd row sums: the issue's target is ≤ 10 ms of coordinator CPU per step at N = 8. */
const POWERSGD_WORKERS = 8;

/**
 * powersgd's coordinator work in one step at N = 8: fold 8 workers' round-1 vectors in shard
 * order, orthonormalise once (P̂), fold 8 round-2 vectors, and apply P̂ (ΣQ_i)ᵀ to the weights;
 * and the bytes a worker sends in both rounds, against fp32.
 */
function powerSgdStep(params: ParamInfo[], total: number, rank: number, fp32Bytes: number, log: (line: string) => void): Record<string, unknown> {
  const plan = powerSgdPlan(params, total, rank);
  const vectors = [plan.round1Floats, plan.round2Floats].map((floats, r) => {
    const segs = roundSegments(plan, (r + 1) as 1 | 2);
    const bodies = Array.from({ length: POWERSGD_WORKERS }, (_, k) => {
      const v = new Float32Array(floats);
      fillGradient(v, 10 * r + k + 1);
      return segs.map((s) => new Uint8Array(v.slice(s.offset, s.offset + s.count).buffer));
    });
    return { floats, segs, bodies, reducer: new StreamReducer(segs, floats) };
  });
  const fold = (r: number) => {
    const { segs, bodies, reducer, floats } = vectors[r];
    reducer.begin(POWERSGD_WORKERS);
    bodies.forEach((b, k) => segs.forEach((s, i) => reducer.accept(k, { offset: s.offset, total: floats }, b[i])));
    return reducer.finish();
  };
  const basis = new Float32Array(plan.round1Floats);
  // The coordinator's weights live in the update kernel's memory (step.ts): applied in place.
  const kernel = LowRankKernel.withWeights(plan);
  const weights = kernel?.weights ?? new Float32Array(total);
  weights.fill(1e-2);
  const t = {
    fold1: time(5, () => { fold(0); }),
    orthonormalise: time(5, () => { basis.set(fold(0)); orthonormaliseRound1(plan, basis, 1, 1); }),
    fold2: time(5, () => { fold(1); }),
    apply: time(5, () => applyPowerSgd(plan, weights, basis, fold(1), 0.01, 128, kernel)),
  };
  const ms = (x: Timing) => 1000 * x.median;
  const orthMs = ms(t.orthonormalise) - ms(t.fold1);
  const applyMs = ms(t.apply) - ms(t.fold2);
  const threaded = applyThreaded(plan, basis, fold(1));
  const wire = uploadBytes(params, total, { mode: 'powersgd', rank });
  const row = {
    mode: 'powersgd', rank, workers: POWERSGD_WORKERS, bytesPerWorkerPerStep: wire, ratioToFp32: wire / fp32Bytes,
    round1Floats: plan.round1Floats, round2Floats: plan.round2Floats, matrices: plan.matrices.length,
    fold1Ms: ms(t.fold1), orthonormaliseMs: orthMs, fold2Ms: ms(t.fold2), applyMs,
    coordinatorCpuMs: ms(t.fold1) + orthMs + ms(t.fold2), coordinatorCpuWithApplyMs: ms(t.fold1) + orthMs + ms(t.fold2) + applyMs,
    applyThreadedMs: threaded,
  };
  log(`  powersgd ${(wire / 1e6).toFixed(3).padStart(7)} MB/worker/step, both rounds (1/${(fp32Bytes / wire).toFixed(0)} of fp32) | coordinator at N = ${POWERSGD_WORKERS}: fold round 1 ${row.fold1Ms.toFixed(1)} ms + orthonormalise ${orthMs.toFixed(1)} ms + fold round 2 ${row.fold2Ms.toFixed(1)} ms = ${row.coordinatorCpuMs.toFixed(1)} ms; apply P̂Qᵀ to ${total.toLocaleString('en-US')} weights ${applyMs.toFixed(1)} ms (every replica does this); over threads sharing the weights (low-rank-pool.ts): ${threaded.map((x) => `${x.threads} threads ${x.ms.toFixed(1)} ms`).join(', ')} (this machine has ${availableParallelism()} cores)`);
  return row;
}

/** The same apply by 1 to 4 threads over one shared memory (LowRankPool.apply: the caller and its helpers, as a worker's exact copy does it); medians of 5. */
function applyThreaded(plan: PowerSgdPlan, round1: Float32Array, round2: Float32Array): { threads: number; ms: number }[] {
  return [1, 2, 3].map((helpers) => {
    const pool = LowRankPool.create(plan, helpers, startShareThread);
    if (!pool) return { threads: helpers + 1, ms: NaN };
    try {
      // Until its helpers have started a pool applies alone: wait for them (their start needs nothing of this thread).
      const nap = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; !pool.ready; i++) {
        if (i > 1000) return { threads: helpers + 1, ms: NaN };
        Atomics.wait(nap, 0, 0, 10);
      }
      pool.weights.fill(1e-2);
      pool.round1.set(round1);
      pool.round2.set(round2);
      const all = plan.matrices.length;
      return { threads: helpers + 1, ms: 1000 * time(5, () => pool.apply(0, all, true, 0.01, 128)).median };
    } finally {
      pool.dispose();
    }
  });
}

/** Runs the two ends of one loopback measurement as separate processes. */
async function wsLoopback(o: PeerOptions, bufferutil: boolean): Promise<{ times: number[]; total: number }> {
  const env = { ...process.env };
  if (bufferutil) delete env.WS_NO_BUFFER_UTIL;
  else env.WS_NO_BUFFER_UTIL = '1';
  const peer = (role: string, opts: PeerOptions) => spawn(process.execPath, ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), join(ROOT, 'server/src/bench/ws-peer.ts'), role, JSON.stringify(opts)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const lines = (p: ReturnType<typeof peer>) => {
    let buf = '';
    const waiters: ((l: string) => void)[] = [];
    const ready: string[] = [];
    p.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const l = buf.slice(0, i); buf = buf.slice(i + 1);
        const w = waiters.shift(); if (w) w(l); else ready.push(l);
      }
    });
    return () => new Promise<string>((r) => { const l = ready.shift(); if (l !== undefined) r(l); else waiters.push(r); });
  };
  const server = peer('server', o);
  const fromServer = lines(server);
  const { port } = JSON.parse(await fromServer()) as { port: number };
  const client = peer('client', { ...o, port });
  const fromClient = lines(client);
  const out = JSON.parse(await (o.direction === 'up' ? fromClient() : fromServer())) as { times: number[]; total: number };
  server.kill();
  client.kill();
  return out;
}

export { COMPRESS_MODES };
