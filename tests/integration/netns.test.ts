// `bench scaleout --link`: a run through network namespaces and shaped links ends with the same
// weights as the same run on loopback, the traffic really crosses the lab's links, and the lab is
// removed on every exit path. Needs root and iproute2 (CI has both); skipped, saying so, without.
import { execFileSync, spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, weightsSha256 } from '../../server/src/coordinator';
import { NetLab, parseRate, removeLeftovers, whyNoNamespaces } from '../../server/src/bench/netns';
import { cliWorker, ROOT, runInLab, tsArgs } from '../../server/src/bench/linked';
import { startCoordinator, trainWith } from '../helpers/run';

const skip = whyNoNamespaces();
if (skip) console.warn(`netns.test.ts skipped: ${skip}`);

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);

// alexnet-tiny, even shards: bit-reproducible whatever the transport.
const RUN = { model: 'alexnet-tiny', epochs: 1, batch: 16, seed: 7, lr: 0.05, maxSteps: 4, balance: 'equal' as const, evalExamples: 1000 };

describe.skipIf(skip !== null)(`runs through network namespaces${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('2 real workers behind 200 Mbit/s links (2 ms RTT where the kernel has netem) end with the loopback run\'s weights', async () => {
    const loopback = await trainWith(2, RUN);
    const { coord } = await startCoordinator(RUN);
    const initial = weightsSha256(coord.weights);
    await coord.close();

    const lab = NetLab.create({ workers: 2, worker: { rateBits: parseRate('200mbit'), rttMs: 2 } });
    try {
      console.log(`lab ${lab.prefix}: tbf 200 Mbit/s both ways on every link; RTT ${lab.netem ? '2 ms by netem' : 'not applied (this kernel has no netem)'}`);
      expect(lab.existing()).toHaveLength(4); // bridge, coordinator, 2 workers
      const run = await runInLab(lab, { ...RUN, minWorkers: 2, helloTimeoutMs: DEFAULTS.helloTimeoutMs, port: 0, host: lab.coordinator.ip }, 2, (url) => cliWorker(url, ['--backend', 'wasm', '--quiet']));
      expect(run.summary.steps).toBe(4);
      expect(loopback.summary.steps).toBe(4);
      expect(run.summary.weightsSha256).not.toBe(initial); // the weights moved
      expect(run.summary.weightsSha256).toBe(loopback.summary.weightsSha256);

      // The workers came from their namespaces' addresses, not loopback.
      const last = run.marks[run.marks.length - 1];
      expect(last.links.map((l) => l.remote).sort()).toEqual(lab.workers.map((w) => w.ip).sort());
      // The coordinator's tbf shaped everything it sent: at least the payload its sockets counted.
      const sent = last.links.reduce((a, l) => a + l.bytesOut, 0);
      expect(sent).toBeGreaterThan(0);
      expect(lab.sentBytes(lab.coordinator)).toBeGreaterThanOrEqual(sent);
      expect(lab.qdiscs(lab.coordinator)).toMatch(/tbf .*rate 200Mbit/);
      expect(lab.qdiscs(lab.workers[1])).toMatch(/tbf .*rate 200Mbit/);
    } finally {
      lab.destroySync();
    }
    expect(lab.existing()).toEqual([]);
    expect(namespaces().filter((n) => n.startsWith(`${lab.prefix}-`))).toEqual([]);
  });

  it('a benchmark stopped by SIGINT or SIGTERM removes its namespaces; one killed by SIGKILL leaves them to the next run, which removes them', async () => {
    const hold = () => {
      const p = spawn(process.execPath, tsArgs('server/src/bench/netns.ts', ['hold', '2']), { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      const prefix = new Promise<string>((resolve, reject) => {
        let out = '';
        p.stdout!.on('data', (d: Buffer) => { out += d.toString(); const m = /^holding (\S+)/m.exec(out); if (m) resolve(m[1]); });
        p.once('exit', (c) => reject(new Error(`hold exited (${c}) before making its lab: ${out}`)));
      });
      return { p, prefix, exited: new Promise<number | null>((r) => p.once('exit', (c, sig) => r(c ?? (sig ? -1 : null)))) };
    };
    const mine = (prefix: string) => namespaces().filter((n) => n.startsWith(`${prefix}-`));
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const h = hold();
      const prefix = await h.prefix;
      expect(mine(prefix)).toHaveLength(4);
      h.p.kill(sig);
      expect(await h.exited).toBe(sig === 'SIGINT' ? 130 : 143);
      expect(mine(prefix)).toEqual([]);
    }
    const h = hold();
    const prefix = await h.prefix;
    h.p.kill('SIGKILL');
    await h.exited;
    const left = mine(prefix);
    expect(left).toHaveLength(4);
    expect(removeLeftovers()).toEqual(expect.arrayContaining(left));
    expect(mine(prefix)).toEqual([]);
  });
});

it('parses link rates', () => {
  expect(parseRate('1gbit')).toBe(1e9);
  expect(parseRate('10Gbit/s')).toBe(1e10);
  expect(parseRate('200mbit')).toBe(2e8);
  expect(() => parseRate('fast')).toThrow(/not a rate/);
});
