// `tabtrain`: the command line. `serve` runs a coordinator (optionally with local workers),
// `worker` joins one as a headless Node worker.
import { spawn, type ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MODELS, paramLayout } from '@tabtrain/shared';
import { Coordinator, DEFAULTS, type Summary } from './coordinator';
import { DataError, DEFAULT_DATA_DIR, loadFashionMnist } from './data';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function modelList(): string {
  return Object.values(MODELS)
    .map((m) => `  ${m.name.padEnd(14)} ${paramLayout(m).total.toLocaleString('en-US').padStart(12)} params, lr ${m.lr}  ${m.description}`)
    .join('\n');
}

const HELP = `tabtrain: train d2l's AlexNet / VGG-11 on Fashion-MNIST across browser tabs and Node workers.

Usage:
  tabtrain serve [options]          run a coordinator; open http://HOST:PORT/ in a tab to join
  tabtrain worker --url URL [opts]  join a coordinator as a headless Node worker
  tabtrain help                     this text

serve options:
  --model NAME        model to train (default alexnet)
  --epochs N          epochs (default ${DEFAULTS.epochs})
  --batch N           global batch, split over the workers each step (default ${DEFAULTS.batch})
  --lr X              SGD learning rate (default: the model's, d2l's for alexnet 0.01 / vgg11 0.05)
  --seed N            seed for init, data order and dropout (default ${DEFAULTS.seed})
  --port N            HTTP + WebSocket port, 0 picks a free one (default ${DEFAULTS.port})
  --host ADDR         address to listen on (default ${DEFAULTS.host}: reachable from the LAN)
  --data DIR          folder with the four Fashion-MNIST IDX .gz files (default ${DEFAULT_DATA_DIR})
  --min-workers N     workers to wait for before the first step (default ${DEFAULTS.minWorkers})
  --balance MODE      speed: shard sizes follow each worker's measured examples/s (default);
                      equal: even shards, bit-reproducible runs (fp32 sums depend on the split)
  --max-steps N       stop after N steps in all (smoke runs); a partial epoch skips the test evaluation
  --eval-examples N   test images evaluated per epoch (default all ${DEFAULTS.evalExamples.toLocaleString('en-US')})
  --local-workers N   also start N Node workers on this machine (default 0)
  --local-backend B   backend of the local workers: wasm | cpu (default wasm)
  --token T           workers must present this token
  --summary FILE      write a JSON summary: config, per-epoch metrics, examples/s, SHA-256 of the weights
  --weights-out FILE  write the final weights: raw little-endian fp32 in parameter order (see README)

worker options:
  --url URL           coordinator WebSocket, e.g. ws://host:8080/ws
  --backend B         wasm (default; XNNPACK, one core) | cpu (pure JS, tiny models only)
  --token T           the coordinator's --token
  --delay-ms X        add X ms per example (simulates a slow GPU; for tests)

models:
${modelList()}

Examples:
  npm start                                            alexnet-small, 2 local workers, 2 epochs
  tabtrain serve --model alexnet --epochs 10           d2l's AlexNet run; open the page on each GPU machine
  tabtrain serve --model vgg11-small --local-workers 2 --max-steps 50 --summary out.json
  tabtrain worker --url ws://10.0.0.5:8080/ws
`;

class UsageError extends Error {}

function int(v: string | undefined, name: string, min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got '${v}'`);
  return n;
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number, got '${v}'`);
  return n;
}

/** Writes a file atomically: a crash leaves the old file or the new one, never half of one. */
export function writeAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Spawns a worker process running this CLI. */
export function spawnWorker(url: string, args: string[] = [], stdio: 'inherit' | 'pipe' = 'inherit'): ChildProcess {
  return spawn(process.execPath, ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), join(ROOT, 'server/src/cli.ts'), 'worker', '--url', url, ...args], { cwd: ROOT, stdio });
}

async function serve(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: {
      model: { type: 'string', default: 'alexnet' }, epochs: { type: 'string' }, batch: { type: 'string' }, lr: { type: 'string' },
      seed: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, data: { type: 'string' },
      'min-workers': { type: 'string' }, 'max-steps': { type: 'string' }, 'eval-examples': { type: 'string' },
      'local-workers': { type: 'string' }, 'local-backend': { type: 'string', default: 'wasm' }, token: { type: 'string' },
      summary: { type: 'string' }, 'weights-out': { type: 'string' }, balance: { type: 'string', default: DEFAULTS.balance },
    },
  });
  if (!MODELS[v.model!]) throw new UsageError(`unknown model '${v.model}'. Models:\n${modelList()}`);
  if (!['wasm', 'cpu'].includes(v['local-backend']!)) throw new UsageError(`--local-backend must be wasm or cpu, got '${v['local-backend']}'`);
  if (v.balance !== 'speed' && v.balance !== 'equal') throw new UsageError(`--balance must be speed or equal, got '${v.balance}'`);
  const localWorkers = int(v['local-workers'], 'local-workers') ?? 0;
  const dataDir = v.data ?? DEFAULT_DATA_DIR;
  const data = loadFashionMnist(dataDir);
  const tty = process.stdout.isTTY;
  const log = (line: string) => console.log(`${tty ? '\r\x1b[K' : ''}${new Date().toISOString().slice(11, 19)} ${line}`);
  const coord = new Coordinator({
    model: v.model!, epochs: int(v.epochs, 'epochs', 1) ?? DEFAULTS.epochs, batch: int(v.batch, 'batch', 1) ?? DEFAULTS.batch,
    lr: num(v.lr, 'lr'), seed: int(v.seed, 'seed') ?? DEFAULTS.seed, port: int(v.port, 'port') ?? DEFAULTS.port, host: v.host ?? DEFAULTS.host,
    minWorkers: int(v['min-workers'], 'min-workers', 1) ?? Math.max(DEFAULTS.minWorkers, localWorkers),
    maxSteps: int(v['max-steps'], 'max-steps', 1), evalExamples: int(v['eval-examples'], 'eval-examples', 1) ?? DEFAULTS.evalExamples,
    balance: v.balance, token: v.token, helloTimeoutMs: DEFAULTS.helloTimeoutMs,
    log,
    progress: tty ? (line) => process.stdout.write(`\r\x1b[K${line}`) : log,
  }, data);
  const port = await coord.listen();
  log(`tabtrain ${coord.spec.name} (${coord.run.paramCount.toLocaleString('en-US')} parameters), lr ${coord.run.lr}, batch ${coord.opts.batch}, ${coord.opts.epochs} epochs, data ${dataDir}`);
  log(`listening on http://${coord.opts.host}:${port}/ — workers: ws://<host>:${port}/ws`);
  const children: ChildProcess[] = [];
  const url = `ws://127.0.0.1:${port}/ws`;
  for (let i = 0; i < localWorkers; i++) {
    children.push(spawnWorker(url, ['--backend', v['local-backend']!, '--quiet', ...(v.token ? ['--token', v.token] : [])]));
  }
  const stop = async (signal: string) => {
    log(`${signal}: stopping`);
    await coord.close();
    for (const c of children) c.kill();
    process.exit(130);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  let summary: Summary;
  try {
    summary = await coord.train();
  } finally {
    await coord.close();
    for (const c of children) c.kill();
  }
  log(`done: ${summary.steps} steps, ${summary.examplesPerSec.toFixed(1)} examples/sec, weights sha256 ${summary.weightsSha256.slice(0, 16)}…`);
  if (v.summary) { writeAtomic(v.summary, JSON.stringify(summary, null, 2) + '\n'); log(`summary written to ${v.summary}`); }
  if (v['weights-out']) {
    const w = coord.weights;
    writeAtomic(v['weights-out'], new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
    log(`weights written to ${v['weights-out']} (${w.length.toLocaleString('en-US')} fp32, little-endian, parameter order)`);
  }
}

async function worker(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: { url: { type: 'string' }, backend: { type: 'string', default: 'wasm' }, token: { type: 'string' }, 'delay-ms': { type: 'string' }, quiet: { type: 'boolean', default: false }, id: { type: 'string' } },
  });
  if (!v.url) throw new UsageError('worker needs --url ws://HOST:PORT/ws (the coordinator prints it when it starts)');
  if (!['wasm', 'cpu', 'webgpu'].includes(v.backend!)) throw new UsageError(`--backend must be wasm, cpu or webgpu, got '${v.backend}'`);
  const { runNodeWorker } = await import('@tabtrain/client/node-worker');
  await runNodeWorker({ url: v.url, backend: v.backend as 'wasm' | 'cpu' | 'webgpu', token: v.token, workerId: v.id, delayMsPerExample: num(v['delay-ms'], 'delay-ms'), quiet: v.quiet });
  process.exit(0);
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h' || rest.includes('--help')) {
    console.log(HELP);
    return;
  }
  if (cmd === 'serve') return serve(rest);
  if (cmd === 'worker') return worker(rest);
  throw new UsageError(`unknown command '${cmd}'; try: tabtrain help`);
}

const isEntry = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry) main().catch((e) => {
  if (e instanceof UsageError || e instanceof DataError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    console.error(`tabtrain: ${(e as Error).message}`);
    process.exit(2);
  }
  console.error(`tabtrain: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
