// The transport: HTTP and the WebSocket upgrade on one port (listener.ts: http and https), and
// everything per socket before a message means anything: the flood limit, binary frames,
// decoding and validation (protocol.ts), closing with a named code, heartbeats for idle peers
// and the slow-reader watch.
//
// It owns the sockets and their timers. It never looks at what a validated message asks for
// (its handler does), and never touches run state.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CLOSE, MAX_CLOSE_REASON_BYTES, MAX_FRAME_BYTES, ProtocolError, closeReason, printable } from '@tabtrain/shared';
import { badRequest, guarded, guardHttp, guardUpgrade, refuseSocket, requestPath } from './guard';
import { Admission, admissionLimits, type AdmissionLimits } from './admission';
import { createListener, type ListenerTls } from './listener';
import { LARGE_FRAME, downRateWith } from './link-meter';
import { serveStatic } from './static';
import { closedLine, newPeer, receive, type Peer, type PeerHandler, type Route, type Wire } from './wire';

export type { Peer, PeerHandler, Route };

export interface TransportOptions {
  port: number;
  host: string;
  tls?: ListenerTls;
  staticDir?: string;
  helloTimeoutMs: number;
  heartbeatMs: number;
  slowReaderMs: number;
  /** Caps and the request deadline for connections not yet joined (default: sized from this process's open-file limit). */
  admission?: AdmissionLimits;
  log: (line: string) => void;
}

/** How often refused connections are summed up in one log line (a flood must not write a line per connection). */
const ADMISSION_REPORT_MS = 10_000;
/** A client's control frame header: 2 bytes and a 4-byte mask (a control payload is at most 125 bytes, no extended length). */
const CONTROL_FRAME_HEAD = 6;
/** The most a TCP socket's send buffer grows to (Linux: tcp_wmem's third field; 4 MiB by default). */
const SEND_BUFFER = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/tcp_wmem', 'utf8').trim().split(/\s+/)[2]) || 4 << 20;
  } catch {
    return 4 << 20;
  }
})();

export class Transport<P extends Peer> implements Wire<P> {
  private http: Server | null = null;
  private wss: WebSocketServer | null = null;
  private timers: NodeJS.Timeout[] = [];
  /** Logs the connections refused over the caps since the last report (listen sets it). */
  private reportAdmission: () => void = () => {};
  private readonly live = new Set<P>();
  /** Peers with a burst under way (Peer.burst): a new burst shares the coordinator's link with these. */
  private readonly bursting = new Set<P>();
  /** Each peer's socket: the transport's alone (the Peer record is shared with the handler). */
  private readonly sockets = new WeakMap<P, WebSocket>();
  private readonly routes: Route[] = [];
  /** Sockets a response began on: a parse error after that ends the socket instead of answering 400 in the middle. */
  private readonly answered = new WeakSet<Duplex>();
  /** The request and the response being made on each socket, until the response finishes. */
  private readonly inflight = new WeakMap<Duplex, { req: IncomingMessage; res: ServerResponse }>();
  /** Connections not yet joined: counted, capped, and given a deadline for their first request. */
  readonly admission: Admission;
  /** Sockets accepted so far (the next peer's id is this + 1). */
  opened = 0;
  /** Bytes received from and sent to all peers, ever: the coordinator link's load. */
  bytesIn = 0;
  bytesOut = 0;

  constructor(private readonly opts: TransportOptions, private readonly handler: PeerHandler<P>) {
    this.admission = new Admission(opts.admission ?? admissionLimits());
  }

  /** HTTP handlers asked before the static files, in order (the dashboard adds its routes here). */
  addRoutes(route: Route): void {
    this.routes.push(route);
  }

  async listen(): Promise<number> {
    const log = this.opts.log;
    // http and https on one port (listener.ts): plain http when no certificate is given.
    this.http = createListener(guardHttp(log, (req, res) => this.serveHttp(req, res)), this.opts.tls, this.admission);
    // Deliberate transport settings: frames are ≤ 8 MiB chunks, so maxPayload stays small (an
    // oversized frame is refused with 1009 before it is buffered); permessage-deflate is off (it
    // moved gradients at 26–38 MB/s); ws sets TCP_NODELAY on every socket it adopts, and bufferutil
    // (a dependency) unmasks worker uploads natively (docs/BENCHMARKS.md §1).
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
    this.http.on('upgrade', guardUpgrade(log, (req, socket, head) => {
      const path = requestPath(req.url);
      if (path !== '/ws') return refuseSocket(socket, path === null ? 400 : 404, path === null ? 'the request target is not a path' : 'workers connect to /ws');
      this.wss!.handleUpgrade(req, socket, head, (ws) => {
        try {
          this.accept(ws, req);
        } catch (e) {
          log(`accept: internal error ${(e as Error).message}`);
          ws.terminate();
        }
      });
    }));
    // Every request line gets a status: CONNECT (which Node would drop silently) a 405, and bytes
    // that do not parse a 400, or, after a response already began on the socket (an event
    // stream), the end of what was sent.
    this.http.on('connect', (req: IncomingMessage, socket: Duplex) => refuseSocket(socket, 405, 'CONNECT is not served here'));
    this.http.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
      if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
      // A response in the making goes out first (Node writes it on a later tick); an event stream,
      // which never finishes, gets a second to flush what it sent. Then the socket ends.
      const { req, res } = this.inflight.get(socket) ?? {};
      // A body that stops parsing (a bad chunk size) never ends: a route reading it is told so, as
      // a stream error, and answers 400 itself rather than waiting out its own timeout.
      if (req && res && !res.headersSent && req.listenerCount('error') > 0) {
        req.emit('error', new Error(`the request body does not parse as HTTP/1.1 (${err.code ?? err.message})`));
      }
      if (res || this.answered.has(socket)) {
        const end = () => socket.end();
        if (res) { res.once('finish', end); setTimeout(end, 1000).unref(); } else setImmediate(end);
        setTimeout(() => socket.destroy(), 5000).unref();
        return;
      }
      refuseSocket(socket, err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400, 'the request does not parse as HTTP/1.1');
    });
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    // After listening, an accept that fails (EMFILE when the process's files run out) is an
    // 'error' on the server: logged, at most once per report, never the end of the run.
    let acceptFailed: string | null = null;
    this.http.on('error', (e: Error & { code?: string }) => { acceptFailed ??= `${e.code ?? ''} ${e.message}`; });
    this.reportAdmission = guarded(log, 'admission report', () => {
      const refused = this.admission.report();
      if (refused) log(refused);
      if (acceptFailed) log(`accepting a connection failed: ${acceptFailed}`);
      acceptFailed = null;
    });
    this.timers.push(setInterval(this.reportAdmission, ADMISSION_REPORT_MS));
    this.timers.push(setInterval(guarded(log, 'heartbeat', () => this.heartbeat()), this.opts.heartbeatMs));
    this.timers.push(setInterval(guarded(log, 'slow-reader watch', () => this.watchDrain()), 1000));
    for (const t of this.timers) t.unref();
    const addr = this.http.address();
    return typeof addr === 'object' && addr ? addr.port : this.opts.port;
  }

  private serveHttp(req: IncomingMessage, res: ServerResponse): void {
    this.answered.add(req.socket);
    this.inflight.set(req.socket, { req, res });
    res.once('finish', () => { if (this.inflight.get(req.socket)?.res === res) this.inflight.delete(req.socket); });
    const path = requestPath(req.url);
    if (path === null) return badRequest(res, `the request target ${JSON.stringify((req.url ?? '').slice(0, 60))} is not a path`);
    for (const route of this.routes) if (route(req, res, path)) return;
    if (path !== '/ws') return serveStatic(req, res, this.opts.staticDir);
    res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
    res.end('/ws is the workers\' WebSocket: connect with a WebSocket upgrade\n');
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    const p = this.handler.open(newPeer(++this.opened, req.socket.remoteAddress ?? '?'));
    this.sockets.set(p, ws);
    this.live.add(p);
    const log = this.opts.log;
    const fail = (e: Error) => this.drop(p, CLOSE.malformed, `internal: ${e.message}`);
    let released = false;
    const helloTimer = setTimeout(guarded(log, `worker #${p.id} hello timer`, () => {
      if (!this.handler.joined(p)) this.drop(p, CLOSE.helloTimeout, `no hello within ${this.opts.helloTimeoutMs} ms`);
    }, fail), this.opts.helloTimeoutMs);
    // Before ws's own reader, which hands over every message or control frame a read completes,
    // so a read that starts one is seen first (one that ends a message and starts the next leaves
    // the next one's start to its following read: at most one read late). A pong or ping ends
    // what it started too, or an idle worker's pong would date its next gradient's start; but not
    // a control frame between a message's fragments (issue 24: a gradient sent in fragments with
    // a ping before the last was timed from that fragment, at 1 GB/s over a 46 KB/s link).
    req.socket.prependListener('data', (d: Buffer) => {
      if (p.arrivingSince === null) { p.arrivingSince = performance.now(); p.arrivingBytes = 0; }
      p.arrivingBytes += d.byteLength;
    });
    const controlFrame = (payload: Buffer) => { if (p.arrivingBytes <= CONTROL_FRAME_HEAD + payload.byteLength) p.arrivingSince = null; };
    ws.on('pong', (data: Buffer) => {
      p.missedPongs = 0;
      controlFrame(data);
      const t = p.timing;
      if (t && data.equals(t.tag)) { p.timing = null; sampleDownRate(p, t.bytes, performance.now() - t.since, t.shared); }
    });
    ws.on('ping', controlFrame);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (p.closed) return;
      p.messageStartedAt = p.arrivingSince ?? performance.now();
      p.arrivingSince = null;
      this.bytesIn += data.byteLength;
      try {
        receive(p, data, isBinary, this.handler);
        // Joined: the run's work bounds it now, no longer the caps on strangers' connections.
        if (!released && this.handler.joined(p)) { released = true; this.admission.release(req.socket); }
      } catch (e) {
        try {
          if (e instanceof ProtocolError) this.drop(p, e.code, e.message);
          else fail(e as Error);
        } catch (e2) {
          log(`worker #${p.id}: could not close after an error: ${(e2 as Error).message}`);
          ws.terminate();
        }
      }
    });
    ws.on('close', guarded(log, `worker #${p.id} close`, (code: number, reason: Buffer) => {
      clearTimeout(helloTimer);
      // The peer's words: escaped and cut before any log line or status shows them (text.ts).
      this.gone(p, code, printable(reason.toString(), MAX_CLOSE_REASON_BYTES), false);
    }));
    ws.on('error', guarded(log, `worker #${p.id} socket error`, (e: Error & { code?: string }) => {
      // ws has already closed the socket (with 1009 for an oversized frame); name it in our log.
      if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.drop(p, CLOSE.tooBig, `frame over ${MAX_FRAME_BYTES} bytes: ${e.message}`);
      else this.drop(p, CLOSE.malformed, `socket error ${e.code ?? ''} ${e.message}`);
    }, () => ws.terminate()));
  }

  send(p: P, frame: Uint8Array): void {
    if (p.closed) return;
    p.bytesOut += frame.byteLength;
    this.bytesOut += frame.byteLength;
    p.outbox.push(frame);
    p.outboxBytes += frame.byteLength;
    if (!p.writing) {
      p.progressAt = Date.now();
      // Bursts that overlap share the coordinator's link: each marks the others, and itself.
      for (const q of this.bursting) q.burst!.shared = true;
      p.burst = { since: performance.now(), bytes: 0, timed: false, shared: this.bursting.size > 0 };
      this.bursting.add(p);
      this.pump(p);
    }
  }

  private ws(p: P): WebSocket {
    return this.sockets.get(p)!;
  }

  terminate(p: P): void {
    this.ws(p).terminate();
  }

  /** Bytes sent to a peer and not yet written to its socket. */
  queued(p: P): number {
    return p.outboxBytes + this.ws(p).bufferedAmount;
  }

  private pump(p: P): void {
    const frame = p.outbox.shift();
    if (!frame || p.closed) {
      p.writing = false;
      this.timeBurst(p);
      return;
    }
    p.writing = true;
    p.outboxBytes -= frame.byteLength;
    const started = performance.now();
    const burst = p.burst!;
    const afterBuffer = burst.bytes >= SEND_BUFFER;
    burst.bytes += frame.byteLength;
    this.ws(p).send(frame, (err) => {
      if (err) return; // the socket is closing; its close handler takes care of the peer
      p.progressAt = Date.now();
      // Behind a full send buffer, a large frame's write takes what the link takes to drain it.
      if (afterBuffer && frame.byteLength >= LARGE_FRAME) {
        burst.timed = true;
        sampleDownRate(p, frame.byteLength, performance.now() - started, burst.shared);
      }
      this.pump(p);
    });
  }

  /** The outbox is empty: a burst that no write could time is timed by a ping sent after it (its pong, in the pong handler). */
  private timeBurst(p: P): void {
    const b = p.burst;
    p.burst = null;
    this.bursting.delete(p);
    if (!b || b.timed || b.bytes < TIMED_BURST || p.timing || p.closed) return;
    // A tag it cannot guess: a pong sent ahead of the bytes would make its link look fast.
    p.timing = { since: b.since, bytes: b.bytes, tag: randomBytes(8), shared: b.shared };
    this.ws(p).ping(p.timing.tag);
  }

  /** Closes a peer with a named code and a log line; the handler hears of it at once. */
  drop(p: P, code: number, reason: string): void {
    if (p.closed) return;
    this.opts.log(closedLine(p, code, reason));
    try {
      this.ws(p).close(code, closeReason(reason));
    } catch {
      this.ws(p).terminate();
    }
    // A peer that never answers the close handshake must not hold its shard.
    setTimeout(() => this.ws(p).terminate(), 2000).unref();
    this.gone(p, code, reason, true);
  }

  private gone(p: P, code: number, reason: string, byUs: boolean): void {
    if (p.closed) return;
    p.closed = true;
    this.live.delete(p);
    this.bursting.delete(p);
    this.handler.gone(p, code, reason, byUs);
  }

  /** Pings idle peers; one that missed two pongs is closed. */
  private heartbeat(): void {
    for (const p of this.live) {
      if (!this.handler.joined(p) || !this.handler.idle(p)) { p.missedPongs = 0; continue; }
      if (p.missedPongs >= 2) { this.drop(p, CLOSE.timeout, 'missed two heartbeats'); continue; }
      p.missedPongs++;
      this.ws(p).ping();
    }
  }

  /**
   * A peer with frames to write that has not read for slowReaderMs does not read what we send it
   * (a browser tab computing still reads: its socket lives on another thread). Reading is seen in
   * bytes, not only in whole frames: behind a coordinator link shared by many peers, one 8 MiB
   * frame can take seconds to drain, and a TCP flow that lost packets at a full queue waits out
   * its retransmission timeouts (0.2, 0.4, 0.8, 1.6, 3.2 s, …) while it still reads.
   */
  private watchDrain(): void {
    const now = Date.now();
    for (const p of this.live) {
      if (!this.handler.joined(p) || !p.writing) continue;
      const buffered = this.ws(p).bufferedAmount;
      if (buffered < p.lastBuffered) p.progressAt = now;
      p.lastBuffered = buffered;
      if (now - p.progressAt >= this.opts.slowReaderMs) this.drop(p, CLOSE.slowReader, `${this.queued(p)} bytes sent to it unread: no frame written for ${now - p.progressAt} ms`);
    }
  }

  /** Says goodbye to every peer with `code` and stops listening. */
  async close(code: number, reason: string): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    // Refusals since the last report are said before the end: a run shorter than a report's
    // interval would otherwise never say it was flooded.
    this.reportAdmission();
    for (const p of [...this.live]) {
      this.ws(p).close(code, closeReason(reason));
      // As in drop(): a peer that never answers the close (a hello-less stranger's socket) would
      // hold the process open for ws's own 30 s close timeout.
      setTimeout(() => this.ws(p).terminate(), 2000).unref();
      this.gone(p, code, reason, true);
    }
    await new Promise<void>((r) => (this.wss ? this.wss.close(() => r()) : r()));
    this.http?.closeAllConnections();
    await new Promise<void>((r) => (this.http ? this.http.close(() => r()) : r()));
  }
}

/**
 * A burst this big or more is timed by a ping after it. Smaller than LARGE_FRAME so that
 * powersgd's broadcasts (0.6 MB a step at AlexNet size, rank 4) keep a worker's rate fresh. The
 * pong's round trip makes such a sample low; when other peers' bursts overlapped it (a broadcast
 * goes to every worker at once) it can only raise the rate (downRateWith).
 */
const TIMED_BURST = 256 * 1024;

/** One download sample: `bytes` in `ms`, into the peer's rate (link-meter.ts downRateWith). */
function sampleDownRate(p: Peer, bytes: number, ms: number, shared: boolean): void {
  p.downRate = downRateWith(p.downRate, (bytes * 1000) / Math.max(0.01, ms), shared);
}
