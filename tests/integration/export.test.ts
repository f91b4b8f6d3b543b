// Export: the trained model in TensorFlow.js LayersModel format, loaded back with
// tf.loadLayersModel over HTTP (as a page would), gives the coordinator's test accuracy.
import { describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { getModel } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { exportLayersModel } from '../../server/src/export';
import { setupNodeBackend } from '../../client/src/node-worker';
import { data, kill, startCoordinator, workers } from '../helpers/run';

describe('export', () => {
  it('tf.loadLayersModel loads the exported model and it scores the same test accuracy', async () => {
    const N = 2000;
    const { coord, url } = await startCoordinator({ model: 'alexnet-small', batch: 32, maxSteps: 200, lr: 0.1, evalExamples: N, minWorkers: 2 });
    const procs = workers(url, 2);
    let acc: number;
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-export-'));
    try {
      await coord.train();
      acc = await coord.evaluate();
      await exportLayersModel(coord.spec, coord.weights, dir);
    } finally {
      await coord.close();
      kill(procs);
    }
    expect(acc).toBeGreaterThan(0.3); // it learned something, so agreement is not chance

    const server = createServer((req, res) => res.end(readFileSync(join(dir, req.url!.slice(1)))));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      // The backend a Node worker computes on (wasm): tfjs's pure-JS cpu backend took a minute
      // for these 2,000 predictions on 2 cores, wasm a few seconds.
      await setupNodeBackend('wasm');
      const model = await tf.loadLayersModel(`http://127.0.0.1:${(server.address() as { port: number }).port}/model.json`);
      expect(model.countParams()).toBe(coord.run.paramCount);
      const net = new Net(getModel('alexnet-small')); // only for its input preprocessing
      const test = data().test;
      let correct = 0;
      for (let o = 0; o < N; o += 500) {
        const x = net.inputs(test.images.subarray(o * 784, (o + 500) * 784), 500);
        const pred = (model.predict(x) as tf.Tensor).argMax(1).dataSync();
        for (let i = 0; i < 500; i++) if (pred[i] === test.labels[o + i]) correct++;
        x.dispose();
      }
      net.dispose();
      console.log(`export: coordinator test acc ${acc.toFixed(4)}, reloaded LayersModel ${(correct / N).toFixed(4)} on ${N} images`);
      expect(Math.abs(correct / N - acc)).toBeLessThanOrEqual(1 / N); // at most one near-tie may flip
    } finally {
      server.close();
    }
  });
});

describe('export on demand', () => {
  it('POST /api/control {action: export} with the admin token writes a loadable LayersModel mid-run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-export-now-'));
    const { coord, port, url } = await startCoordinator({ model: 'vgg11-tiny', batch: 16, maxSteps: 400, adminToken: 'adm', exportDir: dir });
    const procs = workers(url, 1);
    const run = coord.train();
    try {
      while (coord.step < 3) await new Promise((r) => setTimeout(r, 50));
      const post = (token?: string) => fetch(`http://127.0.0.1:${port}/api/control`, {
        method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify({ action: 'export' }),
      });
      expect((await post()).status).toBe(401);
      const res = await post('adm');
      const body = (await res.json()) as { ok: boolean; step: number };
      expect(res.status).toBe(200);
      expect(body.step).toBeGreaterThanOrEqual(3);
      const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
      expect(json.format).toBe('layers-model');
      expect(readFileSync(join(dir, 'weights.bin')).byteLength).toBe(coord.run.paramCount * 4);
      coord.stop('test done');
      await run;
    } finally {
      await coord.close();
      kill(procs);
    }
  });
});
