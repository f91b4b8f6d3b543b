// One connection to a coordinator as a test's peer sees it: a real WebSocket to a coordinator on a
// port (run.ts), or an Endpoint of an in-process coordinator's in-memory wire (in-process.ts).
// Frames from either go through the coordinator's one receive() path (wire.ts: binary, decode,
// validate, flood limit), so a liar or a hostile peer written against a Link meets the same
// checks in-process as over a socket. What only a socket has (fragments, pings, a peer that stops
// reading) stays with the WebSocket: `ws`.
import WebSocket from 'ws';
import type { Conn } from '../../server/src/membership';
import type { Endpoint, MemoryWire } from '../../server/src/memory-wire';

export interface Closed { code: number; reason: string }

export interface Link {
  /** Resolves once open; never rejects (nor resolves for a link closed before it opened). */
  opened: Promise<void>;
  /** Sends a frame; resolves once it is taken. Frames sent once the link is closed go nowhere. */
  send(frame: Uint8Array): Promise<void>;
  /** Adds a listener for each frame from the coordinator. */
  onFrame(fn: (frame: Uint8Array) => void): void;
  /** The close code and reason, whichever side closed. */
  closed: Promise<Closed>;
  /** Closes with a close frame. */
  close(code?: number, reason?: string): void;
  /** Gone without a close frame: the coordinator sees 1006, as for a peer that died. */
  terminate(): void;
  readonly isOpen: boolean;
}

export interface SocketLink extends Link { ws: WebSocket }

/** An in-process coordinator's connection point (InProcessRun has it). */
export interface InProcessTarget { wire: MemoryWire<Conn> }

/** Where a peer connects: a ws:// URL, or an in-process coordinator. */
export type Target = string | InProcessTarget;

/** A real WebSocket to `url`. */
export function socketLink(url: string, maxPayload = 64 << 20): SocketLink {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload });
  const opened = new Promise<void>((r) => ws.once('open', () => r()));
  const closed = new Promise<Closed>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  return {
    ws, opened, closed,
    send: (frame) => new Promise<void>((res) => {
      if (ws.readyState !== WebSocket.OPEN) return res();
      ws.send(frame, () => res());
    }),
    onFrame: (fn) => { ws.on('message', (d: Buffer) => fn(d)); },
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
    get isOpen() { return ws.readyState === WebSocket.OPEN; },
  };
}

/**
 * A new connection on an in-process coordinator's in-memory wire. It opens on a later macrotask,
 * as a socket does: never inside the coordinator's own call that made a test connect (a 'step'
 * listener, say).
 */
export function memoryLink(to: InProcessTarget): Link {
  const listeners: ((frame: Uint8Array) => void)[] = [];
  let endpoint: Endpoint | null = null;
  /** Closed before it opened: it never connects, as a socket closed while connecting. */
  let abandoned = false;
  let gone: (c: Closed) => void = () => {};
  const closed = new Promise<Closed>((resolve) => { gone = resolve; });
  const close = (code: number, reason: string) => {
    if (endpoint) return endpoint.close(code, reason);
    abandoned = true;
    gone({ code: 1006, reason: '' });
  };
  const opened = new Promise<void>((resolve) => setImmediate(() => {
    if (abandoned) return;
    // A coordinator no longer listening refuses it: a socket's failed connect, closed 1006.
    try { endpoint = to.wire.connect(); } catch { return gone({ code: 1006, reason: '' }); }
    endpoint.onFrame = (frame) => { for (const fn of listeners) fn(frame); };
    endpoint.onClose = (code, reason) => gone({ code, reason });
    resolve();
  }));
  return {
    opened, closed,
    // The endpoint rejects a send once closed; a socket's send then goes nowhere: the same here.
    send: (frame) => (endpoint ? endpoint.send(frame).catch(() => {}) : Promise.resolve()),
    onFrame: (fn) => { listeners.push(fn); },
    close: (code = 1000, reason = '') => close(code, reason),
    terminate: () => close(1006, ''),
    get isOpen() { return endpoint !== null && !endpoint.closed; },
  };
}

/** The WebSocket under a link, if it is one (fragments, pings, a socket that stops reading). */
export function socketOf(link: Link): WebSocket | undefined {
  return (link as Partial<SocketLink>).ws;
}

/** A new connection to `to`. */
export function dial(to: Target, maxPayload?: number): Link {
  return typeof to === 'string' ? socketLink(to, maxPayload) : memoryLink(to);
}
