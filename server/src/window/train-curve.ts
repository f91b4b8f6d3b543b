// The running train loss and accuracy curve (every trainEvery steps, each epoch's running means),
// and where this coordinator took the run up: a resumed run's restored epochs become its first points.
import { isTrainSample, type TrainPoint } from '@tabtrain/shared/dashboard-wire';
import type { Coordinator, EpochMetrics, StepRecord } from '../coordinator';
import { round } from './settings';
import { perEpoch } from './status';

/**
 * Where this coordinator took the run up: step 0, or a resumed run's checkpoint step with the
 * training seconds and the open epoch's totals it restored. Read off the coordinator (its step,
 * `history` and `epochAcc`) until training starts, then fixed: the CLI builds the Dashboard before
 * it restores, and restores before train(), whose first act is a state change.
 */
export interface Origin {
  step: number;
  /** Σ history[].seconds + epochAcc.seconds as restored. */
  seconds: number;
  /** The open epoch's restored totals (steps 0 when none). */
  acc: Coordinator['epochAcc'];
}

/** The running totals of the epoch in progress, for its running train loss and accuracy. */
interface OpenEpoch { epoch: number; examples: number; lossSum: number; correct: number }

export class TrainCurve {
  /** Null until fixed (training started). */
  origin: Origin | null = null;
  private open: OpenEpoch | null = null;

  constructor(private readonly coord: Coordinator) {}

  /** Fixes the origin from now on; returns a resumed run's restored points, to go before the run's own. */
  fix(step: number): TrainPoint[] {
    this.origin = this.originNow(step);
    return this.restoredPoints(this.origin);
  }

  base(): Origin {
    return this.origin ?? this.originNow();
  }

  /** Before training starts, a resumed run's restored points, read off the coordinator. */
  restored(): TrainPoint[] {
    return this.restoredPoints(this.base());
  }

  /** Adds the step to its epoch's running totals; every trainEvery steps (and at the end) a point. */
  add(s: StepRecord): TrainPoint | null {
    const per = perEpoch(this.coord);
    const inEpoch = s.step - (s.epoch - 1) * per;
    if (this.open?.epoch !== s.epoch) {
      // The epoch the run resumed in goes on from the checkpoint's totals, as the coordinator's does.
      const o = this.origin!;
      const resumedIn = o.acc.steps > 0 && s.epoch === Math.floor(o.step / per) + 1 && s.step > o.step;
      this.open = resumedIn
        ? { epoch: s.epoch, examples: o.acc.examples, lossSum: o.acc.lossSum, correct: o.acc.correct }
        : { epoch: s.epoch, examples: 0, lossSum: 0, correct: 0 };
    }
    const a = this.open;
    a.examples += s.examples;
    a.lossSum += s.loss * s.examples;
    a.correct += s.acc * s.examples;
    if (!isTrainSample(inEpoch, per)) return null;
    return { step: s.step, epoch: s.epoch, examples: a.examples, loss: round(a.lossSum / a.examples), acc: round(a.correct / a.examples) };
  }

  private originNow(step = this.coord.step): Origin {
    const c = this.coord;
    return { step, seconds: c.history.reduce((a, e) => a + e.seconds, 0) + c.epochAcc.seconds, acc: { ...c.epochAcc } };
  }

  /** One running point per restored epoch (at its end) and one for the open epoch's restored steps. */
  private restoredPoints(o: Origin): TrainPoint[] {
    const per = perEpoch(this.coord);
    const points = this.coord.history.map((e) => epochEndPoint(e, (e.epoch - 1) * per + e.steps));
    const a = o.acc;
    if (a.steps > 0 && a.examples > 0 && o.step > 0) {
      points.push({ step: o.step, epoch: Math.floor((o.step - 1) / per) + 1, examples: a.examples, loss: round(a.lossSum / a.examples), acc: round(a.correct / a.examples) });
    }
    return points.filter((p) => p.step <= o.step);
  }
}

/** An epoch's own figures as the running point at its last step. */
export function epochEndPoint(e: EpochMetrics, step: number): TrainPoint {
  return { step, epoch: e.epoch, examples: e.examples, loss: round(e.loss), acc: round(e.trainAcc) };
}
