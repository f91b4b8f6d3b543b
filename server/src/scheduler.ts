// The scheduler: the task queue of one step (or one evaluation) and the verdicts on it.
//
// One task per shard. A task is computed by established workers only: as one copy; as two that
// must agree (a --verify-shards spot check, rolled when a remote worker takes the task, or a
// recomputation of an implausible gradient), with a third when two disagree. A worker on probation
// computes shadow copies, which the step does not wait for and which are judged against an
// established worker's result: workers nobody vouches for never vouch for each other. The
// scheduler decides who computes what next, how long they get, and whose copy counts.
//
// It never touches a socket, a timer or the sum: sending, deadlines and folding belong to the
// coordinator, which calls in here and receives verdicts through the hooks.
import { randomInt } from 'node:crypto';
import { CLOSE, ProtocolError, type Result } from '@tabtrain/shared';
import type { Split } from './data';
import type { Conn, Membership, TaskKind } from './membership';
import type { Copy, Task } from './task';
import { MAX_DEADLINE_MS, deadlineMs } from './pace';
import { FrameNorms, NormMonitor, disagreement, type CopyEvidence } from './verify';
import { DecodedCopies, rampedSpotCheck, suspects, type ReferenceStats } from './reference';

export type { Copy, Task } from './task';

export interface SchedulerOptions {
  fp32: boolean;
  /** --verify-shards F: the spot-check fraction. */
  verifyShards: number;
  probation: number;
  /** Deadline settings (see deadlineFor). */
  deadlineMs?: number;
  minDeadlineMs: number;
  firstDeadlineMs: number;
  newcomerDeadlineMs: number;
  /** Ceiling of every derived deadline (pace.ts; default MAX_DEADLINE_MS); never beyond setTimeout's 2^31 − 1 ms. */
  maxDeadlineMs?: number;
  log: (line: string) => void;
  /** Puts copy c's frames into the sum as shard t.shard (taking out any other copy's first). */
  fold: (t: Task, c: Copy) => void;
  /** A train copy's whole gradient, decoded to floats (null where there is none to compare: powersgd factors). */
  decode?: (c: Copy) => Float32Array | null;
  /** Compressed train copies can be compared, decoded (fp16, int8; not powersgd's factors): spot checks apply to them too. */
  codedCompare?: boolean;
}

export class Scheduler {
  /** The tasks of the step (or evaluation, or powersgd round) in hand. */
  get tasks(): Task[] { return this.current; }
  set tasks(next: Task[]) {
    const old = this.current;
    this.current = next;
    // A finished shadow whose fp32 check never came (nor is on its way) cannot be judged any more: it stops counting.
    for (const t of old) this.judgeShadows(t);
  }
  private current: Task[] = [];
  /** Recent honest shards' gradient norms: the yardstick of the plausibility check. */
  readonly norms = new NormMonitor();
  /** Compressed runs: the same yardstick for each frame, segment by segment (a powersgd round's matrix, an int8 segment). */
  readonly frameNorms = new FrameNorms((line) => this.opts.log(line));
  /** The trusted-reference check (reference.ts) so far: unvouched shards measured, suspected, and the extremes seen. */
  readonly reference: ReferenceStats = { shards: 0, suspected: 0, minCosine: Infinity, maxNormRatio: 0 };
  private readonly coded = new DecodedCopies<Copy>((c) => this.opts.decode?.(c) ?? null);
  /** The copy each worker is computing, and the last shard it returned (a second result is a duplicate). */
  private readonly held = new Map<Conn, Copy>();
  private readonly lastDone = new Map<Conn, { kind: TaskKind; step: number; shard: number }>();

  constructor(private readonly opts: SchedulerOptions, private readonly members: Membership) {}

  /**
   * A task of the step in hand: one copy, by an established worker. Whether it is also spot
   * checked is decided when it is handed out (spotCheck), by the trust of who takes it then.
   */
  newTask(kind: TaskKind, step: number, shard: number, position: number, count: number, indices: Uint32Array, split: Split): Task {
    return {
      kind, step, shard, position, count, indices, split, copies: [], finished: [], shadows: [], shadowed: false, check: null, checking: false, retaken: false, pin: null, round: 1, heldBy: null, want: 1, why: '', rolled: false,
      done: false, result: null, trusted: null, inReducer: null, doneBy: null, doneAt: 0,
    };
  }

  /**
   * A --verify-shards spot check, rolled when a remote established worker takes a task's first
   * copy: by its trust at hand-out, not at the task's making (an evaluation made while a liar was
   * on probation must not go unchecked once it has passed). Workers this coordinator started
   * cannot lie; a second established worker must be there to make the check.
   */
  private spotCheck(t: Task, conn: Conn): void {
    if (t.rolled || conn.local || t.want > 1 || t.copies.some((c) => !c.shadow) || t.finished.length) return;
    t.rolled = true;
    // Train copies can be compared only in fp32 runs (error feedback differs per worker).
    const comparable = t.kind === 'eval' || this.opts.fp32;
    const fraction = this.opts.verifyShards;
    const checker = this.members.pool(t.kind).some((c) => c !== conn);
    if (comparable && checker && fraction > 0 && randomInt(1_000_000) < fraction * 1_000_000) Object.assign(t, { want: 2, why: 'spot check' });
  }

  allDone(): boolean {
    return this.tasks.length > 0 && this.tasks.every((t) => t.done);
  }

  /** The copy `conn` is computing, if any. */
  copyOf(conn: Conn): Copy | null {
    return this.held.get(conn) ?? null;
  }

  /**
   * What `conn` should compute next in step `step`: a copy a task still needs (established
   * workers only; a remote one's first copy of a task rolls its spot check), else, on probation,
   * a shadow of a task of this step. Never two copies of one task on one worker.
   */
  next(conn: Conn, step: number): { task: Task; shadow: boolean; check?: boolean } | null {
    const tasks = this.tasks;
    if (!tasks.length || tasks[0].step !== step) return null;
    const kind = tasks[0].kind;
    const m = this.members;
    const has = (t: Task) => [...t.copies, ...t.finished, ...t.shadows].some((c) => c.owner === conn) || t.check?.owner === conn;
    if (m.established(conn, kind)) {
      // A shard taken back from a worker (a silent newcomer, say) must not go to the next
      // unmeasured one while a measured worker can take it: a step pays one deadline, not a chain.
      const measured = !conn.speed && m.workers().some((c) => c.speed > 0 && c !== conn && m.established(c, kind));
      // A plan's pin names who computes a shard's first copy; a second or third (a spot check, a
      // norm recheck, a disagreement) must come from another worker, so it is anyone's. Pinned
      // for every copy, the step waited for a copy nobody was allowed to take (issue 24).
      // A shard suspected against the vouched workers' reference, or the partner of an unvouched spot-checked copy: a vouched worker's, while one is here.
      const needsVouched = (x: Task) => x.why === 'reference' || (x.why === 'spot check' && [...x.copies, ...x.finished].some((c) => !c.owner.vouched));
      const vouchedFor = (x: Task) => !needsVouched(x) || conn.vouched || !m.workers().some((c) => c.vouched);
      const mine = (x: Task) => (x.pin === null || x.pin === conn.id || x.retaken || x.finished.length > 0 || x.copies.some((c) => !c.shadow)) && vouchedFor(x);
      const t = tasks.find((x) => !x.done && x.copies.filter((c) => !c.shadow).length + x.finished.length < x.want && !has(x) && !(x.retaken && measured) && mine(x));
      if (t) { this.spotCheck(t, conn); return { task: t, shadow: false }; }
      // Compressed runs: a train shard shadowed by a probation worker needs an fp32 copy to be judged
      // by. Any established worker may make it, the one that computed the shard's own copy too:
      // that copy is compressed, so the check is a computation of its own.
      const c = this.needsCheck(kind) ? tasks.find((x) => x.shadowed && !x.check && !x.checking && m.established(conn, kind)) : undefined;
      return c ? { task: c, shadow: false, check: true } : null;
    }
    // No more shadows out than verdicts still needed: a liar cannot run ahead of its probation.
    if (m.shadowsLeft(conn, kind) <= 0) return null;
    // Round 2 of a powersgd step is no shard of its own: probation happens in round 1.
    const t = tasks.find((x) => !x.shadowed && !has(x) && x.round === 1);
    return t ? { task: t, shadow: true } : null;
  }

  /** A newly established worker's shards are spot-checked more (reference.ts, spotCheckRate); in runs whose train copies compare. */
  private newlyTrusted(conn: Conn, t: Task): boolean {
    if (t.kind !== 'train' || t.round !== 1 || !(this.opts.fp32 || this.opts.codedCompare)) return false;
    return rampedSpotCheck(conn, this.members, this.opts.verifyShards, this.opts.probation);
  }

  /** Whether a train shadow in this run is judged by an fp32 check copy (compressed runs) rather than the trusted copy. */
  private needsCheck(kind: TaskKind): boolean {
    return kind === 'train' && !this.opts.fp32;
  }

  /** Records that `conn` computes a copy of t. */
  start(conn: Conn, t: Task, shadow: boolean, check = false): Copy {
    if (!shadow && !check && t.want === 1 && this.newlyTrusted(conn, t)) Object.assign(t, { want: 2, why: 'spot check' });
    const fp32Check = check || (shadow && this.needsCheck(t.kind));
    const streamed = !shadow && !check && t.want === 1 && t.kind === 'train' && !t.inReducer && t.finished.length === 0;
    const c: Copy = { task: t, owner: conn, received: 0, frames: [], streamed, shadow, fp32Check, normSq: 0, firstAt: 0, lastAt: 0, sentAt: 0, sentBytes: 0, result: null };
    if (check) { t.checking = true; this.held.set(conn, c); return c; }
    t.copies.push(c);
    if (shadow) { t.shadowed = true; conn.awaiting[t.kind]++; }
    this.held.set(conn, c);
    return c;
  }

  /** The copy this connection is computing for (step, shard, kind), or a named protocol error. */
  owned(conn: Conn, step: number, shard: number, kind: TaskKind): Copy {
    const c = this.held.get(conn);
    if (c && c.task.step === step && c.task.shard === shard && c.task.kind === kind) return c;
    const last = this.lastDone.get(conn);
    const done = (last && last.step === step && last.shard === shard && last.kind === kind) || this.tasks.some((x) => x.step === step && x.shard === shard && x.kind === kind && x.done);
    if (done) throw new ProtocolError(CLOSE.duplicate, `${kind} shard ${step}/${shard} is already done`);
    throw new ProtocolError(CLOSE.notOwner, `${kind} shard ${step}/${shard} is not assigned to this worker`);
  }

  /** A copy's result arrived (checked by the caller): file it, and decide its task if it can be decided. */
  finish(c: Copy, r: Result): void {
    const t = c.task;
    c.result = r;
    this.held.delete(c.owner);
    this.lastDone.set(c.owner, { kind: t.kind, step: t.step, shard: t.shard });
    t.copies = t.copies.filter((x) => x !== c);
    if (c.fp32Check && !c.shadow) {
      t.check = c;
      t.checking = false;
      this.judgeShadows(t);
    } else if (c.shadow) {
      t.shadows.push(c);
      this.judgeShadows(t);
    } else {
      t.finished.push(c);
      this.decide(t);
    }
  }

  /**
   * `conn` is gone: its copy in hand is dropped (a shadow stops counting against its probation; a
   * task's copy goes back to the queue). Returns the task whose frames the reducer must give back,
   * if its copy was streaming into the sum.
   */
  lose(conn: Conn): { requeued: Task | null; revoke: Task | null } {
    const out = this.drop(conn);
    // A check it was to make (busy or idle) can no longer be made by it: a task whose copies are in
    // and that nobody else can check is settled now, not when someone joins.
    for (const x of this.tasks) if (!x.done && x.finished.length === 1) this.decide(x);
    return out;
  }

  private drop(conn: Conn): { requeued: Task | null; revoke: Task | null } {
    this.lastDone.delete(conn);
    const c = this.held.get(conn);
    if (!c) return { requeued: null, revoke: null };
    this.held.delete(conn);
    const t = c.task;
    if (c.fp32Check && !c.shadow) { t.checking = false; this.judgeShadows(t); return { requeued: null, revoke: null }; }
    t.copies = t.copies.filter((x) => x !== c);
    let revoke: Task | null = null;
    if (t.inReducer === c && !t.done) { t.inReducer = null; revoke = t; }
    if (c.shadow) { conn.awaiting[t.kind]--; return { requeued: null, revoke }; }
    if (t.done) return { requeued: null, revoke };
    t.retaken = true;
    return { requeued: t, revoke };
  }

  /** Whether an established worker without a copy of t is connected (to check or recompute it). */
  private checkable(t: Task): boolean {
    const mine = (c: Conn) => [...t.copies, ...t.finished].some((x) => x.owner === c);
    return this.members.pool(t.kind).some((c) => !mine(c));
  }

  /** The worker a plan gave tasks to is gone before taking them: anyone may. */
  unpin(conn: Conn): void {
    for (const t of this.tasks) if (t.pin === conn.id) t.pin = null;
  }

  /**
   * fp16/int8: a frame of copy c is implausible by the norm window (FrameNorms). Not condemned on the
   * norm alone (a gradient may grow): its shard is recomputed by a vouched worker, and the copies'
   * verdict decides. True: the caller takes the shard out of the sum. False (no vouched worker here,
   * or powersgd, whose factors do not compare): the caller punishes, as before.
   */
  /** A streamed copy's segment went into the step's sum: the copy is the task's in the sum from now on (revoked if it is lost). */
  streamedInto(c: Copy): void {
    c.task.inReducer = c;
  }

  suspectFrame(c: Copy, why: string): boolean {
    const t = c.task;
    if (!this.opts.codedCompare || c.shadow || c.fp32Check || t.kind !== 'train' || !this.members.workers().some((x) => x.vouched && x !== c.owner)) return false;
    if (t.suspicion) return true;
    this.opts.log(`${why} (worker #${c.owner.id}); recomputing the shard on a vouched worker before it counts`);
    c.streamed = false;
    if (t.inReducer === c) t.inReducer = null;
    Object.assign(t, { want: Math.max(2, t.want), why: 'reference', suspicion: why });
    return true;
  }

  /** A streamed copy's gradient turned out non-finite when folded: it no longer counts. Returns its owner. */
  spoiled(shard: number): Conn | null {
    const t = this.tasks.find((x) => x.kind === 'train' && x.shard === shard);
    if (!t) return null;
    const culprit = t.inReducer;
    t.inReducer = null;
    if (!culprit) return null;
    t.finished = t.finished.filter((x) => x !== culprit);
    if (t.trusted === culprit) Object.assign(t, { done: false, result: null, trusted: null, doneBy: null });
    return culprit.owner;
  }

  /** What comparing a copy needs: its result and, in fp32 runs, its gradient. */
  private evidence(c: Copy): CopyEvidence {
    return { result: c.result!, gradient: c.task.kind === 'train' && (this.opts.fp32 || c.fp32Check) ? c.frames.map((f) => f32(f.body)) : undefined };
  }

  /** Why two copies disagree: disagreement(); two compressed train copies (error feedback differs) decoded, by direction and length. */
  private compare(a: Copy, b: Copy): string | null {
    const d = disagreement(this.evidence(a), this.evidence(b));
    return d || this.opts.fp32 || a.task.kind !== 'train' || a.fp32Check || b.fp32Check ? d : this.coded.disagreement(a, b);
  }

  /**
   * A task's verdict: two copies that agree make the result (a third is asked for when two
   * disagree); a copy outside the agreeing pair came from a liar.
   */
  private decide(t: Task): void {
    if (t.done) return;
    const fin = t.finished;
    // Nobody else can check it (the checker left, a lone established worker): a spot check goes on
    // without it; an implausible gradient only when a worker started here computed it (it cannot lie).
    const alone = fin.length === 1 && !t.copies.some((c) => !c.shadow) && !this.checkable(t) && ((t.why !== 'norm' && t.why !== 'reference') || fin[0].owner.local);
    // A spot check exists for a remote worker's copy; once that copy is gone (its worker left, or
    // was closed), only copies of workers this coordinator started remain, and they cannot lie.
    // Waiting on for a second copy held the step until someone else could take work (a reconnected
    // worker waiting for its full copy of the weights held it for a minute).
    const checksNothing = t.why === 'spot check' && fin.length > 0 && fin.every((c) => c.owner.local) && !t.copies.some((c) => !c.shadow);
    if (t.want === 1 || alone || checksNothing) {
      if (t.want > 1 && !checksNothing) this.opts.log(`shard ${t.step}/${t.shard}: no other established worker connected to ${t.why === 'norm' ? 'recompute' : 'check'} it (${t.why}); used unverified`);
      return this.complete(t, fin[0], []);
    }
    if (fin.length < 2) return;
    let agreeing: Copy[] = [];
    const why = new Map<Copy, string>();
    for (const a of fin) {
      const group = fin.filter((b) => {
        if (a === b) return true;
        const d = this.compare(a, b);
        if (d) why.set(b, d);
        return d === null;
      });
      if (group.length > agreeing.length) agreeing = group;
    }
    if (agreeing.length >= 2) {
      const liars = fin.filter((x) => !agreeing.includes(x));
      return this.complete(t, agreeing[0], liars.map((x) => [x, why.get(x) ?? 'disagrees with the majority']));
    }
    // The operator vouches for one of two copies that disagree and not for the other: its copy is the truth.
    const vouched = fin.filter((x) => x.owner.vouched);
    if (fin.length === 2 && vouched.length === 1) {
      const liar = fin.find((x) => !x.owner.vouched)!;
      return this.complete(t, vouched[0], [[liar, `recomputed by vouched worker #${vouched[0].owner.id}: ${this.compare(liar, vouched[0])}`]], t.suspicion);
    }
    if (fin.length === 2) {
      t.want = 3;
      this.opts.log(`shard ${t.step}/${t.shard}: two copies disagree (${this.compare(fin[0], fin[1])}); asking a third worker`);
      return;
    }
    // Three copies, no two alike: nobody's result is believed; those not established are dropped.
    this.opts.log(`shard ${t.step}/${t.shard}: three copies all disagree; computing it again`);
    for (const x of fin) if (x.owner.trust !== 'established') this.members.punish(x.owner, `shard ${t.step}/${t.shard}: no two of three copies agreed`, t.step);
    t.finished = [];
    t.want = 2;
  }

  /** `c`'s result counts for task t: fold it (if it is not in the sum already), credit the agreeing, punish the liars. */
  private complete(t: Task, c: Copy, liars: [Copy, string][], suspicion?: string): void {
    if (t.kind === 'train' && t.inReducer !== c) {
      this.opts.fold(t, c);
      t.inReducer = c;
    }
    Object.assign(t, { done: true, result: c.result, trusted: c, doneBy: c.owner.id, doneAt: performance.now() });
    if (t.finished.length > 1) {
      const agreed = t.finished.filter((x) => !liars.some(([l]) => l === x));
      for (const x of agreed) this.members.credit(x.owner, t.kind, (agreed.find((y) => y !== x) ?? c).owner);
    }
    for (const [x, why] of liars) this.members.punish(x.owner, `${suspicion ?? `${t.kind} shard ${t.step}/${t.shard} (${t.why})`}: ${why}`, t.step);
    if (t.shadows.length) this.judgeShadows(t);
  }

  /**
   * Compares the probation copies of a task with the copy they are judged by: its trusted result,
   * or in a compressed run's train shard the fp32 check copy. Waits while that is not in yet.
   */
  private judgeShadows(t: Task): void {
    const by = this.needsCheck(t.kind) ? t.check : t.trusted;
    if (!by) {
      if (this.current.includes(t) || t.checking) return; // its check may still come
      for (const s of t.shadows.splice(0)) s.owner.awaiting[t.kind]--;
      return;
    }
    for (const s of t.shadows.splice(0)) {
      s.owner.awaiting[t.kind]--;
      const why = disagreement(this.evidence(s), this.evidence(by));
      if (why) this.members.punish(s.owner, `probation ${t.kind} shard ${t.step}/${t.shard}: ${why}`, t.step);
      else this.members.credit(s.owner, t.kind, by.owner);
    }
  }

  /**
   * Train tasks whose accepted gradient is implausible (fp32 runs; a task already recomputed for
   * it is exempt), made verified tasks again: their copy waits for a second worker's to agree.
   * Returns them, with why; the caller takes them out of the sum and runs the queue again.
   */
  recheckImplausible(tasks: Task[]): [Task, string][] {
    const out: [Task, string][] = [];
    const recheck = (t: Task) => t.why !== 'norm' && t.why !== 'reference' && t.kind === 'train';
    if (this.opts.fp32) {
      for (const t of tasks) {
        if (!recheck(t)) continue;
        const why = this.norms.check(t.trusted!.normSq, t.count);
        if (why && this.members.pool('train').length >= 2) out.push([t, why]);
      }
    }
    for (const [t] of out) Object.assign(t, { done: false, result: null, inReducer: null, finished: [t.trusted!], trusted: null, want: 2, why: 'norm' });
    // A copy checked against another already (a spot check) needs no reference.
    const suspect = this.againstReference(tasks.filter((t) => t.done && t.kind === 'train'), (t) => recheck(t) && t.want === 1);
    for (const [t] of suspect) Object.assign(t, { done: false, result: null, inReducer: null, finished: [t.trusted!], trusted: null, want: 2, why: 'reference' });
    return [...out, ...suspect];
  }

  /** The trusted reference (reference.ts): unvouched shards that point away from the vouched ones' sum, or are too long, with why. */
  private againstReference(tasks: Task[], candidate: (t: Task) => boolean): [Task, string][] {
    if (!this.members.workers().some((c) => c.vouched)) return [];
    const shards = tasks.map((t) => ({ t, count: t.count, vouched: t.trusted!.owner.vouched, gradient: () => this.opts.decode?.(t.trusted!) ?? null }));
    return suspects(shards, (s) => candidate(s.t), this.reference).map(([s, why]) => [s.t, why]);
  }

  /** How long `conn` may take over t (pace.ts): from the coordinator's measurements, never the worker's word; within [1 ms, maxDeadlineMs]. */
  deadlineFor(conn: Conn, t: Task): number {
    const o = this.opts;
    const settings = { fixedMs: o.deadlineMs, minMs: o.minDeadlineMs, firstMs: o.firstDeadlineMs, newcomerMs: o.newcomerDeadlineMs, maxMs: o.maxDeadlineMs ?? MAX_DEADLINE_MS };
    return deadlineMs(settings, t.count, conn.speed, this.members.workers().map((c) => c.speed), conn.timeouts);
  }
}

/** A fp32 view of an aligned body (bodies are aligned by the reducer's check). */
export function f32(body: Uint8Array): Float32Array {
  return new Float32Array(body.buffer, body.byteOffset, body.byteLength >> 2);
}
