// Full copies of the weights to workers the operator did not vouch for (issue 24: one stranger
// pulled 8-13 GB a minute at AlexNet size, asking for a resync every version, or joining as a new
// identity with the weights each time: more than a 1 Gbit/s uplink).
//
// A worker started by this coordinator or holding the run's token is vouched for and never
// waits. Anyone else is sent the full weights (a first copy, a copy after falling far behind, a
// resync) only while two token buckets allow: its identity's (IDENTITY_BURST copies, then one per
// IDENTITY_REFILL_MS), and its address's (ADDRESS_BURST, then one per ADDRESS_REFILL_MS), which
// fresh identities from one address share. A probation worker that must wait stays idle, with the
// reason in its status row, and is tried again when its buckets refill; an established one is
// never held back for its assigns (a step may wait on it), only for the resyncs it asks for.
//
// Pure bookkeeping and one timer per wait: sends and closes stay with the coordinator.
import { sameSecret } from './secrets';

/** A copy for the identity's first connection and each of its probation shards, then one a minute. */
export const IDENTITY_BURST = 4;
export const IDENTITY_REFILL_MS = 60_000;
/** One address (a NAT of honest tabs, or one stranger's fresh identities): twice that, then four a minute. */
export const ADDRESS_BURST = 8;
export const ADDRESS_REFILL_MS = 15_000;
/** Buckets kept: a full one is forgotten (it is what a new one would be); beyond this the oldest go. */
const MAX_BUCKETS = 10_000;

interface Bucket { tokens: number; at: number }

export interface Recipient {
  id: number;
  workerId: string;
  remote: string;
  local: boolean;
}

export class FullCopies {
  private readonly identities = new Map<string, Bucket>();
  private readonly addresses = new Map<string, Bucket>();
  private readonly vouched = new WeakSet<Recipient>();
  /** Why a connection waits for a copy (shown in its status row), and the timer that retries it. */
  private readonly waits = new Map<number, { why: string; timer: NodeJS.Timeout }>();

  constructor(private readonly opts: { token?: string; probation: number; retry: () => void; log: (line: string) => void; now?: () => number }) {}

  /** At its hello: vouched for by the operator (the local key, the run's token, or a run without probation)? */
  joined(c: Recipient, token: unknown): void {
    if (c.local || this.opts.probation === 0 || (this.opts.token !== undefined && sameSecret(token, this.opts.token))) this.vouched.add(c);
  }

  /**
   * At an assign: whether `c`, holding `version` of weights now at `current`, must wait for the full
   * copy it needs (then its pinned shards go to others). A worker one version behind needs only the
   * step's update; an established one is held back only when it reconnects (holds no weights), so
   * that a stranger cannot turn each reconnect into a copy.
   */
  mustWait(c: Recipient & { version: number }, current: number, established: boolean): boolean {
    if (c.version >= current - 1 || (established && c.version >= 0)) return false;
    return this.take(c) !== null;
  }

  /**
   * Whether `c` may be sent the full weights now (and if so, the copy is counted). Otherwise the
   * reason it waits, and a retry is scheduled for when its buckets refill.
   */
  take(c: Recipient): string | null {
    if (this.vouched.has(c)) return null;
    const now = this.opts.now?.() ?? Date.now();
    const id = this.bucket(this.identities, c.workerId, IDENTITY_BURST, IDENTITY_REFILL_MS, now);
    const at = this.bucket(this.addresses, c.remote, ADDRESS_BURST, ADDRESS_REFILL_MS, now);
    if (id.tokens >= 1 && at.tokens >= 1) {
      id.tokens--; at.tokens--;
      this.settled(c.id);
      return null;
    }
    const inMs = Math.ceil(Math.max(id.tokens >= 1 ? 0 : (1 - id.tokens) * IDENTITY_REFILL_MS, at.tokens >= 1 ? 0 : (1 - at.tokens) * ADDRESS_REFILL_MS));
    const why = `waiting ${Math.ceil(inMs / 1000)} s for a full copy of the weights: a worker without the run's token gets ${IDENTITY_BURST}, then one per ${IDENTITY_REFILL_MS / 1000} s (its address ${c.remote}: ${ADDRESS_BURST}, then one per ${ADDRESS_REFILL_MS / 1000} s)`;
    if (!this.waits.has(c.id)) {
      this.opts.log(`worker #${c.id} ${why}`);
      const timer = setTimeout(() => { this.waits.delete(c.id); this.opts.retry(); }, inMs + 10);
      timer.unref();
      this.waits.set(c.id, { why, timer });
    }
    return why;
  }

  /** Why connection `id` waits, if it does. */
  reason(id: number): string | undefined {
    return this.waits.get(id)?.why;
  }

  /** The connection is gone, or got its copy: no retry for it. */
  settled(id: number): void {
    const w = this.waits.get(id);
    if (w) clearTimeout(w.timer);
    this.waits.delete(id);
  }

  /** The bucket for `key`, refilled to `now`. */
  private bucket(map: Map<string, Bucket>, key: string, burst: number, refillMs: number, now: number): Bucket {
    let b = map.get(key);
    if (b) {
      b.tokens = Math.min(burst, b.tokens + (now - b.at) / refillMs);
      b.at = now;
      // Most recently used last: the oldest are the first to go.
      map.delete(key);
    } else {
      b = { tokens: burst, at: now };
    }
    map.set(key, b);
    for (const [k, old] of map) {
      if (map.size <= MAX_BUCKETS && old.tokens + (now - old.at) / refillMs < burst) break;
      if (k !== key) map.delete(k);
      else break;
    }
    return b;
  }
}
