// `tabtrain serve` and `tabtrain bench`: the server package's command line. bin/tabtrain, the
// composition root, runs this file for everything but `worker`, which is the client package's
// (client/src/worker-cli.ts). Nothing here loads worker code: local workers are processes.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { IMAGE_BYTES, MAX_FRAME_BYTES, MODELS, paramLayout, stepsPerEpoch } from '@tabtrain/shared';
import { DEFAULT_RANK, NO_COMPRESSION, parseCompression, type Compression, type FactorCodec } from '@tabtrain/shared/compress';
import { Dashboard } from './dashboard';
import { Coordinator, DEFAULTS, type Summary } from './coordinator';
import { DataError, DEFAULT_DATA_DIR, loadFashionMnist } from './data';
import { CheckpointError, Checkpointer, checkResumedPosition, loadCheckpoint, writeFileAtomic } from './checkpoint';
import { OutputPathError, checkAppendFile, checkOutputDir, checkOutputFile } from './output-paths';
import { TlsError, defaultStateDir, serverCertificate, type Certificate } from './tls';
import { joinLines } from './join-lines';
import { admissionHelp, admissionLimits } from './admission';
import { ensurePageBuilt } from './page-build';
import { plural } from './format';
import { spawnWorker } from './spawn-worker';
import { defaultApplyThreads } from './apply-threads';
import { WARM_STEPS } from './training-step';


function modelList(): string {
  return Object.values(MODELS)
    .map((m) => `  ${m.name.padEnd(14)} ${paramLayout(m).total.toLocaleString('en-US').padStart(12)} params, lr ${m.lr}  ${m.description}`)
    .join('\n');
}

export const HELP = `tabtrain: train d2l's AlexNet / VGG-11 on Fashion-MNIST across browser tabs and Node workers.

Usage:
  tabtrain serve [options]          run a coordinator; open https://HOST:PORT/ in a tab to join
  tabtrain worker --url URL [opts]  join a coordinator as a headless Node worker
  tabtrain bench scaleout|micro     the scale-out and communication benchmarks
  tabtrain view FILE.jsonl [...]    the dashboard, read-only, of --log files (runs overlaid)
  tabtrain help                     this text

Each command's options: tabtrain serve --help, tabtrain worker --help, tabtrain bench --help.

models:
${modelList()}

Examples:
  npm start                                            alexnet-small, 2 local workers, 2 epochs
  tabtrain serve --model alexnet --epochs 10           d2l's AlexNet run; open the page on each GPU machine
  tabtrain serve --model vgg11-small --local-workers 2 --max-steps 50 --summary out.json
  tabtrain worker --url wss://10.0.0.5:8080/ws --fingerprint 3A:F1:…:9C
`;

export const SERVE_HELP = `tabtrain serve: run a coordinator. Browser tabs join at https://HOST:PORT/?token=T, Node workers
with tabtrain worker --url wss://HOST:PORT/ws --token T; it prints both, with the run's token, and
the dashboard's address, when it starts. Workers with the token (and --local-workers) are trusted;
anyone else is refused, unless --open admits them on probation.

Usage:
  tabtrain serve [options]

the run:
  --model NAME        model to train (default alexnet; see tabtrain help for the list)
  --epochs N          epochs (default ${DEFAULTS.epochs})
  --batch N           global batch, split over the workers each step (default ${DEFAULTS.batch})
  --lr X              SGD learning rate (default: the model's, d2l's for alexnet 0.01 / vgg11 0.05)
  --seed N            seed for init, data order and dropout (default ${DEFAULTS.seed})
  --data DIR          folder with the four Fashion-MNIST IDX .gz files (default ${DEFAULT_DATA_DIR})
  --min-workers N     workers to wait for before the first step (default ${DEFAULTS.minWorkers})
  --balance MODE      cost (default): a cost model (measured compute and link rates) picks the
                      workers that make the step shortest and sizes their shards; a worker that would
                      slow the step is benched (it stays joined, takes eval shards, and is measured
                      again now and then); for ${WARM_STEPS} steps after --compress auto switches
                      into powersgd, every worker computes, shards by speed
                      speed: every worker computes, shard sizes follow its measured examples/s
                      equal: even shards, bit-reproducible runs (fp32 sums depend on the split)
  --max-steps N       stop after N steps in all (smoke runs); a partial epoch skips the test evaluation
  --eval-examples N   test images evaluated per epoch (default all ${DEFAULTS.evalExamples.toLocaleString('en-US')})
  --deadline-ms N     a shard not returned in N ms goes to another worker (default: 5× the worker's
                      measured time, at least 120 s)
  --compress MODE     how workers send gradients: auto (default) | none (fp32) | fp16 | int8 (per-chunk
                      scales, error feedback) | powersgd (two rounds of rank-R factors of every
                      weight kernel, biases in fp32: ~1/300 of fp32 for AlexNet at rank 4)
                      auto: from the measured compute and link rates, the coordinator predicts each
                      mode's step and runs the fastest, exact fp32 when within 10% of it (loopback,
                      one worker, a fast link); it starts in fp32 (the first step measures), changes
                      mode only between steps, on a gain of 20% or more, and logs each choice and why
  --rank R            powersgd's rank (default ${DEFAULT_RANK})
                      fp16/int8 runs broadcast each step's update in the same codec (with the
                      coordinator's own error feedback), powersgd its two small broadcasts, instead
                      of the fp32 weights
  --factors P         powersgd's factors on the wire, both ways: fp32 (default) | fp16 (2 bytes a factor,
                      biases' sums still fp32: 0.33 MB instead of 0.61 MB per worker per step each way
                      for AlexNet at rank 4; costs each factor's rounding to 11 bits, which a worker's
                      error feedback carries to its next step; past ±65504 saturates, as in fp16 mode)
  --probation K       --open runs: a worker that is neither started here (--local-workers) nor holding
                      the token computes its first K train and K eval shards as shadow copies,
                      compared with an established worker's (never another stranger's), before its
                      own results count (default ${DEFAULTS.probation}; 0 = trust all; in compressed runs its
                      train shadows are sent in fp32, to be comparable). With no established worker
                      connected the run waits, and says why
  --verify-shards F   fraction of shards also computed by a second established worker and compared
                      before the step is applied (default ${DEFAULTS.verifyShards}; 0 = never); a worker that has
                      just passed probation has its first 8 train shards all checked, then 8/n of its n-th
  --verify-every K    compressed runs: every K steps workers check their weights' hash against the
                      coordinator's and fetch the full weights on a mismatch (default ${DEFAULTS.verifyEvery}; 0 = never)
  --apply-threads T   powersgd: threads that apply each step's update to the coordinator's weights,
                      beside the event loop, which goes on receiving the next step meanwhile
                      (default ${defaultApplyThreads()} here: one a core, at most 4, for models of 1 M
                      weights or more; 0 = on the event loop, the default below).
                      The same bits whatever T

network:
${admissionHelp(admissionLimits(), DEFAULTS.helloTimeoutMs)}
  --port N            http + https + WebSocket port, 0 picks a free one (default ${DEFAULTS.port})
  --host ADDR         address to listen on (default ${DEFAULTS.host}: reachable from the LAN)
  --tls-cert FILE     a real certificate (PEM, may hold the chain) for https/wss on --port
  --tls-key FILE      its private key (PEM)
                      Without them, a self-signed certificate for this machine's names and addresses is
                      made at the first start and kept in the state folder; its SHA-256 fingerprint is
                      printed at every start. Plain http keeps working on the same port
  --no-tls            plain http only (behind a TLS proxy; tabs on other machines then get no WebGPU)
  --state-dir DIR     where the self-signed certificate is kept (default $TABTRAIN_STATE_DIR or ~/.tabtrain)
  --token T           the run's token (default: a random one, made at each start): workers that present
                      it are trusted (tabs: ?token=T in the printed address, Node workers: --token T);
                      the join lines carry it
  --open              also admit workers without the token, on probation (--probation); without
                      --open they are refused (close 4005, unauthorized)
  --admin-token T     pause/resume/stop from the dashboard need this token (without it: read-only)

workers on this machine:
  --local-workers N   also start N Node workers on this machine, that train from the first step on its
                      CPU; default 'cores': one per core (${availableParallelism()} here), as tfjs gives Node no
                      wasm threads. 0: none, wait for workers to join (a coordinator that serves GPUs)
  --local-backend B   backend of the local workers: wasm | cpu | webgpu (default wasm)

output (each is checked before the first step; missing folders on the way are created):
  --log FILE          append a JSONL metrics log: one line per step, per epoch and per state change
  --summary FILE      write a JSON summary: config, per-epoch metrics, examples/s, SHA-256 of the weights,
                      and which compression ran at which steps (modes: what --compress auto chose)
  --weights-out FILE  write the final weights: raw little-endian fp32 in parameter order (see README)
  --checkpoint DIR    save weights, step, data-order seed and metrics to DIR atomically, every
                      --checkpoint-every N steps (default 100), at each epoch's end and on exit
  --resume DIR        continue the run saved in DIR (its model and hyper-parameters; --epochs may extend it)
  --export DIR        at the end, and on demand from the dashboard, write the model in TensorFlow.js
                      LayersModel format (model.json + weights.bin)

Ctrl-C finishes the step in hand, saves, writes the outputs and exits with 130; twice quits at once.

Examples:
  tabtrain serve --model alexnet --epochs 10 --checkpoint runs/a
  tabtrain serve --resume runs/a --epochs 12 --export model/
  tabtrain serve --model vgg11-small --local-workers 2 --max-steps 50 --summary out.json
`;

/** A mistake on the command line or in its files: one line, exit 2. */
import { UsageError } from './usage';
import { asTyped, joinNegativeValues, parseArgsMessage } from '@tabtrain/shared/cli-args';

export { UsageError, joinLines };


function int(v: string | undefined, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(max < Number.MAX_SAFE_INTEGER ? `--${name} must be an integer from ${min} to ${max}, got '${v}'` : `--${name} must be an integer ≥ ${min}, got '${v}'`);
  }
  return n;
}

/** --local-workers: a count, or 'cores' for one worker process per core (one wasm thread each). */
export function localWorkerCount(v: string | undefined): number {
  if (v === 'cores') return availableParallelism();
  if (v !== undefined && !/^\s*\d+\s*$/.test(v)) throw new UsageError(`--local-workers must be a count ≥ 0 or 'cores' (one per core, ${availableParallelism()} here), got '${v}'`);
  // The default uses the machine: a contributor without a GPU, or a coordinator that waits for
  // browsers, trains on every core meanwhile (--local-workers 0 waits for workers to join).
  return int(v, 'local-workers') ?? availableParallelism();
}

function fraction(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new UsageError(`--${name} must be a fraction in 0..1, got '${v}'`);
  return n;
}

function compression(mode: string, rank: string | undefined, factors = 'fp32'): { compress: Compression; autoRank?: number; autoFactors?: FactorCodec } {
  try {
    const r = int(rank, 'rank', 1) ?? DEFAULT_RANK;
    if (mode !== 'auto') return { compress: parseCompression(mode, r, factors) };
    const p = parseCompression('powersgd', r, factors); // the rank and factors auto may choose powersgd at: checked now
    return { compress: NO_COMPRESSION, autoRank: r, ...(p.factors ? { autoFactors: p.factors } : {}) };
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const why = (e as Error).message;
    throw new UsageError(`--compress/--rank${factors === 'fp32' ? '' : '/--factors'}: ${why}${mode === 'auto' || !why.startsWith('compression must') ? '' : ', or auto (the default)'}`);
  }
}

function positive(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a number > 0, got '${v}'`);
  return n;
}

/** Why the port could not be opened, and what to do. */
function listenError(e: NodeJS.ErrnoException, host: string, port: number): UsageError | null {
  if (e.code === 'EADDRINUSE') return new UsageError(`port ${port} is already in use on ${host} (another tabtrain serve?): stop that one, or pick another port with --port N (0 picks a free one)`);
  if (e.code === 'EACCES') return new UsageError(`port ${port} needs privileges on this machine: pick one above 1023 with --port N (0 picks a free one)`);
  if (e.code === 'EADDRNOTAVAIL') return new UsageError(`--host ${host} is not an address of this machine: use one of its addresses, or 0.0.0.0 for all`);
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return new UsageError(`--host ${host} does not resolve: give an IP address of this machine, or 0.0.0.0 for all`);
  return null;
}

const SERVE_OPTIONS = {
  model: { type: 'string', default: 'alexnet' }, epochs: { type: 'string' }, batch: { type: 'string' }, lr: { type: 'string' },
  seed: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, data: { type: 'string' },
  'min-workers': { type: 'string' }, 'max-steps': { type: 'string' }, 'eval-examples': { type: 'string' },
  'local-workers': { type: 'string' }, 'local-backend': { type: 'string', default: 'wasm' }, token: { type: 'string' },
  'admin-token': { type: 'string' }, open: { type: 'boolean', default: false }, log: { type: 'string' },
  summary: { type: 'string' }, 'weights-out': { type: 'string' }, balance: { type: 'string' },
  checkpoint: { type: 'string' }, 'checkpoint-every': { type: 'string' }, resume: { type: 'string' }, 'deadline-ms': { type: 'string' },
  export: { type: 'string' }, compress: { type: 'string', default: 'auto' }, rank: { type: 'string' }, factors: { type: 'string' }, 'verify-every': { type: 'string' }, 'apply-threads': { type: 'string' }, probation: { type: 'string' }, 'verify-shards': { type: 'string' },
  'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'no-tls': { type: 'boolean', default: false }, 'state-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

const valuedFlags = (options: Record<string, { type: string }>) => new Set(Object.entries(options).filter(([, o]) => o.type === 'string').map(([k]) => `--${k}`));

/** `tabtrain serve ARGS`; resolves with the exit code (130 after Ctrl-C, as shells expect). */
export async function serve(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: joinNegativeValues(argv, valuedFlags(SERVE_OPTIONS)), strict: true, options: SERVE_OPTIONS });
  if (v.help) {
    console.log(asTyped(SERVE_HELP));
    return 0;
  }
  const port = int(v.port, 'port', 0, 65535) ?? DEFAULTS.port;
  const host = v.host ?? DEFAULTS.host;
  // A resumed run takes its model and hyper-parameters from the checkpoint; --epochs may extend it.
  const resumed = v.resume ? loadCheckpoint(v.resume) : null;
  if (resumed) {
    const c = resumed.ckpt;
    for (const [flag, given, saved] of [['model', argv.includes('--model') ? v.model : undefined, c.model], ['batch', v.batch, String(c.config.batch)], ['seed', v.seed, String(c.config.seed)], ['lr', v.lr, String(c.config.lr)]] as const) {
      if (given !== undefined && String(given) !== saved) throw new UsageError(`--${flag} ${given} conflicts with the checkpoint's ${saved}; a resumed run keeps its hyper-parameters`);
    }
    v.model = c.model; v.batch = String(c.config.batch); v.seed = String(c.config.seed); v.lr = String(c.config.lr);
    v.balance ??= c.config.balance;
    // Older checkpoints carry no compression: they were fp32 runs.
    const saved = c.config.compress ?? NO_COMPRESSION;
    const was = c.config.autoRank !== undefined ? { mode: 'auto', rank: c.config.autoRank } : saved;
    if (argv.includes('--compress') && (v.compress !== was.mode || (v.rank !== undefined && Number(v.rank) !== was.rank))) throw new UsageError(`--compress ${v.compress} conflicts with the checkpoint's ${was.mode}; a resumed run keeps its compression`);
    v.compress = was.mode; if (was.rank > 0) v.rank = String(was.rank);
    const factors = saved.factors ?? c.config.autoFactors ?? 'fp32';
    if (v.factors !== undefined && v.factors !== factors) throw new UsageError(`--factors ${v.factors} conflicts with the checkpoint's ${factors}; a resumed run keeps its compression`);
    v.factors = factors;
    v.checkpoint ??= v.resume;
  }
  v.balance ??= DEFAULTS.balance;
  if (!MODELS[v.model!]) throw new UsageError(`unknown model '${v.model}'. Models:\n${modelList()}`);
  if (!['wasm', 'cpu', 'webgpu'].includes(v['local-backend']!)) throw new UsageError(`--local-backend must be wasm, cpu or webgpu, got '${v['local-backend']}'`);
  const epochs = int(v.epochs, 'epochs', 1) ?? (resumed ? resumed.ckpt.config.epochs : DEFAULTS.epochs);
  const batch = int(v.batch, 'batch', 1) ?? DEFAULTS.batch;
  // One shard travels as one frame (784 + 1 bytes per example), so a batch must fit one frame.
  const maxBatch = Math.floor(MAX_FRAME_BYTES / (IMAGE_BYTES + 1)) - 64;
  if (batch > maxBatch) throw new UsageError(`--batch ${batch} is over the ${maxBatch} examples one shard frame can carry; use a smaller global batch`);
  if (v.balance !== 'speed' && v.balance !== 'equal' && v.balance !== 'cost') throw new UsageError(`--balance must be speed, equal or cost, got '${v.balance}'`);
  const lr = positive(v.lr, 'lr');
  const seed = int(v.seed, 'seed') ?? DEFAULTS.seed;
  const localWorkers = localWorkerCount(v['local-workers']);
  const maxSteps = int(v['max-steps'], 'max-steps', 1);
  const numbers = {
    minWorkers: int(v['min-workers'], 'min-workers', 1) ?? Math.max(DEFAULTS.minWorkers, localWorkers),
    evalExamples: int(v['eval-examples'], 'eval-examples', 1) ?? DEFAULTS.evalExamples,
    verifyEvery: int(v['verify-every'], 'verify-every', 0), deadlineMs: int(v['deadline-ms'], 'deadline-ms', 1),
    checkpointEvery: int(v['checkpoint-every'], 'checkpoint-every', 1) ?? 100,
    probation: int(v.probation, 'probation', 0),
    verifyShards: fraction(v['verify-shards'], 'verify-shards'),
    applyThreads: int(v['apply-threads'], 'apply-threads', 0),
  };
  const { compress, autoRank, autoFactors } = compression(v.compress!, v.rank, v.factors);
  if (v['no-tls'] && (v['tls-cert'] || v['tls-key'])) throw new UsageError('--no-tls and --tls-cert/--tls-key contradict each other: give one or the other');

  // Every output is checked now, not after hours of training.
  if (v.summary) checkOutputFile('--summary', v.summary);
  if (v['weights-out']) checkOutputFile('--weights-out', v['weights-out']);
  if (v.checkpoint) checkOutputDir('--checkpoint', v.checkpoint);
  if (v.export) checkOutputDir('--export', v.export);
  if (v.log) checkAppendFile('--log', v.log);

  // Trust starts from the operator: the token goes out only in the join lines printed here (as Jupyter's does).
  // Never a leading '-' (1 run in 64 of base64url): `--token -x…` parses as an option, so the
  // printed worker line failed for a person and the --local-workers never joined (serve hung).
  const token = v.token ?? randomBytes(18).toString('base64url').replace(/^-/, 'A');
  const tty = process.stdout.isTTY;
  const log = (line: string) => console.log(`${tty ? '\r\x1b[K' : ''}${new Date().toISOString().slice(11, 19)} ${line}`);
  const dataDir = v.data ?? DEFAULT_DATA_DIR;
  const data = loadFashionMnist(dataDir);
  const perEpoch = stepsPerEpoch(data.train.count, batch);
  if (resumed) {
    const done = resumed.ckpt.step;
    const doneEpochs = Math.floor(done / perEpoch);
    if (done >= epochs * perEpoch) {
      throw new UsageError(argv.includes('--epochs')
        ? `--epochs ${epochs} is not beyond what ${v.resume} has done (${plural(doneEpochs, 'epoch')}, ${plural(done, 'step')}): give --epochs ${doneEpochs + 1} or more to train further`
        : `${v.resume} is a finished run (${plural(doneEpochs, 'epoch')}, ${plural(done, 'step')} done): to train further, give --epochs ${doneEpochs + 1} or more`);
    }
    if (maxSteps !== undefined && maxSteps <= done) throw new UsageError(`--max-steps ${maxSteps} is not beyond step ${done}, where ${v.resume} stopped: give a larger --max-steps, or none`);
    checkResumedPosition(resumed.ckpt, v.resume!, data.train.count, perEpoch);
  }
  // Only now, with everything the run needs checked: the certificate (written to the state folder) and the page.
  const cert = v['no-tls'] ? null : await serverCertificate({ certFile: v['tls-cert'], keyFile: v['tls-key'], stateDir: v['state-dir'] ?? defaultStateDir(), host });
  await ensurePageBuilt(log);

  const coord = new Coordinator({
    model: v.model!, epochs, batch, lr, seed, port, host, maxSteps, compress, autoRank, autoFactors, tls: cert ?? undefined,
    minWorkers: numbers.minWorkers, evalExamples: numbers.evalExamples, verifyEvery: numbers.verifyEvery, deadlineMs: numbers.deadlineMs,
    probation: numbers.probation, verifyShards: numbers.verifyShards, applyThreads: numbers.applyThreads,
    exportDir: v.export, balance: v.balance as 'speed' | 'equal' | 'cost', token, open: v.open, adminToken: v['admin-token'], metricsLog: v.log,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs,
    log,
    progress: tty ? (line) => process.stdout.write(`\r\x1b[K${line}`) : log,
  }, data);
  // The dashboard, /api/status, /metrics, /api/control and --log: built beside the coordinator, from its events.
  const dashboard = new Dashboard(coord);
  if (resumed) {
    coord.restore({ step: resumed.ckpt.step, weights: resumed.weights, epochAcc: resumed.ckpt.epochAcc, history: resumed.ckpt.history });
    log(`resumed from ${v.resume} at step ${coord.step} (epoch ${Math.floor(coord.step / perEpoch) + 1}), weights sha256 ${resumed.ckpt.weightsSha256.slice(0, 16)}…`);
  }
  // A failed write is logged and shown, never thrown: the run goes on and the next one tries again.
  const checkpointer = v.checkpoint ? new Checkpointer(v.checkpoint, log) : null;
  if (checkpointer) {
    checkpointer.removeLeftovers();
    checkpointer.attach(coord, numbers.checkpointEvery, dashboard);
  }
  let bound: number;
  try {
    bound = await coord.listen();
  } catch (e) {
    await coord.close().catch(() => {});
    throw listenError(e as NodeJS.ErrnoException, host, port) ?? e;
  }
  log(`tabtrain ${coord.spec.name} (${coord.run.paramCount.toLocaleString('en-US')} parameters), lr ${coord.run.lr}, batch ${batch}, ${plural(epochs, 'epoch')}, data ${dataDir}`);
  for (const line of joinLines({ host, port: bound, cert, token, adminToken: v['admin-token'] !== undefined, open: v.open, tokenMade: v.token === undefined })) log(line);
  const children: ChildProcess[] = [];
  let ending = false;
  const url = `ws://127.0.0.1:${bound}/ws`;
  for (let i = 0; i < localWorkers; i++) {
    // --token=T: a token of the operator's own that starts with '-' must still reach the worker.
    const child = spawnWorker(url, ['--backend', v['local-backend']!, '--quiet', `--token=${token}`]);
    // A local worker that dies is said at once: a run waiting for it would otherwise wait in silence.
    child.once('exit', (code, signal) => { if (!ending) log(`local worker ${i + 1} exited (${signal ?? `code ${code}`}) before the run ended; its output is above`); });
    children.push(child);
  }
  // First signal: finish the step in hand, then save and exit as at the end. Second: exit now.
  let signalled: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGINT' ? 130 : 143;
    if (signalled) { ending = true; for (const c of children) c.kill(); process.exit(code); }
    signalled = signal;
    coord.stop(`${signal}; press Ctrl-C again to quit without saving`);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  let summary: Summary;
  try {
    summary = await coord.train();
  } finally {
    ending = true;
    await coord.close();
    for (const c of children) c.kill();
  }
  log(`done: ${plural(summary.steps, 'step')}, ${summary.examplesPerSec.toFixed(1)} examples/sec, weights sha256 ${summary.weightsSha256.slice(0, 16)}…`);
  if (checkpointer?.save(coord)) log(`checkpoint at step ${coord.step} written to ${v.checkpoint}`);
  if (v.export) await coord.exportNow();
  if (v.summary) { writeFileAtomic(v.summary, JSON.stringify(summary, null, 2) + '\n'); log(`summary written to ${v.summary}`); }
  if (v['weights-out']) {
    const w = coord.weights;
    writeFileAtomic(v['weights-out'], new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
    log(`weights written to ${v['weights-out']} (${w.length.toLocaleString('en-US')} fp32, little-endian, parameter order)`);
  }
  const s = signalled as NodeJS.Signals | null;
  return s === 'SIGINT' ? 130 : s === 'SIGTERM' ? 143 : 0;
}

/** `tabtrain ARGS` for serve, bench and help; resolves with the exit code. */
export async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(asTyped(HELP));
    return 0;
  }
  if (cmd === 'serve') return serve(rest);
  if (cmd === 'view') return (await import('./view')).view(rest);
  if (cmd === 'bench') {
    await (await import('./bench/index')).bench(rest);
    return 0;
  }
  if (cmd === 'worker') throw new UsageError('`worker` runs through bin/tabtrain (the client package\'s command): tabtrain worker --url …');
  throw new UsageError(`unknown command '${cmd}'; try: tabtrain help`);
}

/** The one line printed for an error a person can act on, or null for a bug (printed with its stack). */
export function userMessage(e: unknown, command: string): string | null {
  if (e instanceof UsageError || e instanceof DataError || e instanceof CheckpointError || e instanceof OutputPathError || e instanceof TlsError) return e.message;
  const err = e as Error & { code?: string };
  if (err?.code?.startsWith('ERR_PARSE_ARGS')) return parseArgsMessage(err, command, command === 'serve' ? Object.keys(SERVE_OPTIONS) : []);
  return null;
}

const isEntry = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry) {
  const args = process.argv.slice(2);
  main(args).then(
    (code) => process.exit(code),
    (e) => {
      const message = userMessage(e, args[0] === 'bench' ? 'bench' : 'serve');
      console.error(`tabtrain: ${message === null ? ((e as Error).stack ?? e) : asTyped(message)}`);
      process.exit(message === null ? 1 : 2);
    },
  );
}
