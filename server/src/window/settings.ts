// The dashboard's settings (dashboard.ts re-exports them), and the run states nothing follows.
import { MAX_STEP_POINTS } from '@tabtrain/shared/dashboard-wire';
import type { RunState } from '../coordinator';

export const DASHBOARD = {
  /** At most 4 updates a second per page: smooth enough to watch, nothing for the event loop. */
  updateIntervalMs: 250,
  /** Per-step points kept for the curves; past this the older half is thinned to every other step. */
  maxStepPoints: MAX_STEP_POINTS,
  /** Log lines a new page gets in its snapshot. */
  logLines: 60,
  /** Steps averaged for the ETA. */
  etaWindow: 50,
  /** A sample of the workers (per-worker charts, the --log file) at most this often: 1,800 an hour. */
  workerSampleMs: 2000,
  /** POST /api/control bodies are tiny JSON. */
  maxControlBytes: 1024,
} as const;

export const TERMINAL: readonly RunState[] = ['finished', 'stopped', 'failed'];

/** Figures as the page shows them: five significant digits (0 for what is not finite), and ms to 0.01. */
export const round = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(5)) : 0);
export const ms = (x: number) => Math.round(x * 100) / 100;
