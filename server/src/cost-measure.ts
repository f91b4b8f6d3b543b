// Keeping the cost model's measurements fresh: when a benched worker is re-measured, how often,
// and how one transfer updates a worker's link estimate. Pure: the coordinator calls them.

/**
 * The benched worker to re-measure at this step, or null: every `every` steps one of them, in
 * turn (the k-th such step takes benched[k mod |benched|]). A worker's situation changes (its tab
 * goes to the foreground, the others leave, the link clears) and only a measurement shows it.
 */
export function probeDue(step: number, benched: number[], every: number): number | null {
  if (!(every >= 1) || benched.length === 0 || step % every !== 0) return null;
  return benched[Math.floor(step / every) % benched.length];
}

/**
 * How often to re-measure benched workers so that probes cost at most `budget` of the run's time:
 * a probe lengthens its step by `lengthensMs`, paid once every `every` steps of `stepMs`.
 */
export function probeInterval(lengthensMs: number, stepMs: number, budget = 0.05, min = 10, max = 1000): number {
  if (!(lengthensMs > 0)) return min;
  if (!(stepMs > 0) || !(budget > 0) || !Number.isFinite(lengthensMs)) return max;
  return Math.min(max, Math.max(min, Math.ceil(lengthensMs / (budget * stepMs))));
}

/**
 * A worker's own-link throughput, one direction, updated from one transfer of `sample` bytes/s.
 * While other transfers shared the coordinator's link and it ran near `capacity`, the sample is
 * the worker's share of a full shared link: it shows the worker's own link is at least that fast,
 * not how fast it is, so it can only raise the estimate. Otherwise it is an EMA.
 */
export function linkEstimate(prev: number, sample: number, shared: { flows: number; aggregate: number; capacity: number }, alpha = 0.3): number {
  if (!(sample > 0) || !Number.isFinite(sample)) return prev;
  if (!(prev > 0)) return sample;
  const saturated = shared.flows > 1 && shared.capacity > 0 && shared.aggregate >= 0.9 * shared.capacity;
  return saturated ? Math.max(prev, sample) : (1 - alpha) * prev + alpha * sample;
}
