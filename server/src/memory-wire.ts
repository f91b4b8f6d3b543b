// The in-memory wire: the coordinator's frames carried in this process, for tests that run the
// coordinator and its workers in one process (tests/helpers/in-process.ts) with no socket, no
// child process and no TypeScript start per worker.
//
// Like a socket, each direction delivers its frames asynchronously (one per macrotask) and in
// order, and each frame is COPIED when sent: the coordinator sends one cached frame to many
// workers, and a worker reuses its gradient frame buffers once a send has resolved. Frames from a
// worker go through wire.ts's receive(), the transport's one validation path, so everything above
// the wire runs as in production. A close travels behind the frames sent before it.
//
// Not here, as no socket can stall or fall silent: no heartbeat, no slow-reader watch, no link
// timing (downRate stays 0). No HTTP either: addRoutes keeps nothing.
import { CLOSE, MAX_CLOSE_REASON_BYTES, ProtocolError, closeReason, printable } from '@tabtrain/shared';
import { guarded } from './guard';
import { closedLine, newPeer, receive, type Peer, type PeerHandler, type Route, type Wire } from './wire';

export interface MemoryWireOptions {
  helloTimeoutMs: number;
  log: (line: string) => void;
  /**
   * An emulated link for every connection, each direction on its own (bytes/s, asked per frame;
   * absent or Infinity: memory speed): a frame arrives its size ÷ the rate after the one before it
   * did, or after it was sent. Tests of --compress auto make the steps as slow as the rates they give the cost model.
   */
  linkRate?: () => number;
}

/** The worker's side of one in-memory connection (what a WebSocket client is to a Node worker). */
export interface Endpoint {
  /**
   * Sends a copy of the frame; resolves once the coordinator has taken it (a socket without a send
   * buffer: a worker closed mid-upload has not sent the rest), rejects once closed.
   */
  send(frame: Uint8Array): Promise<void>;
  /** Each frame from the coordinator, in order. */
  onFrame: (frame: Uint8Array) => void;
  /** Called once, whichever side closed, after the frames sent before the close. */
  onClose: (code: number, reason: string) => void;
  /** Closes from the worker's side; what it sent before still reaches the coordinator first. */
  close(code: number, reason: string): void;
  readonly closed: boolean;
}

const CLOSED = 'the connection is closed';

/** One direction of a connection: frames in order, one per macrotask, then the close if any. */
class Pipe {
  private frames: { data: Buffer; sentAt: number; taken: () => void; lost: (e: Error) => void; due?: number }[] = [];
  /** An emulated link: when the last frame finished arriving. */
  private freeAt = 0;
  /** Bytes sent and not yet delivered. */
  bytes = 0;
  private ending: { code: number; reason: string } | null = null;
  private done = false;
  private scheduled = false;

  constructor(private readonly deliver: (data: Buffer, sentAt: number) => void, private readonly ended: (code: number, reason: string) => void, private readonly rate: () => number = () => Infinity) {}

  /** Queues a copy of the frame; resolves once it is delivered, rejects if it never will be. */
  push(frame: Uint8Array): Promise<void> {
    if (this.ending || this.done) return Promise.reject(new Error(CLOSED));
    return new Promise((taken, lost) => {
      // Buffer.from copies (small frames into Node's pool, at an offset, as ws hands them over).
      this.frames.push({ data: Buffer.from(frame), sentAt: performance.now(), taken, lost });
      this.bytes += frame.byteLength;
      this.schedule();
    });
  }

  /** The close goes behind the frames already pushed. */
  end(code: number, reason: string): void {
    if (!this.ending && !this.done) { this.ending = { code, reason }; this.schedule(); }
  }

  /** Nothing more is delivered, not even what was pushed (a terminated connection). */
  cut(): void {
    this.done = true;
    for (const f of this.frames) f.lost(new Error(CLOSED));
    this.frames = [];
    this.bytes = 0;
  }

  private schedule(): void {
    if (!this.scheduled) setImmediate(() => this.flow());
    this.scheduled = true;
  }

  private flow(): void {
    this.scheduled = false;
    if (this.done) return;
    const head = this.frames[0];
    const rate = head ? this.rate() : Infinity;
    if (head && rate < Infinity) {
      head.due ??= Math.max(head.sentAt, this.freeAt) + (1000 * head.data.byteLength) / rate;
      const wait = head.due - performance.now();
      if (wait > 0) { this.scheduled = true; setTimeout(() => this.flow(), wait); return; }
      this.freeAt = head.due;
    }
    const f = this.frames.shift();
    if (f) {
      this.bytes -= f.data.byteLength;
      if (this.frames.length > 0 || this.ending) this.schedule();
      this.deliver(f.data, f.sentAt);
      return f.taken();
    }
    if (this.ending) { this.done = true; this.ended(this.ending.code, this.ending.reason); }
  }
}

/** Coordinator → worker (down) and back (up); hangUp tells the worker, once, that it is closed. */
interface Connection { down: Pipe; up: Pipe; hangUp: (code: number, reason: string) => void; helloTimer: NodeJS.Timeout }

export class MemoryWire<P extends Peer> implements Wire<P> {
  opened = 0;
  bytesIn = 0;
  bytesOut = 0;
  private listening = false;
  private readonly live = new Set<P>();
  private readonly conns = new WeakMap<P, Connection>();

  constructor(private readonly opts: MemoryWireOptions, private readonly handler: PeerHandler<P>) {}

  async listen(): Promise<number> { this.listening = true; return 0; }

  /** No HTTP here: the routes (the dashboard's) are not kept. */
  addRoutes(_route: Route): void {}

  /** A new worker connection; the worker drives the returned endpoint. */
  connect(remote = 'memory'): Endpoint {
    if (!this.listening) throw new Error('the in-memory coordinator is not listening');
    const p = this.handler.open(newPeer(++this.opened, remote));
    const log = this.opts.log;
    const fail = (e: Error) => this.drop(p, CLOSE.malformed, `internal: ${e.message}`);
    let closed = false;
    const endpoint: Endpoint = {
      onFrame: () => {},
      onClose: () => {},
      get closed() { return closed; },
      send: (frame) => (closed ? Promise.reject(new Error(CLOSED)) : conn.up.push(frame)),
      close: (code, reason) => {
        if (closed) return;
        conn.up.end(code, reason);
        conn.down.cut();
        conn.hangUp(code, reason);
      },
    };
    const conn: Connection = {
      down: new Pipe((data) => { if (!closed) endpoint.onFrame(data); }, (code, reason) => conn.hangUp(code, reason), this.opts.linkRate),
      // The peer's words: escaped and cut before any log line or status shows them (text.ts).
      up: new Pipe((data, sentAt) => this.deliver(p, data, sentAt, fail), guarded(log, `worker #${p.id} close`, (code: number, reason: string) => this.gone(p, code, printable(reason, MAX_CLOSE_REASON_BYTES), false)), this.opts.linkRate),
      hangUp: (code, reason) => { if (!closed) setImmediate(() => endpoint.onClose(code, reason)); closed = true; },
      helloTimer: setTimeout(guarded(log, `worker #${p.id} hello timer`, () => {
        if (!this.handler.joined(p)) this.drop(p, CLOSE.helloTimeout, `no hello within ${this.opts.helloTimeoutMs} ms`);
      }, fail), this.opts.helloTimeoutMs),
    };
    this.conns.set(p, conn);
    this.live.add(p);
    return endpoint;
  }

  /** One frame from a worker through the one validation path; what it refuses closes the peer, as in the transport. */
  private deliver(p: P, data: Buffer, sentAt: number, fail: (e: Error) => void): void {
    if (p.closed) return;
    p.messageStartedAt = sentAt;
    this.bytesIn += data.byteLength;
    try {
      receive(p, data, true, this.handler);
    } catch (e) {
      if (e instanceof ProtocolError) this.drop(p, e.code, e.message);
      else fail(e as Error);
    }
  }

  send(p: P, frame: Uint8Array): void {
    if (p.closed) return;
    p.bytesOut += frame.byteLength;
    this.bytesOut += frame.byteLength;
    // A frame to a worker that is closing is lost, as on a socket.
    this.conns.get(p)!.down.push(frame).catch(() => {});
  }

  /** Bytes sent to the worker that it has not been handed yet. */
  queued(p: P): number { return this.conns.get(p)!.down.bytes; }

  drop(p: P, code: number, reason: string): void {
    if (p.closed) return;
    this.opts.log(closedLine(p, code, reason));
    this.conns.get(p)!.down.end(code, closeReason(reason));
    this.gone(p, code, reason, true);
  }

  /** Nothing more is delivered either way; both sides hear an abnormal close (1006), as after a socket's terminate(). */
  terminate(p: P): void {
    const { down, up, hangUp } = this.conns.get(p)!;
    down.cut();
    up.cut();
    hangUp(1006, '');
    this.gone(p, 1006, '', false);
  }

  async close(code: number, reason: string): Promise<void> {
    this.listening = false;
    for (const p of [...this.live]) {
      this.conns.get(p)!.down.end(code, closeReason(reason));
      this.gone(p, code, reason, true);
    }
  }

  private gone(p: P, code: number, reason: string, byUs: boolean): void {
    clearTimeout(this.conns.get(p)!.helloTimer);
    if (p.closed) return;
    p.closed = true;
    this.live.delete(p);
    this.handler.gone(p, code, reason, byUs);
  }
}
