// --compress auto (issue 21): the coordinator picks the compression from what it measures. At each
// step boundary it prices every mode (none, fp16, int8, powersgd at the run's rank and --factors) with the cost
// model (cost-model.ts) over the fleet in hand: each worker's measured compute and link rates, the
// coordinator's link, the workers the run's --balance would use for that mode, and each mode's
// bytes a worker moves per step. It runs the fastest, preferring exact fp32 within PREFER_EXACT.
//
// The model knows bytes and compute, not each codec's CPU work (the workers' encodes, PowerSGD's
// power iteration, the coordinator's decode and orthonormalisation). So a mode that has run
// carries what its steps took beyond its prediction (an EMA, `overheadMs`): a mode that looked
// fast on paper and was not is priced as it ran. A mode never run is priced by the model plus
// the least overhead of the modes run (what is not a codec's: the step's own machinery).
//
// A switch needs a clear gain: the new mode's price under (1 − HYSTERESIS) of the mode in hand's,
// and SETTLE_STEPS steady steps since the last switch or change of fleet, so that a run does not
// flap on noise. Until a worker is measured (the run's first step), the run stays in fp32.
//
// Pure: it decides, the coordinator switches (Step.switchTo, Replicas.restart, Sessions.rewelcome).
import { NO_COMPRESSION, parseCompression, uploadBytes, type Compression, type FactorCodec } from '@tabtrain/shared/compress';
import type { ParamInfo, RunInfo } from '@tabtrain/shared';
import { isMeasured, planStep, predictStep, type CoordinatorCost, type RunCost, type WorkerCost } from './cost-model';
import { plural } from './format';

/** Within this fraction of the fastest mode's price, exact fp32 is chosen. */
export const PREFER_EXACT = 0.1;
/** A switch must cut the predicted step by this fraction. */
export const HYSTERESIS = 0.2;
/** Steady steps (no switch, no join or leave) before a mode's cost is learnt, or the next switch is considered. */
export const SETTLE_STEPS = 2;
/** A switch's target must win at this many boundaries in a row (the first choice excepted). */
export const STREAK = 3;
/** The run's first choice of a mode other than fp32 must win at this many boundaries in a row. */
export const FIRST_STREAK = 2;
/** Exact fp32 is also chosen when it is within this many ms of the fastest: a few ms are step noise. */
export const EXACT_SLACK_MS = 5;
/** A switch away from exact fp32 or between codecs must beat this many times the steps' spread (median absolute deviation). */
export const NOISE_FACTOR = 2;
/** A link rate that moves by more than this factor makes the modes' learnt overheads stale. */
export const RATE_MOVE = 2;
/** --balance cost, once settled on an unchanged fleet: steps between two pricings of every mode. */
export const PRICE_EVERY = 4;
/** A mode's overhead is the median of its last this many steady steps' (wall − model): one slow step moves nothing. */
const SAMPLES = 5;

/** What the autopilot is shown at a step boundary. */
export interface Fleet {
  /** The workers the step may use (behind is ignored: a steady step, everyone one version behind). */
  workers: WorkerCost[];
  /** Bytes/s of the coordinator's link each way (Infinity: no limit seen). */
  link: { up: number; down: number };
  batch: number;
  /** --balance speed or equal: each worker's shard size (same order); null with cost: the planner picks them, per mode. */
  counts: number[] | null;
}

/** One mode's price at this boundary. */
export interface ModePrice {
  compress: Compression;
  /** The cost model's step, ms. */
  modelMs: number;
  /** modelMs plus what this mode's steps took beyond it so far. */
  ms: number;
  /** Workers computing in the plan priced. */
  workers: number;
}

/** What the autopilot chose, and why: logged, in /api/status, /metrics and the dashboard's header. */
export interface Choice {
  compress: Compression;
  step: number;
  switched: boolean;
  prices: ModePrice[];
  /** One line: the mode, its predicted step against fp32's, the workers, the slowest link. */
  why: string;
}

export interface ModelSizes {
  params: ParamInfo[];
  total: number;
  /** fp32 steps stream the next weights out segment by segment (--pipeline). */
  pipeline: boolean;
  exampleBytes: number;
}

/** A mode as the step records and benchmark rows name it: none, fp16, int8, powersgd-r4. */
export const modeName = (c: Compression): string => (c.mode === 'powersgd' ? `powersgd-r${c.rank}${c.factors === 'fp16' ? '-fp16' : ''}` : c.mode);

export const label = (c: Compression): string => (c.mode === 'powersgd' ? `powersgd r${c.rank}${c.factors === 'fp16' ? ' fp16' : ''}` : c.mode === 'none' ? 'fp32' : c.mode);

export class Autopilot {
  /** The mode the next step runs in. */
  current: Compression = NO_COMPRESSION;
  /** The last decision (null until a worker is measured). */
  last: Choice | null = null;
  /** Boundaries at which every mode was priced, and the step of the last one. */
  pricings = 0;
  private pricedAt = -Infinity;
  private readonly modes: Compression[];
  /** Per mode, its last steady steps' wall time beyond the model's price, ms. */
  private readonly extraMs = new Map<string, number[]>();
  /** Modes whose one sample is of an unsteady step (its first after a switch): replaced by the first steady one. */
  private readonly provisional = new Set<string>();
  private steady = 0;
  /** The mode that would be switched to, and at how many boundaries in a row it has won. */
  private streak = { mode: '', count: 0 };
  private fleetKey = '';
  /** The model's price of the step in hand in the mode it runs in (learnt against its wall time). */
  private expected: number | null = null;
  /** The link rates (bytes/s) the learnt overheads were measured at, by 'up', 'down' and '<worker id> up|down'. */
  private ratesAt = new Map<string, number>();
  /** The mode whose samples the last step added to (taken back if the fleet changed under it). */
  private lastSample: string | null = null;
  /** The run's first choice is made (until then a switch needs FIRST_STREAK, not STREAK and a steady run). */
  private settled = false;
  /** The wall time of a step run before any price could be made (priced at the next boundary). */
  private unpriced: number | null = null;
  /** The last rates timed by large transfers, per worker id ('coordinator': its link): PowerSGD's small frames do not time a link. */
  private readonly timedRates = new Map<number | 'coordinator', { up: number; down: number }>();

  /** `factors`: how powersgd's factors would travel (--factors), so that its price counts the bytes it would send. */
  constructor(private readonly sizes: ModelSizes, rank: number, factors: FactorCodec = 'fp32') {
    this.modes = [NO_COMPRESSION, { mode: 'fp16', rank: 0 }, { mode: 'int8', rank: 0 }, parseCompression('powersgd', rank, factors)];
  }

  /** Every mode's price over `fleet`; empty while no worker is measured. */
  price(fleet: Fleet): ModePrice[] {
    if (!fleet.workers.some(isMeasured)) return [];
    const W = 4 * this.sizes.total;
    const workers = fleet.workers.map((w) => ({ ...w, behind: 1 }));
    // The codecs' CPU work is learnt per mode (overheadMs), not modelled: the coordinator's rates are not limits here.
    const coord: CoordinatorCost = { upRate: fleet.link.up, downRate: fleet.link.down, foldRate: Infinity, sgdRate: Infinity, encodeRate: Infinity };
    const learnt = this.modes.map((c) => this.overheadMs(c)).filter((x): x is number => x !== undefined);
    // Never below 0: fp32's steps at 1 Gbit/s ran seconds faster than its model said (the workers'
    // first rates are low), and int8, never run, was then priced at nothing and tried for 3 steps
    // of 1.6 s in the middle of a powersgd run (bench scaleout --balance speed, N = 4 and 8).
    const untried = learnt.length ? Math.max(0, Math.min(...learnt)) : 0;
    return this.modes.map((compress) => {
      const bytes = uploadBytes(this.sizes.params, this.sizes.total, compress);
      const run: RunCost = {
        batch: fleet.batch, gradientBytes: bytes, updateBytes: compress.mode === 'none' ? W : bytes, weightsBytes: W,
        exampleBytes: this.sizes.exampleBytes, pipelined: compress.mode === 'none' && this.sizes.pipeline,
      };
      let modelMs: number, used: number;
      if (fleet.counts) {
        const assignment = workers.map((worker, i) => ({ worker, count: fleet.counts![i] })).filter((a) => a.count > 0);
        modelMs = predictStep(assignment, run, coord).stepMs;
        used = assignment.length;
      } else {
        const plan = planStep(workers, run, coord);
        modelMs = plan.predictedMs ?? NaN;
        used = plan.participants.length + plan.probes.length;
      }
      // A mode never run is taken to cost beyond the model what the least such mode run so far
      // did: noise in the mode in hand's steps must not make an untried mode look faster than the
      // model says, nor one slow codec make every untried mode look slow.
      const extra = this.overheadMs(compress) ?? untried;
      // A step takes some time: a model far off the other way (a negative overhead) prices no mode below zero.
      return { compress, modelMs, ms: Math.max(0, modelMs + extra), workers: used };
    });
  }

  /**
   * At a step boundary (`step` steps applied): the mode to run the next step in. A new choice
   * (the first one, a switch, or the fleet changed) is returned with `switched` set if the mode
   * changed; a boundary that changes nothing returns null.
   */
  decide(given: Fleet & { timed?: boolean }, step: number): Choice | null {
    const fleet = this.withTimedRates(given);
    const key = fleet.workers.map((w) => w.id).join(',');
    const fleetChanged = key !== this.fleetKey;
    if (fleetChanged) {
      this.fleetKey = key;
      this.steady = 0;
      // The last step saw the change (a worker lost mid-step, a newcomer's first shard): not a sample of its mode.
      const xs = this.lastSample ? this.extraMs.get(this.lastSample) : undefined;
      xs?.pop();
      if (xs && !xs.length) this.extraMs.delete(this.lastSample!);
    }
    this.lastSample = null;
    // What the modes took beyond the model was learnt at other rates: it does not carry over.
    const moved = this.ratesMoved(fleet);
    if (moved) { this.extraMs.clear(); this.provisional.clear(); this.steady = 0; }
    // --balance cost prices every mode with a plan of its own: 2–12 ms a boundary at 8 workers
    // here, between two steps of ~45 ms. Once the first choice is made, a fleet and rates that
    // did not change are priced every PRICE_EVERY steps (the mode in hand keeps its last price).
    if (fleet.counts === null && this.settled && !fleetChanged && !moved && this.expected !== null && step - this.pricedAt < PRICE_EVERY) return null;
    this.pricedAt = step;
    this.pricings++;
    const prices = this.price(fleet).filter((p) => Number.isFinite(p.ms));
    const now = prices.find((p) => p.compress.mode === this.current.mode);
    this.expected = now ? now.modelMs : null;
    if (!now) return null;
    // The step before the first price (the run's first: it measured the workers) is this mode's first sample.
    if (this.unpriced !== null && !this.extraMs.has(label(this.current))) { this.extraMs.set(label(this.current), [this.unpriced - now.modelMs]); this.provisional.add(label(this.current)); }
    this.unpriced = null;
    const fastest = prices.reduce((a, b) => (b.ms < a.ms ? b : a));
    const exact = prices.find((p) => p.compress.mode === 'none')!;
    const target = exact.ms <= fastest.ms * (1 + PREFER_EXACT) + EXACT_SLACK_MS ? exact : fastest;
    const first = !this.settled;
    // Toward exact fp32, within PREFER_EXACT of the mode in hand is enough; away from it, or
    // between codecs, the gain must be HYSTERESIS: the band between the two keeps a run from flapping.
    // The gain must also stand out of the step times' own noise (NOISE_FACTOR × their spread).
    const noise = NOISE_FACTOR * (this.spreadMs(now.compress) + this.spreadMs(target.compress));
    const gain = target.compress.mode !== this.current.mode && (target === exact ? target.ms <= now.ms * (1 + PREFER_EXACT) + EXACT_SLACK_MS : target.ms + noise < now.ms * (1 - HYSTERESIS));
    this.streak = gain ? { mode: target.compress.mode, count: this.streak.mode === target.compress.mode ? this.streak.count + 1 : 1 } : { mode: '', count: 0 };
    // The first choice waits for FIRST_STREAK boundaries (a run's first step measures a worker
    // still warming up), later ones for STREAK and a steady run whose mode has a steady sample.
    const steadyNow = this.steady >= SETTLE_STEPS && !this.provisional.has(label(this.current));
    const move = gain && (first ? this.streak.count >= FIRST_STREAK : steadyNow && this.streak.count >= STREAK);
    // The first choice is made once the gain failed (fp32 it is) or held FIRST_STREAK times.
    if (first && (move || this.streak.count === 0)) this.settled = true;
    if (!move && !(first && this.settled) && !fleetChanged) return null;
    const chosen = move ? target : now;
    if (move) { this.current = chosen.compress; this.steady = 0; this.expected = chosen.modelMs; this.streak = { mode: '', count: 0 }; }
    this.last = { compress: chosen.compress, step, switched: move, prices, why: this.why(chosen, exact, fleet, move ? now : null) };
    return this.last;
  }

  /** The step just run took `wallMs`: what it took beyond the model's price is learnt for its mode (its first step, then steady ones). */
  observed(wallMs: number): void {
    const k = label(this.current);
    if (this.expected === null) this.unpriced = wallMs;
    // A mode's first step counts even if not steady (one sample of it beats borrowing another
    // mode's) until its first steady step replaces it.
    const steady = this.steady >= SETTLE_STEPS;
    if (this.expected !== null && (steady || !this.extraMs.has(k))) {
      if (steady && this.provisional.delete(k)) this.extraMs.delete(k);
      else if (!steady) this.provisional.add(k);
      const xs = this.extraMs.get(k) ?? [];
      xs.push(wallMs - this.expected);
      this.lastSample = k;
      if (xs.length > SAMPLES) xs.shift();
      this.extraMs.set(k, xs);
    }
    this.steady++;
  }

  /**
   * True when a link rate moved by more than RATE_MOVE times since the rates the learnt overheads
   * were measured at (a worker new to the fleet brings its own: it moves nothing).
   */
  private ratesMoved(f: Fleet): boolean {
    const now = new Map<string, number>([['up', f.link.up], ['down', f.link.down]]);
    for (const w of f.workers) { now.set(`${w.id} up`, w.upRate); now.set(`${w.id} down`, w.downRate); }
    // Both measured (> 0): a limit that appeared or went (Infinity), or a finite rate's factor.
    const moved = (a: number, b: number) => (a === Infinity) !== (b === Infinity) || Math.max(a / b, b / a) > RATE_MOVE;
    let any = false;
    for (const [k, v] of now) {
      const was = this.ratesAt.get(k);
      if (!(v > 0)) continue;
      if (!(was! > 0)) this.ratesAt.set(k, v);
      else if (moved(was!, v)) any = true;
    }
    if (any) this.ratesAt = now;
    return any;
  }

  /** What a mode's steady steps took beyond the model's price (the median of the last SAMPLES); undefined if it has none. */
  private overheadMs(c: Compression): number | undefined {
    const xs = this.extraMs.get(label(c));
    return xs?.length ? median(xs) : undefined;
  }

  /** How much a mode's steps vary: the median absolute deviation of its samples (0 with fewer than 3). */
  private spreadMs(c: Compression): number {
    const xs = this.extraMs.get(label(c)) ?? [];
    if (xs.length < 3) return 0;
    const m = median(xs);
    return median(xs.map((x) => Math.abs(x - m)));
  }

  /** Rates timed now are kept; rates from small transfers give way to the last timed ones. */
  private withTimedRates(f: Fleet & { timed?: boolean }): Fleet {
    const kept = this.timedRates;
    if (f.timed !== false) {
      kept.set('coordinator', { ...f.link });
      for (const w of f.workers) if (w.upRate > 0 && w.downRate > 0) kept.set(w.id, { up: w.upRate, down: w.downRate });
      return f;
    }
    const workers = f.workers.map((w) => { const k = kept.get(w.id); return k ? { ...w, upRate: k.up, downRate: k.down } : w; });
    return { ...f, workers, link: kept.get('coordinator') ?? f.link };
  }

  private why(chosen: ModePrice, exact: ModePrice, fleet: Fleet, from: ModePrice | null): string {
    const ms = (x: number) => `${Math.round(x).toLocaleString('en-US')} ms`;
    const rates = [fleet.link.up, fleet.link.down, ...fleet.workers.flatMap((w) => [w.upRate, w.downRate])].filter((r) => r > 0 && Number.isFinite(r));
    const slowest = Math.min(...rates);
    const link = !rates.length ? 'no link limit measured' : `slowest link ${slowest >= 1e9 ? `${(slowest / 1e9).toFixed(1)} GB/s` : `${(slowest / 1e6).toFixed(1)} MB/s`}`;
    const against = chosen === exact ? (from ? `against ${label(from.compress)}'s ${ms(from.ms)}` : 'exact, within reach of the fastest') : `against fp32's ${ms(exact.ms)}`;
    return `compression ${label(chosen.compress)}: predicted ${ms(chosen.ms)} a step ${against} with ${plural(chosen.workers, 'worker')}; ${link}`;
  }
}

/** What a switch changes around the Step, each in the room that owns it. */
export interface Switchboard {
  step: { switchTo(c: Compression): void; readonly powerSgd: boolean };
  /** What a welcome says of the run (shared with membership and sessions). */
  run: RunInfo;
  replicas: { restart(fromPowerSgd: boolean): void };
  sessions: { rewelcome(): void };
  /** No worker holds a copy of a task: nothing still computing was begun in the old mode. */
  idle: () => boolean;
  log: (line: string) => void;
}

/**
 * --compress auto in a run: at each step boundary the autopilot decides and, on a switch, the
 * Step goes on in the new mode from the same weights and version, every worker is welcomed again
 * into it (core.ts keeps its weights, except out of powersgd), and the choice is logged.
 */
export class AutoCompression {
  constructor(readonly pilot: Autopilot, private readonly s: Switchboard) {}

  boundary(fleet: Fleet & { timed?: boolean }, step: number): void {
    // A copy still out (a spot check, a shadow) would send its gradient in the old mode's frames.
    if (!this.s.idle()) return;
    const choice = this.pilot.decide(fleet, step);
    if (!choice) return;
    const fromPowerSgd = this.s.step.powerSgd;
    if (choice.switched) {
      this.s.step.switchTo(choice.compress);
      if (choice.compress.mode === 'none') delete this.s.run.compress;
      else this.s.run.compress = choice.compress;
      this.s.replicas.restart(fromPowerSgd);
      this.s.sessions.rewelcome();
    }
    const cost = fromPowerSgd ? 'every worker is sent the full weights' : 'the workers keep their weights';
    this.s.log(`${choice.why}${choice.switched ? `. Switched after step ${step}: error feedback starts from zero, ${cost}` : ''}`);
  }

  /** The step just run took `wallMs`. */
  observed(wallMs: number): void {
    this.pilot.observed(wallMs);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** What /api/status, /metrics and the dashboard say of the compression: the mode in use and, with auto, the last choice and every mode's price. */
export function describeCompression(compress: Compression, auto: AutoCompression | null): { text: string; auto: boolean; mode: string; prices: { mode: string; ms: number }[]; why: string | null; chosenAtStep: number | null } {
  const last = auto?.pilot.last ?? null;
  const prices = last ? last.prices.map((p) => ({ mode: label(p.compress), ms: Math.round(p.ms) })) : [];
  const text = !auto ? label(compress) : last ? `${label(compress)} (auto: ${last.why.replace(/^compression [^:]+: /, '')})` : `${label(compress)} (auto: until the first step has measured the workers)`;
  return { text, auto: auto !== null, mode: label(compress), prices, why: last?.why ?? null, chosenAtStep: last?.step ?? null };
}
