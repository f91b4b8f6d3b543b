// Wrong admin tokens on POST /api/control, limited per remote address. Unlimited, a stranger could
// try thousands of tokens a second and write a log line for each (3,519 a second were measured):
// now an address gets a few tries at once (a person mistyping), then one a second, and is answered
// 429 with Retry-After past that; the log gets at most one summary line per interval.

export const CONTROL_LIMIT = {
  /** Wrong tokens an address may send at once before it has to wait. */
  burst: 5,
  /** Then this many a second (the bucket refills at this rate). */
  perSecond: 1,
  /** Addresses remembered at most; past this the oldest is forgotten (memory stays bounded). */
  maxAddresses: 4096,
  /** The refusals are summed up in at most one log line per interval. */
  logIntervalMs: 10_000,
};

interface Bucket { tokens: number; at: number }

export class ControlLimit {
  private readonly buckets = new Map<string, Bucket>();
  /** What the next summary line reports. */
  private refused = 0;
  private limited = 0;
  private readonly addresses = new Set<string>();
  private lastLog = -Infinity;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly log: (line: string) => void, private readonly limits = CONTROL_LIMIT) {}

  /** Seconds `address` must wait before its next try (0: it may try now); a wait is counted for the log. */
  retryAfter(address: string): number {
    const b = this.refill(address);
    if (!b || b.tokens >= 1) return 0;
    this.limited++;
    this.note(address);
    return Math.max(1, Math.ceil((1 - b.tokens) / this.limits.perSecond));
  }

  /** A wrong or missing token from `address`: takes one try from its bucket. */
  refuse(address: string): void {
    const b = this.refill(address) ?? this.newBucket(address);
    b.tokens -= 1;
    this.refused++;
    this.note(address);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.flush();
  }

  private refill(address: string): Bucket | undefined {
    const b = this.buckets.get(address);
    if (!b) return undefined;
    const now = performance.now();
    b.tokens = Math.min(this.limits.burst, b.tokens + ((now - b.at) / 1000) * this.limits.perSecond);
    b.at = now;
    return b;
  }

  private newBucket(address: string): Bucket {
    if (this.buckets.size >= this.limits.maxAddresses) this.buckets.delete(this.buckets.keys().next().value!);
    const b = { tokens: this.limits.burst, at: performance.now() };
    this.buckets.set(address, b);
    return b;
  }

  /** The first refusal is logged at once; those after it within the interval in one line at its end. */
  private note(address: string): void {
    if (this.addresses.size < 5) this.addresses.add(address);
    else if (!this.addresses.has(address)) this.addresses.add('…');
    if (this.timer) return;
    const wait = this.lastLog + this.limits.logIntervalMs - performance.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => { this.timer = null; this.flush(); }, wait);
    this.timer.unref();
  }

  private flush(): void {
    if (this.refused + this.limited === 0) return;
    const n = (x: number) => x.toLocaleString('en-US');
    const from = [...this.addresses].join(', ');
    const limited = this.limited ? `; ${n(this.limited)} more answered 429 (over ${this.limits.burst} tries, then ${this.limits.perSecond} a second, per address)` : '';
    this.log(`dashboard: refused control ${n(this.refused)} time${this.refused === 1 ? '' : 's'} (missing or wrong admin token) from ${from}${limited}`);
    this.refused = 0;
    this.limited = 0;
    this.addresses.clear();
    this.lastLog = performance.now();
  }
}
