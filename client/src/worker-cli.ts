// `tabtrain worker`: the command line of the headless Node worker. bin/tabtrain runs this file
// for `worker` and the server package's cli.ts for everything else.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_CONNECT_TIMEOUT_MS, WorkerError, leaveRun, normalizeFingerprint, runNodeWorker } from './node-worker';
import { asTyped, joinNegativeValues, parseArgsMessage } from '@tabtrain/shared/cli-args';
import { exitWithFilteringParent, runWithDawnFiltered } from './dawn-stderr';
import { defaultReplicaThreads } from './exact-replica-thread';

export const WORKER_HELP = `tabtrain worker: join a coordinator as a headless Node worker.

Usage:
  tabtrain worker --url URL [options]

options:
  --url URL           the coordinator, as it prints it: wss://HOST:8080/ws (or ws://). The page's
                      https://HOST:PORT/?token=… (its token is used) and bare HOST:PORT are understood
                      too; HOST:PORT is wss:// with --fingerprint or --ca, else ws://
  --fingerprint FP    wss: trust the coordinator's self-signed certificate with this SHA-256
                      fingerprint (it prints it at start; colons optional)
  --ca FILE           wss: trust certificates issued by this CA (PEM): your organisation's CA, or
                      the coordinator's own self-signed cert.pem
  --token T           the coordinator's --token
  --backend B         wasm (default; XNNPACK, one core) | cpu (pure JS, tiny models only)
                      | webgpu (Dawn: Vulkan GPU, else OpenGL/llvmpipe; see docs/GPU.md)
  --connect-timeout D give up when no coordinator has answered for D: 90s, 10m, 1h, or seconds
                      (default 10m; 0 = keep trying forever)
  --id ID             this worker's identity (default: a new random one); a reconnect with the same
                      id replaces the old connection
  --refresh-every K   powersgd: every K versions, replace the working weights (updated on the
                      backend, within rounding of the coordinator's) by the exact copy kept in a
                      thread, and log their drift (default 50)
  --apply-threads T   powersgd: threads that apply each update to the exact copy (its thread and
                      T − 1 helpers sharing its memory; default ${defaultReplicaThreads()} here: the cores but
                      one, at most 4, for models of 1 M weights or more, 1 below). The same bits
                      whatever T
  --delay-ms X        add X ms per example (simulates a slow GPU; for tests)
  --fault-corrupt-version V
                      perturb this worker's weights after applying update V (tests the hash check)
  --synthetic-ms-per-example X
                      benchmark stand-in for a GPU: no tfjs, sleep X ms per example, send a fixed
                      gradient of the model's full size (d2l's V100: 0.25; see docs/BENCHMARKS.md)
  --instances N       run N independent worker sessions in this process (load tests)
  --quiet             log errors only

Examples:
  tabtrain worker --url wss://10.0.0.5:8080/ws --fingerprint 3A:F1:…:9C
  tabtrain worker --url ws://localhost:8080/ws --backend webgpu
`;

/** A mistake on the command line: one line, exit 2. */
export class UsageError extends Error {}

/**
 * The WebSocket URL from what a person may type: ws(s)://HOST:PORT/ws, the page's
 * http(s)://HOST:PORT/ (its ?token= included), or bare HOST:PORT. A URL without a path gets /ws.
 * A bare HOST:PORT is wss:// when `secure` (the worker was given --fingerprint or --ca, which only
 * a TLS coordinator needs), else ws://.
 */
export function workerUrl(given: string, secure = false): string {
  const s = given.trim();
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `${secure ? 'wss' : 'ws'}://${s}`);
  } catch {
    throw new UsageError(`--url ${given} is not a URL: give the coordinator's address as it prints it, e.g. wss://HOST:8080/ws`);
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new UsageError(`--url ${given}: the scheme must be ws:// or wss:// (or the page's http:// or https://)`);
  if (!u.hostname) throw new UsageError(`--url ${given} names no host: give wss://HOST:PORT/ws`);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  u.hash = '';
  return u.toString();
}

/** "90s", "10m", "1h", "1h30m", "600" (seconds), "0" → milliseconds. */
export function parseDuration(flag: string, given: string): number {
  const s = given.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(s);
  if (!m || !s) throw new UsageError(`${flag} ${given} is not a duration: use e.g. 90s, 10m, 1h, or 0 for no limit`);
  return ((Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0)) * 60 + Number(m[3] ?? 0)) * 1000;
}


function number(v: string | undefined, flag: string, { min = 0, integer = false, above = false } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  const ok = v.trim() !== '' && Number.isFinite(n) && (integer ? Number.isSafeInteger(n) : true) && (above ? n > min : n >= min);
  if (!ok) throw new UsageError(`${flag} must be ${integer ? 'an integer' : 'a number'} ${above ? '>' : '≥'} ${min}, got '${v}'`);
  return n;
}

const OPTIONS = {
  url: { type: 'string' }, backend: { type: 'string', default: 'wasm' }, token: { type: 'string' }, fingerprint: { type: 'string' }, ca: { type: 'string' },
  'connect-timeout': { type: 'string' }, 'delay-ms': { type: 'string' }, 'fault-corrupt-version': { type: 'string' }, 'synthetic-ms-per-example': { type: 'string' }, 'refresh-every': { type: 'string' }, 'apply-threads': { type: 'string' },
  quiet: { type: 'boolean', default: false }, id: { type: 'string' }, instances: { type: 'string' }, local: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false },
} as const;

/** `tabtrain worker ARGS` (argv without the word `worker`). */
export async function worker(argv: string[]): Promise<void> {
  const valued = new Set(Object.entries(OPTIONS).filter(([, o]) => o.type === 'string').map(([k]) => `--${k}`));
  const { values: v } = parseArgs({ args: joinNegativeValues(argv, valued), strict: true, options: OPTIONS });
  if (v.help) {
    console.log(asTyped(WORKER_HELP));
    return;
  }
  if (!v.url) throw new UsageError("--url is missing: give the coordinator's address as it prints it when it starts, e.g. --url wss://HOST:8080/ws");
  // The page's address as the coordinator prints it carries the run's token: take it from there
  // unless --token says otherwise, so that the printed address works as it is; the token travels
  // in the hello, not in the upgrade's request line, which proxies log.
  const address = new URL(workerUrl(v.url, v.fingerprint !== undefined || v.ca !== undefined));
  const token = v.token ?? address.searchParams.get('token') ?? undefined;
  address.searchParams.delete('token');
  const url = address.toString();
  if (!['wasm', 'cpu', 'webgpu'].includes(v.backend!)) throw new UsageError(`--backend must be wasm, cpu or webgpu, got '${v.backend}'`);
  let fingerprint: string | undefined;
  if (v.fingerprint !== undefined) {
    fingerprint = normalizeFingerprint(v.fingerprint) ?? undefined;
    if (!fingerprint) throw new UsageError(`--fingerprint ${v.fingerprint} is not a SHA-256 fingerprint (64 hex digits, colons optional); the coordinator prints it at start`);
  }
  let ca: Buffer | undefined;
  if (v.ca !== undefined) {
    try {
      ca = readFileSync(v.ca);
    } catch (e) {
      throw new UsageError(`--ca ${v.ca}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give the CA certificate as a PEM file`);
    }
    if (!/-----BEGIN CERTIFICATE-----/.test(ca.toString('latin1'))) throw new UsageError(`--ca ${v.ca} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  }
  if ((fingerprint || ca) && !url.startsWith('wss:')) throw new UsageError(`--fingerprint and --ca are for wss:// URLs; ${url} is plain ws://`);
  const connectTimeoutMs = v['connect-timeout'] === undefined ? DEFAULT_CONNECT_TIMEOUT_MS : parseDuration('--connect-timeout', v['connect-timeout']);
  if (v.local && process.send) {
    // A local worker belongs to its coordinator: Ctrl-C in the terminal reaches the whole process
    // group, and the coordinator, not the worker, decides when to stop (it finishes the step first).
    process.on('SIGINT', () => {});
    process.on('disconnect', () => process.exit(0));
  } else {
    // A person's Ctrl-C: say so to the coordinator (it logs that this worker left, and hands its
    // shard to another at once), then exit. A second Ctrl-C quits without waiting.
    const leave = (signal: NodeJS.Signals) => {
      console.log(`leaving the run (${signal}); press Ctrl-C again to quit at once`);
      leaveRun(`stopped by its operator (${signal})`);
      process.once(signal, () => process.exit(130));
    };
    process.once('SIGINT', leave);
    process.once('SIGTERM', leave);
  }
  await runNodeWorker({
    url, backend: v.backend as 'wasm' | 'cpu' | 'webgpu', token, workerId: v.id, fingerprint, ca, connectTimeoutMs,
    delayMsPerExample: number(v['delay-ms'], '--delay-ms', { above: true }),
    corruptVersion: number(v['fault-corrupt-version'], '--fault-corrupt-version', { min: 1, integer: true }),
    syntheticMsPerExample: number(v['synthetic-ms-per-example'], '--synthetic-ms-per-example'),
    refreshEvery: number(v['refresh-every'], '--refresh-every', { min: 1, integer: true }),
    applyThreads: number(v['apply-threads'], '--apply-threads', { min: 1, integer: true }),
    quiet: v.quiet, instances: number(v.instances, '--instances', { min: 1, integer: true }),
  });
}

/** Errors a person can act on, printed as one line: which exit code, or null for a bug (stack). */
export function userErrorCode(e: unknown): number | null {
  if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) return 2;
  // No usable GPU adapter (dawn.ts) says which backend it tried and the fix: a message, not a bug.
  if (e instanceof WorkerError || (e as Error)?.name === 'DawnError') return 1;
  return null;
}

const isEntry = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
const filtered = isEntry ? runWithDawnFiltered(process.argv.slice(2)) : null;
if (filtered) filtered.then((code) => process.exit(code));
else if (isEntry) {
  const args = process.argv.slice(2);
  exitWithFilteringParent();
  worker(args[0] === 'worker' ? args.slice(1) : args).then(
    () => process.exit(0),
    (e) => {
      const code = userErrorCode(e);
      const err = e as Error & { code?: string };
      const message = err?.code?.startsWith('ERR_PARSE_ARGS') ? parseArgsMessage(err, 'worker', Object.keys(OPTIONS)) : err.message;
      console.error(`tabtrain worker: ${code === null ? (err.stack ?? e) : asTyped(message)}`);
      process.exit(code ?? 1);
    },
  );
}
