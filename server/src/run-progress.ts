// What each worker is told of the run it helps (the progress message): where the run stands, the
// loss and accuracy, and this worker's own part: the examples it computed, its share of the last
// steps, and whether it is benched or on probation and why. The worker page shows it.
//
// Why over the worker's own socket and not the dashboard's event stream: a tab already holds the
// socket (also when it joined another coordinator with ?coordinator=, where /api/events is
// another origin), and one ~200-byte frame a step is far smaller than the dashboard's snapshot
// (every step point and the workers table). Only the socket knows which worker the page is, so only
// it can say "your share" and "you are benched because …".
//
// It only listens to the coordinator's events and sends; it decides nothing.
import type { EventEmitter } from 'node:events';
import { MSG, PROGRESS_CURVE_POINTS, PROGRESS_SHARE_STEPS, encode, type Progress } from '@tabtrain/shared';
import { thin } from '@tabtrain/shared/dashboard-wire';
import type { Conn, Membership } from './membership';
import type { EpochMetrics, StepRecord } from './run-options';
import type { Wire } from './wire';

/** Where the run stands, read from the coordinator when a message is made. */
export interface RunPosition { state: string; reason: string; step: number; totalSteps: number; epoch: number; epochs: number }

/** A string the protocol accepts (≤ 200 UTF-8 bytes): cut, with an ellipsis. */
function clip(text: string, bytes = 200): string {
  const enc = new TextEncoder();
  if (enc.encode(text).length <= bytes) return text;
  let s = text.slice(0, bytes);
  while (enc.encode(`${s}…`).length > bytes) s = s.slice(0, -1);
  return `${s}…`;
}

const finite = (x: number | null | undefined): x is number => typeof x === 'number' && Number.isFinite(x);

export class RunProgress {
  /** Train examples each identity computed (a reconnect is the same worker). */
  private readonly examples = new Map<string, number>();
  /** The last PROGRESS_SHARE_STEPS steps: examples per identity, and the step's total. */
  private readonly recent: { by: Map<string, number>; total: number }[] = [];
  /** [step, loss] of the run so far, thinned past PROGRESS_CURVE_POINTS. */
  private readonly curve: [number, number][] = [];
  private last: StepRecord | null = null;
  private testAcc: number | null = null;
  /** Connections already sent a progress (with the curve): later ones carry no curve. */
  private readonly told = new WeakSet<Conn>();

  constructor(private readonly o: {
    members: Membership;
    wire: () => Wire<Conn>;
    events: EventEmitter;
    position: () => RunPosition;
  }) {
    o.events.on('step', (s: StepRecord) => this.onStep(s));
    o.events.on('epoch', (e: EpochMetrics) => { if (finite(e.testAcc)) this.testAcc = e.testAcc; this.tellAll(); });
    o.events.on('state', () => this.tellAll());
    // A worker that has just joined hears where the run stands before its first shard.
    o.events.on('workers', () => this.tellAll(true));
  }

  private onStep(s: StepRecord): void {
    this.last = s;
    const by = new Map<string, number>();
    for (const sh of s.shards) {
      const c = sh.worker === null ? undefined : this.o.members.conns.get(sh.worker);
      if (!c) continue;
      by.set(c.workerId, (by.get(c.workerId) ?? 0) + sh.count);
      this.examples.set(c.workerId, (this.examples.get(c.workerId) ?? 0) + sh.count);
    }
    this.recent.push({ by, total: s.examples });
    if (this.recent.length > PROGRESS_SHARE_STEPS) this.recent.shift();
    if (finite(s.loss)) {
      this.curve.push([s.step, s.loss]);
      if (this.curve.length > PROGRESS_CURVE_POINTS) thin(this.curve);
    }
    this.tellAll();
  }

  /** Sends every joined worker its progress; `newOnly`: only those not told yet. */
  private tellAll(newOnly = false): void {
    const wire = this.o.wire();
    for (const c of this.o.members.conns.values()) {
      if (!c.joined || c.closed || (newOnly && this.told.has(c))) continue;
      wire.send(c, encode(this.message(c)));
      this.told.add(c);
    }
  }

  /** The progress message for one worker. */
  message(c: Conn): Progress {
    const p = this.o.position();
    let mine = 0;
    let total = 0;
    for (const r of this.recent) { mine += r.by.get(c.workerId) ?? 0; total += r.total; }
    const m: Progress = {
      type: MSG.progress, state: p.state, reason: clip(p.reason), step: p.step, totalSteps: p.totalSteps, epoch: p.epoch, epochs: p.epochs,
      examples: this.examples.get(c.workerId) ?? 0, share: total > 0 ? Math.min(1, mine / total) : 0, shareSteps: this.recent.length, ...this.role(c),
    };
    const s = this.last;
    if (s && finite(s.loss) && s.loss >= 0) m.loss = s.loss;
    if (s && finite(s.acc)) m.acc = Math.min(1, Math.max(0, s.acc));
    if (this.testAcc !== null) m.testAcc = this.testAcc;
    if (!this.told.has(c) && this.curve.length > 0) m.curve = this.curve.flat();
    return m;
  }

  private role(c: Conn): Pick<Progress, 'role' | 'why'> {
    if (typeof c.trust === 'object') {
      return { role: 'probation', why: clip(`${this.o.members.trustLabel(c)}: its first shards are also computed by an established worker and compared; until it passes, the run uses that worker's copies`) };
    }
    if (c.benchedByMs !== null) {
      return { role: 'benched', why: clip(`left out of the train shards (--balance cost): adding this worker would lengthen each step by about ${Math.round(c.benchedByMs)} ms; it is measured again now and then`) };
    }
    return { role: 'established', why: '' };
  }
}
