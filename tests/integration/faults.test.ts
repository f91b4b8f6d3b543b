// Faults: workers die, lag or vanish, the coordinator itself is killed; the run goes on, exact.
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { CLOSE, PROTOCOL_VERSION, decodeFrame, encode, zooHashes, type Welcome } from '@tabtrain/shared';
import { getModel, modelHash, paramLayout } from '@tabtrain/shared';
import { CHECKPOINT_VERSION, Checkpointer, loadCheckpoint } from '../../server/src/checkpoint';
import { weightsSha256 } from '../../server/src/files';
import type { StepRecord } from '../../server/src/coordinator';
import { freePort, kill, maxAbsDiff, startCoordinator, workers } from '../helpers/run';
import { cleanRun, workerInstances } from '../helpers/clean-run';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('faults', () => {
  const RUN = { model: 'alexnet-tiny', batch: 24, maxSteps: 8, seed: 3, balance: 'equal' as const };

  it('a worker killed with SIGKILL mid-step: its shard is recomputed, no step skipped or doubled, weights within 1e-5', async () => {
    // The clean run needs no delay: it paces nothing there, and equal shards give the same bits at any pace.
    const clean = await cleanRun(3, RUN);
    const { coord, url, lines } = await startCoordinator({ ...RUN, minWorkers: 3 });
    const procs = workers(url, 3, ['--backend', 'wasm', '--delay-ms', '20']);
    const steps: StepRecord[] = [];
    let killedAt = -1;
    coord.events.on('step', (s: StepRecord) => {
      steps.push(s);
      if (s.step === 3) {
        // The next step is dispatched synchronously after this event; each shard then takes
        // ≥ 160 ms (8 examples × 20 ms), so 50 ms later every worker holds a shard in flight.
        setTimeout(() => { killedAt = coord.step; procs[1].kill('SIGKILL'); }, 50);
      }
    });
    try {
      const summary = await coord.train();
      expect(killedAt).toBe(3);
      expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(summary.examples).toBe(8 * 24);
      expect(lines.some((l) => /shard 3\/\d \(8 examples\) goes back to the queue/.test(l))).toBe(true);
      const diff = maxAbsDiff(coord.weights, clean.weights);
      console.log(`SIGKILLed worker: max |w - w_clean| = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-5);
    } finally {
      await coord.close();
      kill(procs);
    }
  });

  it('a slow worker gets a smaller shard, and steps get faster than with equal shards', async () => {
    const timed = async (balance: 'speed' | 'equal') => {
      const { coord, url } = await startCoordinator({ model: 'vgg11-tiny', batch: 32, maxSteps: 14, balance, minWorkers: 2 });
      const fast = workers(url, 1, ['--backend', 'wasm']);
      const slow = workers(url, 1, ['--backend', 'wasm', '--delay-ms', '15']);
      const steps: StepRecord[] = [];
      coord.events.on('step', (s: StepRecord) => steps.push(s));
      try {
        await coord.train();
        const status = coord.status();
        return { steps: steps.slice(6), status };
      } finally {
        await coord.close();
        kill([...fast, ...slow]);
      }
    };
    const speed = await timed('speed');
    const equal = await timed('equal');
    const last = speed.steps[speed.steps.length - 1];
    const sizes = last.shards.map((s) => s.count);
    const slowest = last.shards.reduce((a, s) => (s.computeMs > a.computeMs ? s : a));
    console.log(`straggler: speed-balanced shards ${sizes.join('/')}, median step ${median(speed.steps.map((s) => s.wallMs)).toFixed(0)} ms vs equal ${median(equal.steps.map((s) => s.wallMs)).toFixed(0)} ms`);
    expect(slowest.count).toBeLessThan(8); // the slow worker's share shrank from 16
    expect(Math.min(...sizes)).toBe(slowest.count);
    expect(median(speed.steps.map((s) => s.wallMs))).toBeLessThan(0.7 * median(equal.steps.map((s) => s.wallMs)));
  });

  it('with zero workers the run waits, says so, and resumes when one joins', async () => {
    const { coord, url, lines } = await startCoordinator({ model: 'vgg11-tiny', batch: 16, maxSteps: 6 });
    const first = workers(url, 1);
    let second: ReturnType<typeof workers> = [];
    coord.events.on('step', (s: StepRecord) => { if (s.step === 2) first[0].kill('SIGKILL'); });
    coord.events.on('state', (state: string) => {
      if (state === 'waiting' && coord.step >= 2 && second.length === 0) setTimeout(() => { second = workers(url, 1); }, 300);
    });
    try {
      const summary = await coord.train();
      expect(summary.steps).toBe(6);
      expect(lines.some((l) => l.includes('waiting for workers: 0 connected'))).toBe(true);
      expect(second.length).toBe(1);
    } finally {
      await coord.close();
      kill([...first, ...second]);
    }
  });

  it('the coordinator killed with SIGKILL resumes from its checkpoint and ends equal to an uninterrupted run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-ckpt-'));
    const port = await freePort();
    const cfg = ['--model', 'alexnet-tiny', '--batch', '16', '--seed', '9', '--max-steps', '12', '--balance', 'equal', '--min-workers', '2', '--port', String(port), '--host', '127.0.0.1'];
    const out = join(dir, 'final.bin');
    const serve = (extra: string[]) => spawn('bin/tabtrain', ['serve', '--local-workers', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    const first = serve([...cfg, '--checkpoint', dir, '--checkpoint-every', '2']);
    const url = `ws://127.0.0.1:${port}/ws`;
    const procs = workers(url, 2, ['--backend', 'wasm', '--delay-ms', '10']);
    try {
      const ckpt = join(dir, 'checkpoint.json');
      for (let i = 0; i < 600 && !(existsSync(ckpt) && JSON.parse(readFileSync(ckpt, 'utf8')).step >= 4); i++) await sleep(100);
      first.kill('SIGKILL');
      const savedAt = JSON.parse(readFileSync(ckpt, 'utf8')).step;
      expect(savedAt).toBeGreaterThanOrEqual(4);
      expect(savedAt).toBeLessThan(12);
      const second = serve(['--resume', dir, '--max-steps', '12', '--min-workers', '2', '--port', String(port), '--host', '127.0.0.1', '--weights-out', out]);
      let log = '';
      second.stdout!.on('data', (d) => { log += d; });
      second.stderr!.on('data', (d) => { log += d; });
      const code = await new Promise((r) => second.on('exit', r));
      expect(code, log).toBe(0);
      expect(log).toContain(`resumed from ${dir} at step ${savedAt}`);
      const resumed = new Float32Array(new Uint8Array(readFileSync(out)).buffer);
      const clean = await cleanRun(2, { model: 'alexnet-tiny', batch: 16, seed: 9, maxSteps: 12, balance: 'equal', epochs: 10 });
      const diff = maxAbsDiff(resumed, clean.weights);
      console.log(`resume after SIGKILL at checkpoint step ${savedAt}: max |w - w_clean| = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-5);
    } finally {
      first.kill('SIGKILL');
      kill(procs);
    }
  });

  it('a checkpoint write that fails (EISDIR, then EMFILE) never ends the run: one line, shown on /api/status, the previous checkpoint stays, the next write succeeds once the cause is gone; --resume of the last good one is exact and removes leftover temp files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-ckpt-fail-'));
    const good = mkdtempSync(join(tmpdir(), 'tabtrain-ckpt-good-'));
    const { coord, port, url, lines, dashboard } = await startCoordinator({ ...RUN, maxSteps: 14, minWorkers: 2 });
    const checkpointer = new Checkpointer(dir, coord.opts.log);
    checkpointer.attach(coord, 2, dashboard);
    // A directory where checkpoint.json's temp file goes: every write of it fails (EISDIR), as
    // EMFILE or a full disk would, and as root cannot override (the tests run as root).
    const blocker = join(dir, `checkpoint.json.tmp-${process.pid}`);
    const procs = workers(url, 2, ['--backend', 'wasm', '--delay-ms', '10']);
    let shown: Promise<{ checkpoint: { failures: number; error: { step: number; path: string; message: string } | null }; header: { checkpointProblem: string } }> | null = null;
    let keptStep = -1;
    // Then every file descriptor of this process (the coordinator's) taken, as 10,000 stalled TLS
    // handshakes took them in issue 24: the write at step 10 fails with EMFILE.
    const taken: number[] = [];
    coord.events.on('step', (s: StepRecord) => {
      if (s.step === 9) try { for (;;) taken.push(openSync('/dev/null', 'r')); } catch { /* EMFILE: all taken */ }
      if (s.step === 11) for (const fd of taken.splice(0)) closeSync(fd);
      if (s.step === 3) mkdirSync(blocker);
      if (s.step === 5) {
        shown = fetch(`http://127.0.0.1:${port}/api/status`).then((r) => r.json());
        keptStep = loadCheckpoint(dir).ckpt.step; // hash-checked: the previous checkpoint is whole
        cpSync(dir, good, { recursive: true, filter: (f) => f !== blocker });
      }
      if (s.step === 7) rmdirSync(blocker);
    });
    try {
      const summary = await coord.train();
      expect(summary.steps).toBe(14);
      const failed = lines.filter((l) => l.includes('failed writing'));
      console.log(`failed checkpoint writes, logged:\n  ${failed.join('\n  ')}`);
      expect(failed.map((l) => /checkpoint at step (\d+)/.exec(l)?.[1])).toEqual(['4', '6', '10']);
      expect(failed[2]).toMatch(/failed writing \S+weights-10\.bin\.tmp-\d+ \(EMFILE: /);
      expect(failed[2]).toContain(`${dir} keeps step 8's, the run goes on`);
      expect(failed[0]).toContain(`failed writing ${blocker} (EISDIR: `);
      expect(failed[0]).toContain(`${dir} keeps step 2's, the run goes on`);
      expect(lines).toContain(`checkpoint at step 8 written to ${dir}: checkpoints work again after 2 failed`);
      expect(lines).toContain(`checkpoint at step 12 written to ${dir}: checkpoints work again after 3 failed`);
      expect(keptStep).toBe(2);
      const status = await shown!;
      expect(status.checkpoint.error?.step).toBe(4);
      expect(status.checkpoint.error?.path).toBe(blocker);
      expect(status.header.checkpointProblem).toMatch(/^checkpoint at step 4 failed: EISDIR: .*; .* keeps step 2's$/);
      expect(dashboard.status().checkpoint).toMatchObject({ savedStep: 14, failures: 3, error: null });
      expect(loadCheckpoint(dir).ckpt.step).toBe(14);
    } finally {
      for (const fd of taken.splice(0)) closeSync(fd);
      await coord.close();
      kill(procs);
    }
    // The last good checkpoint (step 2) resumes, through the CLI, to the same weights; the temp
    // files a write cut short leaves behind are removed at start.
    for (const f of ['weights-4.bin.tmp-99999', 'checkpoint.json.tmp-99999']) writeFileSync(join(good, f), 'half');
    const cliPort = await freePort();
    const out = join(good, 'final.bin');
    const resumed = spawn('bin/tabtrain', ['serve', '--resume', good, '--local-workers', '0', '--max-steps', '14', '--min-workers', '2', '--port', String(cliPort), '--host', '127.0.0.1', '--weights-out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    resumed.stdout!.on('data', (d) => { log += d; });
    resumed.stderr!.on('data', (d) => { log += d; });
    const again = [workerInstances(`ws://127.0.0.1:${cliPort}/ws`, 2)];
    try {
      expect(await new Promise((r) => resumed.on('exit', r)), log).toBe(0);
      expect(log).toContain(`checkpoint: removed 2 leftover temp files of a write cut short from ${good}`);
      expect(log).toContain(`resumed from ${good} at step 2`);
      expect(readdirSync(good).filter((f) => f.includes('.tmp-'))).toEqual([]);
      const diff = maxAbsDiff(new Float32Array(new Uint8Array(readFileSync(out)).buffer), coord.weights);
      console.log(`resume of the checkpoint kept through failed writes: max |w - w_unbroken| = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-5);
    } finally {
      resumed.kill('SIGKILL');
      kill(again);
    }
  });

  it('serve --resume of a checkpoint.json with a bad field exits 2 with one line naming the field, no stack', async () => {
    const spec = getModel('alexnet-tiny');
    const weights = new Float32Array(paramLayout(spec).total);
    const ckpt = {
      format: 'tabtrain-checkpoint', version: CHECKPOINT_VERSION, model: spec.name, modelHash: modelHash(spec), paramCount: weights.length,
      config: { epochs: 1, batch: 16, lr: 0.01, seed: 9, balance: 'equal', compress: { mode: 'none', rank: 0 } }, optimizer: { kind: 'sgd', lr: 0.01 },
      step: 4, epoch: 0, dataOrderSeed: 9, epochAcc: { steps: 4, examples: 64, lossSum: 140, correct: 12, seconds: 1 }, history: [],
      weightsFile: 'weights-4.bin', weightsSha256: weightsSha256(weights), savedAt: new Date().toISOString(),
    };
    const cases: [Record<string, unknown>, string][] = [
      [{ step: -100 }, 'step'],
      [{ history: null }, 'history'],
      [{ weightsFile: '../weights-4.bin' }, 'weightsFile'],
      // Checked once the data set is loaded: 4 steps into the epoch, not 3.
      [{ epochAcc: { ...ckpt.epochAcc, steps: 3, examples: 48 } }, 'epochAcc.steps'],
    ];
    await Promise.all(cases.map(async ([change, field]) => {
      const dir = mkdtempSync(join(tmpdir(), 'tabtrain-bad-ckpt-'));
      writeFileSync(join(dir, 'weights-4.bin'), new Uint8Array(weights.buffer));
      writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ ...ckpt, ...change }));
      const cli = spawn('bin/tabtrain', ['serve', '--resume', dir, '--local-workers', '0', '--port', '0', '--host', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      cli.stdout!.on('data', (d) => { out += d; });
      cli.stderr!.on('data', (d) => { err += d; });
      const code = await new Promise((r) => cli.on('exit', r));
      expect(code, err).toBe(2);
      expect(err).toMatch(new RegExp(`^tabtrain: ${dir}/checkpoint.json: field "${field.replace(/[.[\]]/g, '\\$&')}" must be [^\n]+; [^\n]+\n$`));
      expect(out).not.toContain('resumed');
    }));
  });

  it('an idle worker that stops answering heartbeats is dropped with timeout; a rejoin under the same id (with its session secret) is not counted twice', async () => {
    const { coord, url, lines } = await startCoordinator({ model: 'vgg11-tiny', minWorkers: 2, heartbeatMs: 200, open: true });
    const join = (id: string, session?: string) => new Promise<{ ws: WebSocket; welcome: Welcome }>((resolve) => {
      const ws = new WebSocket(url);
      ws.on('open', () => ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: id, kind: 'node', backend: 'test', adapter: null, modelHashes: zooHashes(), ...(session ? { session } : {}) })));
      ws.once('message', (d: Buffer) => resolve({ ws, welcome: decodeFrame(d).header as Welcome }));
      ws.on('error', () => {});
    });
    try {
      const { ws: a, welcome } = await join('same-id');
      const closed = new Promise<number>((r) => a.on('close', (code) => r(code)));
      const { ws: b, welcome: again } = await join('same-id', welcome.session);
      expect(await closed).toBe(CLOSE.replaced);
      expect(again.workerId).toBe('same-id');
      expect(coord.status().workers.filter((w) => w.state !== 'lost').length).toBe(1);
      // b stops reading: no pongs. The run is waiting for a second worker, so b stays idle.
      (b as unknown as { _socket: { pause(): void } })._socket.pause();
      for (let i = 0; i < 50 && !lines.some((l) => l.includes('missed two heartbeats')); i++) await sleep(100);
      expect(lines.find((l) => l.includes('missed two heartbeats'))).toMatch(/closed: timeout \(4013\)/);
      b.terminate();
    } finally {
      await coord.close();
    }
  });

  it('Ctrl-C (SIGINT to the whole process group) finishes the step, saves a checkpoint, and takes the local workers with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-sigint-'));
    const port = await freePort();
    const serve = spawn('bin/tabtrain', ['serve', '--model', 'vgg11-tiny', '--batch', '16', '--local-workers', '2', '--port', String(port), '--host', '127.0.0.1', '--checkpoint', dir, '--summary', join(dir, 'summary.json')], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let log = '';
    serve.stdout!.on('data', (d) => { log += d; });
    serve.stderr!.on('data', (d) => { log += d; });
    try {
      for (let i = 0; i < 600 && !/step [5-9]\d*\/3750/.test(log); i++) await sleep(100);
      process.kill(-serve.pid!, 'SIGINT'); // what a terminal's Ctrl-C does: the coordinator and its workers
      const code = await new Promise((r) => serve.on('exit', r));
      expect(code, log).toBe(130); // as shells expect after Ctrl-C (issue 12)
      const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
      const ckpt = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
      expect(summary.stoppedBy).toBe('stop');
      expect(ckpt.step).toBe(summary.steps);
      expect(ckpt.epochAcc.steps).toBe(summary.steps); // the partial epoch stays open for a resume
      expect(log).toContain(`checkpoint at step ${summary.steps} written`);
      // Gone within a second of the coordinator's exit.
      const left = () => spawnSync('pgrep', ['-f', `127.0.0.1:${port}/ws`]).stdout.toString().trim();
      const exitedAt = Date.now();
      while (left() !== '' && Date.now() - exitedAt < 1000) await sleep(50);
      expect(left()).toBe('');
    } finally {
      try { process.kill(-serve.pid!, 'SIGKILL'); } catch { /* already gone */ }
    }
  });
});
