// The dashboard's DOM apart from the charts: run header, controls, workers table and log. Only
// text is written (textContent), never HTML: worker ids, adapters, reasons and log lines come
// from workers and are untrusted.
import type { ControlAction, RunHeader, WorkerRow } from '@tabtrain/shared/dashboard-wire';
import { SMOOTHING, downloadNote, formatBytes, formatSeconds, isTerminal, type RunView } from './dashboard-model';

export type Level = 'ok' | 'warn' | 'error' | 'info';

function get<T extends HTMLElement = HTMLElement>(doc: Document, id: string): T {
  const e = doc.getElementById(id);
  if (!e) throw new Error(`the dashboard page has no #${id}`);
  return e as T;
}

const TOKEN_KEY = 'tabtrain.adminToken';
/** The smoothing slider's weight, kept across visits (localStorage: it is a preference, not a secret). */
export const SMOOTHING_KEY = 'tabtrain.smoothing';
/** A second click on Stop within this many ms confirms it (no modal dialog to block the page). */
const CONFIRM_MS = 5000;

/** What the coordinator last said of the token in the field: nothing yet, accepted (a control went through) or refused (401). */
export type TokenState = 'unknown' | 'accepted' | 'refused';

export interface UiHandlers {
  control(action: ControlAction, token: string): void;
  smoothing(weight: number): void;
  download(kind: 'csv' | 'jsonl'): void;
}

/** The stored smoothing weight if it is one the slider can show, else the default. */
export function storedSmoothing(stored: string | null): number {
  const w = stored === null || stored.trim() === '' ? NaN : Number(stored);
  return Number.isFinite(w) && w >= SMOOTHING.min && w <= SMOOTHING.max ? w : SMOOTHING.default;
}

function storage(kind: 'localStorage' | 'sessionStorage'): Storage | null {
  try {
    return window[kind];
  } catch {
    return null; // storage disabled: the page works, it only forgets
  }
}

export class DashboardUi {
  private readonly e;
  private receivedAt = 0;
  private header: RunHeader | null = null;
  private stopArmedUntil = 0;
  private token: TokenState = 'unknown';
  private readonly onControl: UiHandlers['control'];

  constructor(private readonly doc: Document, handlers: UiHandlers) {
    this.onControl = handlers.control;
    const ids = ['title', 'state', 'mode', 'connection', 'config', 'reason', 'checkpoint-problem', 'compression', 'comm-share', 'step', 'epoch', 'elapsed', 'eta', 'bytes', 'workers-count', 'd2l',
      'token', 'pause', 'resume', 'stop', 'export', 'control-message', 'control-note', 'log',
      'smoothing', 'smoothing-value', 'download-csv', 'download-jsonl', 'download-log', 'download-note'] as const;
    this.e = Object.fromEntries(ids.map((id) => [id, get(doc, id)])) as Record<(typeof ids)[number], HTMLElement>;
    const token = this.e.token as HTMLInputElement;
    token.value = storage('sessionStorage')?.getItem(TOKEN_KEY) ?? '';
    token.addEventListener('change', () => storage('sessionStorage')?.setItem(TOKEN_KEY, token.value));
    // Another token is untried: the badge no longer vouches for it.
    token.addEventListener('input', () => this.setToken('unknown'));

    const slider = this.e.smoothing as HTMLInputElement;
    Object.assign(slider, { min: String(SMOOTHING.min), max: String(SMOOTHING.max), step: String(SMOOTHING.step) });
    slider.value = String(storedSmoothing(storage('localStorage')?.getItem(SMOOTHING_KEY) ?? null));
    const smoothing = () => {
      const w = storedSmoothing(slider.value);
      this.e['smoothing-value'].textContent = w.toFixed(2);
      return w;
    };
    smoothing();
    slider.addEventListener('input', () => {
      const w = smoothing();
      storage('localStorage')?.setItem(SMOOTHING_KEY, String(w));
      handlers.smoothing(w);
    });
    this.e['download-csv'].addEventListener('click', () => handlers.download('csv'));
    this.e['download-jsonl'].addEventListener('click', () => handlers.download('jsonl'));
    for (const action of ['pause', 'resume', 'export'] as const) this.e[action].addEventListener('click', () => this.onControl(action, token.value));
    this.e.stop.addEventListener('click', () => {
      if (Date.now() > this.stopArmedUntil) {
        this.stopArmedUntil = Date.now() + CONFIRM_MS;
        this.e.stop.textContent = 'Confirm stop';
        setTimeout(() => { this.stopArmedUntil = 0; this.e.stop.textContent = 'Stop'; }, CONFIRM_MS);
        return;
      }
      this.stopArmedUntil = 0;
      this.e.stop.textContent = 'Stop';
      this.onControl('stop', token.value);
    });
    setInterval(() => this.tick(), 1000);
  }

  setConnection(level: Level, text: string): void {
    this.e.connection.textContent = text;
    this.e.connection.dataset.level = level;
  }

  /** The slider's weight as the page starts (stored, or the default). */
  get smoothing(): number {
    return storedSmoothing((this.e.smoothing as HTMLInputElement).value);
  }

  /** What the coordinator said of the token: the badge says so at once, not at the next update. */
  setToken(state: TokenState): void {
    this.token = state;
    if (this.header) this.renderMode(this.header);
  }

  setControlMessage(level: Level, text: string): void {
    this.e['control-message'].textContent = text;
    this.e['control-message'].dataset.level = level;
  }

  render(v: RunView): void {
    const h = v.header;
    if (!h) return;
    this.header = h;
    this.receivedAt = Date.now();
    const e = this.e;
    const c = h.config;
    this.doc.title = `${h.state} · ${h.model} · tabtrain`;
    e.title.textContent = `tabtrain · ${h.model}`;
    e.state.textContent = h.state;
    e.state.dataset.state = h.state;
    this.renderMode(h);
    e.config.textContent = [
      `${h.paramCount.toLocaleString('en-US')} parameters`, `lr ${c.lr}`, `batch ${c.batch}`, `${c.epochs} epochs`,
      c.maxSteps !== null ? `max ${c.maxSteps} steps` : '', `seed ${c.seed}`, `balance ${c.balance}`, `eval ${c.evalExamples.toLocaleString('en-US')} images`, `model hash ${h.modelHash}`,
    ].filter(Boolean).join(' · ');
    e.reason.textContent = h.reason || (isTerminal(h.state) ? h.state : '');
    e.reason.dataset.state = h.state;
    e['checkpoint-problem'].textContent = h.checkpointProblem ?? '';
    e.compression.textContent = h.compression ? `compression ${h.compression}` : '';
    e['comm-share'].textContent = h.commShare === undefined || h.commShare === null ? '' : `· latest step: ${Math.round(100 * h.commShare)}% not computing (moving bytes, summing)`;
    e.step.textContent = `${h.step.toLocaleString('en-US')} / ${h.totalSteps.toLocaleString('en-US')}`;
    e.epoch.textContent = `${h.epoch} / ${c.epochs}`;
    e.eta.textContent = isTerminal(h.state) ? 'done' : formatSeconds(h.etaSec);
    e.bytes.textContent = formatBytes(h.totalBytes);
    const live = v.workers.filter((w) => w.state !== 'lost').length;
    e['workers-count'].textContent = `${live}${v.workers.length > live ? ` (+${v.workers.length - live} lost)` : ''}`;
    e.d2l.textContent = h.line || '–';
    this.tick();
    this.renderControls(h);
    this.renderWorkers(v.workers);
    this.renderLog(v.log);
    this.renderDownloads(v);
  }

  private renderMode(h: RunHeader): void {
    const mode = this.e.mode;
    mode.dataset.mode = h.control;
    mode.dataset.token = h.control === 'admin' ? this.token : '';
    mode.textContent = h.control !== 'admin' ? 'read-only'
      : this.token === 'accepted' ? 'admin: token accepted'
      : this.token === 'refused' ? 'admin: token refused'
      : 'admin: controls need the token';
  }

  private renderDownloads(v: RunView): void {
    const n = downloadNote(v);
    this.e['download-note'].textContent = n.note;
    this.e['download-note'].dataset.thinned = String(n.thinned);
    this.e['download-log'].hidden = !v.header?.fullLog;
  }

  private tick(): void {
    const h = this.header;
    if (!h) return;
    const running = !isTerminal(h.state);
    this.e.elapsed.textContent = formatSeconds(h.elapsedSec + (running ? (Date.now() - this.receivedAt) / 1000 : 0));
  }

  private renderControls(h: RunHeader): void {
    const admin = h.control === 'admin';
    const over = isTerminal(h.state);
    (this.e.token as HTMLInputElement).hidden = !admin;
    (this.e.pause as HTMLButtonElement).disabled = !admin || over || h.state === 'paused';
    (this.e.resume as HTMLButtonElement).disabled = !admin || over || h.state !== 'paused';
    (this.e.stop as HTMLButtonElement).disabled = !admin || over;
    (this.e.export as HTMLButtonElement).disabled = !admin || over;
    this.e['control-note'].textContent = over ? `the run is ${h.state}` : admin
      ? 'Pause, resume and stop need the admin token (the coordinator\'s --admin-token).'
      : 'Read-only: the coordinator was started without --admin-token.';
  }

  private renderWorkers(rows: WorkerRow[]): void {
    const body = this.doc.querySelector('#workers tbody')!;
    const trs = rows.map((w) => {
      const tr = this.doc.createElement('tr');
      tr.dataset.state = w.state;
      tr.dataset.straggler = String(w.straggler);
      tr.dataset.worker = String(w.id);
      const cell = (text: string, cls?: string) => {
        const td = this.doc.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
        return td;
      };
      const id = cell(`#${w.id}`);
      id.title = w.workerId;
      if (w.straggler) {
        const m = this.doc.createElement('span');
        m.className = 'marker';
        m.textContent = 'straggler';
        m.title = 'the latest step waited for this worker';
        id.append(m);
      }
      cell(w.kind);
      const ad = cell(w.adapterName ? `${w.backend} · ${w.adapterName}` : w.backend, 'adapter');
      ad.title = ad.textContent ?? '';
      cell(w.state).dataset.state = w.state;
      cell(String(w.shardSize));
      cell(w.computeMs.toFixed(1));
      cell(w.uploadMs.toFixed(1));
      cell(formatBytes(w.bytesIn));
      cell(formatBytes(w.bytesOut));
      cell(w.examplesPerSec.toFixed(1));
      cell(String(w.shardsDone));
      return tr;
    });
    if (trs.length === 0) {
      const tr = this.doc.createElement('tr');
      const td = this.doc.createElement('td');
      td.colSpan = 11;
      td.textContent = 'no workers yet: open the coordinator\'s address in a tab on a GPU machine, or start `tabtrain worker --url ws://HOST:PORT/ws`';
      tr.append(td);
      trs.push(tr);
    }
    body.replaceChildren(...trs);
  }

  private renderLog(lines: string[]): void {
    const log = this.e.log;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.replaceChildren(...lines.map((l) => { const li = this.doc.createElement('li'); li.textContent = l; return li; }));
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
}
