// Why the step in hand waits, said on the terminal, the dashboard and /api/status: no stall
// without a reason. whyWaiting reads the scheduler's tasks and the membership (pure, unit-tested);
// StallWatch looks every WATCH_MS and, when the step is blocked (nobody connected can move it
// on), makes the run's state 'waiting' with the reason and logs it once; when the step has made
// no progress for PATIENCE_MS (a shard in flight, its deadline ahead), it puts the reason beside
// the state quietly (no state change: a slow run's every step would otherwise log two).
import { guarded } from './guard';
import { plural } from './format';
import type { Conn, Membership } from './membership';
import type { Task } from './scheduler';

export interface Wait {
  reason: string;
  /** Nobody connected can move the step on: it waits for someone to join. */
  blocked: boolean;
  /** The coordinator logs this one itself (no workers). */
  logged?: boolean;
  /** A shard taken back from a worker that left or missed its deadline: said at once, not after PATIENCE_MS. */
  retaken?: boolean;
}

/** How often the watch looks: a reason shows within about twice this after the wait begins. */
export const WATCH_MS = 250;
/** A step that made no progress for this long says what it waits for. */
export const PATIENCE_MS = 1000;

const ids = (cs: Conn[]) => cs.slice(0, 4).map((c) => `#${c.id}`).join(', ') + (cs.length > 4 ? ', …' : '');

/** Why the tasks in hand are not all done, or null when nothing is in hand. */
export function whyWaiting(tasks: Task[], members: Membership): Wait | null {
  const open = tasks.filter((t) => !t.done);
  if (!open.length) return null;
  const live = members.workers();
  if (!live.length) return { reason: 'no workers connected', blocked: true, logged: true };
  const { kind, step } = open[0];
  const what = kind === 'train' ? `step ${step + 1}` : `the evaluation at step ${step}`;
  const est = members.pool(kind);
  if (!est.length) {
    return {
      blocked: true,
      reason: `${what} needs an established worker (--local-workers, or one that joined with the token); none is connected. ${plural(live.length, 'worker')} on probation (${ids(live)}): their shards are checked only against an established worker's`,
    };
  }
  for (const t of open) {
    if (t.copies.some((c) => !c.shadow)) continue;
    const takers = est.filter((c) => !t.finished.some((x) => x.owner === c));
    if (takers.length) continue;
    const by = t.finished.map((x) => x.owner);
    return { blocked: true, reason: `${kind} shard ${t.step}/${t.shard} (${t.why}) needs a copy by an established worker other than ${ids(by)}; none is connected` };
  }
  // A powersgd round-2 shard whose round-1 worker (holding its M) is gone is recomputed from its examples.
  const round = (t: Task, by?: Conn) => (t.round !== 2 ? '' : t.heldBy === by?.id ? ' round 2' : live.some((c) => c.id === t.heldBy) ? ' round 2 (its round 1 was another worker\'s)' : ' round 2 (the worker of its round 1 left: recomputed from its examples)');
  // Shards taken back (their worker left or missed its deadline) first: they are what the step waits for.
  const first = <T extends { retaken: boolean }>(xs: T[]) => xs.find((x) => x.retaken) ?? xs[0];
  const queued = open.filter((t) => !t.copies.some((c) => !c.shadow));
  if (queued.length) {
    const t = first(queued);
    return { blocked: false, retaken: t.retaken, reason: `${kind} shard ${t.step}/${t.shard}${round(t)}${queued.length > 1 ? ` and ${plural(queued.length - 1, 'other shard')}` : ''} queued for the next free established worker (${ids(est)})` };
  }
  const busy = open.flatMap((t) => t.copies.filter((c) => !c.shadow));
  const c = busy.find((x) => x.task.retaken) ?? busy[0];
  const t = c.task;
  return { blocked: false, retaken: t.retaken, reason: `waiting for worker #${c.owner.id}'s ${kind} shard ${t.step}/${t.shard}${round(t, c.owner)}${busy.length > 1 ? ` and ${plural(busy.length - 1, 'other shard')}` : ''}; a shard not returned by its deadline goes to another worker` };
}

/** A fingerprint of the step's progress: it changes whenever a copy is handed out or comes in. */
function progress(tasks: Task[]): string {
  let done = 0, copies = 0, finished = 0;
  for (const t of tasks) { if (t.done) done++; copies += t.copies.length; finished += t.finished.length + t.shadows.length; }
  return `${tasks[0]?.kind}:${tasks[0]?.step}:${tasks.length}:${done}:${copies}:${finished}`;
}

type State = 'waiting' | 'running' | 'evaluating' | string;

export interface StallWatchOptions {
  tasks: () => Task[];
  members: Membership;
  state: () => { state: State; reason: string };
  /** Changes the state (and its reason), or with `quiet` only the reason beside the state it has. */
  say: (state: 'waiting' | 'running' | 'evaluating', reason: string, quiet: boolean) => void;
  log: (line: string) => void;
}

export class StallWatch {
  private readonly timer: NodeJS.Timeout;
  private seen = '';
  private since = performance.now();
  /** The reason this watch put in the state, if any (it clears only its own). */
  private shown: string | null = null;
  private logged = '';

  constructor(private readonly o: StallWatchOptions) {
    this.timer = setInterval(guarded(o.log, 'the stall watch', () => this.tick()), WATCH_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  tick(now = performance.now()): void {
    const { state, reason } = this.o.state();
    // Paused, finished, stopped, failed: those states carry their own reason.
    if (state !== 'running' && state !== 'evaluating' && state !== 'waiting') { this.shown = null; return; }
    const tasks = this.o.tasks();
    const open = tasks.filter((t) => !t.done);
    const base = open[0]?.kind === 'eval' ? 'evaluating' : 'running';
    if (!open.length) {
      if (this.shown !== null && reason === this.shown) this.o.say(state === 'waiting' ? 'running' : state, '', state !== 'waiting');
      this.shown = null;
      return;
    }
    const p = progress(tasks);
    if (p !== this.seen) { this.seen = p; this.since = now; }
    const w = whyWaiting(tasks, this.o.members);
    const show = w && (w.blocked || w.retaken || now - this.since >= PATIENCE_MS) ? w : null;
    if (show) {
      // Once per wait: who is on probation may change while it lasts.
      const key = show.reason.replace(/\. [\d,]+ workers? on probation .*/, '');
      if (show.blocked && key !== this.logged) { this.logged = key; if (!show.logged) this.o.log(`waiting: ${show.reason}`); }
      const target = show.blocked ? 'waiting' : base;
      if (state !== target || reason !== show.reason) this.o.say(target, show.reason, state === target);
      this.shown = show.reason;
    } else if (this.shown !== null || state === 'waiting') {
      // Its own reason, or a 'waiting' someone else set (no workers) that no longer holds.
      this.o.say(base, '', state === base);
      this.shown = null;
      this.logged = '';
    }
  }
}
