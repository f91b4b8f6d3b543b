// The worker page's DOM: a notice banner, a table of facts and a short log. Only text is
// written (textContent), never HTML: adapter names and coordinator messages are untrusted.
import type { WorkerStatus } from './core';
import type { BackendChoice } from './page-backend';

export type Level = 'ok' | 'warn' | 'error' | 'info';

const FIELDS = ['backend', 'adapter', 'connection', 'coordinator', 'worker', 'run', 'step', 'shard', 'compute', 'upload', 'speed', 'memory'] as const;
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
  }

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
    this.set('step', s.step < 0 ? '–' : `${s.step}${s.state === 'working' ? ' (computing…)' : ''}`);
    this.set('shard', s.shardSize ? `${s.shardSize} examples` : '–');
    this.set('compute', s.computeMs ? `${s.computeMs.toFixed(0)} ms` : '–');
    this.set('upload', s.computeMs ? `${s.uploadMs.toFixed(0)} ms` : '–');
    this.set('speed', s.examplesPerSec ? `${s.examplesPerSec.toFixed(1)} examples/s` : '–');
    this.doc.title = s.step >= 0 ? `tabtrain · step ${s.step}` : 'tabtrain worker';
  }

  showMemory(m: { numTensors: number; numBytes: number; numBytesInGPU?: number }, heapBytes: number | null): void {
    const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;
    const parts = [`${m.numTensors} tensors`, `${mb(m.numBytes)} in tensors`];
    if (m.numBytesInGPU !== undefined) parts.push(`${mb(m.numBytesInGPU)} on the GPU`);
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
