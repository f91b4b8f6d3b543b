// The dashboard's open event streams (GET /api/events) and what they may cost the coordinator.
// A page that does not read (paused, or a stranger's socket that never reads) must not make the
// coordinator's memory grow: 1,000 paused streams took it from 263 to 832 MB in 40 s. So:
//   - each frame is encoded once into one Buffer that every stream's socket holds by reference
//     (a string would be copied once per socket when the kernel cannot take it at once);
//   - a stream whose unsent bytes pass its bound is closed (EventSource reconnects and gets a
//     snapshot), and when all streams together hold more than a total bound, the largest go first;
//   - streams are capped in total and per remote address, so that one host cannot take them all.
import type { ServerResponse } from 'node:http';

export const STREAM_LIMITS = {
  /** Open streams at most; more get 503 (each costs a socket and a write per update). */
  maxStreams: 256,
  /** Open streams from one remote address at most (a person's tabs, a few machines behind one NAT). */
  maxStreamsPerAddress: 32,
  /** Unsent bytes a stream may hold beyond its snapshot before it is closed. */
  maxBufferedBytes: 1 << 20,
  /** Unsent bytes of all streams together; past this the streams holding most are closed. */
  maxTotalBufferedBytes: 64 << 20,
  /** A comment line on idle streams, so that proxies do not close them. */
  heartbeatMs: 15_000,
};
export type StreamLimits = typeof STREAM_LIMITS;

interface Stream { address: string; allowance: number }

const PING = Buffer.from(': ping\n\n');

export class EventStreams {
  private readonly streams = new Map<ServerResponse, Stream>();
  private readonly perAddress = new Map<string, number>();
  private heartbeat: NodeJS.Timeout | null = null;
  /** Streams closed for holding too many unsent bytes (tests and the log read it). */
  dropped = 0;

  constructor(private readonly limits: StreamLimits, private readonly onCount: (n: number) => void = () => {}, private readonly wrap: (name: string, fn: () => void) => () => void = (_n, fn) => fn) {}

  get size(): number {
    return this.streams.size;
  }

  /** Why a stream from `address` is refused now (a 503's message), or null when it may open. */
  refusal(address: string): string | null {
    const l = this.limits;
    if (this.streams.size >= l.maxStreams) return `too many dashboards open (${l.maxStreams}); /api/status serves the same data`;
    if ((this.perAddress.get(address) ?? 0) >= l.maxStreamsPerAddress) return `too many dashboards open from ${address} (${l.maxStreamsPerAddress}); close some, or read /api/status`;
    if (this.bufferedBytes() > l.maxTotalBufferedBytes) return 'the open dashboards are behind on their updates; try again in a few seconds';
    return null;
  }

  /** Adds a response whose headers are written; `first` (the snapshot) is sent at once. */
  add(res: ServerResponse, address: string, first: Buffer): void {
    this.streams.set(res, { address, allowance: this.limits.maxBufferedBytes + first.byteLength });
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    this.onCount(this.streams.size);
    // The response's close (the page went away), not the request's: that one fires when its body ends.
    res.on('close', () => this.remove(res));
    res.write(first);
    if (!this.heartbeat) {
      this.heartbeat = setInterval(this.wrap('dashboard heartbeat', () => this.send(PING)), this.limits.heartbeatMs);
      this.heartbeat.unref();
    }
  }

  /** Writes `frame` to every stream that keeps up; closes those that do not. */
  send(frame: Buffer): void {
    for (const [res, s] of this.streams) {
      if (res.writableLength > s.allowance) this.drop(res);
      else res.write(frame);
    }
    const l = this.limits;
    let total = this.bufferedBytes();
    if (total <= l.maxTotalBufferedBytes) return;
    for (const res of [...this.streams.keys()].sort((a, b) => b.writableLength - a.writableLength)) {
      if (total <= l.maxTotalBufferedBytes) break;
      total -= res.writableLength;
      this.drop(res);
    }
  }

  /** Unsent bytes of every stream (the response's and its socket's). */
  bufferedBytes(): number {
    let total = 0;
    for (const res of this.streams.keys()) total += res.writableLength;
    return total;
  }

  /** Ends every stream (after the last update). */
  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const res of [...this.streams.keys()]) {
      this.remove(res);
      res.end();
    }
  }

  private drop(res: ServerResponse): void {
    this.dropped++;
    this.remove(res);
    res.destroy();
  }

  private remove(res: ServerResponse): void {
    const s = this.streams.get(res);
    if (!s) return;
    this.streams.delete(res);
    const n = (this.perAddress.get(s.address) ?? 1) - 1;
    if (n > 0) this.perAddress.set(s.address, n);
    else this.perAddress.delete(s.address);
    this.onCount(this.streams.size);
  }
}
