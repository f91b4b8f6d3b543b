// Membership: who the workers are, and whether their results are believed.
//
// Identity: a workerId is public (the status API shows it), so a claim to one counts only with
// that worker's session secret (handed out once, in the welcome); without it the hello joins as a
// new worker and displaces nobody. Trust starts from the operator: workers this process started
// (the local key) and those presenting the run's token are established; a run started --open also
// admits strangers, on probation until --probation K shards of each kind agreed with an
// established worker's (never with another stranger's: two sockets can be one person). Without
// --open a stranger is refused. A worker caught lying, or sending invalid frames again and again,
// is untrusted for the rest of the run (verdicts.ts, which outlives the table). It keeps the table
// of connections the status shows, the lost ones pruned to the last MAX_LOST.
//
// It never sends shards, reads gradients or touches the weights.
import { randomBytes } from 'node:crypto';
import { CLOSE, PROTOCOL_VERSION, ProtocolError, type Hello, type RunInfo, type WorkerKind } from '@tabtrain/shared';
import { LOCAL_KEY, sameSecret } from './secrets';
import type { Peer } from './wire';
import { INVALID_FRAMES, Verdicts } from './verdicts';

/**
 * A connection's state as the status shows it: 'lost' once closed (peer.closed); a joined one
 * 'working' while it holds a copy of a task (the scheduler's fact), else 'idle'.
 */
export type ConnState = 'idle' | 'working' | 'lost';

export type TaskKind = 'train' | 'eval';

/**
 * Whether a worker's results are believed, per kind of task: 'established'; on probation, with
 * how many shards of each kind have been verified; or 'untrusted' (caught).
 */
export type Trust = { train: number; eval: number } | 'established' | 'untrusted';

/** Lost connections kept for the status table: a stranger's 20,000 short connections must not grow it. */
const MAX_LOST = 64;

export interface Conn extends Peer {
  /** Said a valid hello and was welcomed (false: the socket is open, no hello yet). */
  joined: boolean;
  workerId: string;
  /** Its session secret (sent once, in the welcome): a reconnect presenting it is this worker again. */
  session: string;
  trust: Trust;
  /** Why it was marked untrusted (status table, log). */
  caught: string;
  /** Started by this coordinator (it presented the local key): never spot-checked. */
  local: boolean;
  /** The operator vouches for it (local, or it holds the run's token): its shards are the step's trusted reference (reference.ts), and no norm check bans it. */
  vouched: boolean;
  /** Its shadow copies handed out and not yet judged, per kind: probation never runs ahead of its verdicts. */
  awaiting: Record<TaskKind, number>;
  kind: WorkerKind;
  backend: string;
  adapter: Record<string, unknown> | null;
  /** Weights version this worker holds (or will hold once queued frames arrive). */
  version: number;
  /** powersgd runs: the version whose round-1 broadcast (P̂) was sent to it, −1 for none. */
  basis: number;
  /** Train examples/s (EMA) over whole shards, assign to last frame, as the coordinator timed them (pace.ts): shard sizes, deadlines. 0 = unknown. */
  speed: number;
  /** Its compute alone, examples/s (the median of its last samples; pace.ts): the cost model's compute rate. 0 = unknown. */
  computeRate: number;
  /** The compute samples computeRate is the median of (pace.ts averageCompute). */
  computeSamples: number[];
  /** computeRate comes only from shards whose download dominated their wait (pace.ts averageCompute): the planner re-measures it before trusting it. */
  computeRough: boolean;
  shardSize: number;
  computeMs: number;
  uploadMs: number;
  shardsDone: number;
  joinedAt: number;
  lostAt: number;
  /** Live tensors and bytes on the worker's backend, as it last reported (flat across steps = no leak). */
  tensors: number;
  tensorBytes: number;
  /** powersgd: the largest |working − exact| of its weights at its last refresh, as it last reported (shown, never acted on). */
  drift?: number;
  /** Full copies sent because its replica's hash differed, and the version of the last one. */
  resyncs: number;
  resyncVersion: number;
  /** Deadlines this identity has missed: each doubles its next deadline while it has no measured speed. */
  timeouts: number;
  /** Measured bytes/s of its gradient uploads (EMA; 0 = not yet); its download rate is the transport's (Peer.downRate). */
  upRate: number;
  /** --balance cost: left out of the step's train shards, and by how many ms it would have lengthened the step. */
  benchedByMs: number | null;
}

export interface Caught { id: number; workerId: string; remote: string; why: string; step: number; at: number }

export interface MembershipOptions {
  run: RunInfo;
  token?: string;
  /** --open: strangers (neither local nor holding the token) join on probation; without it they are refused. */
  open?: boolean;
  /** --probation K (0 = everyone is established). */
  probation: number;
  log: (line: string) => void;
  /** Closes a connection with a named code (the transport's drop). */
  drop: (c: Conn, code: number, why: string) => void;
  /** Something the status shows changed (trust, the table). */
  changed: () => void;
  /** The worker holds a copy of a task (the scheduler's fact, shown as 'working'). */
  holds: (c: Conn) => boolean;
}

export class Membership {
  readonly conns = new Map<number, Conn>();
  /** Workers caught lying (the last 50), for the log, /api/status and the dashboard. */
  readonly caught: Caught[] = [];
  /** Verdicts by identity, for the whole run (the table forgets lost connections). */
  private readonly verdicts = new Verdicts();

  constructor(private readonly opts: MembershipOptions) {}

  /** The record of a new socket, in its hello phase. */
  open(peer: Peer): Conn {
    const conn: Conn = {
      ...peer, joined: false, workerId: '', session: '', trust: { train: 0, eval: 0 }, caught: '', local: false, vouched: false, awaiting: { train: 0, eval: 0 },
      kind: 'node', backend: '?', adapter: null, version: -1, basis: -1, speed: 0, computeRate: 0, computeRough: false, computeSamples: [], shardSize: 0, computeMs: 0, uploadMs: 0, shardsDone: 0,
      joinedAt: Date.now(), lostAt: 0, tensors: 0, tensorBytes: 0, resyncs: 0, resyncVersion: -1, timeouts: 0,
      upRate: 0, benchedByMs: null,
    };
    this.conns.set(conn.id, conn);
    return conn;
  }

  /**
   * Checks a hello and joins its sender: protocol, token, model, identity and trust. Returns the
   * identity to put in the welcome and how it was established (for the log). Throws a ProtocolError.
   */
  join(conn: Conn, h: Hello): { workerId: string; how: string } {
    if (h.protocol !== PROTOCOL_VERSION) throw new ProtocolError(CLOSE.protocolMismatch, `protocol ${h.protocol}, coordinator speaks ${PROTOCOL_VERSION}; reload the page or update the worker`);
    const { token, run } = this.opts;
    const tokenOk = token !== undefined && sameSecret(h.token, token);
    const local = h.local !== undefined && sameSecret(h.local, LOCAL_KEY);
    if (h.token !== undefined && token !== undefined && !tokenOk) throw new ProtocolError(CLOSE.unauthorized, 'wrong token: use the one serve printed (?token= in a tab\'s address, --token for tabtrain worker)');
    if (!tokenOk && !local && !this.opts.open) throw new ProtocolError(CLOSE.unauthorized, 'missing token: join at the address serve printed (?token=, or worker --token T); or the operator runs serve --open');
    const theirs = h.modelHashes[run.model];
    if (theirs !== run.modelHash) throw new ProtocolError(CLOSE.modelMismatch, `worker has ${run.model} as ${String(theirs).slice(0, 20)}, run needs ${run.modelHash}; update the worker`);
    let workerId = h.workerId;
    const refused = this.verdicts.refused(h.workerId, h.session);
    if (refused) throw new ProtocolError(CLOSE.untrusted, `this worker's results were rejected earlier in this run: ${refused}`);
    const prior = this.identity(h.workerId, conn);
    let inherit: Conn | null = null;
    if (!prior && this.verdicts.known(h.workerId)) {
      workerId = `${h.workerId.slice(0, 64)}~${randomBytes(4).toString('hex')}`;
    } else if (prior) {
      if (h.session !== undefined && sameSecret(h.session, prior.session)) {
        if (prior.trust === 'untrusted') throw new ProtocolError(CLOSE.untrusted, `this worker's results were rejected earlier in this run: ${prior.caught}`);
        inherit = prior;
        if (!prior.closed) this.opts.drop(prior, CLOSE.replaced, 'the same worker connected again');
      } else {
        workerId = `${h.workerId.slice(0, 64)}~${randomBytes(4).toString('hex')}`;
      }
    }
    const trust: Trust = local || tokenOk || this.opts.probation === 0 ? 'established' : inherit ? inherit.trust : { train: 0, eval: 0 };
    Object.assign(conn, {
      joined: true, workerId, session: randomBytes(16).toString('hex'), trust, local, vouched: local || tokenOk, kind: h.kind, backend: h.backend, adapter: h.adapter ?? null, joinedAt: Date.now(),
      speed: inherit?.speed ?? 0, timeouts: inherit?.timeouts ?? 0, upRate: inherit?.upRate ?? 0, downRate: inherit?.downRate ?? 0,
    });
    const how = trust === 'established' ? (local ? 'started by this coordinator' : tokenOk ? 'token' : 'no probation') : inherit ? 'reconnected' : 'on probation';
    return { workerId, how };
  }

  /** The latest joined (or lost) connection with this workerId, other than `self`. */
  private identity(workerId: string, self: Conn): Conn | null {
    let found: Conn | null = null;
    for (const c of this.conns.values()) if (c !== self && c.joined && c.workerId === workerId) found = c;
    return found;
  }

  /** The connection closed: keep it for the table (and a reconnect), forget the oldest beyond MAX_LOST. */
  lost(conn: Conn): void {
    conn.lostAt = Date.now();
    let lost = 0;
    for (const c of this.conns.values()) if (c.closed) lost++;
    for (const [id, c] of this.conns) {
      if (lost <= MAX_LOST) break;
      if (c.closed) { this.conns.delete(id); lost--; }
    }
  }

  /**
   * Who vouched for each worker's probation shards so far (kind → voucher id → its trust then), for
   * the log. Weakly held: it goes with the worker's record, so strangers who never pass leave nothing.
   */
  private readonly vouchers = new WeakMap<Conn, Partial<Record<TaskKind, Map<number, string>>>>();

  /** Joined workers with an open connection. */
  workers(): Conn[] {
    return [...this.conns.values()].filter((c) => !c.closed && c.joined);
  }

  established(conn: Conn, kind: TaskKind): boolean {
    if (conn.trust === 'established') return true;
    if (conn.trust === 'untrusted') return false;
    // In compressed runs a probation train copy is an fp32 check (scheduler.ts): the worker's own
    // error feedback would make its compressed copy differ from anyone else's.
    return conn.trust[kind] >= this.opts.probation;
  }

  /** Workers whose results a step may use: the established ones only (none: the step waits, and says why). */
  pool(kind: TaskKind): Conn[] {
    return this.workers().filter((c) => this.established(c, kind));
  }

  /**
   * A shadow (or a spot-checked copy) of `conn` agreed with the copy of `by`. The log names who
   * vouched and how far each was trusted then, so that it never claims an established check that
   * did not happen.
   */
  credit(conn: Conn, kind: TaskKind, by: Conn): void {
    if (typeof conn.trust !== 'object') return;
    const k = this.opts.probation;
    conn.trust[kind]++;
    const byKind = this.vouchers.get(conn) ?? {};
    const vouchers = (byKind[kind] ??= new Map<number, string>());
    vouchers.set(by.id, by.trust === 'established' ? (by.vouched ? 'trusted' : 'established') : 'on probation');
    this.vouchers.set(conn, byKind);
    if (conn.trust[kind] === k) {
      delete byKind[kind];
      const who = [...vouchers].map(([id, how]) => `#${id} (${how})`).join(', ');
      this.opts.log(`worker #${conn.id} passed probation for ${kind} shards: ${k} agreed with the copies of ${who}`);
    }
    if (conn.trust.train >= k && conn.trust.eval >= k) conn.trust = 'established';
    this.opts.changed();
  }

  /** A liar: refused for the rest of the run (its identity too), named in the log and the status. */
  punish(conn: Conn, why: string, step: number): void {
    if (conn.trust === 'untrusted') return;
    conn.trust = 'untrusted';
    conn.caught = why;
    this.verdicts.convict(conn.workerId, conn.session, why);
    this.caught.push({ id: conn.id, workerId: conn.workerId, remote: conn.remote, why, step, at: Date.now() });
    if (this.caught.length > 50) this.caught.shift();
    this.opts.log(`worker #${conn.id} (${conn.remote}) caught: ${why}`);
    this.opts.drop(conn, CLOSE.untrusted, why);
  }

  /**
   * `conn` was closed with `code`: an invalid frame counts against its identity, across its
   * reconnections; the INVALID_FRAMES-th makes it a liar for the rest of the run.
   */
  closedFor(conn: Conn, code: number, reason: string, step: number): void {
    if (!conn.joined || conn.local) return;
    const n = this.verdicts.invalid(conn.workerId, code, reason);
    if (n >= INVALID_FRAMES) this.punish(conn, `${n} connections closed for invalid frames (last: ${reason.slice(0, 60)})`, step);
  }

  /** Shadows this worker may still be given: no more out than verdicts it still needs. */
  shadowsLeft(conn: Conn, kind: TaskKind): number {
    if (typeof conn.trust !== 'object') return 0;
    return this.opts.probation - conn.trust[kind] - conn.awaiting[kind];
  }

  /** 'established', 'untrusted', or 'probation' with the verified shards of each kind. */
  trustLabel(c: Conn): string {
    if (typeof c.trust === 'string') return c.trust;
    const k = this.opts.probation;
    return `probation (train ${Math.min(c.trust.train, k)}/${k}, eval ${Math.min(c.trust.eval, k)}/${k})`;
  }

  /** The status table's rows: every joined connection still kept, lost ones included. */
  rows() {
    return [...this.conns.values()].filter((c) => c.joined).map((c) => ({
      id: c.id, workerId: c.workerId, kind: c.kind, backend: c.backend, adapter: c.adapter, remote: c.remote, state: (c.closed ? 'lost' : this.opts.holds(c) ? 'working' : 'idle') as ConnState,
      shardSize: c.shardSize, computeMs: c.computeMs, uploadMs: c.uploadMs, bytesIn: c.bytesIn, bytesOut: c.bytesOut,
      examplesPerSec: c.speed, shardsDone: c.shardsDone, tensors: c.tensors, tensorBytes: c.tensorBytes, resyncs: c.resyncs, drift: c.drift,
      trust: this.trustLabel(c), caught: c.caught || undefined,
      upBytesPerSec: c.upRate, downBytesPerSec: c.downRate, benched: c.benchedByMs !== null, benchedByMs: c.benchedByMs ?? undefined,
    }));
  }
}
