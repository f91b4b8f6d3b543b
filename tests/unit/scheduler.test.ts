// The scheduler and membership without sockets: who computes which copy, probation shadows and
// their verdicts, cross-checks, deadlines. The connection records are membership's own; the
// scheduler never uses their socket, so none is opened.
import { describe, expect, it } from 'vitest';
import { CLOSE, PROTOCOL_VERSION, zooHashes, getModel, modelHash, paramLayout, type Result, type RunInfo } from '@tabtrain/shared';
import { Membership, type Conn } from '../../server/src/membership';
import { Scheduler, type Task } from '../../server/src/scheduler';
import { whyWaiting } from '../../server/src/waiting';
import type { Split } from '../../server/src/data';
import { newPeer } from '../../server/src/wire';

const spec = getModel('alexnet-tiny');
const run: RunInfo = { model: spec.name, modelHash: modelHash(spec), seed: 1, batch: 8, lr: 0.1, paramCount: paramLayout(spec).total };
const split: Split = { images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 };
const DEADLINES = { minDeadlineMs: 120_000, firstDeadlineMs: 120_000, newcomerDeadlineMs: 10_000 };
const TOKEN = 'the-run-token';

function setup(probation = 3, fp32 = true, o: { verifyShards?: number; open?: boolean } = {}) {
  const dropped: [number, number, string][] = [];
  const members: Membership = new Membership({ run, probation, open: o.open ?? true, token: TOKEN, log: () => {}, drop: (c, code, why) => { dropped.push([c.id, code, why]); c.closed = true; }, changed: () => {}, holds: (c): boolean => scheduler.copyOf(c) !== null });
  const folded: [number, number][] = [];
  const scheduler = new Scheduler({ fp32, verifyShards: o.verifyShards ?? 0, probation, ...DEADLINES, log: () => {}, fold: (t, c) => folded.push([t.shard, c.owner.id]) }, members);
  let id = 0;
  const open = () => members.open(newPeer(++id, 'test'));
  /** A hello on a new connection; throws what join throws. */
  const hello = (over: Record<string, unknown> = {}): Conn => {
    const c = open();
    members.join(c, { type: 'hello', protocol: PROTOCOL_VERSION, workerId: `w${c.id}`, kind: 'node', backend: 'test', adapter: null, modelHashes: zooHashes(), ...over });
    return c;
  };
  const join = (opts: { token?: boolean } = {}): Conn => hello(opts.token ? { token: TOKEN } : {});
  const evalTasks = (step: number, n: number): Task[] => Array.from({ length: n }, (_, k) => scheduler.newTask('eval', step, k, k * 4, 4, new Uint32Array(4), split));
  const result = (t: Task, correct: number): Result => ({ type: 'result', task: t.kind, step: t.step, shard: t.shard, lossSum: 1, correct, count: t.count, timings: { computeMs: 1, encodeMs: 0, sendMs: 0 } });
  /** `conn` takes its next copy and returns `correct` for it. */
  const compute = (conn: Conn, step: number, correct: number) => {
    const pick = scheduler.next(conn, step);
    if (!pick) return null;
    const copy = scheduler.start(conn, pick.task, pick.shadow);
    scheduler.finish(copy, result(pick.task, correct));
    return pick;
  };
  const trainTasks = (step: number, n: number): Task[] => Array.from({ length: n }, (_, k) => scheduler.newTask('train', step, k, k * 4, 4, new Uint32Array(4), split));
  return { members, scheduler, dropped, folded, join, hello, evalTasks, trainTasks, compute };
}

/** Gives a copy a one-frame fp32 gradient (what the coordinator's onGradient keeps) and finishes it. */
function finishWith(scheduler: Scheduler, copy: ReturnType<Scheduler['start']>, grad: number[]): void {
  const body = new Uint8Array(new Float32Array(grad).buffer);
  copy.frames.push({ g: { type: 'gradient', step: copy.task.step, shard: copy.task.shard, offset: 0, total: grad.length }, body });
  copy.received = grad.length;
  scheduler.finish(copy, resultOf(copy.task));
}

describe('scheduler', () => {
  it('strangers never vouch for each other: with nobody established they compute shadows only, the step waits and says why; an established worker\'s results judge them', () => {
    const { members, scheduler, dropped, join, evalTasks, compute } = setup(2);
    const a = join(), b = join();
    scheduler.tasks = evalTasks(0, 4);
    expect(scheduler.tasks.every((t) => t.want === 1)).toBe(true);
    // Two colluders agree on a forged 4 of 4: that makes nothing done and nobody trusted.
    for (let i = 0; i < 2; i++) { expect(compute(a, 0, 4)!.shadow).toBe(true); expect(compute(b, 0, 4)!.shadow).toBe(true); }
    expect(compute(a, 0, 4)).toBeNull(); // no more shadows than verdicts it still needs
    expect(scheduler.allDone()).toBe(false);
    expect([a.trust, b.trust]).toEqual([{ train: 0, eval: 0 }, { train: 0, eval: 0 }]);
    expect(members.pool('eval')).toEqual([]);
    const w = whyWaiting(scheduler.tasks, members)!;
    expect(w.blocked).toBe(true);
    expect(w.reason).toMatch(/^the evaluation at step 0 needs an established worker .*; none is connected\. 2 workers on probation \(#1, #2\)/);
    // The operator's worker (the token) computes the shards: honest 1 of 4; both colluders are caught.
    const est = join({ token: true });
    expect(est.trust).toBe('established');
    for (let i = 0; i < 4; i++) expect(compute(est, 0, 1)!.shadow).toBe(false);
    expect(scheduler.allDone()).toBe(true);
    expect([a.trust, b.trust]).toEqual(['untrusted', 'untrusted']);
    expect(dropped.map(([id, code]) => [id, code])).toEqual([[a.id, CLOSE.untrusted], [b.id, CLOSE.untrusted]]);
  });

  it('without --open a stranger is refused (4005, with the fix); a wrong token always; the token and the local key are trusted', () => {
    const { hello } = setup(2, true, { open: false });
    expect(() => hello()).toThrow(/missing token: join at the address serve printed \(\?token=, or worker --token T\); or the operator runs serve --open/);
    try { hello(); } catch (e) { expect((e as { code: number }).code).toBe(CLOSE.unauthorized); }
    expect(() => hello({ token: 'guess' })).toThrow(/wrong token/);
    expect(hello({ token: TOKEN }).trust).toBe('established');
    const open = setup(2, true, { open: true });
    expect(open.hello().trust).toEqual({ train: 0, eval: 0 });
    expect(() => open.hello({ token: 'guess' })).toThrow(/wrong token/);
  });

  it('a caught liar stays refused for the run, however many connections come and go; three invalid frames from one identity make a liar', () => {
    const { members, hello } = setup(2);
    const liar = hello({ workerId: 'liar' });
    members.punish(liar, 'forged', 0);
    const session = liar.session;
    // 200 short connections: the status table keeps the last 64 lost ones.
    for (let i = 0; i < 200; i++) { const c = hello({ workerId: `churn-${i}` }); c.closed = true; members.lost(c); }
    expect(members.rows().some((r) => r.workerId === 'liar')).toBe(false);
    expect(() => hello({ workerId: 'liar', session })).toThrow(/rejected earlier in this run: forged/);
    // Its id without its secret is a new identity, on probation.
    expect(hello({ workerId: 'liar' }).workerId).toMatch(/^liar~[0-9a-f]{8}$/);
    // Invalid frames: each closes a connection; the identity rejoins with its secret and keeps its trust, twice.
    let c = hello({ workerId: 'sloppy', token: TOKEN });
    for (let i = 1; i <= 3; i++) {
      c.closed = true;
      members.closedFor(c, CLOSE.badGradient, 'int8 scale < 0', 5);
      members.lost(c);
      if (i < 3) { c = hello({ workerId: 'sloppy', session: c.session, token: TOKEN }); expect(c.trust).toBe('established'); }
    }
    expect(c.trust).toBe('untrusted');
    expect(members.caught.at(-1)!.why).toMatch(/3 connections closed for invalid frames \(last: int8 scale < 0\)/);
    expect(() => hello({ workerId: 'sloppy', session: c.session, token: TOKEN })).toThrow(/rejected earlier/);
    // Closes that prove nothing (a deadline, a slow link, a flood, our own internal error) do not count.
    const d = hello({ workerId: 'slow' });
    for (const [code, why] of [[CLOSE.timeout, 'deadline'], [CLOSE.slowReader, 'unread'], [CLOSE.flood, 'flood'], [CLOSE.malformed, 'internal: bug']] as const) members.closedFor(d, code, why, 1);
    expect(d.trust).not.toBe('untrusted');
  });

  it('a spot check is rolled when a remote worker takes a task, by its trust then, not when the task was made', () => {
    const { members, scheduler, join, evalTasks } = setup(1, true, { verifyShards: 1 });
    const local = join({ token: true });
    local.local = true;
    const newcomer = join();
    // The evaluation is made while the newcomer is on probation: nobody remote is established.
    scheduler.tasks = evalTasks(0, 3);
    const sh = scheduler.next(newcomer, 0)!;
    expect(sh.shadow).toBe(true);
    scheduler.finish(scheduler.start(newcomer, sh.task, true), resultOf(sh.task));
    const first = scheduler.next(local, 0)!;
    expect(first.task.want).toBe(1); // a worker started here cannot lie
    scheduler.finish(scheduler.start(local, first.task, false), resultOf(first.task));
    expect(members.established(newcomer, 'eval')).toBe(true);
    // Established now: its first copy of a task made before is checked.
    const p = scheduler.next(newcomer, 0)!;
    expect([p.shadow, p.task.want, p.task.why]).toEqual([false, 2, 'spot check']);
  });

  it('a check that can no longer be made does not stall the step: the checker leaving (busy or idle) settles it at once', () => {
    const { scheduler, join, evalTasks, compute } = setup(0, true, { verifyShards: 1 });
    const a = join({ token: true }), b = join({ token: true });
    scheduler.tasks = evalTasks(0, 2);
    const [t0, t1] = scheduler.tasks;
    // t0: a computes it (spot checked), b takes the check and leaves with it.
    compute(a, 0, 2);
    expect([t0.want, t0.done]).toEqual([2, false]);
    const pb = scheduler.next(b, 0)!;
    expect(pb.task).toBe(t0);
    scheduler.start(b, t0, false);
    // t1: a computes it too; its check is not yet handed out.
    compute(a, 0, 2);
    expect([t1.want, t1.done]).toEqual([2, false]);
    b.closed = true;
    scheduler.lose(b);
    expect([t0.done, t1.done]).toEqual([true, true]);
    expect(scheduler.allDone()).toBe(true);
  });

  it('a probation worker gets shadows only, no more than its probation, and a disagreeing one is closed untrusted', () => {
    const { members, scheduler, dropped, join, evalTasks, compute } = setup(2);
    const est = join({ token: true });
    const newcomer = join();
    scheduler.tasks = evalTasks(0, 4);
    // The shadows wait for the established worker's verdicts: at most 2 handed out.
    const s1 = scheduler.next(newcomer, 0)!;
    expect(s1.shadow).toBe(true);
    scheduler.finish(scheduler.start(newcomer, s1.task, true), { ...resultOf(s1.task), correct: 4 });
    const s2 = scheduler.next(newcomer, 0)!;
    scheduler.finish(scheduler.start(newcomer, s2.task, true), { ...resultOf(s2.task), correct: 4 });
    expect(scheduler.next(newcomer, 0)).toBeNull();
    expect(scheduler.allDone()).toBe(false); // the step never waits on shadows, nor counts them
    // The established worker's honest results (1 correct of 4) disagree with the forged 4 of 4.
    for (let i = 0; i < 4; i++) compute(est, 0, 1);
    expect(scheduler.allDone()).toBe(true);
    expect(newcomer.trust).toBe('untrusted');
    expect(dropped).toEqual([[newcomer.id, CLOSE.untrusted, expect.stringContaining('probation eval shard 0/')]]);
    expect(members.caught.map((c) => c.id)).toEqual([newcomer.id]);
  });

  it('compressed runs: a probation train shadow is an fp32 check, judged against an established fp32 check copy, never the compressed one', () => {
    const { scheduler, dropped, join, trainTasks } = setup(2, false);
    const est = join({ token: true }), honest = join(), liar = join();
    scheduler.tasks = trainTasks(0, 2);
    const sh = scheduler.next(honest, 0)!;
    const ch = scheduler.start(honest, sh.task, true);
    const sl = scheduler.next(liar, 0)!;
    const cl = scheduler.start(liar, sl.task, true);
    expect([sh.shadow, sl.shadow, sh.task.shard, sl.task.shard]).toEqual([true, true, 0, 1]);
    expect([ch.fp32Check, cl.fp32Check, ch.streamed]).toEqual([true, true, false]);
    finishWith(scheduler, ch, [1, 2, 3]);
    finishWith(scheduler, cl, [1000, 2000, 3000]);
    // The established worker's own (compressed) copies make the step; they judge nobody.
    for (let i = 0; i < 2; i++) { const p = scheduler.next(est, 0)!; expect(p.check).toBeUndefined(); scheduler.finish(scheduler.start(est, p.task, false), resultOf(p.task)); }
    expect(scheduler.allDone()).toBe(true);
    expect([honest.trust, liar.trust]).toEqual([{ train: 0, eval: 0 }, { train: 0, eval: 0 }]);
    // Then it is asked for fp32 check copies of the shadowed shards, which decide.
    for (let i = 0; i < 2; i++) {
      const p = scheduler.next(est, 0)!;
      expect(p.check).toBe(true);
      const c = scheduler.start(est, p.task, false, true);
      expect(c.fp32Check).toBe(true);
      finishWith(scheduler, c, [1, 2, 3]);
    }
    expect(scheduler.next(est, 0)).toBeNull();
    expect(honest.trust).toEqual({ train: 1, eval: 0 });
    expect(liar.trust).toBe('untrusted');
    expect(dropped).toEqual([[liar.id, CLOSE.untrusted, expect.stringMatching(/probation train shard 0\/1: gradients differ/)]]);
  });

  it('compressed runs: a shadow whose check never came stops counting once its step is over', () => {
    const { scheduler, join, trainTasks } = setup(1, false);
    join({ token: true });
    const newcomer = join();
    scheduler.tasks = trainTasks(0, 1);
    const s = scheduler.next(newcomer, 0)!;
    finishWith(scheduler, scheduler.start(newcomer, s.task, true), [1, 2]);
    expect(scheduler.next(newcomer, 0)).toBeNull(); // its one shadow is awaiting a verdict
    scheduler.tasks = trainTasks(1, 1); // the next step (or round): no check copy is out for the old one
    expect(newcomer.trust).toEqual({ train: 0, eval: 0 }); // neither credited nor punished
    expect(scheduler.next(newcomer, 1)?.shadow).toBe(true); // and it may try again
  });

  it('a shard taken back goes to a measured worker, not to the next newcomer; deadlines follow the fleet', () => {
    const { scheduler, join, evalTasks } = setup(0);
    const fast = join(), silent = join(), fresh = join();
    fast.speed = 100;
    scheduler.tasks = evalTasks(0, 1);
    const t = scheduler.tasks[0];
    expect(scheduler.deadlineFor(silent, t)).toBe(10_000); // 5 × 4 examples at the median's 100/s = 200 ms, floor 10 s
    scheduler.start(silent, t, false);
    expect(scheduler.lose(silent).requeued).toBe(t);
    silent.timeouts = 1;
    expect(scheduler.deadlineFor(silent, t)).toBe(20_000); // doubled per missed deadline
    expect(scheduler.next(fresh, 0)).toBeNull();
    expect(scheduler.next(fast, 0)!.task).toBe(t);
    fast.speed = 0;
    expect(scheduler.deadlineFor(fresh, t)).toBe(120_000); // nobody measured yet: the first deadline
  });

  it('--balance cost: a verified shard pinned to one worker gets its second copy from another (issue 24: the step froze)', () => {
    const { scheduler, join, trainTasks } = setup(0);
    const a = join(), b = join();
    scheduler.tasks = trainTasks(0, 2);
    const [ta, tb] = scheduler.tasks;
    Object.assign(ta, { pin: a.id, want: 2, why: 'spot check' });
    Object.assign(tb, { pin: b.id, want: 2, why: 'spot check' });
    // Each takes its own pinned shard first, never the other's first copy.
    expect(scheduler.next(b, 0)!.task).toBe(tb);
    finishWith(scheduler, scheduler.start(b, tb, false), [1, 2]);
    expect(scheduler.next(a, 0)!.task).toBe(ta);
    finishWith(scheduler, scheduler.start(a, ta, false), [3, 4]);
    // Then each checks the other's.
    const second = scheduler.next(a, 0);
    expect(second?.task).toBe(tb);
    finishWith(scheduler, scheduler.start(a, tb, false), [1, 2]);
    expect(scheduler.next(b, 0)?.task).toBe(ta);
    finishWith(scheduler, scheduler.start(b, ta, false), [3, 4]);
    expect(scheduler.allDone()).toBe(true);
  });
});

function resultOf(t: Task): Result {
  return { type: 'result', task: t.kind, step: t.step, shard: t.shard, lossSum: 1, correct: 0, count: t.count, timings: { computeMs: 1, encodeMs: 0, sendMs: 0 } };
}
