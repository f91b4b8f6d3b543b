// The replicas: which version of the weights each worker holds (conn.version) and whose powersgd
// round-1 broadcast it has (conn.basis), and what it is sent next. The only writer of both.
//
// A worker is brought to the current version before its assign (catchUp: nothing, the update,
// or the full weights; step.ts framesFor). While a step runs, the next version goes out as it is
// made: a pipelined fp32 step's weights segment by segment (push), a powersgd round's broadcast
// matrix by matrix (pushRound), each frame in order to every worker that is reading and got the
// frames before it. When the step is applied, whoever got all of it holds the new version
// (settle); a pipeline called off leaves the partly-sent workers needing the whole weights.
import { EventEmitter } from 'node:events';
import type { Conn, Membership } from './membership';
import type { Scheduler } from './scheduler';
import type { Step } from './step';
import type { Wire } from './wire';

export class Replicas {
  /** A pipelined step: the workers being sent the next version segment by segment, and how many segments each got. */
  private readonly pushed = new Map<Conn, number>();
  /** powersgd: the workers being sent the round in hand's broadcast as it is made, and how many of its frames each got. */
  private readonly roundPushed = new Map<Conn, number>();
  /** Frames of the next version sent to some worker while a shard was still arriving, this step. */
  earlySegments = 0;

  constructor(
    private readonly model: Step,
    private readonly wire: () => Wire<Conn>,
    private readonly members: Membership,
    private readonly scheduler: Scheduler,
    private readonly events: EventEmitter,
  ) {
    model.onStaged = (frame, index) => this.push(frame, index);
    model.onRoundStaged = (frame, round, index) => this.pushRound(frame, round, index);
  }

  /** A new step: nothing of its broadcast is out yet. */
  begin(): void {
    this.roundPushed.clear();
    this.earlySegments = 0;
  }

  /** Sends a worker what it lacks of the current version (before its assign); it holds it from then on. */
  catchUp(conn: Conn): void {
    // Sent part of the next version while it uploaded a copy of this step, it no longer holds this
    // one whole: a second copy of the same step needs the current weights whole. (Found by the
    // in-process byzantine runs: a newcomer's probation copy then asked to resync, closed 4015.)
    if (this.pushed.get(conn)) { this.pushed.delete(conn); conn.version = -1; }
    for (const f of this.model.framesFor(conn.version, conn.basis)) this.wire().send(conn, f);
    conn.version = this.model.version;
  }

  /**
   * The run changed its compression between steps (Step.switchTo). Out of powersgd every worker
   * needs the full weights again (its whole weights live in its exact copy's thread, and the
   * coordinator cannot know them to be current); out of fp32, fp16 or int8 it keeps the version it
   * holds, as the worker keeps its replica (core.ts, a second welcome). No round is held any more.
   */
  restart(fromPowerSgd: boolean): void {
    for (const conn of this.members.workers()) {
      if (fromPowerSgd) conn.version = -1;
      conn.basis = -1;
    }
    this.pushed.clear();
    this.roundPushed.clear();
  }

  /** powersgd round 2: the worker needs this step's P̂ (the round-1 broadcast) unless it has it. */
  sendBasis(conn: Conn): void {
    if (conn.basis !== this.model.version + 1) for (const f of this.model.basisFrames) this.wire().send(conn, f);
    conn.basis = this.model.version + 1;
  }

  /** The worker's replica differs from ours: the full weights (powersgd: with the last ΣQ, and during round 2 this step's P̂). */
  resend(conn: Conn): void {
    const frames = this.model.framesFor(-1);
    if (this.model.round === 2) frames.push(...this.model.basisFrames);
    for (const f of frames) this.wire().send(conn, f);
    if (this.model.round === 2) conn.basis = this.model.version + 1;
  }

  /**
   * powersgd, round 1 summed: the rest of P̂ (most of it went out as it was made) to every worker
   * holding the current weights and not benched.
   */
  endRound1(frames: Uint8Array[]): void {
    for (const conn of this.members.workers()) {
      if (conn.version !== this.model.version || conn.benchedByMs !== null) continue;
      for (const f of frames.slice(this.roundPushed.get(conn) ?? 0)) this.wire().send(conn, f);
      conn.basis = this.model.version + 1;
    }
    this.roundPushed.clear();
  }

  /** The step is applied: who got every segment of it (a powersgd run: all of ΣQ_i, which the worker applies) holds the new version. */
  settle(): void {
    const version = this.model.version;
    for (const [conn, n] of this.pushed) if (n === this.model.segments && !conn.closed) conn.version = version;
    this.pushed.clear();
    for (const [conn, n] of this.roundPushed) if (n === this.model.updateFrameCount && conn.basis === version && !conn.closed) conn.version = version;
    this.roundPushed.clear();
  }

  /** The pipeline is called off: a worker that got part of the next version must be sent the current one whole. */
  callOff(): void {
    if (this.model.callOff()) for (const conn of this.pushed.keys()) conn.version = -1;
    this.pushed.clear();
  }

  /**
   * Sends segment `index` of the next version to every worker that holds the current one and is
   * reading. One that missed a segment gets the whole weights at its next assign.
   */
  private push(frame: Uint8Array, index: number): void {
    this.events.emit('segment', index);
    this.sendInOrder(this.pushed, frame, index);
  }

  /**
   * powersgd: frame `index` of round `round`'s broadcast goes to every reading worker of the step
   * that has the frames before it: round 1's to those holding the current weights, round 2's to
   * those that also have this step's P̂. The rest get the whole broadcast later (endRound1,
   * framesFor), from its first frame, which restarts a partial one.
   */
  private pushRound(frame: Uint8Array, round: 1 | 2, index: number): void {
    this.sendInOrder(this.roundPushed, frame, index, (conn) => round === 1 || conn.basis === this.model.version + 1);
  }

  /** Frame `index` to every reading worker at the current version that got the frames before it (`sent` counts them) and that `also` admits. */
  private sendInOrder(sent: Map<Conn, number>, frame: Uint8Array, index: number, also: (conn: Conn) => boolean = () => true): void {
    const early = !this.scheduler.allDone();
    let any = false;
    for (const conn of this.members.workers()) {
      // A benched worker is not sent every step's weights: that would cost the link benching saves.
      if ((sent.get(conn) ?? 0) !== index || conn.version !== this.model.version || conn.benchedByMs !== null || !this.reading(conn) || !also(conn)) continue;
      this.wire().send(conn, frame);
      sent.set(conn, index + 1);
      any = true;
    }
    // Counted where it went to a worker, not where it was only made: a segment no one was sent is no overlap.
    if (early && any) this.earlySegments++;
  }

  /** A worker that reads what it is sent now: idle, or uploading its shard (one still computing may not read for seconds, and would look like a slow reader). */
  private reading(conn: Conn): boolean {
    const copy = this.scheduler.copyOf(conn);
    return copy === null || copy.received > 0;
  }
}
