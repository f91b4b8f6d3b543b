// `tabtrain`: the command line. `serve` runs a coordinator (optionally with local workers),
// `worker` joins one as a headless Node worker.
import { spawn, type ChildProcess } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { IMAGE_BYTES, MAX_FRAME_BYTES, MODELS, paramLayout } from '@tabtrain/shared';
import { DEFAULT_RANK, NO_COMPRESSION, parseCompression, type Compression } from '@tabtrain/shared/compress';
import { Coordinator, DEFAULTS, type Summary } from './coordinator';
import { DataError, DEFAULT_DATA_DIR, loadFashionMnist } from './data';
import { CheckpointError, loadCheckpoint, saveCheckpoint, writeFileAtomic } from './checkpoint';

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
  tabtrain bench scaleout|micro     the scale-out and communication benchmarks (tabtrain bench --help)
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
  --local-backend B   backend of the local workers: wasm | cpu | webgpu (default wasm)
  --token T           workers must present this token
  --admin-token T     pause/resume/stop from the dashboard need this token (without it: read-only)
  --log FILE          append a JSONL metrics log: one line per step, per epoch and per state change
  --summary FILE      write a JSON summary: config, per-epoch metrics, examples/s, SHA-256 of the weights
  --weights-out FILE  write the final weights: raw little-endian fp32 in parameter order (see README)
  --checkpoint DIR    save weights, step, data-order seed and metrics to DIR atomically, every
                      --checkpoint-every N steps (default 100), at each epoch's end and on exit
  --resume DIR        continue the run saved in DIR (its model and hyper-parameters; --epochs may extend it)
  --export DIR        at the end, and on demand from the dashboard, write the model in TensorFlow.js
                      LayersModel format (model.json + weights.bin)
  --deadline-ms N     a shard not returned in N ms goes to another worker (default: 5× the worker's
                      measured time, at least 120 s)
  --compress MODE     how workers send gradients: none (fp32, default) | fp16 | int8 (per-chunk
                      scales, error feedback) | powersgd (rank-r dense kernels + int8 for the rest)
  --rank R            powersgd's rank (default ${DEFAULT_RANK})
                      Compressed runs also broadcast each step's update in the same codec (with the
                      coordinator's own error feedback) instead of the fp32 weights
  --verify-every K    compressed runs: every K steps workers check their weights' hash against the
                      coordinator's and fetch the full weights on a mismatch (default ${DEFAULTS.verifyEvery}; 0 = never)

worker options:
  --url URL           coordinator WebSocket, e.g. ws://host:8080/ws
  --backend B         wasm (default; XNNPACK, one core) | cpu (pure JS, tiny models only)
                      | webgpu (Dawn: Vulkan GPU, else OpenGL/llvmpipe; see docs/GPU.md)
  --token T           the coordinator's --token
  --delay-ms X        add X ms per example (simulates a slow GPU; for tests)
  --fault-corrupt-version V
                      perturb this worker's weights after applying update V (tests the hash check)
  --synthetic-ms-per-example X
                      benchmark stand-in for a GPU: no tfjs, sleep X ms per example, send a fixed
                      gradient of the model's full size (d2l's V100: 0.25; see docs/BENCHMARKS.md)
  --instances N       run N independent worker sessions in this process (load tests)
  --quiet             log errors only

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

function compression(mode: string, rank: string | undefined): Compression {
  try {
    return parseCompression(mode, int(rank, 'rank', 1) ?? DEFAULT_RANK);
  } catch (e) {
    throw new UsageError(`--compress/--rank: ${(e as Error).message}`);
  }
}

function nonNegative(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number ≥ 0, got '${v}'`);
  return n;
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number, got '${v}'`);
  return n;
}


/** Spawns a worker process running this CLI. */
export function spawnWorker(url: string, args: string[] = [], stdio: 'inherit' | 'pipe' = 'inherit'): ChildProcess {
  // An IPC channel lets the worker notice its parent's death (even by SIGKILL) and exit with it.
  return spawn(process.execPath, ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), join(ROOT, 'server/src/cli.ts'), 'worker', '--url', url, '--local', ...args], { cwd: ROOT, stdio: [stdio, stdio, stdio, 'ipc'] });
}

/** Where people can reach this coordinator: the LAN addresses when listening on all interfaces. */
function pageBases(host: string, port: number): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [`http://${host.includes(':') ? `[${host}]` : host}:${port}`];
  const lan = Object.values(networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal).map((a) => `http://${a!.address}:${port}`);
  return [...lan, `http://localhost:${port}`];
}

async function serve(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: {
      model: { type: 'string', default: 'alexnet' }, epochs: { type: 'string' }, batch: { type: 'string' }, lr: { type: 'string' },
      seed: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, data: { type: 'string' },
      'min-workers': { type: 'string' }, 'max-steps': { type: 'string' }, 'eval-examples': { type: 'string' },
      'local-workers': { type: 'string' }, 'local-backend': { type: 'string', default: 'wasm' }, token: { type: 'string' },
      'admin-token': { type: 'string' }, log: { type: 'string' },
      summary: { type: 'string' }, 'weights-out': { type: 'string' }, balance: { type: 'string' },
      checkpoint: { type: 'string' }, 'checkpoint-every': { type: 'string' }, resume: { type: 'string' }, 'deadline-ms': { type: 'string' },
      export: { type: 'string' }, compress: { type: 'string', default: 'none' }, rank: { type: 'string' }, 'verify-every': { type: 'string' },
    },
  });
  // A resumed run takes its model and hyper-parameters from the checkpoint; --epochs may extend it.
  const resumed = v.resume ? loadCheckpoint(v.resume) : null;
  if (resumed) {
    const c = resumed.ckpt;
    for (const [flag, given, saved] of [['model', argv.includes('--model') ? v.model : undefined, c.model], ['batch', v.batch, String(c.config.batch)], ['seed', v.seed, String(c.config.seed)], ['lr', v.lr, String(c.config.lr)]] as const) {
      if (given !== undefined && String(given) !== saved) throw new UsageError(`--${flag} ${given} conflicts with the checkpoint's ${saved}; a resumed run keeps its hyper-parameters`);
    }
    v.model = c.model; v.batch = String(c.config.batch); v.seed = String(c.config.seed); v.lr = String(c.config.lr);
    v.epochs ??= String(c.config.epochs); v.balance ??= c.config.balance;
    // Older checkpoints carry no compression: they were fp32 runs.
    const saved = c.config.compress ?? NO_COMPRESSION;
    if (argv.includes('--compress') && (v.compress !== saved.mode || (v.rank !== undefined && Number(v.rank) !== saved.rank))) throw new UsageError(`--compress ${v.compress} conflicts with the checkpoint's ${saved.mode}; a resumed run keeps its compression`);
    v.compress = saved.mode; if (saved.mode === 'powersgd') v.rank = String(saved.rank);
    v.checkpoint ??= v.resume;
  }
  v.balance ??= DEFAULTS.balance;
  if (!MODELS[v.model!]) throw new UsageError(`unknown model '${v.model}'. Models:\n${modelList()}`);
  if (!['wasm', 'cpu', 'webgpu'].includes(v['local-backend']!)) throw new UsageError(`--local-backend must be wasm, cpu or webgpu, got '${v['local-backend']}'`);
  // One shard travels as one frame (784 + 1 bytes per example), so a batch must fit one frame.
  const maxBatch = Math.floor(MAX_FRAME_BYTES / (IMAGE_BYTES + 1)) - 64;
  if (v.batch !== undefined && Number(v.batch) > maxBatch) throw new UsageError(`--batch ${v.batch} is over the ${maxBatch} examples one shard frame can carry; use a smaller global batch`);
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
    exportDir: v.export, balance: v.balance as 'speed' | 'equal', token: v.token, adminToken: v['admin-token'], metricsLog: v.log, compress: compression(v.compress!, v.rank), verifyEvery: int(v['verify-every'], 'verify-every', 0), helloTimeoutMs: DEFAULTS.helloTimeoutMs, deadlineMs: int(v['deadline-ms'], 'deadline-ms', 1),
    log,
    progress: tty ? (line) => process.stdout.write(`\r\x1b[K${line}`) : log,
  }, data);
  if (resumed) {
    coord.restore({ step: resumed.ckpt.step, weights: resumed.weights, epochAcc: resumed.ckpt.epochAcc, history: resumed.ckpt.history });
    log(`resumed from ${v.resume} at step ${coord.step} (epoch ${Math.floor(coord.step / Math.ceil(data.train.count / coord.opts.batch)) + 1}), weights sha256 ${resumed.ckpt.weightsSha256.slice(0, 16)}…`);
  }
  const checkpointEvery = int(v['checkpoint-every'], 'checkpoint-every', 1) ?? 100;
  if (v.checkpoint) {
    const dir = v.checkpoint;
    coord.afterStep = (c) => {
      // Every N steps, and at each epoch's end (the epoch accumulator has just been reset).
      if (c.step % checkpointEvery === 0 || c.epochAcc.steps === 0) saveCheckpoint(dir, c);
    };
  }
  const port = await coord.listen();
  log(`tabtrain ${coord.spec.name} (${coord.run.paramCount.toLocaleString('en-US')} parameters), lr ${coord.run.lr}, batch ${coord.opts.batch}, ${coord.opts.epochs} epochs, data ${dataDir}`);
  const bases = pageBases(coord.opts.host, port);
  log(`join from a browser: open ${bases.map((b) => `${b}/`).join(' or ')} — headless: tabtrain worker --url ${bases[0].replace('http', 'ws')}/ws`);
  log(`dashboard: ${bases[0]}/dashboard (${coord.dashboard.control === 'admin' ? 'controls need --admin-token' : 'read-only: no --admin-token'}), metrics: /metrics`);
  const children: ChildProcess[] = [];
  const url = `ws://127.0.0.1:${port}/ws`;
  for (let i = 0; i < localWorkers; i++) {
    children.push(spawnWorker(url, ['--backend', v['local-backend']!, '--quiet', ...(v.token ? ['--token', v.token] : [])]));
  }
  // First signal: finish the step in hand, then save and exit as at the end. Second: exit now.
  let signals = 0;
  const onSignal = (signal: string) => {
    if (++signals > 1) { for (const c of children) c.kill(); process.exit(130); }
    coord.stop(`${signal}; press Ctrl-C again to quit without saving`);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  let summary: Summary;
  try {
    summary = await coord.train();
  } finally {
    await coord.close();
    for (const c of children) c.kill();
  }
  log(`done: ${summary.steps} steps, ${summary.examplesPerSec.toFixed(1)} examples/sec, weights sha256 ${summary.weightsSha256.slice(0, 16)}…`);
  if (v.checkpoint) { saveCheckpoint(v.checkpoint, coord); log(`checkpoint at step ${coord.step} written to ${v.checkpoint}`); }
  if (v.export) await coord.exportNow();
  if (v.summary) { writeFileAtomic(v.summary, JSON.stringify(summary, null, 2) + '\n'); log(`summary written to ${v.summary}`); }
  if (v['weights-out']) {
    const w = coord.weights;
    writeFileAtomic(v['weights-out'], new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
    log(`weights written to ${v['weights-out']} (${w.length.toLocaleString('en-US')} fp32, little-endian, parameter order)`);
  }
}

async function worker(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: { url: { type: 'string' }, backend: { type: 'string', default: 'wasm' }, token: { type: 'string' }, 'delay-ms': { type: 'string' }, 'fault-corrupt-version': { type: 'string' }, 'synthetic-ms-per-example': { type: 'string' }, quiet: { type: 'boolean', default: false }, id: { type: 'string' }, instances: { type: 'string' }, local: { type: 'boolean', default: false } },
  });
  if (!v.url) throw new UsageError('worker needs --url ws://HOST:PORT/ws (the coordinator prints it when it starts)');
  if (!['wasm', 'cpu', 'webgpu'].includes(v.backend!)) throw new UsageError(`--backend must be wasm, cpu or webgpu, got '${v.backend}'`);
  if (v.local && process.send) {
    // A local worker belongs to its coordinator: Ctrl-C in the terminal reaches the whole process
    // group, and the coordinator, not the worker, decides when to stop (it finishes the step first).
    process.on('SIGINT', () => {});
    process.on('disconnect', () => process.exit(0));
  }
  const { runNodeWorker } = await import('@tabtrain/client/node-worker');
  await runNodeWorker({ url: v.url, backend: v.backend as 'wasm' | 'cpu' | 'webgpu', token: v.token, workerId: v.id, delayMsPerExample: num(v['delay-ms'], 'delay-ms'), corruptVersion: int(v['fault-corrupt-version'], 'fault-corrupt-version', 1), syntheticMsPerExample: nonNegative(v['synthetic-ms-per-example'], 'synthetic-ms-per-example'), quiet: v.quiet, instances: int(v.instances, 'instances', 1) });
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
  if (cmd === 'bench') return (await import('./bench/index')).bench(rest);
  throw new UsageError(`unknown command '${cmd}'; try: tabtrain help`);
}

const isEntry = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry) main().catch((e) => {
  if (e instanceof UsageError || e instanceof DataError || e instanceof CheckpointError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    console.error(`tabtrain: ${(e as Error).message}`);
    process.exit(2);
  }
  console.error(`tabtrain: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
