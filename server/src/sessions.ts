// The sessions: each joined worker's messages in and out. A hello joins it (membership.ts) and is
// welcomed; gradient frames are checked and folded as they arrive; a result closes its copy; a
// resync gets the full weights; a close gives back what it held. Idle workers are handed copies
// from the scheduler's queue (dispatch), each assign with the weights it lacks first and a
// deadline timer. `execute` runs a list of tasks through the queue until every one is done.
//
// It never plans a step or applies one: the training step hands it tasks and awaits them.
import {
  CLOSE, CLOSE_NAMES, MSG, ProtocolError, encode,
  type Assign, type Gradient, type Hello, type Message, type Resync, type Result, type RunInfo,
} from '@tabtrain/shared';
import { gather } from './data';
import { plural } from './format';
import { guarded } from './guard';
import type { Conn, Membership } from './membership';
import type { FullCopies } from './full-copies';
import { missedDeadline, timeShard } from './pace';
import type { Replicas } from './replicas';
import { f32, type Scheduler, type Task } from './scheduler';
import type { Step } from './step';
import { codedNormSq, sumSquares } from './verify';
import type { Wire } from './wire';

/** What a session needs of the run around it. */
export interface SessionsHost {
  run: RunInfo;
  log: (line: string) => void;
  /** Assigns carry the replica hash every this many versions (compressed runs). */
  verifyEvery: number;
  fp32: boolean;
  powerSgd: boolean;
  /** The run is closed: nothing is handed out any more. */
  closed: () => boolean;
  /** A worker joined. */
  joined: () => void;
  /** The last worker left. */
  empty: () => void;
  /** Who is connected, or what they do, changed (the 'workers' event). */
  changed: () => void;
  /** A stop was asked: a step nobody is left to finish is given up. */
  stopping: () => boolean;
}

/** Thrown out of a step when the coordinator is closed under it (signal, stop). */
export class RunStopped extends Error { constructor() { super('run stopped'); } }

export class Sessions {
  /** Each working worker's deadline timer. */
  private readonly deadlines = new Map<Conn, NodeJS.Timeout>();
  private tasksDone: (() => void) | null = null;

  constructor(
    private readonly host: SessionsHost,
    private readonly members: Membership,
    private readonly scheduler: Scheduler,
    private readonly model: Step,
    private readonly replicas: Replicas,
    private readonly copies: FullCopies,
    private readonly wire: () => Wire<Conn>,
  ) {}

  /** Runs the tasks through the queue until every one is done; throws RunStopped if the run ends first. */
  async execute(tasks: Task[]): Promise<void> {
    this.scheduler.tasks = tasks;
    const done = new Promise<void>((resolve) => { this.tasksDone = resolve; });
    if (this.members.workers().length === 0) this.host.empty();
    this.dispatch();
    await done;
    this.tasksDone = null;
    // Stopped with shards nobody is left to compute: drop the step unapplied (the weights stay
    // those of the last whole step, which is what a checkpoint then saves).
    if (this.host.closed() || !tasks.every((t) => t.done)) throw new RunStopped();
  }

  /** Tasks are in hand (a step or an evaluation runs). */
  get busy(): boolean { return this.tasksDone !== null; }

  /** Ends the tasks in hand unfinished (the run closes, or stops with nobody left). */
  giveUp(): void {
    this.tasksDone?.();
  }

  /** A stop with no worker left cannot finish the step in hand: give it up. */
  abandonIfStopped(): void {
    if (this.host.stopping() && this.members.workers().length === 0) this.giveUp();
  }

  // ---- a worker's messages ----

  message(conn: Conn, msg: Message, body: Uint8Array): void {
    if (!conn.joined) {
      if (msg.type !== MSG.hello) throw new ProtocolError(CLOSE.unexpected, `${msg.type} before hello`);
      return this.onHello(conn, msg);
    }
    switch (msg.type) {
      case MSG.gradient: return this.onGradient(conn, msg, body);
      case MSG.result: return this.onResult(conn, msg);
      case MSG.status: conn.tensors = msg.tensors; conn.tensorBytes = msg.bytes; conn.drift = msg.drift ?? conn.drift; return;
      case MSG.resync: return this.onResync(conn, msg);
      default: throw new ProtocolError(CLOSE.unexpected, `${msg.type} is not allowed from a joined worker`);
    }
  }

  private onHello(conn: Conn, h: Hello): void {
    const { workerId, how } = this.members.join(conn, h);
    this.copies.joined(conn, h.token);
    this.wire().send(conn, encode({ type: MSG.welcome, workerId, run: this.host.run, session: conn.session }));
    this.host.log(`worker #${conn.id} joined: ${h.kind}/${h.backend.slice(0, 40)} from ${conn.remote} (${how}; ${this.members.workers().length} connected)`);
    this.host.joined();
    this.host.changed();
    this.dispatch();
  }

  /** The run's compression changed (run.compress): every joined worker is welcomed again into it, its identity and secret unchanged. */
  rewelcome(): void {
    for (const conn of this.members.workers()) this.wire().send(conn, encode({ type: MSG.welcome, workerId: conn.workerId, run: this.host.run, session: conn.session }));
  }

  private onGradient(conn: Conn, g: Gradient, body: Uint8Array): void {
    const c = this.scheduler.owned(conn, g.step, g.shard, 'train');
    const round = this.host.powerSgd && !c.fp32Check ? c.task.round : undefined;
    if (g.round !== round) throw new ProtocolError(CLOSE.badGradient, `gradient of round ${g.round ?? 'none'} for a task of ${round ? `round ${round}` : c.fp32Check ? 'an fp32 check' : 'a run without rounds'}`);
    // In order, so `received` counts distinct floats: a repeated slice cannot fake a full gradient.
    if (g.offset !== c.received) throw new ProtocolError(CLOSE.badGradient, `gradient slice at ${g.offset}, expected the next at ${c.received}`);
    // Checked against the run's plan (offset, codec, exact body length); an fp32 check copy of a
    // compressed run, against the fp32 plan.
    const checked = this.model.check(g, body, c.fp32Check);
    const t = c.task;
    // Compressed train frames of trusted workers: a plausible size before they are summed (verify.ts, FrameNorms).
    if (!this.host.fp32 && !c.fp32Check) {
      const s = checked.segment;
      // Round frames are fp32, or fp16 factors (--factors fp16) measured as the fp16 mode's are.
      const normSq = round !== undefined && s.codec === 'fp32' ? sumSquares([f32(checked.body)]) : codedNormSq(s, checked.body);
      const why = normSq === null ? null : this.scheduler.frameNorms.check(round !== undefined ? `round-${round} factor frame ${s.index}` : `${s.codec} segment ${s.index}`, normSq, t.count, conn.vouched);
      if (why && !this.scheduler.suspectFrame(c, `shard ${g.step}/${g.shard}: ${why}`)) return this.members.punish(conn, `shard ${g.step}/${g.shard}: ${why}`, this.model.version);
      if (why) this.model.revoke(t.shard);
    }
    if (c.received === 0) c.firstAt = conn.messageStartedAt;
    c.lastAt = performance.now();
    c.frames.push({ g, body: checked.body });
    if (this.host.fp32 || c.fp32Check) c.normSq += sumSquares([f32(checked.body)]);
    c.received += checked.segment.count;
    // Folded after the bookkeeping: the segment this frame completes is applied and pushed at once
    // (step.ts, replicas.ts), and the push must see this copy as uploading (received > 0). Folded
    // before it, a worker's first segment found received = 0, so it was sent none of the new weights.
    // The copy is the task's in the sum before its frame is folded: a body that folds to NaN/Inf
    // reports its shard at once (badShard), and the culprit must be known then. Marked after, a
    // copy's first frame going bad dropped nobody, its result still counted, and the step threw.
    if (c.streamed) {
      this.scheduler.streamedInto(c);
      this.model.hold(t.shard, checked.segment, checked.body);
    }
  }

  /** The worker's replica differs from ours (hash or version): send it the full weights, once per version. */
  private onResync(conn: Conn, r: Resync): void {
    const version = this.model.version;
    const holding = this.scheduler.copyOf(conn) !== null;
    if (!holding || r.version !== version) throw new ProtocolError(CLOSE.unexpected, `resync for version ${r.version} while ${holding ? `the run is at ${version}` : 'holding no shard'}`);
    if (conn.resyncVersion === r.version) throw new ProtocolError(CLOSE.unexpected, `second resync for version ${r.version}: its replica still differs after a full copy`);
    if (this.copies.take(conn)) throw new ProtocolError(CLOSE.unexpected, `resync for version ${r.version}: ${this.copies.reason(conn.id)}`);
    conn.resyncVersion = r.version;
    conn.resyncs++;
    this.host.log(`worker #${conn.id}: replica differs from version ${r.version}; resending the full weights`);
    this.replicas.resend(conn);
  }

  private onResult(conn: Conn, r: Result): void {
    const c = this.scheduler.owned(conn, r.step, r.shard, r.task);
    const t = c.task;
    if (r.count !== t.count || r.correct > r.count) throw new ProtocolError(CLOSE.badField, `result counts ${r.correct}/${r.count} for a shard of ${t.count}`);
    const floats = c.fp32Check ? this.host.run.paramCount : this.model.copyFloats;
    if (t.kind === 'train' && c.received !== floats) throw new ProtocolError(CLOSE.badGradient, `result after ${c.received} of ${floats} ${this.host.powerSgd ? `round-${t.round} factor` : 'gradient'} floats`);
    if (!Number.isFinite(c.normSq)) throw new ProtocolError(CLOSE.badGradient, `shard ${t.step}/${t.shard}: the gradient has NaN or Inf`);
    this.clearDeadline(conn);
    conn.shardsDone++;
    const lie = t.kind === 'train' && t.round === 1 && !c.fp32Check ? timeShard(conn, c, r) : null;
    if (lie) return this.members.punish(conn, `shard ${t.step}/${t.shard}: ${lie}`, this.model.version);
    this.scheduler.finish(c, r);
    if (this.scheduler.allDone()) this.tasksDone?.();
    this.dispatch();
  }

  /** A shard's gradient decoded to NaN/Inf (found when folded): take it out, redo the shard, drop its sender. */
  badShard(shard: number, why: string): void {
    this.replicas.callOff();
    this.model.revoke(shard);
    const culprit = this.scheduler.spoiled(shard);
    if (culprit) this.wire().drop(culprit, CLOSE.badGradient, `shard ${this.model.version}/${shard}: ${why}`);
    this.dispatch();
  }

  /** A connection closed (by us or by the peer): its unfinished shard goes back to the queue. */
  gone(conn: Conn, code: number, reason: string, byUs: boolean): void {
    const joined = conn.joined;
    const closed = this.host.closed();
    if (joined && !byUs && !closed) this.host.log(`worker #${conn.id} left (${CLOSE_NAMES[code] ?? code}${reason ? `: ${reason.slice(0, 120)}` : ''})`);
    this.clearDeadline(conn);
    if (byUs) this.members.closedFor(conn, code, reason, this.model.version);
    this.scheduler.unpin(conn);
    const { requeued, revoke } = this.scheduler.lose(conn);
    if (revoke) this.model.revoke(revoke.shard);
    if (requeued && !closed) this.host.log(`shard ${requeued.step}/${requeued.shard} (${plural(requeued.count, 'example')}) goes back to the queue`);
    this.members.lost(conn);
    if (!joined || closed) return;
    if (this.scheduler.allDone()) this.tasksDone?.(); // it may have settled a check nobody else can make
    if (this.members.workers().length === 0) this.host.empty();
    this.abandonIfStopped();
    this.host.changed();
    this.dispatch();
  }

  // ---- handing out work ----

  /** Gives each idle worker a copy to compute, weights first if it holds an older version. */
  dispatch(): void {
    if (this.host.closed()) return;
    for (const conn of this.members.workers()) {
      if (this.scheduler.copyOf(conn)) continue;
      const pick = this.scheduler.next(conn, this.model.version);
      if (pick && this.copies.mustWait(conn, this.model.version, this.members.established(conn, pick.task.kind))) this.scheduler.unpin(conn);
      else if (pick) this.assign(conn, pick.task, pick.shadow, pick.check);
    }
  }

  private assign(conn: Conn, t: Task, shadow: boolean, check = false): void {
    const wire = this.wire();
    const copy = this.scheduler.start(conn, t, shadow, check);
    conn.shardSize = t.count;
    const sent0 = conn.bytesOut;
    this.replicas.catchUp(conn);
    const a: Assign = { type: MSG.assign, task: t.kind, step: t.step, shard: t.shard, version: this.model.version, position: t.position, count: t.count };
    const round2 = t.kind === 'train' && t.round === 2;
    if (copy.fp32Check) {
      a.fp32 = true;
    } else if (round2) {
      a.round = 2;
      this.replicas.sendBasis(conn);
    } else {
      const hash = this.model.checkHash(this.host.verifyEvery);
      if (hash) a.hash = hash;
    }
    // Round 2 on the worker that kept the shard's M needs no examples; anyone else recomputes it.
    if (round2 && t.heldBy !== conn.id) this.host.log(`shard ${t.step}/${t.shard} round 2: worker #${conn.id} recomputes its gradient (${t.heldBy === null ? 'the worker of its round 1 is gone' : `round 1 was worker #${t.heldBy}'s`}; that worker's error feedback for it is lost)`);
    wire.send(conn, round2 && t.heldBy === conn.id ? encode(a) : encode(a, gather(t.split, t.indices)));
    Object.assign(copy, { sentAt: performance.now(), sentBytes: conn.bytesOut - sent0 });
    const ms = this.scheduler.deadlineFor(conn, t);
    this.deadlines.set(conn, setTimeout(guarded(this.host.log, `worker #${conn.id} deadline`, () => {
      // Bytes still queued for it mean it never read its shard: a slow reader, not a slow GPU.
      const queued = wire.queued(conn);
      conn.timeouts++;
      if (missedDeadline(conn.timeouts, conn.local) === 'refuse') this.members.punish(conn, `missed ${conn.timeouts} shard deadlines (the last: shard ${t.step}/${t.shard}, ${ms} ms)`, this.model.version);
      else if (queued > 0) wire.drop(conn, CLOSE.slowReader, `${queued} bytes sent to it are still unread after ${ms} ms`);
      else wire.drop(conn, CLOSE.timeout, `shard ${t.step}/${t.shard} not returned within its ${ms} ms deadline`);
    }, () => wire.terminate(conn)), ms));
  }

  private clearDeadline(conn: Conn): void {
    const timer = this.deadlines.get(conn);
    if (timer) clearTimeout(timer);
    this.deadlines.delete(conn);
  }

  /** The run closes: no deadline fires after it, and the tasks in hand end. */
  close(): void {
    for (const timer of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
    this.giveUp();
  }
}
