// Load: 64 workers and 16 live dashboards on one coordinator complete 20 steps.
//
// In-process (tests/helpers/in-process.ts): the 64 workers are real WorkerCores computing real
// gradients (wasm), each on its own connection of the in-memory wire, whose frames the
// coordinator validates as a socket's; what is loaded is the coordinator's own work (64 copies
// to hand out, collect and check every step, and its dashboard's listeners). The 16 dashboards
// are real HTTP event streams, read over loopback from the dashboard's routes (dashboard-http.ts).
// Many real sockets on one coordinator are shown by connection-flood.test.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import type { StepRecord } from '../../server/src/coordinator';
import { setupNodeBackend } from '../../client/src/node-worker';
import { WASM, startInProcess } from '../helpers/in-process';
import { serveDashboard } from '../helpers/dashboard-http';

beforeAll(async () => { await setupNodeBackend('wasm'); });

describe('load', () => {
  it('64 workers + 16 dashboards finish 20 steps of vgg11-tiny', async () => {
    const run = await startInProcess({ model: 'vgg11-tiny', batch: 128, maxSteps: 20, minWorkers: 64, balance: 'equal' });
    const { coord } = run;
    const http = await serveDashboard(run);
    const rss0 = process.memoryUsage().rss;
    await run.add(64, WASM);
    const dashboards = Array.from({ length: 16 }, async () => {
      const ac = new AbortController();
      const res = await fetch(`${http.base}/api/events`, { signal: ac.signal });
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      const reader = res.body!.getReader();
      let events = 0;
      let text = '';
      const done = (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += new TextDecoder().decode(value);
            events = (text.match(/\n\n/g) ?? []).length;
          }
        } catch { /* aborted */ }
      })();
      return { stop: async () => { ac.abort(); await done; return events; } };
    });
    const steps: StepRecord[] = [];
    coord.events.on('step', (s: StepRecord) => steps.push(s));
    let peakRss = rss0;
    const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 200);
    try {
      const summary = await coord.train();
      expect(summary.steps).toBe(20);
      expect(steps.every((s) => s.shards.length === 64)).toBe(true);
      const connected = coord.status().workers.filter((w) => w.state !== 'lost').length;
      expect(connected).toBe(64);
      const counts = await Promise.all((await Promise.all(dashboards)).map((d) => d.stop()));
      expect(Math.min(...counts)).toBeGreaterThan(1);
      const wall = steps.map((s) => s.wallMs).sort((a, b) => a - b);
      console.log(`load: 64 workers, 16 dashboards, median step ${wall[10].toFixed(0)} ms (max ${wall[19].toFixed(0)}), ` +
        `test-process RSS (coordinator and the 64 workers) ${(rss0 / 2 ** 20).toFixed(0)} → peak ${(peakRss / 2 ** 20).toFixed(0)} MiB, dashboard events per page ${Math.min(...counts)}–${Math.max(...counts)}`);
    } finally {
      clearInterval(sampler);
      await run.close();
      await http.close();
    }
  });
});
