// Which compression each step ran in, kept as spans of consecutive steps for the run's summary:
// with --compress auto, what the autopilot chose and from which step (a fixed --compress is one
// span). Fed by the coordinator's 'step' events (StepRecord.mode).

/** Steps firstStep..lastStep (inclusive, 1-based step numbers) ran in `mode` (none, fp16, int8, powersgd-rR). */
export interface ModeSpan {
  mode: string;
  firstStep: number;
  lastStep: number;
  steps: number;
}

export class ModeSpans {
  readonly spans: ModeSpan[] = [];

  /** Step `step` ran in `mode`: extends the last span, or opens one (a switch, or a gap such as a resume). */
  add(step: number, mode: string): void {
    const last = this.spans.at(-1);
    if (last && last.mode === mode && last.lastStep === step - 1) {
      last.lastStep = step;
      last.steps++;
    } else {
      this.spans.push({ mode, firstStep: step, lastStep: step, steps: 1 });
    }
  }
}
