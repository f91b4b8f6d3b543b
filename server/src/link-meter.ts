// The coordinator's link, as the steps have been seen to load it: bytes/s each way, the largest
// per-step aggregate so far, decaying slowly (a step's aggregate is a lower bound of the link;
// the decay lets a link that got slower be seen). --balance cost prices transfers with it.
// Each worker's own rates are measured where its bytes are seen, down by the transport's writes
// (transport.ts, Peer.downRate) and up from its gradient's arrival (pace.ts, Conn.upRate), and
// averaged by averageRate here; frames of LARGE_FRAME or more are the ones that time a link.

/** Frames at least this big time the link they cross (on a fast link they time memcpy: a high rate, harmless). */
export const LARGE_FRAME = 1024 * 1024;

/**
 * A link rate's running average with one more sample, taken as time per byte (an EMA of 1/rate):
 * one sample that met an idle buffer does not outweigh the slow ones. 0: no average yet.
 */
export function averageRate(average: number, sample: number): number {
  return average ? 1 / (0.7 / average + 0.3 / sample) : sample;
}

/**
 * A worker's download rate with one more sample. A burst that shared the coordinator's link with
 * other peers' (eight workers catching up at once) shows the worker's own link is at least that
 * fast, not how fast: it can only raise a rate already measured (cost-measure.ts linkEstimate's
 * rule). Without that, one catch-up at 10 Gbit/s left workers priced at 7 MB/s, and benched.
 */
export function downRateWith(prev: number, sample: number, shared: boolean): number {
  if (!(sample > 0) || !Number.isFinite(sample)) return prev;
  return shared && prev > 0 ? Math.max(prev, sample) : averageRate(prev, sample);
}

/** Only steps that move this much time the link; smaller ones time round trips. */
const TIMED_BYTES = 4 * 1024 * 1024;
/** Per step, what the rate seen keeps of itself before a new step's aggregate can raise it. */
const DECAY = 0.98;

export class LinkMeter {
  /** bytes/s up (workers → coordinator) and down; 0 = not seen yet. */
  up = 0;
  down = 0;
  private at = { in: 0, out: 0 };

  constructor(private readonly counters: () => { bytesIn: number; bytesOut: number }) {}

  /** A step begins: its bytes are counted from here. */
  begin(): void {
    const c = this.counters();
    this.at = { in: c.bytesIn, out: c.bytesOut };
  }

  /** The step's gradients all arrived `collectMs` after it began, and it ended after `wallMs`. */
  end(collectMs: number, wallMs: number): void {
    const c = this.counters();
    const rate = (bytes: number, ms: number) => (ms > 0 && bytes >= TIMED_BYTES ? (bytes * 1000) / ms : 0);
    this.up = Math.max(DECAY * this.up, rate(c.bytesIn - this.at.in, collectMs));
    this.down = Math.max(DECAY * this.down, rate(c.bytesOut - this.at.out, wallMs));
  }
}

/**
 * A peer on this machine's loopback (127.0.0.0/8, ::1, or IPv4-mapped): between it and the
 * coordinator there is no wire, only memory copies. What its "link rate" measures is the CPU both
 * share, which compressing the bytes does not relieve (compression costs CPU too), so the
 * autopilot prices such a link as free: a fleet all on loopback stays exact fp32.
 */
export function onLoopback(remote: string): boolean {
  const host = remote.replace(/^::ffff:/i, '');
  return host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
