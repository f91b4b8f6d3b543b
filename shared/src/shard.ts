// How one global batch is split over workers. Pure functions; the coordinator calls them.

export interface ShardPlan {
  /** Shard id: its index; gradients are summed in this order. */
  id: number;
  /** Position of the shard's first example in the global batch. */
  position: number;
  count: number;
}

/**
 * Splits `batch` examples into one contiguous shard per weight, sizes proportional to the
 * weights (a worker's measured examples/s; equal weights give an even split). Largest-remainder
 * rounding keeps the total exact; every shard gets at least one example while batch allows.
 */
export function planShards(batch: number, weights: number[]): ShardPlan[] {
  const n = Math.min(weights.length, batch);
  if (n === 0) return [];
  const w = weights.slice(0, n).map((x) => (Number.isFinite(x) && x > 0 ? x : 1));
  const sum = w.reduce((a, b) => a + b, 0);
  const spare = batch - n; // one example each is guaranteed, the rest is shared by weight
  const exact = w.map((x) => (spare * x) / sum);
  const counts = exact.map((x) => 1 + Math.floor(x));
  let left = batch - counts.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; left > 0; k++, left--) counts[byRemainder[k % n][1]]++;
  let position = 0;
  return counts.map((count, id) => {
    const s = { id, position, count };
    position += count;
    return s;
  });
}

/** Number of steps in an epoch of `examples` at `batch`; the last partial batch is kept (d2l). */
export function stepsPerEpoch(examples: number, batch: number): number {
  return Math.ceil(examples / batch);
}
