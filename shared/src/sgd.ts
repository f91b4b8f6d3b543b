/**
 * Plain SGD on the batch-mean gradient, fused with the division by the batch size:
 * w ← w − lr · (Σ shard gradients) / batch. One pass, no temporaries.
 */
export function sgdStep(weights: Float32Array, gradSum: Float32Array, lr: number, batch: number): void {
  if (weights.length !== gradSum.length) throw new Error(`sgd: ${weights.length} weights vs ${gradSum.length} gradients`);
  const scale = lr / batch;
  for (let i = 0; i < weights.length; i++) weights[i] -= scale * gradSum[i];
}
