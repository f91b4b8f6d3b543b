// The reducer: pure, no sockets or timers, tested against a naive reference.

/**
 * Sums shard gradients into `out` in the given (shard) order, whatever order they arrived in,
 * so that a run's floating-point result does not depend on network timing.
 */
export function sumInOrder(grads: readonly Float32Array[], out: Float32Array): Float32Array {
  if (grads.length === 0) return out.fill(0);
  for (const g of grads) if (g.length !== out.length) throw new Error(`gradient of ${g.length} floats, expected ${out.length}`);
  out.set(grads[0]);
  for (let k = 1; k < grads.length; k++) {
    const g = grads[k];
    for (let i = 0; i < out.length; i++) out[i] += g[i];
  }
  return out;
}

/** Index of the first NaN/Inf in `v`, or -1. Run on every gradient slice before it is kept. */
export function firstNonFinite(v: Float32Array): number {
  for (let i = 0; i < v.length; i++) {
    // x - x is 0 for finite x and NaN for NaN/±Inf: one subtraction and compare per float.
    if (v[i] - v[i] !== 0) return i;
  }
  return -1;
}
