// Golden runs: the exact final weights (SHA-256 of the fp32 vector, summary.weightsSha256) of a few
// fixed, short runs are pinned, so that any change of behaviour in the coordinator shows, however
// small. A real coordinator and real workers (WorkerCore) in this process, on the in-memory wire
// (tests/helpers/in-process.ts: every frame still goes through the transport's validation), real
// Fashion-MNIST; even shards ('equal'), so the runs are bit-reproducible. The checkpoint/resume
// run is a real `tabtrain serve` process with a real worker process, whose hash must equal the
// in-process run's: the pins hold for both.
//
// The workers run tfjs's pure-JS `cpu` backend (or are synthetic, no tfjs): the wasm backend's
// XNNPACK may choose other SIMD kernels on another CPU, and its bits need not match across machines.
//
// The pins were recorded at commit 4c8cec1 (before the coordinator's refactor) with
//   GOLDEN_PRINT=1 npx vitest run tests/integration/golden.test.ts
// which prints every value instead of asserting it. Update a pin only for an intended change of
// behaviour, with the reason in the commit message.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCompression } from '@tabtrain/shared/compress';
import { data, subset, type TestRunOptions } from '../helpers/run';
import { CPU, SYNTHETIC, trainInProcess } from '../helpers/in-process';
import { SERVE_DEADLINE_MS, expectGolden, serveCli } from '../helpers/golden';

const PINNED = {
  'fp32, vgg11-tiny, 1 worker': 'db0cae976e1fad77f0959d6c6a08473878b528d16aa8a85eae2e9cc0a2b1775e',
  'fp32, vgg11-tiny, 1 worker, first 3 steps (checkpoint)': '384444d8ad460bce17e0fb00e66891c23a46d967d6bc765a812dfb03c631fe70',
  'fp32, vgg11-tiny, 3 workers': '92f1673b8e2ca8b8ff362d615cb4ded2e5e16686a15f8f911b2bdc2741838762',
  'fp16, vgg11-tiny, 2 workers': 'f1160e679e585d81a6ec3de4366a917630a43cffb024404f2bb228fefca6c09e',
  'int8, vgg11-tiny, 2 workers': 'c8f1413329dc7c5bcf072d42094c385684d21ec4695c0240af54b554d1628f64',
  'powersgd rank 2, vgg11-small, 2 workers': 'a95e7077d14c71a3171294f7efbdeecae56f673b59c57505e7260e9bba476fef',
  'powersgd rank 4, vgg11-small, 2 synthetic workers': 'aab9b2ce419cf08871d8048c513bee6db4599038b43f147bae1809c3f2a573e8',
  'eval: vgg11-tiny, 2 epochs of 64 images, 2 workers': 'a628386ee36f9eeba10cf5b0503e36460aaaaef1d486a822c00423888c4e1b5f',
};
/** The eval run's per-epoch metrics: test accuracy on the first 160 test images, training loss and accuracy. */
const PINNED_EPOCHS = [
  { testAcc: 0.09375, loss: 2.2944348454475403, trainAcc: 0.125 },
  { testAcc: 0.075, loss: 2.2186031341552734, trainAcc: 0.171875 },
];

// Batch 14: 3 workers get uneven shards of 5, 5 and 4. lr and init are vgg11-tiny's defaults.
const BASE = { model: 'vgg11-tiny', batch: 14, seed: 23, balance: 'equal', maxSteps: 6 } satisfies TestRunOptions;

async function pinned(name: keyof typeof PINNED, n: number, opts: TestRunOptions, worker = CPU): Promise<string> {
  const t0 = performance.now();
  const { summary, lines } = await trainInProcess(n, opts, worker);
  console.log(`${name}: ${summary.steps} steps in ${((performance.now() - t0) / 1000).toFixed(1)} s, weights sha256 ${summary.weightsSha256}`);
  expect(summary.steps).toBe(opts.maxSteps);
  expect(summary.workersSeen).toBe(n);
  // The compressed runs check every replica's hash every 2 versions: none drifted.
  expect(lines.filter((l) => l.includes('replica differs'))).toEqual([]);
  // No worker failed (in-process.ts logs a worker's error into the run's lines).
  expect(lines.filter((l) => l.startsWith('[worker '))).toEqual([]);
  expectGolden(name, 'weightsSha256', summary.weightsSha256, PINNED[name]);
  return summary.weightsSha256;
}

// Each test takes 5-12 s on a quiet 2-core machine (3-4× that under heavy load); a hung run fails after 4 minutes.
const TIMEOUT = 240_000;
// The CLI test's two serves each fail with their log at SERVE_DEADLINE_MS: before the test's own timeout.
const CLI_TIMEOUT = 2 * SERVE_DEADLINE_MS + 60_000;

describe('golden runs: final weights stay bit-identical', () => {
  it('fp32, 1 worker; the same run stopped after 3 steps, checkpointed and resumed with --resume ends bit-equal to it', async () => {
    const uninterrupted = await pinned('fp32, vgg11-tiny, 1 worker', 1, BASE);
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-golden-'));
    try {
      const t0 = performance.now();
      const cfg = ['--model', BASE.model, '--batch', String(BASE.batch), '--seed', String(BASE.seed), '--balance', BASE.balance, '--epochs', '1'];
      const local = ['--local-workers', '1', '--local-backend', 'cpu'];
      const ckptDir = join(dir, 'ckpt');
      // First part: 3 steps, then the checkpoint written on exit (what a Ctrl-C after step 3 leaves).
      await serveCli([...cfg, ...local, '--max-steps', '3', '--checkpoint', ckptDir, '--summary', join(dir, 'first.json')], join(dir, 'state'));
      const first = JSON.parse(readFileSync(join(dir, 'first.json'), 'utf8'));
      const ckpt = JSON.parse(readFileSync(join(ckptDir, 'checkpoint.json'), 'utf8'));
      expect(first.steps).toBe(3);
      expect(ckpt.step).toBe(3);
      expect(ckpt.weightsSha256).toBe(first.weightsSha256);
      const name3 = 'fp32, vgg11-tiny, 1 worker, first 3 steps (checkpoint)';
      expectGolden(name3, 'weightsSha256', first.weightsSha256, PINNED[name3]);
      // Second part: a new coordinator and a new worker continue from the checkpoint to step 6.
      const log = await serveCli(['--resume', ckptDir, ...local, '--max-steps', String(BASE.maxSteps), '--summary', join(dir, 'resumed.json')], join(dir, 'state'));
      expect(log).toContain(`resumed from ${ckptDir} at step 3`);
      const resumed = JSON.parse(readFileSync(join(dir, 'resumed.json'), 'utf8'));
      console.log(`stop at 3 + resume to 6 (CLI): ${((performance.now() - t0) / 1000).toFixed(1)} s, weights sha256 ${resumed.weightsSha256}`);
      expect(resumed.steps).toBe(BASE.maxSteps);
      expect(resumed.weightsSha256, 'the resumed run must end bit-equal to the uninterrupted one').toBe(uninterrupted);
      expectGolden('fp32, vgg11-tiny, 1 worker', 'weightsSha256 (stopped at 3, resumed)', resumed.weightsSha256, PINNED['fp32, vgg11-tiny, 1 worker']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, CLI_TIMEOUT);

  it('fp32, 3 workers (uneven shards)', async () => {
    await pinned('fp32, vgg11-tiny, 3 workers', 3, BASE);
  }, TIMEOUT);

  it('each compression mode with 2 workers', async () => {
    const verifyEvery = 2;
    await pinned('fp16, vgg11-tiny, 2 workers', 2, { ...BASE, maxSteps: 4, compress: parseCompression('fp16'), verifyEvery });
    await pinned('int8, vgg11-tiny, 2 workers', 2, { ...BASE, maxSteps: 4, compress: parseCompression('int8'), verifyEvery });
    // PowerSGD in two rounds (powersgd.ts) on vgg11-small, whose conv and dense kernels are
    // factored. Real gradients, then synthetic ones. A worker computes with its working copy of
    // the weights, which takes each update on its backend and is within rounding of the
    // coordinator's between refreshes (exact-replica.ts): --refresh-every 1 replaces it by the
    // exact copy after every update, so the gradients, and this hash, are the coordinator's arithmetic alone.
    // The coordinator applies each update with 2 helper threads once they have started (--apply-threads;
    // low-rank-pool.ts), on its own thread before: the same bits either way, so the same hashes.
    await pinned('powersgd rank 2, vgg11-small, 2 workers', 2, { ...BASE, model: 'vgg11-small', batch: 6, maxSteps: 3, compress: parseCompression('powersgd', 2), verifyEvery, applyThreads: 2 }, { ...CPU, refreshEvery: 1 });
    await pinned('powersgd rank 4, vgg11-small, 2 synthetic workers', 2, { ...BASE, model: 'vgg11-small', compress: parseCompression('powersgd', 4), verifyEvery, applyThreads: 2 }, SYNTHETIC);
  }, TIMEOUT);

  it('two whole epochs with their test evaluations: weights, test accuracy, training loss and accuracy', async () => {
    const name = 'eval: vgg11-tiny, 2 epochs of 64 images, 2 workers';
    const t0 = performance.now();
    // lr 0.2: a few steps move the predictions (still near chance), so the test accuracy differs between epochs.
    const { summary } = await trainInProcess(2, { model: 'vgg11-tiny', batch: 16, seed: 23, lr: 0.2, epochs: 2, evalExamples: 160 }, CPU, subset(data(), 64, 160));
    console.log(`${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s, weights sha256 ${summary.weightsSha256}, epochs ${JSON.stringify(summary.epochs.map((e) => [e.testAcc, e.loss, e.trainAcc]))}`);
    expect(summary.steps).toBe(8);
    expect(summary.stoppedBy).toBe('epochs');
    expect(summary.epochs.map((e) => e.steps)).toEqual([4, 4]);
    expectGolden(name, 'weightsSha256', summary.weightsSha256, PINNED[name]);
    summary.epochs.forEach((e, i) => {
      expectGolden(name, `epoch ${i + 1} test acc`, e.testAcc!, PINNED_EPOCHS[i].testAcc);
      expectGolden(name, `epoch ${i + 1} train loss`, e.loss, PINNED_EPOCHS[i].loss);
      expectGolden(name, `epoch ${i + 1} train acc`, e.trainAcc, PINNED_EPOCHS[i].trainAcc);
    });
  }, TIMEOUT);
});
