// Seeded randomness. Everything random in a run (init, data order, dropout masks) derives from the
// run seed through these functions, so any worker on any backend draws the same numbers.

/** Mixes integers into one 32-bit seed (murmur3's finaliser over each word). */
export function mixSeed(...words: number[]): number {
  let h = 0x9e3779b9;
  for (const w of words) {
    let k = Math.imul(w | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: a small, fast PRNG; returns floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The order of the training set in one epoch: a Fisher–Yates shuffle seeded by (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const next = rng(mixSeed(seed, 0x0da7a, epoch));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const t = order[i]; order[i] = order[j]; order[j] = t;
  }
  return order;
}

/**
 * Inverted-dropout masks (0 or 1/(1-rate)) for `count` examples starting at `position` in the
 * global batch of `step`. Seeding per example, not per shard, makes the batch gradient the same
 * however the batch is split, so a 1-worker run and a 3-worker run agree.
 */
export function dropoutMask(seed: number, step: number, layer: number, position: number, count: number, units: number, rate: number): Float32Array {
  const mask = new Float32Array(count * units);
  const keep = 1 / (1 - rate);
  for (let e = 0; e < count; e++) {
    const next = rng(mixSeed(seed, 0xd409, step, layer, position + e));
    const row = e * units;
    for (let u = 0; u < units; u++) mask[row + u] = next() < rate ? 0 : keep;
  }
  return mask;
}

/** A short stable hash of a string (cyrb53), as hex. Used for the model hash; not for security. */
export function hashString(s: string): string {
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (h2 >>> 0).toString(16).padStart(8, '0') + (h1 >>> 0).toString(16).padStart(8, '0');
}
