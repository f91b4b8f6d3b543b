// Fashion-MNIST from the original IDX .gz files (Debian: dataset-fashion-mnist).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { IMAGE_BYTES } from '@tabtrain/shared';

export const DEFAULT_DATA_DIR = '/usr/share/datasets/fashion-mnist';
export const FILES = {
  trainImages: 'train-images-idx3-ubyte.gz',
  trainLabels: 'train-labels-idx1-ubyte.gz',
  testImages: 't10k-images-idx3-ubyte.gz',
  testLabels: 't10k-labels-idx1-ubyte.gz',
} as const;

const FIX = 'Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four .gz files from ' +
  'https://github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder and pass `--data DIR`.';

/** An error a user can act on: it names the file and the fix; the CLI prints it without a stack. */
export class DataError extends Error {}

export interface Split { images: Uint8Array; labels: Uint8Array; count: number }
export interface Dataset { train: Split; test: Split; dir: string }

/** Parses one IDX file (already gunzipped). magic 2051 = images (n, 28, 28), 2049 = labels (n). */
export function parseIdx(bytes: Uint8Array, file: string, kind: 'images' | 'labels'): { data: Uint8Array; count: number } {
  const bad = (why: string) => new DataError(`${file}: ${why}. The file is corrupt or not a Fashion-MNIST IDX file. ${FIX}`);
  if (bytes.length < 8) throw bad(`only ${bytes.length} bytes, shorter than an IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const want = kind === 'images' ? 2051 : 2049;
  if (magic !== want) throw bad(`magic number ${magic}, expected ${want} for ${kind}`);
  const count = view.getUint32(4, false);
  let header = 8;
  let per = 1;
  if (kind === 'images') {
    if (bytes.length < 16) throw bad('truncated image header');
    const rows = view.getUint32(8, false), cols = view.getUint32(12, false);
    if (rows !== 28 || cols !== 28) throw bad(`images are ${rows}×${cols}, expected 28×28`);
    header = 16;
    per = IMAGE_BYTES;
  }
  const expected = header + count * per;
  if (bytes.length !== expected) throw bad(`${bytes.length} bytes, expected ${expected} for ${count} ${kind} (truncated?)`);
  const data = bytes.subarray(header);
  if (kind === 'labels') {
    const i = data.findIndex((l) => l > 9);
    if (i >= 0) throw bad(`label ${data[i]} at index ${i} is outside 0..9`);
  }
  return { data, count };
}

function readIdx(dir: string, name: string, kind: 'images' | 'labels'): { data: Uint8Array; count: number } {
  const path = join(dir, name);
  if (!existsSync(path)) throw new DataError(`${path} is missing. ${FIX}`);
  let raw: Uint8Array;
  try {
    raw = gunzipSync(readFileSync(path));
  } catch (e) {
    throw new DataError(`${path}: cannot decompress (${(e as Error).message}); the download is truncated or corrupt. ${FIX}`);
  }
  return parseIdx(raw, path, kind);
}

function readSplit(dir: string, images: string, labels: string): Split {
  const x = readIdx(dir, images, 'images');
  const y = readIdx(dir, labels, 'labels');
  if (x.count !== y.count) throw new DataError(`${join(dir, images)} has ${x.count} images but ${join(dir, labels)} has ${y.count} labels. ${FIX}`);
  return { images: x.data, labels: y.data, count: x.count };
}

export function loadFashionMnist(dir = DEFAULT_DATA_DIR): Dataset {
  return {
    dir,
    train: readSplit(dir, FILES.trainImages, FILES.trainLabels),
    test: readSplit(dir, FILES.testImages, FILES.testLabels),
  };
}

/** Copies the examples at `indices` into one contiguous body: images (n·784 bytes) then labels (n). */
export function gather(split: Split, indices: ArrayLike<number>): Uint8Array {
  const n = indices.length;
  const body = new Uint8Array(n * (IMAGE_BYTES + 1));
  for (let i = 0; i < n; i++) {
    const j = indices[i];
    body.set(split.images.subarray(j * IMAGE_BYTES, (j + 1) * IMAGE_BYTES), i * IMAGE_BYTES);
    body[n * IMAGE_BYTES + i] = split.labels[j];
  }
  return body;
}
