// tabtrain view's reading of --log files (server/src/window/log-runs.ts): a real log from a small
// in-process run read back as the dashboard's snapshot, and hostile lines reported as FILE:LINE
// and skipped, never a crash.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readLog } from '../../server/src/window/log-runs';
import { runNames } from '../../server/src/view';
import { subset, data } from '../helpers/run';
import { SYNTHETIC, trainInProcess } from '../helpers/in-process';

describe('tabtrain view: reading a --log file', () => {
  it('rebuilds the run: header, every step, the epochs, the running train points and the worker samples', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-log-'));
    const file = join(dir, 'run.jsonl');
    const { summary } = await trainInProcess(2, { model: 'vgg11-tiny', epochs: 2, batch: 16, metricsLog: file, evalExamples: 32 }, SYNTHETIC, subset(data(), 4 * 16, 32));
    const text = readFileSync(file, 'utf8');
    rmSync(dir, { recursive: true, force: true });
    const { snapshot: s, problems } = readLog(text, 'run');
    expect(problems).toEqual([]);
    expect(s.header.model).toBe('vgg11-tiny');
    expect(s.header.state).toBe('finished');
    expect(s.header.stepsPerEpoch).toBe(4);
    expect(s.steps.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(s.epochs.map((e) => e.testAcc)).toEqual(summary.epochs.map((e) => expect.closeTo(e.testAcc!, 4)));
    expect(s.train.map((t) => t.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // A sample at the first step and at the end: both workers, named with their backend.
    expect(s.samples!.length).toBeGreaterThanOrEqual(2);
    expect(s.samples!.at(-1)!.workers.map((w) => w.backend)).toEqual(['synthetic', 'synthetic']);
  });

  it('reports a bad line as FILE:LINE and skips it; the rest still draws', () => {
    const run = { type: 'run', model: 'vgg11-tiny', modelHash: 'h', paramCount: 1, config: { epochs: 1, batch: 16, lr: 0.05, seed: 1 }, stepsPerEpoch: 2, totalSteps: 2, at: 1000 };
    const step = (n: number) => ({ type: 'step', step: n, epoch: 1, examples: 16, loss: 2.3, acc: 0.1, wallMs: 5, collectMs: 4, computeMs: 3, uploadMs: 1, aggregateMs: 0, applyMs: 0, broadcastMs: 0, straggler: null, shards: [], at: 1000 + n });
    const lines = [
      JSON.stringify(run), '{"type": "step", "step": ', JSON.stringify(step(1)), '[1,2]', JSON.stringify({ ...step(2), loss: 'high' }),
      JSON.stringify({ ...step(2), wallMs: -1 }), JSON.stringify({ type: 'surprise' }), JSON.stringify({ type: 'workers', workers: [{ id: 1 }] }),
      'x'.repeat(2_000_000), JSON.stringify({ ...step(2), loss: null }), '',
    ];
    const { snapshot, problems, problemCount } = readLog(lines.join('\n'), 'b.jsonl');
    expect(problemCount).toBe(7);
    expect(problems.map((p) => p.split(':').slice(0, 2).join(':'))).toEqual(['b.jsonl:2', 'b.jsonl:4', 'b.jsonl:5', 'b.jsonl:6', 'b.jsonl:7', 'b.jsonl:8', 'b.jsonl:9']);
    expect(problems[0]).toContain('not JSON');
    expect(problems[2]).toContain('step.loss');
    // Step 2's loss was written as null (NaN in JSON): the step is kept.
    expect(snapshot.steps.map((p) => p.step)).toEqual([1, 2]);
  });

  it('names runs by their files, with the folder where two share a name', () => {
    expect(runNames(['a/run.jsonl', 'b/run.jsonl', 'c/lr-0.1.jsonl']).map((r) => r.name)).toEqual(['a/run', 'b/run', 'lr-0.1']);
  });
});
