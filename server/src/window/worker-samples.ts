// The per-worker charts' data: the workers table sampled at a step, at most every
// DASHBOARD.workerSampleMs, written to the --log file (so `tabtrain view` draws the same charts) and
// pushed to the pages. Read off the coordinator's status, so it costs the step nothing but a copy.
import type { WorkerSample } from '@tabtrain/shared/dashboard-wire';
import type { Coordinator } from '../coordinator';
import { DASHBOARD, ms, round } from './settings';

export class WorkerSamples {
  private lastAt = -Infinity;

  constructor(private readonly coord: Coordinator, private readonly sampleMs = DASHBOARD.workerSampleMs) {}

  /** A sample of the live workers when one is due (or `force`), else null. */
  take(now = Date.now(), force = false): WorkerSample | null {
    if (!force && now - this.lastAt < this.sampleMs) return null;
    this.lastAt = now;
    const workers = this.coord.status().workers.filter((w) => w.state !== 'lost').map((w) => ({
      id: w.id, workerId: String(w.workerId).slice(0, 80), backend: String(w.backend).slice(0, 40), shardSize: w.shardSize, computeMs: ms(w.computeMs),
      upBytesPerSec: round(w.upBytesPerSec), downBytesPerSec: round(w.downBytesPerSec), tensorBytes: w.tensorBytes, examplesPerSec: round(w.examplesPerSec),
    }));
    return { at: now, step: this.coord.step, workers };
  }
}
