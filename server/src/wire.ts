// The wire: what the coordinator asks of whatever carries its frames. In production that is the
// sockets (transport.ts); in tests that drive the coordinator in-process, memory (memory-wire.ts).
// Both hand the handler a message only after the same checks, here: binary, decodable, valid
// (protocol.ts), and within the flood limit. So everything above the wire runs as it does in
// production whichever carries the frames.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CLOSE, CLOSE_NAMES, MSG, ProtocolError, decodeFrame, validate, type Message } from '@tabtrain/shared';

/** What a wire keeps per connection; the handler's own per-connection record extends it. */
export interface Peer {
  id: number;
  remote: string;
  bytesIn: number;
  bytesOut: number;
  /** Closed by us or by the peer: nothing more is read from it or sent to it. */
  closed: boolean;
  /** Pings sent while idle without a pong since. */
  missedPongs: number;
  /** Token bucket against floods of messages no assign asked for: allowed now, refilled at FLOOD_RATE per second. */
  tokens: number;
  tokensAt: number;
  /**
   * Frames waiting to be written: one frame is handed to the socket at a time, the next when it
   * has been written, so progress is seen frame by frame (the kernel would otherwise get one
   * merged write of every queued frame, 187 MB for AlexNet's weights, whose buffer shrinks only
   * when all of it is gone, and an honest worker on a shared slow link looks stuck).
   */
  outbox: Uint8Array[];
  outboxBytes: number;
  writing: boolean;
  /**
   * When the peer was last seen reading (slow-reader watch): a frame written, its socket's buffer
   * smaller than at the watch's last look, or writing began after an idle spell.
   */
  progressAt: number;
  /** Its socket's buffered bytes at the watch's last look. */
  lastBuffered: number;
  /**
   * Measured bytes/s coordinator → peer (0 = none yet; averageRate): the cost model's download
   * rate. How a burst is timed: `burst`.
   */
  downRate: number;
  /**
   * What was written since the outbox was last empty. The kernel's send buffer (up to
   * SEND_BUFFER) takes the first bytes of a burst at memory speed, so frames written after that
   * much are timed by their writes (the link drains the buffer); a burst too small to fill it is
   * timed from its first write to the pong of a ping sent after its last frame (`timing`).
   */
  burst: { since: number; bytes: number; timed: boolean; shared: boolean } | null;
  /** `shared`: another peer's burst overlapped this one, so the coordinator's link was split (transport.ts sampleDownRate). */
  timing: { since: number; bytes: number; tag: Buffer; shared: boolean } | null;
  /**
   * When the first bytes of the message now being handled were read from its socket. A message's
   * arrival time alone cannot time a link: a one-frame gradient is timed from its first byte to
   * its last, here, since the worker's own send time is only its copy into a kernel buffer that
   * grows (TCP autotuning) past the frame's size.
   */
  messageStartedAt: number;
  /** The first read of bytes since the last whole message, or null: when the next message began arriving. */
  arrivingSince: number | null;
  /** Bytes read since arrivingSince: a ping or pong is all of them only when no message is under way. */
  arrivingBytes: number;
}

/** A new connection's Peer, nothing read or sent yet. */
export function newPeer(id: number, remote: string): Peer {
  return {
    id, remote, bytesIn: 0, bytesOut: 0, closed: false, missedPongs: 0, tokens: FLOOD_BURST, tokensAt: Date.now(),
    outbox: [], outboxBytes: 0, writing: false, progressAt: 0, lastBuffered: 0, downRate: 0,
    burst: null, timing: null, messageStartedAt: 0, arrivingSince: null, arrivingBytes: 0,
  };
}

/** The log line of a peer closed by us: the same whichever wire carries it. */
export function closedLine(p: Peer, code: number, reason: string): string {
  return `worker #${p.id} (${p.remote}) closed: ${CLOSE_NAMES[code] ?? code} (${code}) ${reason}`;
}

/** What the wire asks of whoever owns the connections (the coordinator). */
export interface PeerHandler<P extends Peer> {
  /** Makes the per-connection record for a new connection. */
  open(peer: Peer): P;
  /** A validated message; throwing a ProtocolError closes the peer with its code. */
  message(p: P, msg: Message, body: Uint8Array): void;
  /** The peer is closed (by us, `byUs`, or by it): give back what it held. Called once per peer. */
  gone(p: P, code: number, reason: string, byUs: boolean): void;
  /** Said hello; a peer that has not within helloTimeoutMs is closed. */
  joined(p: P): boolean;
  /** Holds no work: only idle peers are pinged (a computing worker's event loop may be blocked). */
  idle(p: P): boolean;
}

/** An HTTP handler for the paths it knows; true when it answered. */
export type Route = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

/** What the coordinator sends and closes through. */
export interface Wire<P extends Peer> {
  /** Connections accepted so far. */
  readonly opened: number;
  /** Bytes received from and sent to all peers, ever: the coordinator link's load. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Starts accepting connections; resolves with the port (0 for a wire without one). */
  listen(): Promise<number>;
  /** HTTP handlers asked before the static files (the dashboard's); a wire without HTTP keeps none. */
  addRoutes(route: Route): void;
  send(p: P, frame: Uint8Array): void;
  /** Bytes sent to a peer and not yet taken by it. */
  queued(p: P): number;
  /** Closes a peer with a named code and a log line; the handler hears of it at once. */
  drop(p: P, code: number, reason: string): void;
  /** Cuts a peer off without a close handshake (when closing it failed). */
  terminate(p: P): void;
  /** Says goodbye to every peer with `code` and stops accepting. */
  close(code: number, reason: string): Promise<void>;
}

/** Makes the coordinator's wire, given the coordinator's handler. */
export type WireFactory<P extends Peer> = (handler: PeerHandler<P>) => Wire<P>;

/**
 * The flood limit counts only the messages the run did not ask for: status, resync, a second
 * hello. A gradient frame or a result answers an assign, and the handler closes the socket for
 * any that is not the next slice of a shard the worker holds, in the run's segment plan, or that
 * shard's one result (notOwner, badGradient, duplicate): the run itself bounds them, at one
 * assign's frames per assign, however fast the run is. Counted too, they capped the honest
 * workers of a fast small-model run: a powersgd step sends a frame per matrix per round, and
 * alexnet-tiny at ~1,200 examples/s passed 400 messages/s and was closed 4010 again and again
 * (issue 24, 3). Invalid messages need no count: the first one closes the socket.
 */
export const FLOOD_RATE = 400;
const FLOOD_BURST = 800;
const ASKED_FOR = new Set<string>([MSG.gradient, MSG.result]);

/**
 * One whole message from a peer, checked and handed to the handler. Throws a ProtocolError (the
 * caller closes the peer with its code) for a text frame, a frame that does not decode or
 * validate, a flood, or whatever the handler refuses.
 */
export function receive<P extends Peer>(p: P, data: Uint8Array, isBinary: boolean, handler: PeerHandler<P>): void {
  p.bytesIn += data.byteLength;
  if (!isBinary) throw new ProtocolError(CLOSE.malformed, 'text frame; the protocol is binary');
  const { header, body } = decodeFrame(data);
  const msg = validate(header);
  if (!ASKED_FOR.has(msg.type) && !takeToken(p)) throw new ProtocolError(CLOSE.flood, `more than ${FLOOD_RATE} ${msg.type} messages/s that no assign asked for`);
  handler.message(p, msg, body);
}

function takeToken(p: Peer): boolean {
  const now = Date.now();
  p.tokens = Math.min(FLOOD_BURST, p.tokens + ((now - p.tokensAt) * FLOOD_RATE) / 1000);
  p.tokensAt = now;
  if (p.tokens < 1) return false;
  p.tokens--;
  return true;
}
