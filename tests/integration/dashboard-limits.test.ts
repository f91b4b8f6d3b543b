// The dashboard's endpoints are bounded (issue 24 §8): wrong admin tokens on /api/control are
// rate-limited per address with one log line per interval, and event streams that never read cost
// the coordinator bounded memory while the pages that read keep getting their updates. A real
// coordinator on port 0 (no training: its log lines drive the updates), real sockets on loopback
// from several local addresses (127.0.0.x).
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS } from '../../server/src/coordinator';
import { Dashboard } from '../../server/src/dashboard';
import { CONTROL_LIMIT } from '../../server/src/control-limit';
import { data } from '../helpers/run';

const ADMIN = 'limits-admin';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let coord: Coordinator;
let dashboard: Dashboard;
let port: number;
const lines: string[] = [];

beforeAll(async () => {
  coord = new Coordinator({
    model: 'alexnet-tiny', epochs: 1, batch: 16, seed: 7, balance: 'equal', port: 0, host: '127.0.0.1', minWorkers: 1, evalExamples: 100,
    // The load's own lines (500 x's) are not kept: the test's memory would hide the coordinator's.
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, adminToken: ADMIN, log: (l) => { if (!l.startsWith('xxx')) lines.push(l); }, progress: () => {},
  }, data());
  // Updates every 10 ms (not 250) and a 30-stream cap per address: a few seconds show what minutes would.
  dashboard = new Dashboard(coord, { updateIntervalMs: 10, maxStreamsPerAddress: 30, maxTotalBufferedBytes: 16 << 20 });
  port = await coord.listen();
});

afterAll(async () => { await coord?.close(); });

function post(token: string, from = '127.0.0.1', action = 'pause'): Promise<{ status: number; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, localAddress: from, method: 'POST', path: '/api/control', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined }));
    });
    req.on('error', reject);
    req.end(JSON.stringify({ action }));
  });
}

describe('dashboard endpoints under abuse', () => {
  it('/api/control: wrong tokens past a few per address get 429 with Retry-After, one log line sums them up; another address is obeyed at once', async () => {
    const ATTEMPTS = 1000;
    const before = lines.length;
    const statuses = new Map<number, number>();
    let badRetry = 0;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 20 }, async () => {
      while (next++ < ATTEMPTS) {
        const r = await post(`guess-${next}`);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 429 && !(Number(r.retryAfter) >= 1)) badRetry++;
      }
    }));
    const seconds = (performance.now() - t0) / 1000;
    // The right token from the same address is answered 429 too: the limit comes before the comparison.
    expect((await post(ADMIN)).status).toBe(429);
    // The operator on another address is not locked out by the stranger.
    expect((await post(ADMIN, '127.0.0.2', 'pause')).status).toBe(200);
    expect((await post(ADMIN, '127.0.0.2', 'resume')).status).toBe(200);
    const refusedLines = lines.slice(before).filter((l) => l.includes('refused control'));
    console.log(`${ATTEMPTS} wrong admin tokens in ${seconds.toFixed(1)} s (${(ATTEMPTS / seconds).toFixed(0)}/s): ${[...statuses].map(([s, n]) => `${n} × ${s}`).join(', ')}; ${refusedLines.length} log line(s): ${refusedLines[0]}`);
    expect(badRetry).toBe(0);
    expect(statuses.get(401)!).toBeGreaterThanOrEqual(CONTROL_LIMIT.burst);
    expect(statuses.get(401)!).toBeLessThanOrEqual(CONTROL_LIMIT.burst + Math.ceil(seconds * CONTROL_LIMIT.perSecond) + 1);
    expect(statuses.get(429)).toBe(ATTEMPTS - statuses.get(401)!);
    expect(refusedLines).toEqual(['dashboard: refused control 1 time (missing or wrong admin token) from 127.0.0.1']);
  });

  it('event streams that never read are closed past their bound and coordinator memory stays bounded; a page that reads gets every update', async () => {
    const PAUSED = 30;
    const base = `http://127.0.0.1:${port}`;
    // A page that reads.
    const ac = new AbortController();
    const res = await fetch(`${base}/api/events`, { signal: ac.signal });
    let updates = 0;
    let lastSeq = 0;
    const reading = (async () => {
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let text = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += dec.decode(value, { stream: true });
          const events = text.split('\n\n');
          text = events.pop()!;
          for (const e of events) {
            if (!e.startsWith('event: update')) continue;
            updates++;
            lastSeq = JSON.parse(e.slice(e.indexOf('data: ') + 6)).seq;
          }
        }
      } catch { /* aborted */ }
    })();
    // Strangers' streams that never read: a GET, then nothing (a net.Socket reads nothing without a listener).
    const open = (from: string) => new Promise<{ socket: Socket; status: string }>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port, localAddress: from });
      socket.on('error', () => {});
      socket.write('GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n');
      // Only the status line is read, then the socket stops reading for good.
      socket.once('data', (d: Buffer) => { socket.pause(); resolve({ socket, status: d.toString('latin1').split('\r\n')[0] }); });
    });
    const paused = await Promise.all(Array.from({ length: PAUSED }, () => open('127.0.0.3')));
    expect(paused.every((p) => p.status === 'HTTP/1.1 200 OK')).toBe(true);
    // The cap per address: the 31st stream from 127.0.0.3 is refused; another address still gets one.
    const extra = await open('127.0.0.3');
    expect(extra.status).toBe('HTTP/1.1 503 Service Unavailable');
    expect(dashboard.streamBacklog().streams).toBe(PAUSED + 1);

    // Updates of ~30 KB (60 log lines of 500 characters) 100 times a second for 3 s: ~9 MB per
    // stream, past what the kernel's socket buffers hold (~4 MB on loopback).
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const line = 'x'.repeat(500);
    const load = setInterval(() => { for (let i = 0; i < 60; i++) coord.opts.log(line); }, 5);
    const sample = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    let maxBacklog = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 3000) {
      maxBacklog = Math.max(maxBacklog, dashboard.streamBacklog().bufferedBytes);
      await sleep(20);
    }
    clearInterval(load);
    clearInterval(sample);
    await sleep(200);
    const backlog = dashboard.streamBacklog();
    const seqNow = lastSeq;
    ac.abort();
    await reading;
    for (const p of [...paused, extra]) p.socket.destroy();
    const grew = (peak - rss0) / 2 ** 20;
    console.log(`${PAUSED} paused event streams, ~3 MB/s of updates each for 3 s: ${backlog.dropped} closed for falling behind, ` +
      `unsent bytes at most ${(maxBacklog / 2 ** 20).toFixed(1)} MiB, coordinator (test process) RSS +${grew.toFixed(0)} MiB at peak; the reading page got ${updates} updates`);
    expect(backlog.dropped).toBe(PAUSED);
    expect(backlog.streams).toBe(1); // the page that reads
    expect(maxBacklog).toBeLessThanOrEqual((16 << 20) + 2 * (1 << 20));
    expect(grew).toBeLessThan(64);
    expect(updates).toBeGreaterThan(100);
    expect(seqNow).toBeGreaterThan(100);
  });
});
