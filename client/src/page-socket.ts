// The browser's side of the socket: where to connect, a stable worker id, capped backoff, and
// one session = one WebSocket driving one WorkerCore. The arithmetic and the protocol are
// core.ts's, shared with the Node worker; only this file and page-backend.ts are browser-only.
import { CLOSE, type Progress } from '@tabtrain/shared';
import { WorkerCore, type WorkerIdentity, type WorkerStatus } from './core';
import { webWorkerReplica } from './exact-replica-webworker';
import type { PowerSgdPlan } from '@tabtrain/shared/powersgd';
import type { DeviceLoss } from './page-backend';

/** `send` resolves once the socket's buffer has drained below this many bytes. */
export const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** Close codes after which reconnecting cannot help (the page stops and says why). */
export const FATAL_CODES = new Set<number>([CLOSE.finished, CLOSE.protocolMismatch, CLOSE.modelMismatch, CLOSE.unauthorized]);

const ID_KEY = 'tabtrain.workerId';
const SESSION_KEY = 'tabtrain.session';

/**
 * The coordinator to join: `?coordinator=ws://host:port/ws` if given (http(s) URLs and bare
 * host:port are accepted too), else the coordinator that served this page.
 */
export function coordinatorUrl(loc: { protocol: string; host: string }, params: URLSearchParams): string {
  const given = params.get('coordinator')?.trim();
  if (!given) return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(given) ? given : `ws://${given}`);
  } catch {
    throw new Error(`?coordinator=${given} is not a URL; use ws://HOST:PORT/ws`);
  }
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new Error(`?coordinator=${given}: the scheme must be ws:// or wss://`);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/ws';
  return url.toString();
}

/** A fresh random id; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function newWorkerId(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return `tab-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * The tab's identity, kept in sessionStorage: a reload or a reconnect is the same worker (the
 * coordinator replaces its old socket); another tab is another worker.
 */
export function stableWorkerId(storage: Pick<Storage, 'getItem' | 'setItem'> | null, fresh = false): string {
  try {
    const have = fresh ? null : storage?.getItem(ID_KEY);
    if (have && /^[\w-]{1,64}$/.test(have)) return have;
    const id = newWorkerId();
    storage?.setItem(ID_KEY, id);
    return id;
  } catch {
    return newWorkerId(); // storage disabled (privacy mode): an id for this page's life
  }
}

/** The session secret of this tab's last welcome: with it, a reload or a reconnect is the same worker. */
export function storedSession(storage: Pick<Storage, 'getItem'> | null): string | undefined {
  try {
    return storage?.getItem(SESSION_KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

/** Keeps the identity a welcome gave (the id may be a new one, and the secret is new) for the next connection. */
export function rememberIdentity(storage: Pick<Storage, 'setItem' | 'removeItem'> | null, id: { workerId: string; session?: string }): void {
  try {
    storage?.setItem(ID_KEY, id.workerId);
    if (id.session) storage?.setItem(SESSION_KEY, id.session);
    else storage?.removeItem(SESSION_KEY);
  } catch {
    // storage disabled: the identity lasts as long as the page
  }
}

/** Exponential backoff with ±20% jitter, capped; reset after a successful join. */
export class Backoff {
  private attempt = 0;
  constructor(readonly initialMs = 500, readonly capMs = 15_000, private readonly random: () => number = Math.random) {}
  get attempts(): number { return this.attempt; }
  next(): number {
    const base = Math.min(this.capMs, this.initialMs * 2 ** this.attempt);
    this.attempt++;
    return Math.round(Math.min(this.capMs, base * (0.8 + 0.4 * this.random())));
  }
  reset(): void { this.attempt = 0; }
}

export interface SessionOutcome {
  code: number;
  reason: string;
  /** The coordinator welcomed us (so the backoff starts over). */
  joined: boolean;
  /** Set when the session ended because the GPU device was lost. */
  deviceLost: DeviceLoss | null;
  /** The socket could not even be created (a bad URL, ws:// from an https page): retrying cannot help. */
  unopenable?: string;
}

export interface SessionOptions {
  url: string;
  identity: WorkerIdentity;
  /** Settles when the GPU device is lost. */
  lost: Promise<DeviceLoss>;
  onStatus: (s: WorkerStatus) => void;
  onProgress: (p: Progress) => void;
  onOpen: () => void;
  log: (line: string) => void;
  /** powersgd: refresh the working weights from the exact copy (in a Web Worker) every this many versions (?refresh=K). */
  refreshEvery?: number;
  /** powersgd: threads that apply each update to the exact copy (?apply-threads=T; default replicaThreads()). */
  applyThreads?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A short wait while the socket drains. A hidden tab's timers are throttled to about one a second
 * (far less after minutes hidden), which would stretch every gradient upload; message events are
 * not throttled, so a hidden tab yields through a MessageChannel instead (a busy-ish wait, only
 * while an upload is in flight).
 */
function drainWait(ms: number): Promise<void> {
  if (typeof document === 'undefined' || !document.hidden) return sleep(ms);
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
    ch.port2.postMessage(0);
  });
}

/**
 * Forwards a promise's value to a callback that can be detached. A session must not hang its own
 * closure on the device-loss promise: that promise outlives it (for non-WebGPU backends it never
 * settles), and the closure would keep the session's WorkerCore, with its model-sized buffers,
 * alive after every reconnect.
 */
function relay<T>(p: Promise<T>): { set(fn: ((v: T) => void) | null): void } {
  const box: { fn: ((v: T) => void) | null } = { fn: null };
  p.then((v) => box.fn?.(v), () => {});
  return { set: (fn) => { box.fn = fn; } };
}

/** Closes with a reason that fits the protocol's 123 bytes; never throws. */
function closeSocket(ws: WebSocket, code: number, reason: string): void {
  let r = reason;
  while (new TextEncoder().encode(r).length > 123) r = r.slice(0, -1);
  try {
    ws.close(code, r);
  } catch {
    ws.close();
  }
}

/** One connection: resolves when the socket closes or the device is lost. Never rejects. */
export function runSession(opts: SessionOptions): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(opts.url);
    } catch (e) {
      // A bad URL, or ws:// from an https page (mixed content): retrying cannot help.
      resolve({ code: 1006, reason: '', joined: false, deviceLost: null, unopenable: `cannot open ${opts.url}: ${(e as Error).message}` });
      return;
    }
    ws.binaryType = 'arraybuffer';
    let joined = false;
    let over = false;
    let deviceLost: DeviceLoss | null = null;
    let pending: Promise<void> = Promise.resolve();

    const send = async (frame: Uint8Array): Promise<void> => {
      // A shard computed on a device that was lost meanwhile is never reported: its result frame
      // does not go out, the coordinator requeues the shard, and the run stays exact.
      if (deviceLost) throw new Error('the GPU device was lost during this shard');
      if (over || ws.readyState !== WebSocket.OPEN) throw new Error('the connection closed');
      ws.send(frame);
      let wait = 1;
      while (ws.bufferedAmount > HIGH_WATER_BYTES) {
        if (ws.readyState !== WebSocket.OPEN) throw new Error('the connection closed while sending');
        await drainWait(wait);
        wait = Math.min(wait * 2, 25);
      }
    };
    // The exact copy of the weights in a Web Worker where there are Web Workers, on this thread otherwise.
    const exactReplica = typeof Worker === 'function' ? (plan: PowerSgdPlan, lr: number, corrupt?: number) => webWorkerReplica(plan, lr, corrupt, opts.applyThreads) : undefined;
    const core = new WorkerCore(opts.identity, send, { onStatus: opts.onStatus, onProgress: opts.onProgress, log: opts.log, refreshEvery: opts.refreshEvery, exactReplica });

    const finish = async (code: number, reason: string) => {
      if (over) return;
      over = true;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) closeSocket(ws, 1000, reason);
      // Let a shard in flight fail or finish (its sends throw now), then free every tensor.
      await Promise.race([pending.catch(() => {}), sleep(5000)]);
      core.dispose();
      core.close();
      lostRelay.set(null);
      resolve({ code, reason, joined, deviceLost });
    };

    const lostRelay = relay(opts.lost);
    lostRelay.set((l) => {
      deviceLost = l;
      if (over) return;
      opts.log(`GPU device lost (${l.reason}${l.message ? `: ${l.message}` : ''})`);
      void finish(1000, 'GPU device lost; rejoining');
    });
    ws.onopen = () => {
      opts.onOpen();
      ws.send(core.hello());
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (over) return;
      if (!(ev.data instanceof ArrayBuffer)) {
        closeSocket(ws, CLOSE.malformed, 'text frame; the protocol is binary');
        return;
      }
      joined = true;
      pending = core.receive(new Uint8Array(ev.data));
      pending.catch((e: Error) => {
        if (over) return;
        opts.log(`error: ${e.message}`);
        closeSocket(ws, CLOSE.unexpected, String(e.message));
      });
    };
    ws.onclose = (ev: CloseEvent) => void finish(ev.code, ev.reason);
    // onerror carries no detail in browsers; onclose follows with the code.
  });
}
