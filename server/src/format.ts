// Small formatting helpers for what the coordinator prints: durations and counted nouns.

/** 59.6 → "1m00s" (never "1m60s"), 3599.9 → "1h00m"; rounded once, then split. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** "1 worker", "2 workers", "1,024 examples". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}
