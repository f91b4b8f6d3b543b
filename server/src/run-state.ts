// The run's state: one machine with a reason for every state, and the only place that pauses,
// resumes and stops. What a person sees (terminal, /api/status, the dashboard) is read from here.
//
//   waiting ⇄ running ⇄ evaluating        (no worker / a step / an epoch's test evaluation)
//      ↕ pause()/resume()  paused          (held before the next step)
//   → finished | stopped | failed          (the end: all steps done / stop() / an error)
//
// A pause outlives the states the run passes through meanwhile (an evaluation, a wait for
// workers): it is kept apart from the shown reason, which every state change overwrites.

export type RunState = 'waiting' | 'running' | 'paused' | 'evaluating' | 'finished' | 'stopped' | 'failed';

export interface RunStateOptions {
  log: (line: string) => void;
  /** The state or its reason changed (the 'state' event). */
  changed: (state: RunState) => void;
  /** stop() was asked: the coordinator gives up a step nobody is left to finish. */
  stopping: () => void;
}

export class RunControl {
  state: RunState = 'waiting';
  reason = '';
  private paused = false;
  private pauseReason = '';
  private stopReason = '';
  /** stop() was asked: the run ends after the step in hand. */
  stopRequested = false;
  private resumeWaiters: (() => void)[] = [];

  constructor(private readonly opts: RunStateOptions) {}

  set(state: RunState, reason = ''): void {
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    this.opts.changed(state);
  }

  /** A reason shown without a change of state (why a step waits, refreshed while it does). */
  explain(reason: string): void {
    this.reason = reason;
  }

  /** Back to work after waiting or evaluating: running, or paused if a pause was asked meanwhile. */
  carryOn(): void {
    this.set(this.paused ? 'paused' : 'running', this.paused ? this.pauseReason : '');
  }

  /** Holds the run before its next step until resume() or stop(). */
  pause(reason: string, step: number): void {
    if (this.paused) return;
    this.paused = true;
    this.pauseReason = reason;
    this.opts.log(`pausing after step ${step}: ${reason}`);
    this.set('paused', reason);
  }

  resume(step: number): void {
    if (!this.paused) return;
    this.paused = false;
    this.opts.log(`resuming at step ${step}`);
    this.set('running');
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  /** Ends the run after the step in hand (`where` names it for the log). */
  stop(reason: string, where: string, step: number): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.stopReason = reason;
    this.opts.log(`stopping after ${where}: ${reason}`);
    this.resume(step);
    this.opts.stopping();
  }

  /** Resolves once the run may take its next step: not paused, or stopping, or `closed()`. */
  async whilePaused(closed: () => boolean): Promise<void> {
    while (this.paused && !this.stopRequested && !closed()) await new Promise<void>((r) => this.resumeWaiters.push(r));
  }

  /** The run's last state: stopped by stop(), else finished. */
  end(steps: number): void {
    this.set(this.stopRequested ? 'stopped' : 'finished', this.stopRequested ? this.stopReason : `${steps} steps done`);
  }
}
