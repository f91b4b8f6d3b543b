// `tabtrain worker`: a headless worker in Node. Backend setup, the socket, TLS trust and the
// reconnect policy live here; the arithmetic and the protocol live in core.ts, shared with the
// browser page.
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import * as tf from '@tensorflow/tfjs-core';
import { CLOSE, CLOSE_NAMES, MAX_FRAME_BYTES } from '@tabtrain/shared';
import { WorkerCore, type WorkerIdentity } from './core';
import { defaultReplicaThreads, threadReplica } from './exact-replica-thread';
import { POOL_MIN_FLOATS } from '@tabtrain/shared/low-rank-pool';
import { asTyped } from '@tabtrain/shared/cli-args';

export interface NodeWorkerOptions {
  /** ws:// or wss:// (see workerUrl in worker-cli.ts for what a person may type). */
  url: string;
  backend: 'wasm' | 'cpu' | 'webgpu';
  token?: string;
  workerId?: string;
  /** wss: trust exactly the certificate with this SHA-256 fingerprint ("AB:CD:…"), self-signed or not. */
  fingerprint?: string;
  /** wss: trust certificates issued by this CA (PEM), besides the system's. */
  ca?: string | Buffer;
  /** Give up when no coordinator has answered for this long; 0 = never. Default 10 minutes. */
  connectTimeoutMs?: number;
  /** Extra milliseconds per example, to simulate a slow GPU in straggler tests. */
  delayMsPerExample?: number;
  /** Fault injection for tests: perturb the weights after applying this version's update. */
  corruptVersion?: number;
  /** powersgd: refresh the working weights (on the backend) from the exact copy (in a thread) every this many versions. */
  refreshEvery?: number;
  /** powersgd: threads that apply each update to the exact copy (default defaultReplicaThreads()). */
  applyThreads?: number;
  /** Benchmark stand-in for a GPU: no tfjs compute, sleep this long per example (synthetic.ts). */
  syntheticMsPerExample?: number;
  quiet?: boolean;
  /** Independent worker sessions in this one process (load tests); default 1. */
  instances?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10 * 60_000;

/** An error a person can act on: printed as one line, without a stack. */
export class WorkerError extends Error {}

/** The environment variable by which a coordinator hands its own workers its local key (server/src/secrets.ts). */
const LOCAL_KEY_ENV = 'TABTRAIN_LOCAL_KEY';
/** One identity per worker instance across reconnects: the core records in it the id and secret a welcome gives. */
const identities = new Map<string, WorkerIdentity>();

/** Open sockets of this process's worker instances, and whether its operator asked it to leave (leaveRun). */
const sockets = new Set<WebSocket>();
let leaving = false;

/**
 * Leaves the run: every instance closes its socket with CLOSE.leaving and the reason, so the
 * coordinator logs that the worker left (and why) rather than a lost connection, and gives its
 * shard to another worker at once. No instance reconnects. runNodeWorker then resolves.
 */
export function leaveRun(reason: string): void {
  leaving = true;
  for (const ws of sockets) ws.close(CLOSE.leaving, reason);
}

/** Codes after which reconnecting cannot help. */
const FATAL = new Set<number>([CLOSE.protocolMismatch, CLOSE.modelMismatch, CLOSE.unauthorized, CLOSE.replaced]);

export async function setupNodeBackend(backend: NodeWorkerOptions['backend']): Promise<{ backend: string; adapter: Record<string, unknown> | null }> {
  // PROD silences tfjs's console advice ("install tfjs-node") that cannot apply here.
  tf.env().set('PROD', true);
  if (backend === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
    const { registerWasmKernels } = await import('./wasm-kernels');
    registerWasmKernels();
  } else if (backend === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
  } else {
    const { setupDawn } = await import('./dawn');
    return setupDawn();
  }
  if (!(await tf.setBackend(backend))) throw new Error(`could not initialise the ${backend} backend`);
  await tf.ready();
  return { backend, adapter: null };
}

/** Runs until the coordinator ends the run (resolves) or refuses us for good (rejects with a WorkerError). */
export async function runNodeWorker(opts: NodeWorkerOptions): Promise<void> {
  const { backend, adapter } = opts.syntheticMsPerExample !== undefined ? { backend: 'synthetic', adapter: null } : await setupNodeBackend(opts.backend);
  const instances = opts.instances ?? 1;
  // Several instances share one process and backend: lightweight workers for load tests.
  await Promise.all(Array.from({ length: instances }, (_, i) =>
    runInstance(opts, instances > 1 ? `${opts.workerId ?? randomUUID()}-${i}` : opts.workerId ?? randomUUID(), backend, adapter)));
}

interface Outcome {
  code: number;
  reason: string;
  /** The WebSocket opened: a coordinator answered. */
  opened: boolean;
  /** The coordinator welcomed us. */
  joined: boolean;
  /** Why the connection failed before it opened (ECONNREFUSED, ENOTFOUND, …). */
  error: { code?: string; message: string } | null;
  /** The TLS certificate was refused: reconnecting cannot help. */
  untrusted: string | null;
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${String(s % 60).padStart(2, '0')}s` : ''}`;
  return `${Math.floor(s / 3600)}h${Math.round((s % 3600) / 60) ? `${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m` : ''}`;
}

const isTlsMismatch = (e: { code?: string; message: string } | null) => !!e && (e.code === 'EPROTO' || /wrong version number|packet length too long/i.test(e.message));

/** What went wrong before the WebSocket opened, and what usually fixes it. */
export function describeConnectError(url: string, e: { code?: string; message: string } | null): { problem: string; fix: string } {
  const u = new URL(url);
  const where = `${u.hostname}:${u.port || (u.protocol === 'wss:' ? 443 : 80)}`;
  const code = e?.code ?? '';
  const msg = e?.message ?? 'the connection closed before the WebSocket opened';
  const start = asTyped('start `tabtrain serve` first, or check --url (the coordinator prints it when it starts)');
  if (code === 'ECONNREFUSED') return { problem: `connection refused: nothing listens on ${where}`, fix: start };
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return { problem: `the host name ${u.hostname} does not resolve`, fix: "check its spelling, or use the coordinator's IP address" };
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return { problem: `no answer from ${where} (${code})`, fix: "check the address, and that the coordinator's firewall lets the port through" };
  if (isTlsMismatch(e)) return { problem: `${where} does not speak TLS (a coordinator started with --no-tls?)`, fix: `use ws://${where}${u.pathname}` };
  const status = /Unexpected server response: (\d+)/.exec(msg);
  if (status) return { problem: `${where} answered with HTTP ${status[1]} instead of a WebSocket`, fix: 'check --url: a coordinator\'s ends in /ws' };
  return { problem: `${msg}${code ? ` (${code})` : ''}`, fix: start };
}

function refusal(url: string, o: Outcome, opts: NodeWorkerOptions): string {
  const name = CLOSE_NAMES[o.code] ?? String(o.code);
  if (o.code === CLOSE.unauthorized) {
    return opts.token === undefined
      ? `the coordinator at ${url} needs a token: add --token T with the token it was started with (its --token)`
      : `the coordinator at ${url} refused --token: it is not the token the coordinator was started with (its --token)`;
  }
  if (o.code === CLOSE.protocolMismatch || o.code === CLOSE.modelMismatch) return `the coordinator at ${url} runs another tabtrain version (${name}: ${o.reason}): update this worker to the coordinator's version`;
  if (o.code === CLOSE.replaced) return `another worker joined ${url} with this worker's id: give each worker its own --id, or none`;
  return `the coordinator at ${url} refused this worker: ${name} (${o.code}) ${o.reason}`;
}

async function runInstance(opts: NodeWorkerOptions, workerId: string, backend: string, adapter: Record<string, unknown> | null): Promise<void> {
  const tag = `[worker ${workerId.slice(0, 8)}]`;
  const log = (line: string) => { if (!opts.quiet) console.log(`${tag} ${line}`); };
  const warn = (line: string) => console.error(`${tag} ${line}`);
  const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const forHowLong = timeoutMs > 0 ? `for up to ${formatDuration(timeoutMs)} (--connect-timeout)` : 'forever (--connect-timeout 0)';
  log(`backend ${backend}${adapter ? ` on ${JSON.stringify(adapter)}` : ''}; connecting to ${opts.url}`);
  let delay = 250;
  /** Since when no coordinator has answered: the start, or the end of the last session that opened. */
  let silentSince = Date.now();
  let everOpened = false;
  let failures = 0;
  let reportedAt = 0;
  for (;;) {
    const o = leaving ? null : await session(opts, workerId, backend, adapter, log);
    if (o === null || leaving) {
      log('left the run');
      return;
    }
    if (o.untrusted) throw new WorkerError(o.untrusted);
    if (o.code === CLOSE.finished && o.opened) {
      // The coordinator's reason says whether the run finished or was stopped ("run stopped: …").
      log(o.joined ? (o.reason || 'run finished') : `the run at ${opts.url} has already ${o.reason.startsWith('run stopped') ? 'stopped' : 'finished'}`);
      return;
    }
    if (FATAL.has(o.code)) throw new WorkerError(refusal(opts.url, o, opts));
    if (o.joined) delay = 250;
    if (o.opened) {
      everOpened = true;
      failures = 0;
      silentSince = Date.now();
      const why = o.code === 1006 ? 'the connection dropped without a close frame: the coordinator stopped, or the network failed' : `${CLOSE_NAMES[o.code] ?? o.code}${o.reason ? `: ${o.reason}` : ''}`;
      warn(`disconnected from ${opts.url} (${why}); reconnecting in ${delay} ms`);
    } else {
      failures++;
      const silent = Date.now() - silentSince;
      const { problem, fix } = describeConnectError(opts.url, o.error);
      // TLS to a plain-http port fails the same way every time: no point in retrying.
      if (isTlsMismatch(o.error)) throw new WorkerError(`cannot connect to ${opts.url}: ${problem}; ${fix}`);
      if (timeoutMs > 0 && silent >= timeoutMs) {
        throw new WorkerError(`gave up after ${formatDuration(silent)}: no coordinator at ${opts.url} (${problem}); ${fix}`);
      }
      // The first failure in full, then a reminder every 30 s: not one line per retry.
      if (failures === 1 || Date.now() - reportedAt > 30_000) {
        reportedAt = Date.now();
        warn(failures === 1
          ? `cannot reach ${everOpened ? 'the coordinator again' : 'the coordinator'} at ${opts.url}: ${problem}; ${fix}. Retrying ${forHowLong}`
          : `still no coordinator at ${opts.url} after ${formatDuration(silent)} (${failures} attempts): ${problem}`);
      }
    }
    // Never sleep past the deadline: give up on time.
    const silent = Date.now() - silentSince;
    const wait = timeoutMs > 0 && !o.opened ? Math.max(50, Math.min(delay, timeoutMs - silent)) : delay;
    await new Promise((r) => setTimeout(r, wait));
    delay = Math.min(delay * 2, 10_000);
  }
}

/** "AB:CD:…", the form Node and browsers print, from any spelling with or without colons. */
export function normalizeFingerprint(given: string): string | null {
  const hex = given.trim().replace(/^sha-?256[:= ]?/i, '').replace(/[:\s]/g, '');
  if (!/^[0-9a-f]{64}$/i.test(hex)) return null;
  return hex.toUpperCase().match(/../g)!.join(':');
}

/**
 * wss: decide about the coordinator's certificate ourselves, so that a refusal can quote the
 * fingerprint to pin. A pinned certificate is trusted whoever issued it (and whatever names it
 * holds: the pin is stronger than both); otherwise it must verify against the system's CAs or --ca,
 * for this host name. The check runs at the end of the handshake, before the WebSocket opens, so
 * nothing but the upgrade request (no token, no hello) ever reaches a certificate we refuse.
 */
function trustCheck(url: string, opts: NodeWorkerOptions, onUntrusted: (why: string) => void): Pick<WebSocket.ClientOptions, 'createConnection'> {
  const u = new URL(url);
  if (u.protocol !== 'wss:') return {};
  return {
    createConnection: ((o: ConnectionOptions): TLSSocket => {
      const host = o.host ?? u.hostname;
      const socket = tlsConnect({ ...o, ...(opts.ca ? { ca: opts.ca } : {}), servername: isIP(host) ? undefined : host, rejectUnauthorized: false });
      socket.once('secureConnect', () => {
        const fp = socket.getPeerCertificate()?.fingerprint256 ?? '?';
        let why: string | null = null;
        if (opts.fingerprint) {
          if (fp !== opts.fingerprint) why = `the coordinator at ${url} presents a certificate with SHA-256 fingerprint ${fp}, not the pinned ${opts.fingerprint}: if the coordinator made a new certificate, pin the fingerprint it prints at start; if not, something is intercepting the connection`;
        } else if (!socket.authorized) {
          const err = String(socket.authorizationError ?? 'untrusted');
          const what = /SELF_SIGNED/.test(err) ? 'a self-signed certificate' : /ALTNAME|HOSTNAME/i.test(err) ? `a certificate that does not name ${u.hostname}` : `a certificate this machine does not trust (${err})`;
          why = `the coordinator at ${url} presents ${what}. If it is yours, pin it: --fingerprint ${fp} (compare with the fingerprint the coordinator prints at start), or pass its certificate with --ca FILE`;
        }
        if (why) {
          onUntrusted(why);
          socket.destroy();
        }
      });
      return socket;
    }) as unknown as WebSocket.ClientOptions['createConnection'],
  };
}

function session(opts: NodeWorkerOptions, workerId: string, backend: string, adapter: Record<string, unknown> | null, log: (l: string) => void): Promise<Outcome> {
  return new Promise((resolve) => {
    let untrusted: string | null = null;
    let opened = false;
    let joined = false;
    let error: Outcome['error'] = null;
    // An all-zero mask: ws then neither copies nor XORs each gradient frame (a full pass over every
    // byte sent). Masking guards proxies against a web page choosing the bytes on the wire; the
    // bytes here are our own gradients (a browser tab's sockets still mask: the browser decides).
    const ws = new WebSocket(opts.url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, generateMask: (mask) => { mask.fill(0); }, ...trustCheck(opts.url, opts, (why) => { untrusted = why; }) });
    const send = (frame: Uint8Array) => new Promise<void>((res, rej) => ws.send(frame, (err) => (err ? rej(err) : res())));
    // One identity per instance across reconnects: the core records the id and session secret the welcome gives.
    if (!identities.has(workerId)) identities.set(workerId, { workerId, kind: 'node', backend, adapter, token: opts.token, local: process.env[LOCAL_KEY_ENV] });
    const core = new WorkerCore(identities.get(workerId)!, send, { delayMsPerExample: opts.delayMsPerExample, corruptVersion: opts.corruptVersion, syntheticMsPerExample: opts.syntheticMsPerExample, refreshEvery: opts.refreshEvery, exactReplica: (p, lr, c) => threadReplica(p, lr, c, opts.applyThreads ?? (p.total >= POOL_MIN_FLOATS ? defaultReplicaThreads() : 1)), log });
    sockets.add(ws);
    ws.on('open', () => {
      opened = true;
      ws.send(core.hello());
    });
    ws.on('message', (data: Buffer) => {
      joined = true;
      core.receive(data).catch((e) => {
        console.error(`[worker ${workerId.slice(0, 8)}] error: ${(e as Error).message}`);
        ws.close(CLOSE.unexpected, String((e as Error).message).slice(0, 120));
      });
    });
    ws.on('error', (e: Error & { code?: string }) => {
      if (!opened) error = { code: e.code, message: e.message };
      else log(`socket error: ${e.message}`);
    });
    ws.on('close', (code, reason) => {
      sockets.delete(ws);
      core.dispose();
      resolve({ code, reason: reason.toString(), opened, joined, error, untrusted });
    });
  });
}
