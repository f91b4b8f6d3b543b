// The coordinator's machine-readable outputs during a real run (port 0, two Node worker processes,
// real Fashion-MNIST cut to 640 training images so that an epoch is 20 steps):
//   /metrics     parses as Prometheus text, carries the step counter, examples/s, per-worker gauges
//   /api/status  matches what the coordinator logged (its log lines and the --log JSONL file)
//   /api/events  20 pages at once get the same coalesced updates, ≤ 4 a second, one
//                serialisation per update, and every step exactly once; the epochs' running train
//                loss and accuracy (d2l's Animator) 5 times an epoch, equal to the log's means
//   /api/log     the --log file itself
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { register as globalRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS, type Summary } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import type { Snapshot, TrainPoint, Update } from '@tabtrain/shared/dashboard-wire';
import { data, kill, subset, workers } from '../helpers/run';

const ADMIN = 'metrics-test-admin';
const STEPS = 120;
const PAGES = 20;

// ---- a small Prometheus text-format parser (exposition format 0.0.4): throws on any bad line ----

interface Sample { name: string; labels: Record<string, string>; value: number }
interface Exposition { types: Map<string, string>; help: Map<string, string>; samples: Sample[] }

function parsePrometheus(text: string): Exposition {
  const out: Exposition = { types: new Map(), help: new Map(), samples: [] };
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sampleRe = new RegExp(`^(${name})(?:\\{(.*)\\})?\\s+(\\S+)(?:\\s+-?\\d+)?$`);
  const labelRe = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3])) throw new Error(`line ${i + 1}: bad type ${meta[3]}`);
        out.types.set(meta[2], meta[3]);
      } else out.help.set(meta[2], meta[3]);
      return;
    }
    if (line.startsWith('#')) return;
    const m = sampleRe.exec(line);
    if (!m) throw new Error(`line ${i + 1} is not a sample: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      labelRe.lastIndex = 0;
      while (labelRe.lastIndex < m[2].length) {
        const l = labelRe.exec(m[2]);
        if (!l) throw new Error(`line ${i + 1}: bad labels {${m[2]}}`);
        labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      }
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`line ${i + 1}: bad value ${m[3]}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    if (!out.types.has(m[1]) && !out.types.has(family)) throw new Error(`line ${i + 1}: ${m[1]} has no # TYPE`);
    out.samples.push({ name: m[1], labels, value });
  });
  return out;
}

const samples = (e: Exposition, name: string) => e.samples.filter((s) => s.name === name);
const one = (e: Exposition, name: string, labels: Record<string, string> = {}) => {
  const found = samples(e, name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)}`);
  return found[0].value;
};

// ---- a page's event stream, read the way EventSource does ----

interface Page { updates: Update[]; snapshot: Snapshot | null; times: number[]; close(): void }

async function openPage(base: string): Promise<Page> {
  const ac = new AbortController();
  const res = await fetch(`${base}/api/events`, { signal: ac.signal });
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const page: Page = { updates: [], snapshot: null, times: [], close: () => ac.abort() };
  void (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const dataLine = /^data: (.*)$/m.exec(block)?.[1];
          if (event === 'snapshot') page.snapshot = JSON.parse(dataLine!);
          if (event === 'update') { page.updates.push(JSON.parse(dataLine!)); page.times.push(performance.now()); }
        }
      }
    } catch { /* aborted */ }
  })();
  return page;
}

async function waitUntil(ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- one run for the whole file ----

let coord: Coordinator;
let base: string;
let lines: string[];
let logFile: string;
let procs: ChildProcess[];
let done: Promise<Summary>;
let pages: Page[];
let serialisedBefore: number;
let dashboard: Dashboard;

beforeAll(async () => {
  logFile = join(mkdtempSync(join(tmpdir(), 'tabtrain-metrics-')), 'run.jsonl');
  lines = [];
  coord = new Coordinator({
    model: 'vgg11-tiny', batch: 32, epochs: 100, maxSteps: STEPS, seed: 3, port: 0, host: '127.0.0.1', minWorkers: 2, balance: 'speed', evalExamples: 320,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, adminToken: ADMIN, metricsLog: logFile, log: (l) => lines.push(l), progress: () => {},
  }, subset(data(), 640, 320));
  dashboard = new Dashboard(coord);
  const port = await coord.listen();
  base = `http://127.0.0.1:${port}`;
  pages = await Promise.all(Array.from({ length: PAGES }, () => openPage(base)));
  await new Promise((r) => setTimeout(r, 200));
  serialisedBefore = dashboard.serialisations;
  procs = workers(`ws://127.0.0.1:${port}/ws`, 2);
  done = coord.train();
});

afterAll(async () => {
  for (const p of pages ?? []) p.close();
  await coord?.close();
  kill(procs ?? []);
});

describe('metrics, status and the event stream during a run with 2 Node workers', () => {
  it('/metrics parses as Prometheus text with the step counter, examples/s and per-worker gauges', async () => {
    while (coord.step < 25) await new Promise((r) => setTimeout(r, 20));
    // Hold the run still so that every figure below describes the same moment.
    const control = (action: string, token = ADMIN) => fetch(`${base}/api/control`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ action }),
    });
    expect((await control('pause', 'wrong')).status).toBe(401);
    const paused = await control('pause');
    expect(paused.status).toBe(200);
    while (coord.state !== 'paused') await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parsePrometheus(await res.text());

    expect(m.types.get('tabtrain_steps_total')).toBe('counter');
    expect(one(m, 'tabtrain_steps_total')).toBe(coord.step);
    expect(one(m, 'tabtrain_step')).toBe(coord.step);
    expect(one(m, 'tabtrain_examples_total')).toBe(coord.step * 32);
    expect(one(m, 'tabtrain_step_seconds_count')).toBe(coord.step);
    expect(m.types.get('tabtrain_examples_per_second')).toBe('gauge');
    expect(one(m, 'tabtrain_examples_per_second')).toBeGreaterThan(0);
    expect(one(m, 'tabtrain_train_loss')).toBeCloseTo(coord.lastStep!.loss, 6);
    expect(one(m, 'tabtrain_run_state', { state: 'paused' })).toBe(1);
    expect(one(m, 'tabtrain_run_state', { state: 'running' })).toBe(0);
    expect(one(m, 'tabtrain_workers', { state: 'idle' }) + one(m, 'tabtrain_workers', { state: 'working' })).toBe(2);
    expect(one(m, 'tabtrain_epoch_train_loss')).toBeGreaterThan(0);

    const status = coord.status();
    for (const metric of ['tabtrain_worker_examples_per_second', 'tabtrain_worker_compute_seconds', 'tabtrain_worker_upload_seconds', 'tabtrain_worker_shard_size',
      'tabtrain_worker_received_bytes', 'tabtrain_worker_sent_bytes', 'tabtrain_worker_shards', 'tabtrain_worker_straggler']) {
      expect(m.types.get(metric), metric).toBe('gauge');
      expect(samples(m, metric).map((s) => s.labels.worker).sort(), metric).toEqual(['1', '2']);
    }
    for (const w of status.workers) {
      const l = { worker: String(w.id), kind: 'node', backend: 'wasm' };
      expect(one(m, 'tabtrain_worker_examples_per_second', l)).toBeGreaterThan(0);
      expect(one(m, 'tabtrain_worker_shard_size', l)).toBe(w.shardSize);
      expect(one(m, 'tabtrain_worker_received_bytes', l)).toBe(w.bytesIn);
      expect(one(m, 'tabtrain_worker_sent_bytes', l)).toBe(w.bytesOut);
      expect(one(m, 'tabtrain_worker_shards', l)).toBe(w.shardsDone);
    }
    expect(samples(m, 'tabtrain_worker_straggler').reduce((a, s) => a + s.value, 0)).toBe(1);
    expect(one(m, 'tabtrain_dashboard_streams')).toBe(PAGES);
    // The process metrics come from prom-client's defaults, on this coordinator's registry too.
    expect(samples(m, 'process_cpu_seconds_total').length).toBe(1);

    // Each coordinator has a registry of its own: a second one in this process starts from zero,
    // and nothing went to prom-client's global registry.
    const other = new Coordinator({ ...coord.opts, metricsLog: undefined, port: 0 }, coord.data);
    const otherDashboard = new Dashboard(other);
    expect(await otherDashboard.registry.getSingleMetricAsString('tabtrain_steps_total')).toMatch(/tabtrain_steps_total 0$/m);
    await other.close();
    expect(await globalRegistry.metrics()).not.toContain('tabtrain_');

    expect((await control('resume')).status).toBe(200);
  });

  it('/api/status matches what the coordinator logged', async () => {
    const summary = await done;
    expect(summary.steps).toBe(STEPS);
    const status = (await (await fetch(`${base}/api/status`)).json()) as ReturnType<Dashboard['status']>;
    const log = readFileSync(logFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown> & { type: string });

    // The JSONL log: one line per step and per epoch; its last step is the status's last step.
    const steps = log.filter((r) => r.type === 'step');
    const epochs = log.filter((r) => r.type === 'epoch');
    expect(steps.map((r) => r.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(status.step).toBe(STEPS);
    // A step line is the StepRecord itself (its own `at`) plus its type.
    const { type: _type, ...lastStep } = steps.at(-1)!;
    expect(lastStep).toEqual(status.lastStep);
    expect(epochs.map(({ at: _a, type: _t, ...e }) => e)).toEqual(status.history);
    expect(status.history.length).toBe(6);
    expect(log[0]).toMatchObject({ type: 'run', model: 'vgg11-tiny', paramCount: status.paramCount, stepsPerEpoch: 20, totalSteps: STEPS });
    expect(log.at(-1)).toMatchObject({ type: 'state', state: 'finished', reason: `${STEPS} steps done` });
    expect(status.state).toBe('finished');
    expect(status.reason).toBe(`${STEPS} steps done`);
    expect(log.filter((r) => r.type === 'state').map((r) => r.state)).toEqual(expect.arrayContaining(['waiting', 'running', 'paused', 'evaluating', 'finished']));

    // The coordinator's own log lines: who joined, and each epoch's d2l line.
    const joined = lines.map((l) => /^worker #(\d+) joined: (\w+)\/(\w+)/.exec(l)).filter((m) => m !== null);
    expect(joined.map((j) => ({ id: Number(j[1]), kind: j[2], backend: j[3] }))).toEqual(status.workers.map((w) => ({ id: w.id, kind: w.kind, backend: w.backend })));
    const epochLines = lines.filter((l) => /^epoch \d+: loss/.test(l));
    expect(epochLines).toEqual(status.history.map((e) =>
      `epoch ${e.epoch}: loss ${e.loss.toFixed(3)}, train acc ${e.trainAcc.toFixed(3)}, test acc ${e.testAcc!.toFixed(3)}, ${e.examplesPerSec.toFixed(1)} examples/sec`));
    expect(status.header.line).toBe(`epoch 6: loss ${status.history[5].loss.toFixed(3)}, train acc ${status.history[5].trainAcc.toFixed(3)}, test acc ${status.history[5].testAcc!.toFixed(3)}, ${status.history[5].examplesPerSec.toFixed(1)} examples/sec on 2 workers`);
    expect(lines).toContainEqual(expect.stringMatching(/^pausing after step \d+: paused from the dashboard \(127\.0\.0\.1\)$/));
    // Bytes: the header's total is every byte in the table.
    expect(status.header.totalBytes).toBe(status.workers.reduce((a, w) => a + w.bytesIn + w.bytesOut, 0));
    expect(status.workers.every((w) => w.state === 'idle' && w.shardsDone > 0)).toBe(true);
  });

  it(`${PAGES} pages get the same coalesced updates: ≤ 4 a second, one serialisation each, every step once`, async () => {
    await new Promise((r) => setTimeout(r, 300));
    const first = pages[0];
    expect(first.snapshot).not.toBeNull();
    const seqs = first.updates.map((u) => u.seq);
    for (const p of pages) expect(p.updates.map((u) => u.seq)).toEqual(seqs);
    // One JSON.stringify per update, however many pages read it.
    expect(dashboard.serialisations - serialisedBefore).toBe(seqs.length);
    // Throttled to one update per 250 ms (a final state goes out at once: one extra). Counted over
    // the whole run, as arrival gaps alone would also measure this process's own event loop.
    const gaps = first.times.slice(1).map((t, i) => t - first.times[i]);
    const span = first.times.at(-1)! - first.times[0];
    expect(first.updates.length - 1).toBeLessThanOrEqual(Math.floor(span / 250) + 2);
    expect([...gaps].sort((a, b) => a - b)[gaps.length >> 1]).toBeGreaterThanOrEqual(240);
    expect(first.updates.length).toBeLessThan(STEPS / 2);
    // Coalesced, not dropped: the updates carry every step exactly once, in order.
    expect(first.updates.flatMap((u) => u.steps.map((s) => s.step))).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(first.updates.flatMap((u) => u.epochs.map((e) => e.epoch))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(first.updates.at(-1)!.header.state).toBe('finished');
    // A fresh run: nothing restored, its time is this coordinator's.
    expect(first.updates.at(-1)!.header).toMatchObject({ priorSec: 0, resumedFromStep: 0, fullLog: true });
    console.log(`event stream: ${seqs.length} updates for ${STEPS} steps to each of ${PAGES} pages; over ${(span / 1000).toFixed(1)} s`);
  });

  it("streams each epoch's running train loss and acc 5 times an epoch: the means of the log's steps so far", async () => {
    const train: TrainPoint[] = pages[0].updates.flatMap((u) => u.train);
    for (const p of pages) expect(p.updates.flatMap((u) => u.train)).toEqual(train);
    // Every ceil(20 / 5) = 4 steps, the epoch's end among them, over the whole run, each once.
    expect(train.map((p) => p.step)).toEqual(Array.from({ length: STEPS / 4 }, (_, i) => 4 * (i + 1)));
    const log = readFileSync(logFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; step: number; epoch: number; loss: number; acc: number; examples: number });
    const steps = log.filter((r) => r.type === 'step');
    for (const p of train) {
      const upTo = steps.filter((s) => s.epoch === p.epoch && s.step <= p.step);
      expect(upTo).toHaveLength(p.step - (p.epoch - 1) * 20);
      const n = upTo.reduce((a, s) => a + s.examples, 0);
      expect(p.examples).toBe(n);
      expect(p.loss).toBeCloseTo(upTo.reduce((a, s) => a + s.loss * s.examples, 0) / n, 4);
      expect(p.acc).toBeCloseTo(upTo.reduce((a, s) => a + s.acc * s.examples, 0) / n, 4);
    }
    // At each epoch's end the running means are the epoch's own figures.
    const status = (await (await fetch(`${base}/api/status`)).json()) as ReturnType<Dashboard['status']>;
    for (const e of status.history) {
      const end = train.find((p) => p.step === e.epoch * 20)!;
      expect(end.loss).toBeCloseTo(e.loss, 4);
      expect(end.acc).toBeCloseTo(e.trainAcc, 4);
    }
    // A page that connects now gets them all in its snapshot.
    const late = await openPage(base);
    await waitUntil(() => late.snapshot !== null);
    late.close();
    expect(late.snapshot!.train).toEqual(train);
  });

  it('/api/log serves the --log file as written, whole lines; 404 without --log', async () => {
    const res = await fetch(`${base}/api/log`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="tabtrain-vgg11-tiny-log\.jsonl"$/);
    const body = await res.text();
    expect(body).toBe(readFileSync(logFile, 'utf8'));
    expect(body.trimEnd().split('\n').filter((l) => JSON.parse(l).type === 'step')).toHaveLength(STEPS);
    const head = await fetch(`${base}/api/log`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBe(Buffer.byteLength(body));
    expect((await fetch(`${base}/api/log`, { method: 'POST' })).status).toBe(405);

    const bare = new Coordinator({ ...coord.opts, metricsLog: undefined, port: 0 }, coord.data);
    new Dashboard(bare);
    const port = await bare.listen();
    try {
      const none = await fetch(`http://127.0.0.1:${port}/api/log`);
      expect(none.status).toBe(404);
      expect((await none.json()).error).toMatch(/--log FILE/);
      expect((await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()).header.fullLog).toBe(false);
    } finally {
      await bare.close();
    }
  });

  it('answers bad control requests with named errors, and says how to build a missing page', async () => {
    const post = (body: string, headers: Record<string, string> = {}) => fetch(`${base}/api/control`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}`, ...headers }, body,
    });
    expect((await fetch(`${base}/api/control`)).status).toBe(405);
    expect((await post('{"action":"pause"}', { 'content-type': 'text/plain' })).status).toBe(415);
    expect((await post('{"action":"explode"}')).status).toBe(400);
    expect((await post('not json')).status).toBe(400);
    expect((await post('{"action":"pause"}', { authorization: '' })).status).toBe(401);
    // The run is over: nothing left to pause.
    const late = await post('{"action":"pause"}');
    expect(late.status).toBe(409);
    expect(await late.json()).toMatchObject({ state: 'finished' });

    const empty = mkdtempSync(join(tmpdir(), 'tabtrain-nopage-'));
    const bare = new Coordinator({ ...coord.opts, metricsLog: undefined, adminToken: undefined, port: 0, staticDir: empty }, coord.data);
    new Dashboard(bare);
    const port = await bare.listen();
    try {
      const page = await fetch(`http://127.0.0.1:${port}/dashboard`);
      expect(page.status).toBe(404);
      expect(await page.text()).toMatch(/npm run build:client/);
      const slash = await fetch(`http://127.0.0.1:${port}/dashboard/`, { redirect: 'manual' });
      expect(slash.status).toBe(301);
      expect(slash.headers.get('location')).toBe('/dashboard');
      const readOnly = await fetch(`http://127.0.0.1:${port}/api/control`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"action":"stop"}' });
      expect(readOnly.status).toBe(403);
      expect((await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()).header.control).toBe('read-only');
    } finally {
      await bare.close();
    }
  });
});
