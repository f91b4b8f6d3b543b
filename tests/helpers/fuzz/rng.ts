// The fuzzer's randomness: a seeded PRNG (sfc32), one stream per input, so that any input replays
// alone (FUZZ_SEED=s FUZZ_ONLY=i,j).

export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number, stream = 0) {
    this.a = seed >>> 0; this.b = (stream * 0x9e3779b9) >>> 0; this.c = 0x6a09e667 ^ stream; this.d = 1;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  float(): number { return this.u32() / 2 ** 32; }
  /** 0 ≤ int(n) < n */
  int(n: number): number { return Math.floor(this.float() * n); }
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.float() < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]; }
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    let r = this.float() * items.reduce((a, [w]) => a + w, 0);
    for (const [w, v] of items) { if ((r -= w) < 0) return v; }
    return items[items.length - 1][1];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 255;
    }
    return out;
  }
  /** A size on a log scale between lo and hi. */
  logSize(lo: number, hi: number): number { return Math.round(lo * (hi / lo) ** this.float()); }
}

/** FUZZ_SEED if set, else a fresh random seed. */
export function fuzzSeed(env = process.env.FUZZ_SEED): number {
  if (env !== undefined && env !== '') {
    const s = Number(env);
    if (!Number.isInteger(s) || s < 0 || s >= 2 ** 32) throw new Error(`FUZZ_SEED must be an integer in [0, 2^32), got ${env}`);
    return s;
  }
  return (Math.random() * 2 ** 32) >>> 0;
}
