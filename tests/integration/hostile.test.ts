// Hostile input against a live coordinator mid-run: each case is closed with its named code and
// logged, the run goes on, and its final weights equal a clean run's.
import { describe, expect, it, beforeAll } from 'vitest';
import WebSocket from 'ws';
import * as tf from '@tensorflow/tfjs';
import { CLOSE, MSG, PROTOCOL_VERSION, decodeFrame, encode, zooHashes, type Message } from '@tabtrain/shared';
import { WorkerCore } from '../../client/src/core';
import type { StepRecord } from '../../server/src/coordinator';
import { kill, maxAbsDiff, startCoordinator, workers } from '../helpers/run';
import { cleanRun } from '../helpers/clean-run';
import { rawFrame } from '../helpers/liars';

const FORGED = 'x\nworker #1 caught: FORGED\x1b[31m';
const hello = (over: Record<string, unknown> = {}) => rawFrame({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: `hostile-${Math.random()}`, kind: 'node', backend: 'evil', adapter: null, modelHashes: zooHashes(), ...over });

/** Opens a socket, runs `act`, resolves with the close code the coordinator sent. */
function attack(url: string, act: (ws: WebSocket) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => act(ws));
    ws.on('close', (code) => resolve(code));
    ws.on('error', () => {});
    setTimeout(() => reject(new Error('no close within 20 s')), 20_000);
  });
}

/** A real, honest worker core (cpu backend, in this process) whose outgoing frames `tamper` may rewrite. */
function tamperedWorker(url: string, tamper: (frame: Uint8Array, msg: Message) => Uint8Array[]): Promise<number> {
  return attack(url, (ws) => {
    const send = (frame: Uint8Array) => new Promise<void>((res) => {
      const msg = decodeFrame(frame).header as Message;
      const out = tamper(frame, msg);
      if (out.length === 0) return res();
      out.forEach((f, i) => ws.send(f, i === out.length - 1 ? () => res() : undefined));
    });
    const core = new WorkerCore({ workerId: `tampered-${Math.random()}`, kind: 'node', backend: 'cpu', adapter: null }, send);
    ws.on('message', (d: Buffer) => { core.receive(d).catch(() => {}); });
    ws.on('close', () => core.dispose());
    ws.send(core.hello());
  });
}

beforeAll(async () => { await tf.setBackend('cpu'); });

describe('hostile input', () => {
  const RUN = { model: 'alexnet-tiny', batch: 16, maxSteps: 40, seed: 21, balance: 'equal' as const, open: true };

  it('every kind of garbage gets its named close code and a log line; the run ends as a clean one does', async () => {
    // The clean run trains beside the attacked one (its own coordinator and workers): nothing here times the attacked run.
    const cleanDone = cleanRun(2, RUN);
    cleanDone.catch(() => {}); // awaited below; a failure before then must not go unhandled
    const { coord, url, lines } = await startCoordinator({ ...RUN, minWorkers: 2, helloTimeoutMs: 500 });
    const procs = workers(url, 2, ['--backend', 'wasm', '--delay-ms', '5']);
    const results: Record<string, number> = {};
    const cases: [string, () => Promise<number>][] = [
      ['malformed msgpack', () => attack(url, (ws) => ws.send(new Uint8Array([3, 0, 0, 0, 0xc1, 0xc1, 0xc1])))],
      ['text frame', () => attack(url, (ws) => ws.send('hello?'))],
      ['unknown type', () => attack(url, (ws) => ws.send(rawFrame({ type: 'launch' })))],
      ['wrong field type', () => attack(url, (ws) => ws.send(hello({ protocol: 'one' })))],
      ['protocol mismatch', () => attack(url, (ws) => ws.send(hello({ protocol: PROTOCOL_VERSION + 1 })))],
      ['model hash mismatch', () => attack(url, (ws) => ws.send(hello({ modelHashes: { 'alexnet-tiny': 'feedbeef' } })))],
      ['never says hello', () => attack(url, () => {})],
      ['gradient before hello', () => attack(url, (ws) => ws.send(encode({ type: MSG.gradient, step: 0, shard: 0, offset: 0, total: 1 }, new Float32Array(1))))],
      ['result for a shard it does not own', () => attack(url, (ws) => { ws.send(hello()); ws.send(rawFrame({ type: 'result', task: 'train', step: 999, shard: 0, lossSum: 1, correct: 0, count: 1, timings: { computeMs: 1, encodeMs: 0, sendMs: 0 } })); })],
      ['frame over the payload limit', () => attack(url, (ws) => { ws.send(hello()); ws.send(new Uint8Array(17 * 1024 * 1024)); })],
      ['flood', () => attack(url, (ws) => { ws.send(hello()); for (let i = 0; i < 2000; i++) ws.send(encode({ type: MSG.status, tensors: 0, bytes: 0 })); })],
      ['gradient of the wrong length', () => tamperedWorker(url, (f, m) => (m.type === MSG.gradient ? [rawFrame({ ...m, total: m.total + 1 }, decodeFrame(f).body)] : [f]))],
      ['NaN in a gradient', () => tamperedWorker(url, (f, m) => {
        if (m.type !== MSG.gradient) return [f];
        const g = new Float32Array(decodeFrame(f).body.slice().buffer);
        g[g.length >> 1] = NaN;
        return [encode(m, g)];
      })],
      ['Inf in a gradient', () => tamperedWorker(url, (f, m) => {
        if (m.type !== MSG.gradient) return [f];
        const g = new Float32Array(decodeFrame(f).body.slice().buffer);
        g[0] = Infinity;
        return [encode(m, g)];
      })],
      ['duplicate result', () => tamperedWorker(url, (f, m) => (m.type === MSG.result && m.task === 'train' ? [f, f] : [f]))],
      // Asking for the full weights while holding no shard: no free copies of 187 MB on demand.
      ['resync while holding no shard', () => attack(url, (ws) => { ws.send(hello()); ws.send(rawFrame({ type: 'resync', version: 0 })); })],
      // Strings that would forge a log line and colour the operator's terminal (issue 24, 8).
      ['control characters in a hello', () => attack(url, (ws) => ws.send(hello({ backend: FORGED })))],
      ['control characters in a close reason', () => attack(url, (ws) => { ws.send(hello()); ws.once('message', () => ws.close(1000, FORGED)); })],
    ];
    const expected: Record<string, number> = {
      'malformed msgpack': CLOSE.malformed, 'text frame': CLOSE.malformed, 'unknown type': CLOSE.unknownType, 'wrong field type': CLOSE.badField,
      'protocol mismatch': CLOSE.protocolMismatch, 'model hash mismatch': CLOSE.modelMismatch, 'never says hello': CLOSE.helloTimeout,
      'gradient before hello': CLOSE.unexpected, 'result for a shard it does not own': CLOSE.notOwner, 'frame over the payload limit': CLOSE.tooBig,
      flood: CLOSE.flood, 'gradient of the wrong length': CLOSE.badGradient, 'NaN in a gradient': CLOSE.badGradient, 'Inf in a gradient': CLOSE.badGradient,
      'duplicate result': CLOSE.duplicate, 'resync while holding no shard': CLOSE.unexpected,
      'control characters in a hello': CLOSE.badField, 'control characters in a close reason': 1000,
    };
    const attacks = new Promise<void>((resolve, reject) => {
      coord.events.once('step', async () => {
        try {
          for (const [name, run] of cases) results[name] = await run();
          resolve();
        } catch (e) { reject(e); }
      });
    });
    const steps: number[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s.step));
    try {
      const [summary] = await Promise.all([coord.train(), attacks]);
      expect(results).toEqual(expected);
      expect(summary.steps).toBe(40);
      expect(steps).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      // The attacks happened while steps were running, not after the end.
      expect(lines.findIndex((l) => l.includes('closed: duplicate'))).toBeLessThan(lines.length - 1);
      // Every code the coordinator closed with (the close-reason case's 1000 is the peer's own close).
      for (const code of new Set(Object.values(expected).filter((c) => c !== CLOSE.finished))) {
        expect(lines.some((l) => l.includes(`(${code})`)), `log line for ${code}`).toBe(true);
      }
      // Each forged string is one line that shows it escaped; nothing raw reaches the terminal.
      const forged = lines.filter((l) => l.includes('FORGED'));
      expect(forged.map((l) => /closed: badField \(4002\) hello\.backend must not hold control characters .*, got "x\\nworker #1 caught: FORGED\\u001b\[31m"$|left \(finished: x\\nworker #1 caught: FORGED\\u001b\[31m\)/.test(l))).toEqual([true, true]);
      expect(lines.filter((l) => /[\n\r\u001b]/.test(l))).toEqual([]);
      const clean = await cleanDone;
      const diff = maxAbsDiff(coord.weights, clean.weights);
      console.log(`hostile run: ${Object.keys(results).length} attacks, max |w - w_clean| = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-5);
    } finally {
      await coord.close();
      kill(procs);
    }
  });

  it('a slow reader that never drains its socket is dropped with slowReader', async () => {
    // Full-size AlexNet weights (187 MB) overflow the kernel's socket buffers, so unread bytes pile up.
    const { coord, url, lines } = await startCoordinator({ model: 'alexnet', batch: 8, maxSteps: 1, deadlineMs: 3000, open: true });
    const run = coord.train().catch(() => {});
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise((r) => ws.on('open', r));
    ws.send(hello({ workerId: 'slow' }));
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('slowReader')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(lines.find((l) => l.includes('slowReader'))).toMatch(/closed: slowReader \(4011\) \d+ bytes sent to it are still unread/);
    expect(coord.status().workers.find((w) => w.workerId === 'slow')!.state).toBe('lost');
    ws.terminate();
    await coord.close();
    await run;
  });

  it('a worker without the right token is refused with unauthorized', async () => {
    const { coord, url } = await startCoordinator({ model: 'vgg11-tiny', token: 's3cret' });
    try {
      expect(await attack(url, (ws) => ws.send(hello()))).toBe(CLOSE.unauthorized);
      expect(await attack(url, (ws) => ws.send(hello({ token: 's3cre' })))).toBe(CLOSE.unauthorized);
      const ok = new WebSocket(url);
      const first = await new Promise<Buffer>((resolve) => { ok.on('open', () => ok.send(hello({ token: 's3cret' }))); ok.on('message', resolve); });
      expect((decodeFrame(first).header as Message).type).toBe('welcome');
      ok.close();
    } finally {
      await coord.close();
    }
  });
});
