// What a stranger's connections may hold before it says who it is (issue 24, 6). One stranger
// opened 10,000 TLS connections that never finished their handshake: the coordinator reached its
// open-file limit, ~90 KB of memory per stalled handshake, the dashboard stopped answering, nobody
// could join, and the next checkpoint write failed with EMFILE. So a connection that has not
// joined is counted against caps sized from the process's open-file limit, in all and per
// address, well under that limit: files, joined workers and the dashboard keep their share. And
// it must ask something (an HTTP request, or a WebSocket upgrade; a TLS handshake first) within
// a few seconds; after an upgrade, the transport's hello timer bounds the rest.
//
// A joined worker is released from the caps (`release`): its run's work, not its address, bounds it.
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';

export interface AdmissionLimits {
  /** The soft open-file limit the caps were sized from (null: unreadable; sized as for 1024). */
  files: number | null;
  /** Connections not yet joined, from all addresses together. */
  total: number;
  /** Above `total`, slots only an address holding fewer than NEWCOMER_HOLDS may take: during a flood from some addresses, a worker from another still gets in. */
  reserve: number;
  /** Connections not yet joined from one address (IPv6: one /64). */
  perAddress: number;
  /** From the connection to its first request (TLS handshake included). */
  requestMs: number;
}

/** An address holding fewer not-yet-joined connections than this may use the reserve. */
const NEWCOMER_HOLDS = 2;
/** A browser opens ~6 connections to a host; a NAT of a dozen tabs joining at once, a few each. */
const MAX_PER_ADDRESS = 64;
/** ~90 KB each while in a TLS handshake: 1,024 of them are ~100 MB, the most worth holding for strangers. */
const MAX_TOTAL = 1024;

/** The soft "Max open files" of this process (Linux: /proc/self/limits), or null. */
export function openFileLimit(limits?: string): number | null {
  let text = limits;
  if (text === undefined) {
    try { text = readFileSync('/proc/self/limits', 'utf8'); } catch { return null; }
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!m) return null;
  return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/**
 * The caps for a process allowed `files` open files: a quarter of them for connections not yet
 * joined (at most MAX_TOTAL), an eighth of that more as the newcomers' reserve, an eighth per
 * address (4 to MAX_PER_ADDRESS). So strangers hold at most ~28% of the files.
 */
export function admissionLimits(files: number | null = openFileLimit(), requestMs = 10_000): AdmissionLimits {
  const total = Math.max(16, Math.min(MAX_TOTAL, Math.floor((files ?? 1024) / 4)));
  return { files, total, reserve: Math.max(4, Math.floor(total / 8)), perAddress: Math.max(4, Math.min(MAX_PER_ADDRESS, Math.floor(total / 8))), requestMs };
}

/** The caps and deadlines in words, for `serve --help` (indented as its option descriptions). */
export function admissionHelp(L: AdmissionLimits, helloMs: number): string {
  const files = L.files === null ? 'unreadable, so sized as for 1,024' : L.files >= Number.MAX_SAFE_INTEGER ? 'unlimited' : L.files.toLocaleString('en-US');
  return `  connections not yet joined (strangers' too): at most ${L.total} in all and ${L.perAddress} per address (IPv6: per
                      /64; loopback has no per-address cap), ${L.reserve} more for addresses holding fewer
                      than ${NEWCOMER_HOLDS}; the rest are closed at once. Sized from this process's open-file limit
                      (now ${files}; a quarter of it, at most ${MAX_TOTAL}), which bin/tabtrain raises to the hard
                      limit. Each must send its first request (TLS handshake included) within
                      ${L.requestMs / 1000} s, and a worker its hello within ${helloMs / 1000} s of the WebSocket upgrade`;
}

/**
 * The key an address is counted under: IPv4 as itself (an IPv4-mapped IPv6 address too), IPv6 by
 * its /64, one subscriber's network (a stranger holding a /64 must not get a cap per address in it).
 */
export function addressKey(remote: string | undefined): string {
  if (!remote) return '?';
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remote);
  if (v4) return v4[1];
  if (!remote.includes(':') || remote === '::1') return remote;
  const [head, tail = ''] = remote.replace(/%.*$/, '').toLowerCase().split('::', 2);
  const h = head ? head.split(':') : [];
  const t = remote.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = [...h, ...new Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** This machine: its users' workers, tabs and tools, which a per-address cap would only get in the way of. */
export function isLoopback(key: string): boolean {
  return /^127\./.test(key) || key === '::1';
}

/**
 * Whether a connection from an address holding `mine` not-yet-joined ones may be held, with
 * `pending` held in all. Loopback addresses have no per-address cap (the total still holds).
 */
export function admits(L: AdmissionLimits, pending: number, mine: number, loopback: boolean): boolean {
  if (mine >= L.perAddress && !loopback) return false;
  return pending < L.total || (pending < L.total + L.reserve && mine < NEWCOMER_HOLDS);
}

interface Entry { key: string; counted: boolean; timer: NodeJS.Timeout }

/** Counts the connections that have not joined; refuses those over the caps. */
export class Admission {
  private readonly held = new Map<string, number>();
  private readonly entries = new WeakMap<Socket, Entry>();
  /** Connections counted now. */
  pending = 0;
  /** Refused since the last `report()`, and by address. */
  private refused = 0;
  private refusedBy = new Map<string, number>();

  constructor(readonly limits: AdmissionLimits) {}

  /** A new TCP connection: counted and given its request deadline, or closed at once (false). */
  admit(socket: Socket): boolean {
    const L = this.limits;
    const key = addressKey(socket.remoteAddress);
    const mine = this.held.get(key) ?? 0;
    if (!admits(L, this.pending, mine, isLoopback(key))) {
      this.refused++;
      this.refusedBy.set(key, (this.refusedBy.get(key) ?? 0) + 1);
      socket.destroy();
      return false;
    }
    this.held.set(key, mine + 1);
    this.pending++;
    const timer = setTimeout(() => socket.destroy(), L.requestMs);
    timer.unref();
    this.entries.set(socket, { key, counted: true, timer });
    socket.once('close', () => this.release(socket));
    return true;
  }

  /** The connection asked something (an HTTP request or an upgrade) in time: no more request deadline. */
  asked(socket: Socket): void {
    const e = this.entryOf(socket);
    if (e) clearTimeout(e.timer);
  }

  /** The connection is a joined worker now, or closed: it no longer counts against the caps. */
  release(socket: Socket): void {
    const e = this.entryOf(socket);
    if (!e || !e.counted) return;
    e.counted = false;
    clearTimeout(e.timer);
    this.pending--;
    const n = (this.held.get(e.key) ?? 1) - 1;
    if (n > 0) this.held.set(e.key, n);
    else this.held.delete(e.key);
  }

  /** One line on what was refused since the last call, or null when nothing was. */
  report(): string | null {
    if (this.refused === 0) return null;
    const top = [...this.refusedBy].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, n]) => `${k} ${n}`).join(', ');
    const L = this.limits;
    const line = `refused ${this.refused} connection${this.refused === 1 ? '' : 's'} over the caps on connections not yet joined (${this.pending} held; at most ${L.total} + ${L.reserve} for newcomers in all, ${L.perAddress} per address): ${top}`;
    this.refused = 0;
    this.refusedBy = new Map();
    return line;
  }

  /**
   * A TLS connection's requests come on the TLSSocket that wraps the accepted TCP socket: Node
   * keeps the TCP one as `_parent`.
   */
  private entryOf(socket: Socket): Entry | undefined {
    return this.entries.get(socket) ?? this.entries.get((socket as Socket & { _parent?: Socket })._parent as Socket);
  }
}
