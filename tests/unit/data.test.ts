import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { DataError, DEFAULT_DATA_DIR, FILES, loadFashionMnist } from '../../server/src/data';

function copyDataset(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tabtrain-data-'));
  for (const f of Object.values(FILES)) copyFileSync(join(DEFAULT_DATA_DIR, f), join(dir, f));
  return dir;
}

function loadError(dir: string): string {
  try { loadFashionMnist(dir); } catch (e) { expect(e).toBeInstanceOf(DataError); return (e as Error).message; }
  throw new Error('expected a DataError');
}

describe('Fashion-MNIST IDX reader', () => {
  it('reads the real files: 60,000 + 10,000 images, 6,000 of each class in training', () => {
    const d = loadFashionMnist();
    expect(d.train.count).toBe(60_000);
    expect(d.test.count).toBe(10_000);
    expect(d.train.images.length).toBe(60_000 * 784);
    const perClass = new Array(10).fill(0);
    for (const l of d.train.labels) perClass[l]++;
    expect(perClass).toEqual(new Array(10).fill(6000));
    // the first training image is an ankle boot (label 9), as in every Fashion-MNIST loader
    expect(d.train.labels[0]).toBe(9);
    expect(d.train.images.subarray(0, 784).some((p) => p > 0)).toBe(true);
  });

  it('names the file and the fix when a file is truncated', () => {
    const dir = copyDataset();
    const path = join(dir, FILES.trainLabels);
    const raw = gunzipSync(readFileSync(path));
    writeFileSync(path, gzipSync(raw.subarray(0, raw.length - 100)));
    const msg = loadError(dir);
    expect(msg).toContain(path);
    expect(msg).toMatch(/truncated/);
    expect(msg).toContain('apt-get install dataset-fashion-mnist');
  });

  it('names the file when the gzip stream itself is cut short', () => {
    const dir = copyDataset();
    const path = join(dir, FILES.testImages);
    const gz = readFileSync(path);
    writeFileSync(path, gz.subarray(0, gz.length >> 1));
    const msg = loadError(dir);
    expect(msg).toContain(path);
    expect(msg).toMatch(/cannot decompress/);
  });

  it('refuses a wrong magic number', () => {
    const dir = copyDataset();
    const path = join(dir, FILES.testImages);
    const raw = gunzipSync(readFileSync(path));
    raw.writeUInt32BE(2049, 0); // a labels magic on an images file
    writeFileSync(path, gzipSync(raw));
    const msg = loadError(dir);
    expect(msg).toContain(path);
    expect(msg).toMatch(/magic number 2049, expected 2051/);
  });

  it('the CLI prints a missing folder as one clear line, no stack trace', () => {
    const r = spawnSync('bin/tabtrain', ['serve', '--data', '/nonexistent/fmnist', '--port', '0'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('/nonexistent/fmnist/train-images-idx3-ubyte.gz is missing');
    expect(r.stderr).toContain('apt-get install dataset-fashion-mnist');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('the CLI explains a bad option', () => {
    const r = spawnSync('bin/tabtrain', ['serve', '--model', 'resnet'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown model 'resnet'");
    expect(r.stderr).toContain('alexnet-small');
    const h = spawnSync('bin/tabtrain', ['--help'], { encoding: 'utf8' });
    expect(h.status).toBe(0);
    for (const m of ['alexnet', 'vgg11', 'alexnet-small', 'vgg11-tiny']) expect(h.stdout).toContain(m);
  });
});
