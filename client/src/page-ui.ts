// The worker page's DOM: a notice banner, a table of facts and a short log. Only text is
// written (textContent), never HTML: adapter names and coordinator messages are untrusted.
import type { Progress } from '@tabtrain/shared';
import type { WorkerStatus } from './core';
import type { BackendChoice } from './page-backend';

export type Level = 'ok' | 'warn' | 'error' | 'info';

const FIELDS = [
  'backend', 'adapter', 'connection', 'coordinator', 'worker', 'run', 'step', 'shard', 'compute', 'upload', 'speed', 'memory',
  'progress', 'loss', 'test-acc', 'doing', 'contributed',
] as const;
const SVG = 'http://www.w3.org/2000/svg';
type Field = (typeof FIELDS)[number];

export class PageUi {
  private readonly el: Record<Field, HTMLElement>;
  private readonly notice: HTMLElement;
  private readonly log: HTMLElement;

  constructor(private readonly doc: Document) {
    const get = (id: string) => {
      const e = doc.getElementById(id);
      if (!e) throw new Error(`the page has no #${id}`);
      return e;
    };
    this.el = Object.fromEntries(FIELDS.map((f) => [f, get(f)])) as Record<Field, HTMLElement>;
    this.notice = get('notice');
    this.log = get('log');
    this.bar = get('progress-bar') as HTMLProgressElement;
    this.curve = get('curve');
  }

  private readonly bar: HTMLProgressElement;
  private readonly curve: HTMLElement;

  setNotice(level: Level, text: string): void {
    this.notice.className = `notice ${level}`;
    this.notice.textContent = text;
    this.notice.dataset.level = level;
  }

  set(field: Field, text: string, level?: Level): void {
    const e = this.el[field];
    e.textContent = text;
    if (level) e.dataset.level = level;
    else delete e.dataset.level;
  }

  showBackend(c: BackendChoice): void {
    this.setNotice(c.level, c.notice);
    this.set('backend', c.backend, c.level === 'ok' ? 'ok' : 'warn');
    this.set('adapter', describeAdapter(c.adapter), c.adapter?.isFallbackAdapter ? 'warn' : undefined);
  }

  showStatus(s: WorkerStatus): void {
    if (s.run) this.set('run', `${s.run.model}: ${s.run.paramCount.toLocaleString('en-US')} parameters, global batch ${s.run.batch}, lr ${s.run.lr}, seed ${s.run.seed}`);
    this.set('step', shardStep(s));
    this.set('shard', s.shardSize ? examples(s.shardSize) : '–');
    this.set('compute', s.computeMs ? `${s.computeMs.toFixed(0)} ms` : '–');
    this.set('upload', s.computeMs ? `${s.uploadMs.toFixed(0)} ms` : '–');
    this.set('speed', s.examplesPerSec ? `${s.examplesPerSec.toFixed(1)} examples/s` : '–');
  }

  /** The run as the coordinator last told it, what this tab is doing and why, and its part. */
  showProgress(p: Progress | null, s: WorkerStatus | null, curve: [number, number][]): void {
    if (p) {
      this.set('progress', `step ${p.step.toLocaleString('en-US')} of ${p.totalSteps.toLocaleString('en-US')} · epoch ${p.epoch} of ${p.epochs} · ${p.state}${p.reason ? ` (${p.reason})` : ''}`);
      Object.assign(this.bar, { max: Math.max(1, p.totalSteps), value: p.step, hidden: false });
      this.set('loss', p.loss === undefined ? '–' : `${p.loss.toFixed(3)} at step ${p.step}${p.acc === undefined ? '' : ` (train accuracy ${p.acc.toFixed(3)})`}`);
      this.set('test-acc', p.testAcc === undefined ? 'after the first epoch' : p.testAcc.toFixed(3));
      this.set('contributed', `${examples(p.examples)} computed; ${(100 * p.share).toFixed(0)}% of the last ${p.shareSteps} step${p.shareSteps === 1 ? '' : 's'}' examples`);
      this.doc.title = `tabtrain · step ${p.step} of ${p.totalSteps}`;
    }
    const [text, level] = doing(p, s);
    this.set('doing', text, level);
    this.drawCurve(curve);
  }

  /** The loss by step as one polyline; y from the curve's own range. */
  private drawCurve(points: [number, number][]): void {
    this.curve.hidden = points.length < 2;
    if (points.length < 2) return;
    const x0 = points[0][0], x1 = points.at(-1)![0];
    const ys = points.map((p) => p[1]);
    const lo = Math.min(...ys), hi = Math.max(...ys);
    const at = (p: [number, number]) => `${((300 * (p[0] - x0)) / Math.max(1, x1 - x0)).toFixed(1)},${(58 - (56 * (p[1] - lo)) / Math.max(1e-9, hi - lo)).toFixed(1)}`;
    const line = this.curve.querySelector('polyline') ?? this.curve.appendChild(this.doc.createElementNS(SVG, 'polyline'));
    line.setAttribute('points', points.map(at).join(' '));
    this.curve.setAttribute('aria-label', `the run's loss by step: ${ys[0].toFixed(3)} at step ${x0}, ${ys.at(-1)!.toFixed(3)} at step ${x1}`);
  }

  showMemory(m: { numTensors: number; numBytes: number; numBytesInGPU?: number; numBytesAllocatedInGPU?: number }, heapBytes: number | null): void {
    const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;
    const parts = [`${m.numTensors} tensors`, `${mb(m.numBytes)} in tensors`];
    // Only a figure the backend measures: WebGPU's numBytesInGPU counts buffers in use at this
    // instant (0 between shards, while the weights sit in the buffer pool), so it shows what
    // tfjs holds allocated on the GPU; a backend without a figure shows none.
    const gpu = m.numBytesAllocatedInGPU ?? m.numBytesInGPU;
    if (gpu) parts.push(`${mb(gpu)} ${m.numBytesAllocatedInGPU !== undefined ? 'allocated on the GPU' : 'on the GPU'}`);
    if (heapBytes !== null) parts.push(`JS heap ${mb(heapBytes)}`);
    this.set('memory', parts.join(', '));
  }

  addLog(line: string): void {
    const li = this.doc.createElement('li');
    li.textContent = `${new Date().toLocaleTimeString()} ${line}`;
    this.log.prepend(li);
    while (this.log.childElementCount > 50) this.log.lastElementChild!.remove();
  }
}

export function describeAdapter(a: Record<string, unknown> | null): string {
  if (!a) return 'none (CPU)';
  const s = (k: string) => (typeof a[k] === 'string' && a[k] ? String(a[k]) : null);
  if (a.api === 'webgpu') {
    const fb = a.isFallbackAdapter === null || a.isFallbackAdapter === undefined ? 'unknown' : a.isFallbackAdapter ? 'yes (software, slow)' : 'no';
    return `vendor ${s('vendor') ?? '?'} · architecture ${s('architecture') ?? '?'}${s('description') ? ` · ${s('description')}` : ''} · fallback adapter: ${fb}`;
  }
  if (a.api === 'webgl') return `WebGL ${a.version ?? ''}: ${[s('vendor'), s('renderer')].filter(Boolean).join(' · ') || 'renderer hidden by the browser'}`;
  if (a.api === 'wasm') return `no GPU: WebAssembly, ${a.threads} thread${a.threads === 1 ? '' : 's'}${a.simd ? ', SIMD' : ''}${a.crossOriginIsolated ? '' : ' (not cross-origin isolated: no threads)'}`;
  return JSON.stringify(a);
}

const examples = (n: number) => `${n.toLocaleString('en-US')} example${n === 1 ? '' : 's'}`;

/** The shard's step as the coordinator numbers it: a train shard at version v makes step v + 1. */
export function shardStep(s: WorkerStatus): string {
  if (s.step < 0) return '–';
  const busy = s.state === 'working' ? ' (computing…)' : '';
  return s.task === 'eval' ? `test evaluation after step ${s.step}${busy}` : `${s.step + 1}${busy}`;
}

/** What the tab is doing and why, and how loud to say it. */
export function doing(p: Progress | null, s: WorkerStatus | null): [string, Level | undefined] {
  const probation = p?.role === 'probation' ? ` · on probation: ${p.why}` : '';
  if (s?.state === 'working') {
    const what = s.task === 'eval' ? `computing test-set predictions (evaluation after step ${s.step})` : `computing its shard of step ${s.step + 1} (${examples(s.shardSize)})`;
    return [`${what}${probation}`, probation ? 'warn' : 'ok'];
  }
  if (!p || s?.state !== 'idle') return [s?.state === 'joining' ? 'joining the run' : '–', undefined];
  if (p.state === 'finished' || p.state === 'stopped' || p.state === 'failed') return [`nothing: the run ${p.state === 'failed' ? 'failed' : `is ${p.state}`}${p.reason ? ` (${p.reason})` : ''}`, p.state === 'failed' ? 'error' : 'ok'];
  if (p.state !== 'running' && p.state !== 'evaluating') return [`waiting: the run is ${p.state}${p.reason ? ` (${p.reason})` : ''}${probation}`, 'warn'];
  if (p.role === 'benched') return [`benched: ${p.why}`, 'warn'];
  return [`waiting for its next shard${probation}`, probation ? 'warn' : undefined];
}
