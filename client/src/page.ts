// The worker page: open http://COORDINATOR:PORT/ on a GPU machine and this tab trains.
//
// Only two things here are browser-specific: the backend setup (page-backend.ts) and the socket
// (page-socket.ts). The protocol and the arithmetic are WorkerCore's, the same as the Node
// worker's. URL parameters:
//   ?coordinator=ws://HOST:PORT/ws   join another coordinator than the one that served the page
//   ?backend=webgpu|webgl|wasm|cpu   try this backend first
//   ?token=T                         the coordinator's --token
//   ?threads=N                       WebAssembly backend: run XNNPACK's ops on N threads (1-8)
import * as tf from '@tensorflow/tfjs-core';
import { CLOSE, CLOSE_NAMES, PROGRESS_CURVE_POINTS, type Progress } from '@tabtrain/shared';
import { thin } from '@tabtrain/shared/dashboard-wire';
import type { WorkerIdentity, WorkerStatus } from './core';
import { selectBackend, simulateDeviceLoss, type BackendChoice, type DeviceLoss } from './page-backend';
import { parseWasmThreads } from './page-threads';
import { Backoff, FATAL_CODES, coordinatorUrl, rememberIdentity, runSession, stableWorkerId, storedSession } from './page-socket';
import { PageUi } from './page-ui';

/** One finished shard, as the page saw it: for the memory check and the speed figures. */
export interface ShardRecord { step: number; shardSize: number; computeMs: number; uploadMs: number; examplesPerSec: number; tensors: number; bytes: number; heapBytes: number | null }

/** What tests (and curious users, from the console) can read: `window.tabtrain.snapshot()`. */
export interface PageSnapshot {
  backend: string | null;
  adapter: Record<string, unknown> | null;
  notice: string;
  connection: string;
  coordinator: string;
  workerId: string;
  status: WorkerStatus | null;
  /** The coordinator's latest progress message: the run, and this tab's part in it. */
  progress: Progress | null;
  /** The run's loss by step, [step, loss], as the progress messages told it. */
  curve: [number, number][];
  shards: ShardRecord[];
  deviceLosses: number;
  memory: { numTensors: number; numBytes: number; numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
  heapBytes: number | null;
  error: string | null;
}

declare global {
  interface Window { tabtrain?: { snapshot(): PageSnapshot; simulateDeviceLoss(): boolean } }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** tf.memory() throws while no backend is up (between a device loss and the next backend). */
const memory = (): PageSnapshot['memory'] => {
  try {
    return tf.memory() as PageSnapshot['memory'];
  } catch {
    return { numTensors: 0, numBytes: 0 };
  }
};
const heap = (): number | null => (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? null;

async function main(): Promise<void> {
  const ui = new PageUi(document);
  const params = new URLSearchParams(location.search);
  const state: PageSnapshot = {
    backend: null, adapter: null, notice: '', connection: 'starting', coordinator: '', workerId: '', status: null, progress: null, curve: [], shards: [],
    deviceLosses: 0, memory: memory(), heapBytes: heap(), error: null,
  };
  window.tabtrain = {
    snapshot: () => ({ ...state, status: state.status && { ...state.status }, curve: [...state.curve], shards: [...state.shards], memory: memory(), heapBytes: heap() }),
    simulateDeviceLoss,
  };
  const connection = (text: string, level?: 'ok' | 'warn' | 'error') => {
    state.connection = text;
    ui.set('connection', text, level);
  };
  const log = (line: string) => ui.addLog(line);
  const fail = (message: string) => {
    state.error = message;
    ui.setNotice('error', message);
    connection(`stopped: ${message}`, 'error');
  };

  try {
    state.coordinator = coordinatorUrl(location, params);
  } catch (e) {
    fail((e as Error).message);
    return;
  }
  ui.set('coordinator', state.coordinator);
  // One identity for the tab's life: the core records in it the id and session secret each welcome gives.
  const identity: WorkerIdentity = { workerId: stableWorkerId(sessionStorage), session: storedSession(sessionStorage), kind: 'browser', backend: '', adapter: null, token: params.get('token') ?? undefined };
  const showIdentity = () => {
    if (state.workerId === identity.workerId) return;
    state.workerId = identity.workerId;
    ui.set('worker', identity.workerId);
    rememberIdentity(sessionStorage, identity);
  };
  showIdentity();
  // tfjs's console advice is for developers, not for people lending a GPU.
  tf.env().set('PROD', true);

  const forced = params.get('backend');
  let threads: number | undefined;
  try {
    threads = parseWasmThreads(params.get('threads'));
  } catch (e) {
    fail((e as Error).message);
    return;
  }
  // powersgd: versions between refreshes of the working weights from the exact copy (default DEFAULT_REFRESH_EVERY).
  const refreshParam = params.get('refresh');
  const refreshEvery = refreshParam !== null && /^[1-9]\d{0,8}$/.test(refreshParam) ? Number(refreshParam) : undefined;
  if (refreshParam !== null && refreshEvery === undefined) log(`?refresh=${refreshParam} is not a whole number of versions ≥ 1: using the default`);
  // powersgd: threads that apply each update to the exact copy (default: the cores but this page's, at most 4).
  const applyParam = params.get('apply-threads');
  const applyThreads = applyParam !== null && /^[1-9]$/.test(applyParam) ? Number(applyParam) : undefined;
  if (applyParam !== null && applyThreads === undefined) log(`?apply-threads=${applyParam} is not a whole number from 1 to 9: using the default`);
  let choice: BackendChoice;
  let lost: DeviceLoss | null = null;
  const adopt = (c: BackendChoice) => {
    choice = c;
    lost = null;
    c.lost.then((l) => { if (choice === c) lost = l; });
    Object.assign(state, { backend: c.backend, adapter: c.adapter, notice: c.notice });
    ui.showBackend(c);
    log(`backend ${c.backend}`);
  };
  connection('choosing a backend…');
  try {
    adopt(await selectBackend({ forced, threads }));
  } catch (e) {
    fail((e as Error).message);
    return;
  }

  let wasWorking = false;
  const onStatus = (s: WorkerStatus) => {
    if (s.state === 'idle') { showIdentity(); rememberIdentity(sessionStorage, identity); }
    state.status = { ...s };
    ui.showStatus(s);
    const m = memory();
    if (wasWorking && s.state === 'idle') {
      state.shards.push({ step: s.step, shardSize: s.shardSize, computeMs: s.computeMs, uploadMs: s.uploadMs, examplesPerSec: s.examplesPerSec, tensors: m.numTensors, bytes: m.numBytes, heapBytes: heap() });
      if (state.shards.length > 1000) state.shards.splice(0, state.shards.length - 1000);
    }
    if (s.state === 'idle' && s.run) connection('joined: waiting for a shard', 'ok');
    if (s.state === 'working') connection('joined: computing a shard', 'ok');
    wasWorking = s.state === 'working';
    ui.showMemory(m, heap());
    ui.showProgress(state.progress, s, state.curve);
  };
  const onProgress = (p: Progress) => {
    state.progress = p;
    // The first message after a welcome carries the run's curve so far; later ones add their step.
    if (p.curve) state.curve = Array.from({ length: p.curve.length / 2 }, (_, i) => [p.curve![2 * i], p.curve![2 * i + 1]] as [number, number]);
    else if (p.loss !== undefined && p.step > (state.curve.at(-1)?.[0] ?? 0)) state.curve.push([p.step, p.loss]);
    if (state.curve.length > 2 * PROGRESS_CURVE_POINTS) thin(state.curve);
    ui.showProgress(p, state.status, state.curve);
  };

  const backoff = new Backoff();
  for (;;) {
    connection(`connecting to ${state.coordinator}…`);
    const outcome = await runSession({
      url: state.coordinator,
      identity: Object.assign(identity, { backend: choice!.backend, adapter: choice!.adapter }),
      lost: choice!.lost,
      onStatus,
      onProgress,
      onOpen: () => connection('connected: saying hello'),
      log,
      refreshEvery,
      applyThreads,
    });
    ui.showMemory(memory(), heap());
    const gone: DeviceLoss | null = outcome.deviceLost ?? lost;
    if (gone) {
      // The device and every tensor on it are gone. Start a new backend (WebGPU again if it comes
      // back, else the next one down) and rejoin under the same id; the coordinator has already
      // put our unfinished shard back in its queue.
      state.deviceLosses++;
      connection('GPU device lost: re-initialising', 'warn');
      log(`GPU device lost (${gone.reason}); re-initialising the backend`);
      if (state.deviceLosses > 1) await sleep(backoff.next());
      try {
        adopt(await selectBackend({ forced, threads, prefix: `The GPU device was lost (${gone.reason}) and this tab started again. ` }));
      } catch (e) {
        fail(`the GPU device was lost and no backend could be restarted: ${(e as Error).message}`);
        return;
      }
      continue;
    }
    const name = CLOSE_NAMES[outcome.code] ?? String(outcome.code);
    if (outcome.code === CLOSE.finished && outcome.joined) {
      // The coordinator's reason says whether the run finished or was stopped ("run stopped: …").
      const end = outcome.reason || 'run finished';
      connection(`${end}. Thank you!`, 'ok');
      log(end);
      return;
    }
    if (outcome.code === CLOSE.replaced) {
      // Another tab holds our id (a duplicated tab copies sessionStorage): take a new one.
      // (Its session secret went with it: the other tab presented it.)
      Object.assign(identity, { workerId: stableWorkerId(sessionStorage, true), session: undefined });
      showIdentity();
      log(`another tab uses this worker id; continuing as ${identity.workerId}`);
      continue;
    }
    if (outcome.unopenable) {
      fail(outcome.unopenable);
      return;
    }
    if (outcome.code === CLOSE.unauthorized) {
      const page = new URL(location.href);
      page.searchParams.set('token', 'T');
      fail(identity.token === undefined
        ? `the coordinator needs a token: open ${page.toString().replace('token=T', 'token=…')} with its --token after ?token=, then this tab joins`
        : 'the coordinator refused this tab\'s token: the ?token= in this page\'s address is not the coordinator\'s --token; correct it and reload');
      return;
    }
    if (FATAL_CODES.has(outcome.code) && outcome.code !== CLOSE.finished) {
      fail(`the coordinator refused this tab: ${name} (${outcome.code}) ${outcome.reason}`);
      return;
    }
    if (outcome.joined) backoff.reset();
    const wait = backoff.next();
    const why = outcome.code === 1006 ? 'the coordinator is unreachable' : `${name}${outcome.reason ? `: ${outcome.reason}` : ''}`;
    log(`disconnected (${why}); retrying in ${(wait / 1000).toFixed(1)} s`);
    connection(`disconnected (${why}); reconnecting in ${(wait / 1000).toFixed(1)} s (attempt ${backoff.attempts})`, 'warn');
    await sleep(wait);
  }
}

main().catch((e) => {
  const el = document.getElementById('notice');
  if (el) {
    el.className = 'notice error';
    el.textContent = `The worker stopped: ${(e as Error).message ?? e}`;
  }
  console.error(e);
});
