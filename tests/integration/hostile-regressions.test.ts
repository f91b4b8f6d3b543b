// One focused regression test for each attack of issue 10 that used to end the coordinator or the
// run: close reasons over 123 bytes, request targets that are not paths, huge hellos, identity
// replay, stalling sockets, a flood of short connections, oversized control bodies, HEAD streams.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import WebSocket from 'ws';
import { connect } from 'node:net';
import { CLOSE, decodeFrame } from '@tabtrain/shared';
import type { Coordinator, StepRecord } from '../../server/src/coordinator';
import type { Dataset } from '../../server/src/data';
import { kill, maxAbsDiff, workers, type TestRunOptions } from '../helpers/run';
import { cleanRun } from '../helpers/clean-run';
import {
  attack, get, hello, httpRequest, join, liar, maskedFrame, opened, rawFrame, rawHttp, sleep, startOn, statusOf, until, upgradeRequest,
  type Closed, type Joined,
} from '../helpers/liars';

beforeAll(async () => { await tf.setBackend('cpu'); });

const HONEST = ['--backend', 'wasm', '--delay-ms', '5'];
const BASE = { model: 'alexnet-tiny', batch: 16, seed: 13, balance: 'equal' as const, open: true };

interface Live {
  coord: Coordinator; url: string; base: string; port: number; lines: string[]; steps: StepRecord[];
  training: Promise<unknown>;
  /** Waits for `k` more steps than now (the run goes on); false after `ms`. */
  goesOn: (k?: number, ms?: number) => Promise<boolean>;
  end: () => Promise<void>;
}

/** A coordinator mid-run: `n` honest local workers, the first step done. */
async function live(opts: Partial<TestRunOptions> = {}, n = 1, dataset: Dataset | null = null, workerArgs = HONEST): Promise<Live> {
  const { coord, url, base, port, lines } = await startOn(dataset, { ...BASE, maxSteps: 100_000, minWorkers: n, ...opts });
  const procs = workers(url, n, workerArgs);
  const steps: StepRecord[] = [];
  coord.events.on('step', (s: StepRecord) => steps.push(s));
  const training = coord.train();
  training.catch(() => {});
  let ended = false;
  if (!(await until(() => steps.length >= 1, 60_000))) throw new Error(`no first step: ${lines.slice(-5).join(' | ')}`);
  return {
    coord, url, base, port, lines, steps, training,
    goesOn: (k = 2, ms = 30_000) => { const at = steps.length; return until(() => steps.length >= at + k, ms); },
    end: async () => {
      if (ended) return;
      ended = true;
      coord.stop('test over');
      await training.catch(() => {});
      await coord.close();
      kill(procs);
    },
  };
}

const bytes = (s: string) => Buffer.byteLength(s);

/** One live run (one honest worker) that several tests attack in turn; the connection flood goes last. */
let sharedRun: Promise<Live> | null = null;
const shared = () => (sharedRun ??= live());
afterAll(async () => { if (sharedRun) await (await sharedRun).end(); });

describe('hostile regressions', () => {
  it('close reasons from multi-byte attacker text: each gets its named code, a reason of at most 123 bytes, and the run ends as a clean one', async () => {
    const RUN = { ...BASE, maxSteps: 20, minWorkers: 2 };
    // The clean run trains beside the attacked one (own coordinator, its workers one process): nothing times the attacked run.
    const cleanDone = cleanRun(2, RUN);
    cleanDone.catch(() => {}); // awaited below; a failure before then must not go unhandled
    const { coord, url, lines } = await startOn(null, RUN);
    const procs = workers(url, 2, HONEST);
    const got: Record<string, Closed> = {};
    const cases: [string, () => Promise<Closed>, number][] = [
      ['unknown type: 200 emoji', () => attack(url, (ws) => ws.send(rawFrame({ type: '😈'.repeat(200) }))), CLOSE.unknownType],
      ['unknown type: odd surrogate cut', () => attack(url, (ws) => ws.send(rawFrame({ type: `x${'😈'.repeat(200)}` }))), CLOSE.unknownType],
      ['model hash of CJK (within the string cap)', () => attack(url, (ws) => ws.send(hello({ modelHashes: { 'alexnet-tiny': '模型'.repeat(33) } }))), CLOSE.modelMismatch],
      ['model hash of CJK (over the string cap)', () => attack(url, (ws) => ws.send(hello({ modelHashes: { 'alexnet-tiny': '模型'.repeat(500) } }))), CLOSE.badField],
      ['hello.kind echoed by the validator', () => attack(url, (ws) => ws.send(hello({ kind: '種類'.repeat(30) }))), CLOSE.badField],
      ['hello.protocol of emoji', () => attack(url, (ws) => ws.send(hello({ protocol: '🔥'.repeat(100) }))), CLOSE.badField],
      ['gradient.codec of long UTF-8', () => liar(url, (f, m) => (m.type === 'gradient' ? [rawFrame({ ...m, codec: 'кодек🗜'.repeat(60) }, decodeFrame(f).body)] : [f])).closed, CLOSE.badGradient],
    ];
    let doneAt = -1;
    const attacks = new Promise<void>((resolve, reject) => {
      coord.events.once('step', async () => {
        try { for (const [name, run] of cases) got[name] = await run(); doneAt = coord.step; resolve(); } catch (e) { reject(e); }
      });
    });
    try {
      const [summary] = await Promise.all([coord.train(), attacks]);
      for (const [name, , code] of cases) {
        console.log(`close reason "${name}": ${got[name].code}, ${bytes(got[name].reason)} bytes: ${got[name].reason}`);
        expect(got[name].code, name).toBe(code);
        expect(bytes(got[name].reason), name).toBeLessThanOrEqual(123);
        expect(got[name].reason.length, name).toBeGreaterThan(0);
      }
      for (const code of new Set(cases.map((c) => c[2]))) expect(lines.some((l) => l.includes(`(${code})`)), `log line for ${code}`).toBe(true);
      expect(summary.steps).toBe(20);
      // The attacks came while the run was training, not after its end.
      expect(doneAt).toBeGreaterThanOrEqual(1);
      expect(doneAt).toBeLessThan(20);
      const diff = maxAbsDiff(coord.weights, (await cleanDone).weights);
      console.log(`close reasons: attacks done by step ${doneAt} of 20, max |w - w_clean| = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThanOrEqual(1e-5);
    } finally {
      await coord.close();
      kill(procs);
    }
  });

  it('request targets that are not paths get 400, over HTTP and as a WebSocket upgrade; the coordinator answers after', async () => {
    const run = await shared();
    for (const target of ['//', 'http://x:99999/', '*', '//ws', 'http://[::1', '/%']) {
      const plain = await rawHttp(run.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, { until: /\r\n\r\n/ });
      const up = await rawHttp(run.port, upgradeRequest(target), { until: /\r\n\r\n/ });
      console.log(`GET ${target}: ${plain.text.split('\r\n')[0]}; upgrade: ${up.text.split('\r\n')[0]}`);
      if (target !== '/%') {
        expect(statusOf(plain.text), `GET ${target}`).toBe(400);
        expect(statusOf(up.text), `upgrade ${target}`).toBe(400);
      } else {
        // A path that URL() can read: a 4xx of the static server, not a crash.
        expect(statusOf(plain.text), `GET ${target}`).toBeGreaterThanOrEqual(400);
        expect(statusOf(up.text), `upgrade ${target}`).toBeGreaterThanOrEqual(400);
      }
    }
    const s = await get(run.base, '/api/status');
    expect(s.status).toBe(200);
    expect(await run.goesOn()).toBe(true);
  });

  it('hellos with 14 MB adapters are refused with badField; 40 of them leave /api/status small', async () => {
    const run = await shared();
    const big = hello({ adapter: { description: 'x'.repeat(14_000_000) } });
    expect(big.byteLength).toBeGreaterThan(14_000_000);
    const codes: number[] = [];
    for (let i = 0; i < 40; i += 4) codes.push(...(await Promise.all([0, 1, 2, 3].map(() => attack(run.url, (ws) => ws.send(big))))).map((c) => c.code));
    expect(codes).toEqual(Array(40).fill(CLOSE.badField));
    // A hello within the caps is welcome (so the caps are not refusing everything).
    const ok = join(run.url, hello({ adapter: { description: 'a GPU'.repeat(100) } }));
    expect((await ok.welcome).type).toBe('welcome');
    ok.ws.close();
    const s = await get(run.base, '/api/status');
    console.log(`/api/status after 40 hellos with 14 MB adapters: ${s.bytes} bytes in ${s.ms.toFixed(0)} ms`);
    expect(s.status).toBe(200);
    expect(s.bytes).toBeLessThan(200_000);
    expect(run.lines.filter((l) => /closed: badField \(4002\) hello\.adapter is over 4096 bytes/.test(l))).toHaveLength(40);
    expect(await run.goesOn()).toBe(true);
  });

  describe('identity', () => {
    it("a stranger reusing a live worker's workerId joins as a new worker; the legitimate one keeps computing and the run finishes with it", async () => {
      const { coord, url, base, lines } = await startOn(null, { ...BASE, maxSteps: 40, minWorkers: 1 });
      const procs = workers(url, 1, HONEST);
      const steps: StepRecord[] = [];
      coord.events.on('step', (s: StepRecord) => steps.push(s));
      const training = coord.train();
      try {
        await until(() => steps.length >= 3, 60_000);
        const rows = JSON.parse((await get(base, '/api/status')).text).workers as { id: number; workerId: string; state: string; shardsDone: number }[];
        const legit = rows.find((r) => r.state !== 'lost')!;
        expect(legit).toBeDefined();
        const strangers: Joined[] = [];
        for (let i = 0; i < 3; i++) strangers.push(join(url, hello({ workerId: legit.workerId })));
        const welcomes = await Promise.all(strangers.map((s) => s.welcome));
        for (const w of welcomes) {
          expect(w.workerId).not.toBe(legit.workerId);
          expect(w.session).toMatch(/^[0-9a-f]{16,}$/);
        }
        expect(new Set(welcomes.map((w) => w.workerId)).size).toBe(3);
        const doneAtClaim = coord.status().workers.find((r) => r.id === legit.id)!.shardsDone;
        for (const s of strangers) s.ws.close();
        const summary = await training;
        expect(summary.steps).toBe(40);
        const after = coord.status().workers.find((r) => r.id === legit.id)!;
        expect(after.workerId).toBe(legit.workerId);
        expect(after.state).not.toBe('lost');
        expect(after.shardsDone).toBeGreaterThan(doneAtClaim);
        expect(procs[0].exitCode).toBeNull();
        expect(lines.some((l) => l.includes(`(${CLOSE.replaced})`))).toBe(false);
        expect(lines.some((l) => new RegExp(`worker #${legit.id} (left|\\(.*\\) closed)`).test(l))).toBe(false);
      } finally {
        await coord.close();
        kill(procs);
      }
    });

    it('a reconnect presenting the session secret takes over (the old socket is closed with replaced); a wrong secret displaces nobody; "" is badField and closes no one else; no secret is ever shown', async () => {
      const run = await shared();
      // Three sockets in their hello phase.
      const waiting = [0, 1, 2].map(() => join(run.url));
      await Promise.all(waiting.map((w) => opened(w.ws)));
      const empty = await attack(run.url, (ws) => ws.send(hello({ workerId: '' })));
      expect(empty.code).toBe(CLOSE.badField);
      expect(empty.reason).toMatch(/workerId/);
      await sleep(300);
      for (const w of waiting) expect(w.ws.readyState, 'a socket in its hello phase').toBe(WebSocket.OPEN);
      // They still join.
      waiting.forEach((w, i) => w.ws.send(hello({ workerId: `waiting-${i}` })));
      const wWelcomes = await Promise.all(waiting.map((w) => w.welcome));
      expect(wWelcomes.map((w) => w.workerId)).toEqual(['waiting-0', 'waiting-1', 'waiting-2']);

      const first = join(run.url, hello({ workerId: 'me' }));
      const w1 = await first.welcome;
      expect(w1.workerId).toBe('me');
      expect(w1.session).toBeTruthy();
      // A wrong secret: a new worker, the first keeps its socket.
      const wrong = join(run.url, hello({ workerId: 'me', session: `${w1.session!.slice(0, -1)}0` === w1.session ? `${w1.session!.slice(0, -1)}1` : `${w1.session!.slice(0, -1)}0` }));
      const ww = await wrong.welcome;
      expect(ww.workerId).not.toBe('me');
      await sleep(200);
      expect(first.ws.readyState).toBe(WebSocket.OPEN);
      // The right secret: the same worker again; the old socket goes with replaced.
      const again = join(run.url, hello({ workerId: 'me', session: w1.session }));
      const w2 = await again.welcome;
      expect(w2.workerId).toBe('me');
      const old = await Promise.race([first.closed, sleep(5000).then(() => ({ code: -1, reason: 'not closed' }))]);
      expect(old.code).toBe(CLOSE.replaced);
      expect(again.ws.readyState).toBe(WebSocket.OPEN);

      // No secret in the status API, the event stream's snapshot or the metrics.
      const secrets = [w1, ww, w2, ...wWelcomes].map((w) => w.session!);
      expect(secrets.every((s) => typeof s === 'string' && s.length >= 16)).toBe(true);
      const status = await get(run.base, '/api/status');
      expect(status.status).toBe(200);
      const metrics = await get(run.base, '/metrics');
      const events = await firstChunk(run.port, '/api/events');
      for (const s of secrets) {
        expect(status.text.includes(s), '/api/status shows a session secret').toBe(false);
        expect(metrics.text.includes(s), '/metrics shows a session secret').toBe(false);
        expect(events.includes(s), '/api/events shows a session secret').toBe(false);
      }
      expect(JSON.stringify(run.coord.status()).includes(w2.session!)).toBe(false);
      for (const j of [...waiting, wrong, again]) j.ws.close();
      expect(await run.goesOn()).toBe(true);
    });
  });

  // The issue's figure is for 20,000 (TABTRAIN_SHORT_CONNECTIONS=20000); the suite makes 5,000, which is
  // still 80× the lost connections the coordinator keeps, on a 2-core machine that other tests share.
  it('short connections by the thousand leave /api/status small and fast', async () => {
    const TOTAL = Number(process.env.TABTRAIN_SHORT_CONNECTIONS ?? 5_000);
    const run = await shared();
    await get(run.base, '/api/status'); // warm the client
    // With node --expose-gc (NODE_OPTIONS), the heap figures are what is retained, not garbage not yet collected.
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const { rss: rss0, heapUsed: heap0 } = process.memoryUsage();
    const s0 = await get(run.base, '/api/status');
    const helloFrame = maskedFrame(hello({ workerId: 'short' }));
    let upgraded = 0, failed = 0;
    const t0 = performance.now();
    let next = 0;
    const one = (i: number) => new Promise<void>((resolve) => {
      const s = connect(run.port, '127.0.0.1');
      let buf = '';
      s.setTimeout(10_000, () => { failed++; s.destroy(); });
      s.on('connect', () => s.write(upgradeRequest('/ws')));
      s.on('data', (d) => {
        if (buf.includes('\r\n\r\n')) return;
        buf += d.toString('latin1');
        if (!buf.includes('\r\n\r\n')) return;
        if (buf.startsWith('HTTP/1.1 101')) upgraded++;
        else failed++;
        // One in ten says hello (joins as a worker) before it vanishes; the others vanish at once.
        if (i % 10 === 0) { s.end(helloFrame); return; }
        s.destroy();
      });
      s.on('close', () => resolve());
      s.on('error', () => {});
    });
    const lane = async () => { while (next < TOTAL) await one(next++); };
    await Promise.all(Array.from({ length: 100 }, lane));
    const ms = performance.now() - t0;
    await sleep(500);
    const s1 = await get(run.base, '/api/status');
    const s2 = await get(run.base, '/api/status');
    gc?.();
    const { rss: rss1, heapUsed: heap1 } = process.memoryUsage();
    const rows = (JSON.parse(s1.text).workers as unknown[]).length;
    console.log(`${TOTAL} short connections (1 in 10 with a hello) in ${(ms / 1000).toFixed(1)} s (${upgraded} upgraded, ${failed} failed): ` +
      `/api/status ${s0.bytes} bytes in ${s0.ms.toFixed(1)} ms before → ${s1.bytes} bytes, ${s1.ms.toFixed(1)} ms (again ${s2.ms.toFixed(1)} ms), ${rows} worker rows; ` +
      `test-process (coordinator) RSS ${(rss0 / 2 ** 20).toFixed(0)} → ${(rss1 / 2 ** 20).toFixed(0)} MiB (${rss1 >= rss0 ? '+' : '−'}${(Math.abs(rss1 - rss0) / 2 ** 20).toFixed(0)} MiB), heap used ${(heap0 / 2 ** 20).toFixed(0)} → ${(heap1 / 2 ** 20).toFixed(0)} MiB${gc ? ' after gc' : ''}`);
    expect(upgraded).toBeGreaterThanOrEqual(TOTAL * 0.99);
    expect(s1.status).toBe(200);
    expect(s1.bytes).toBeLessThan(100_000);
    expect(Math.min(s1.ms, s2.ms)).toBeLessThan(100);
    expect(await run.goesOn()).toBe(true);
    // The last test on the shared run: end it here, so that its worker does not share the CPU with the stall test.
    await run.end();
    const summary = (await run.training) as { steps: number };
    expect(summary.steps).toBe(run.steps.length);
  });

  it('stall: five established sockets that take shards and never answer are closed with timeout; the run keeps its pace, also when they rejoin', async () => {
    const TOKEN = 'stall-token';
    // Every bound below is in deadlines: the test is about what a deadline does, not its length (the
    // default is 10 s). Still twice the floor's other term here, 5× an honest worker's ~50 ms shard.
    const DEADLINE = 500;
    const N = 8;
    // One run, three phases of N steps each: clean, five silent sockets, five silent sockets that rejoin when closed.
    const run = await live({ newcomerDeadlineMs: DEADLINE, token: TOKEN }, 2, null, [...HONEST, '--token', TOKEN]);
    const closedAt: number[] = [];
    run.coord.events.on('log', (l: string) => { if (l.includes(`closed: timeout (${CLOSE.timeout})`)) closedAt.push(run.steps.length); });
    /** Runs N steps; returns their wall time. */
    const phase = async () => {
      const s0 = run.steps.length;
      const t0 = performance.now();
      expect(await until(() => run.steps.length >= s0 + N, 120_000), 'N steps done').toBe(true);
      return { ms: performance.now() - t0, wall: run.steps.slice(s0, s0 + N).map((x) => Math.round(x.wallMs)) };
    };
    let rejoin = false;
    try {
      const clean = await phase();
      // Phase 2: five silent sockets presenting the token (established: they get real shards).
      const silent = [0, 1, 2, 3, 4].map((i) => join(run.url, hello({ workerId: `staller-${i}`, token: TOKEN })));
      await Promise.all(silent.map((j) => j.welcome));
      const stalled = await phase();
      const closes = await Promise.all(silent.map((j) => Promise.race([j.closed, sleep(3000).then(() => ({ code: -1, reason: 'still open' }))])));
      const assigned = silent.map((j) => j.received.filter((m) => m.type === 'assign').length);
      console.log(`stall: clean ${N} steps in ${clean.ms.toFixed(0)} ms; with 5 silent sockets (newcomer deadline ${DEADLINE} ms) ${stalled.ms.toFixed(0)} ms, ` +
        `step walls ${stalled.wall.join(',')} ms; assigns per silent socket ${assigned.join(',')}; their closes ${closes.map((c) => c.code).join(',')}`);
      expect(run.lines.filter((l) => /joined: .*\(token;/.test(l))).toHaveLength(5);
      // Each held a real shard and was closed for missing its deadline; the run paid about one deadline for all five.
      for (const a of assigned) expect(a).toBeGreaterThanOrEqual(1);
      expect(closes.map((c) => c.code)).toEqual(Array(5).fill(CLOSE.timeout));
      expect(stalled.ms).toBeLessThanOrEqual(clean.ms + 5 * DEADLINE);

      // Phase 3: the same, rejoining (fresh identities, with the token) as soon as they are closed.
      rejoin = true;
      const codes: number[] = [];
      let assigns = 0;
      const perStep = new Map<number, number>();
      const loop = async (i: number) => {
        for (let k = 0; rejoin; k++) {
          const j = join(run.url, hello({ workerId: `rejoiner-${i}-${k}`, token: TOKEN }));
          j.ws.on('message', () => {
            const m = j.received[j.received.length - 1];
            if (m?.type === 'assign') perStep.set(m.step, (perStep.get(m.step) ?? 0) + 1);
          });
          const c = await j.closed;
          assigns += j.received.filter((m) => m.type === 'assign').length;
          if (rejoin) codes.push(c.code);
        }
      };
      const loops = [0, 1, 2, 3, 4].map(loop);
      const again = await phase();
      rejoin = false;
      console.log(`stall, rejoining: ${N} steps in ${again.ms.toFixed(0)} ms, step walls ${again.wall.join(',')} ms; ${codes.length} closes (${[...new Set(codes)].join(',')}); ` +
        `shards given to silent sockets per step ${[...perStep.entries()].map(([k, v]) => `${k}:${v}`).join(' ')}`);
      expect(assigns).toBeGreaterThanOrEqual(5);
      expect(new Set(codes)).toEqual(new Set([CLOSE.timeout]));
      // A step waits for silent newcomers about one newcomer deadline, not one per silent socket in a chain:
      // the shard taken back from one should not go to the next newcomer while measured workers can take it.
      const slowest = Math.max(...again.wall);
      expect.soft(slowest, 'slowest step with rejoining silent sockets (ms)').toBeLessThanOrEqual(DEADLINE + 1000);
      // Hard bound: at most one deadline per silent socket per step (before the fix, each cost the 120 s floor).
      expect(again.ms).toBeLessThanOrEqual(clean.ms + N * 5 * DEADLINE);
      await run.end();
      expect(await Promise.race([Promise.all(loops).then(() => true), sleep(5000).then(() => false)]), 'the rejoining loops ended with the run').toBe(true);
    } finally {
      rejoin = false;
      await run.end();
    }
  });

  it('/api/control: a 100 MB Content-Length gets 413 at once, a chunked body too large gets 413, a bad chunk size 400, no admin token gets 403; HEAD /api/events ends', async () => {
    const ADMIN = 'adm1n';
    const admin = await startOn(null, { ...BASE, adminToken: ADMIN });
    const open = await startOn(null, { ...BASE });
    try {
      const auth = `Authorization: Bearer ${ADMIN}\r\nContent-Type: application/json\r\n`;
      // Headers only: the 100 MB body is never sent, and the answer must not wait for it.
      for (const [name, port, extra] of [['with admin token', admin.port, auth], ['without', open.port, 'Content-Type: application/json\r\n']] as const) {
        const r = await rawHttp(port, `POST /api/control HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}Content-Length: 104857600\r\n\r\n`, { until: /\r\n\r\n[\s\S]*\}/, timeoutMs: 3000 });
        console.log(`POST /api/control, Content-Length 100 MB (${name}): ${r.text.split('\r\n')[0]} in ${r.ms.toFixed(0)} ms`);
        expect(statusOf(r.text)).toBe(413);
        expect(r.ms).toBeLessThan(1000);
      }
      // Chunked, authorised, and too large: 413 while the client is still sending.
      let sentBytes = 0;
      const chunked = await rawHttp(admin.port, `POST /api/control HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Transfer-Encoding: chunked\r\n\r\n`, {
        until: /\r\n\r\n[\s\S]*\}/, timeoutMs: 5000,
        keepSending: (s) => {
          const chunk = `400\r\n${'{'.repeat(1024)}\r\n`;
          const tick = setInterval(() => { if (s.destroyed || sentBytes > 1 << 20) return clearInterval(tick); s.write(chunk); sentBytes += 1024; }, 5);
        },
      });
      console.log(`POST /api/control, chunked: ${chunked.text.split('\r\n')[0]} after ${sentBytes} body bytes, ${chunked.ms.toFixed(0)} ms`);
      expect(statusOf(chunked.text)).toBe(413);
      expect(sentBytes).toBeLessThan(1 << 20);
      // Chunked with a chunk size that does not parse (a fuzz find): the body never ends, so the
      // answer is a 400 that names the parse error, at once, not a socket closed after a wait.
      const badChunk = await rawHttp(admin.port, `POST /api/control HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n${' '.repeat(4096)}\r\n0\r\n\r\n`, { until: /\r\n\r\n[\s\S]*\}/, timeoutMs: 3000 });
      console.log(`POST /api/control, chunk size "zz": ${badChunk.text.split('\r\n')[0]} in ${badChunk.ms.toFixed(0)} ms`);
      expect(statusOf(badChunk.text)).toBe(400);
      expect(badChunk.text).toMatch(/does not parse as HTTP\/1\.1 \(HPE_INVALID_CHUNK_SIZE\)/);
      expect(badChunk.ms).toBeLessThan(1000);
      // Without --admin-token: read-only.
      const ro = await httpRequest(open.port, 'POST', '/api/control', { 'content-type': 'application/json' }, '{"action":"pause"}');
      expect(ro.status).toBe(403);
      // And with it, a small authorised body is still obeyed (the caps refuse only what they should).
      const okr = await httpRequest(admin.port, 'POST', '/api/control', { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` }, '{"action":"pause"}');
      expect(okr.status).toBe(200);
      // HEAD of the event stream: headers, and the response ends.
      const head = await Promise.race([httpRequest(open.port, 'HEAD', '/api/events'), sleep(1000).then(() => null)]);
      expect(head, 'HEAD /api/events ended within 1 s').not.toBeNull();
      expect(head!.status).toBe(200);
      expect(String(head!.headers['content-type'])).toMatch(/text\/event-stream/);
      expect(head!.ms).toBeLessThan(1000);
      expect((await get(open.base, '/api/status')).status).toBe(200);
    } finally {
      await admin.coord.close();
      await open.coord.close();
    }
  });
});

/** The first bytes of a streaming response (an SSE snapshot), then the connection is dropped. */
function firstChunk(port: number, path: string): Promise<string> {
  return rawHttp(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, { until: /\n\n[\s\S]*\n\n/, timeoutMs: 3000 }).then((r) => r.text);
}

