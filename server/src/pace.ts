// Pace: how fast each worker is, as the coordinator sees it, and how long a shard may take.
//
// Shard sizes (--balance speed and cost) and deadlines come from the coordinator's own clock, never
// from a worker's word: a worker that claimed computeMs = 0 was given most of every batch, and one
// that claimed a tiny speed a 3.5-day deadline (issue 24). A shard is timed from its assign's send
// to its gradient's last frame (speed, deadlines); the cost model, which prices links apart, gets
// the part up to the gradient's first byte as compute and the rest as the upload. The timings a
// worker reports are only shown, and a report that the coordinator's clock proves impossible (more
// compute than the time it had) is a lie.
//
// Pure but for timeShard, which files one shard's timing on its worker's record.
import type { Result } from '@tabtrain/shared';
import { averageRate } from './link-meter';

/** setTimeout's largest delay: a longer one fires at once (Node warns and uses 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Ceiling of a derived deadline: no worker's pace buys a step a longer wait than half an hour. */
export const MAX_DEADLINE_MS = 1_800_000;

/** A deadline is this many times what the worker's measured pace predicts. */
const DEADLINE_FACTOR = 5;

/**
 * Deadlines an identity may miss before it is treated as a liar. Its deadline is at least the
 * floor (minDeadlineMs, 2 minutes by default) while it is measured, and doubles while it is not,
 * so an honest slow worker is not closed three times in a row, and a staller costs at most three.
 */
export const MAX_MISSED_DEADLINES = 3;

/**
 * A claim of more compute than the coordinator's clock allowed, by this factor and slack, is a lie.
 * Generous on purpose: in pipelined fp32 runs an honest worker's reported compute was seen to
 * exceed the clock's reading by up to 280 ms (not yet explained), and a claim decides nothing
 * (it is only shown), so only a gross one, such as the 10^9 ms that once bought a 3.5-day
 * deadline, is worth a verdict.
 */
const CLAIM_FACTOR = 10;
const CLAIM_SLACK_MS = 10_000;

export interface DeadlineSettings {
  /** --deadline-ms: a fixed deadline (0 or undefined: derived). */
  fixedMs?: number;
  /** Floor of a measured worker's deadline, and cap of a newcomer's (before doubling). */
  minMs: number;
  /** Before any worker is measured (the run's first shards: model build, warm-up). */
  firstMs: number;
  /** Floor of a not-yet-measured worker's deadline. */
  newcomerMs: number;
  /** Ceiling of every deadline. */
  maxMs: number;
}

/**
 * How long a shard of `count` examples may take: a fixed deadline, else 5× what the worker's
 * measured speed predicts (never below the floor). A worker not yet measured gets 5× what the
 * fleet's median worker would need, between the newcomer floor and the measured floor, doubled
 * for each deadline its identity already missed; before anyone is measured, the first deadline.
 * Always within [1 ms, maxMs] and never beyond what setTimeout can wait.
 */
export function deadlineMs(s: DeadlineSettings, count: number, speed: number, fleetSpeeds: number[], missed: number): number {
  const timer = (ms: number) => Math.round(Math.min(MAX_TIMER_MS, Math.max(1, ms)));
  const clamp = (ms: number) => timer(Math.min(s.maxMs, ms));
  // An operator's --deadline-ms is theirs to choose, within what a timer can wait.
  if (s.fixedMs) return timer(s.fixedMs);
  if (speed > 0 && Number.isFinite(speed)) return clamp(Math.max(s.minMs, (DEADLINE_FACTOR * 1000 * count) / speed));
  const speeds = fleetSpeeds.filter((x) => x > 0 && Number.isFinite(x)).sort((a, b) => a - b);
  if (!speeds.length) return clamp(s.firstMs);
  const median = speeds[speeds.length >> 1];
  return clamp(Math.min(s.minMs, Math.max(s.newcomerMs, (DEADLINE_FACTOR * 1000 * count) / median)) * 2 ** Math.min(Math.max(0, missed), 4));
}

/** What the coordinator's clock saw of one train shard (performance.now() times, ms). */
export interface ShardTiming {
  count: number;
  /** When its assign was handed to the transport. */
  sentAt: number;
  /** When its gradient's first byte arrived, and its last frame. */
  firstAt: number;
  lastAt: number;
  /** Gradient bytes received. */
  bytes: number;
  /** Bytes sent with the assign (weights or update, examples) and the worker's measured download rate (0: unknown). */
  sentBytes: number;
  downRate: number;
}

export interface ShardPace {
  /**
   * Examples per second over the whole shard, assign sent to last frame in, less the download:
   * what --balance speed and deadlines use. A worker that sends its first byte at once and then
   * computes cannot look fast here, only slow to upload.
   */
  speed: number;
  /** Examples per second of its compute alone (the wait for its first gradient byte less its download): the cost model's c_i, beside its upload rate. */
  computeRate: number;
  /** Bytes/s of its upload, first byte to last frame. */
  upRate: number;
  /**
   * The download came with the assign and took much of the wait (a catch-up with the full weights,
   * fp32's weights on a slow link), or its rate is unknown for more than a megabyte: computeRate
   * is then mostly a guess at the link, not the compute (one such sample, eight workers catching
   * up at once through 1 Gbit/s, read 2 examples/s for a 4,000 examples/s machine).
   */
  rough: boolean;
}

/**
 * One shard's pace from the coordinator's clock. The download is priced at the measured rate, but
 * never takes more than half of a wait: a rate measured on another path must not make a slow
 * worker look instant.
 */
export function shardPace(t: ShardTiming): ShardPace {
  const download = t.downRate > 0 && Number.isFinite(t.downRate) ? (1000 * t.sentBytes) / t.downRate : 0;
  const less = (ms: number) => Math.max(1, ms - download, ms / 2);
  const first = Math.max(t.sentAt, t.firstAt), last = Math.max(first, t.lastAt);
  const rough = t.sentBytes > ROUGH_BYTES && (download === 0 || download >= (first - t.sentAt) / 4);
  return {
    speed: (1000 * t.count) / less(last - t.sentAt),
    computeRate: (1000 * t.count) / less(first - t.sentAt),
    upRate: (t.bytes * 1000) / Math.max(0.01, last - first),
    rough,
  };
}

/** An assign's download above this many bytes can make its compute sample rough (ShardPace.rough): an update of powersgd's factors at AlexNet size is 0.6 MB. */
const ROUGH_BYTES = 1 << 20;

/** Compute samples a worker's rate is the median of: one slow shard (a stall, a catch-up) moves nothing, and five steps after a change the rate is the new one. */
export const COMPUTE_SAMPLES = 5;

/**
 * The compute rate with one more sample: the median of the last COMPUTE_SAMPLES. A rough sample
 * (ShardPace.rough) only counts while the worker has no clean one: it must not drag a clean
 * measurement down to the link's speed. The first clean sample drops the rough ones.
 */
export function averageCompute(w: { computeRate: number; computeRough: boolean; computeSamples: number[] }, sample: number, rough: boolean): void {
  if (!(sample > 0) || !Number.isFinite(sample)) return;
  if (rough && w.computeSamples.length && !w.computeRough) return;
  if (!rough && w.computeRough) w.computeSamples = [];
  w.computeRough = rough;
  w.computeSamples = [...w.computeSamples, sample].slice(-COMPUTE_SAMPLES);
  const sorted = [...w.computeSamples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  w.computeRate = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** An examples/s average with one more measured sample (EMA; 0 = none yet). */
export function averageSpeed(average: number, sample: number): number {
  if (!(sample > 0) || !Number.isFinite(sample)) return average;
  return average > 0 ? 0.7 * average + 0.3 * sample : sample;
}

/**
 * Why a worker's reported compute time is impossible, or null: it claims more compute than the
 * time between its assign's send and its gradient's last frame (the coordinator's clock; the
 * compute comes before that frame whatever the link, and the last frame's arrival is read when
 * its message is, never early).
 */
export function impossibleClaim(claimedComputeMs: number, t: ShardTiming): string | null {
  const whole = t.lastAt - t.sentAt;
  if (!(claimedComputeMs > CLAIM_FACTOR * whole + CLAIM_SLACK_MS)) return null;
  return `it reported ${Math.round(claimedComputeMs)} ms of compute for a shard whose gradient was in ${Math.round(whole)} ms after its assign was sent`;
}

/** A worker's record, as far as its pace goes (membership.ts, Conn). */
export interface Paced { speed: number; computeRate: number; computeRough: boolean; computeSamples: number[]; upRate: number; downRate: number; computeMs: number; uploadMs: number }

/**
 * Files one train shard's timing (a copy's clock readings, scheduler.ts) on its worker: the
 * timings it reported are kept to be shown; its speed, compute rate and upload rate are the
 * coordinator's own. Returns why its report is a lie, if it is (and then files nothing).
 */
export function timeShard(w: Paced, c: { sentAt: number; firstAt: number; lastAt: number; sentBytes: number; frames: { body: Uint8Array }[] }, r: Result): string | null {
  w.computeMs = r.timings.computeMs;
  w.uploadMs = r.timings.encodeMs + r.timings.sendMs;
  const timing = { count: r.count, sentAt: c.sentAt, firstAt: c.firstAt, lastAt: c.lastAt, bytes: c.frames.reduce((a, f) => a + f.body.byteLength, 0), sentBytes: c.sentBytes, downRate: w.downRate };
  const lie = impossibleClaim(r.timings.computeMs, timing);
  if (lie) return lie;
  const pace = shardPace(timing);
  w.speed = averageSpeed(w.speed, pace.speed);
  averageCompute(w, pace.computeRate, pace.rough);
  w.upRate = averageRate(w.upRate, pace.upRate);
  return null;
}

/** What a missed deadline does to the worker: closed (it may rejoin), or, the MAX_MISSED_DEADLINES-th time for its identity, refused as a liar. */
export function missedDeadline(missed: number, local: boolean): 'close' | 'refuse' {
  // The coordinator's own workers cannot lie: a stalled one is closed and respawned by nobody but its operator.
  return !local && missed >= MAX_MISSED_DEADLINES ? 'refuse' : 'close';
}
