// `tabtrain bench scaleout|micro`: command-line benchmarks. Each burns in, measures, prints one
// summary line per measurement, and writes JSON + Markdown (+ an SVG plot for scaleout) to --out.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { COMPRESS_MODES, DEFAULT_RANK, parseCompression, type CompressMode } from '@tabtrain/shared/compress';
import { asTyped } from '@tabtrain/shared/cli-args';
import { MODELS } from '@tabtrain/shared';
import { UsageError } from '../usage';
import { DEFAULTS } from '../run-options';
import { micro } from './micro';
import { scaleout, type BenchCompression, type ComputeKind, type LinkConfig, type Scaling, type WorkerCpu } from './scaleout';
import { BALANCES, type Balance } from './scaleout-types';
import { linkMarkdown, linkSvg, scaleoutMarkdown, scaleoutSvg } from './report';
import { formatRate, parseRate, whyNoNamespaces } from './netns';

/** Each --compress mode at --rank; powersgd and auto once per --factors precision (the others have no factors). */
function benchCompressions(modes: string[], rank: number, factors: string[]): BenchCompression[] {
  try {
    return modes.flatMap((m) => (m === 'auto' || m === 'powersgd' ? factors : ['fp32']).map((f): BenchCompression => {
      if (m !== 'auto') return parseCompression(m, rank, f);
      const p = parseCompression('powersgd', rank, f);
      return { mode: 'auto', rank: p.rank, ...(p.factors ? { factors: p.factors } : {}) };
    }));
  } catch (e) {
    throw new UsageError(`--compress/--rank/--factors: ${(e as Error).message}`);
  }
}

export const HELP = `tabtrain bench: communication benchmarks on this machine (loopback, or emulated links).

  tabtrain bench scaleout [options]   coordinator + N worker processes, N = 1, 2, 4, 8
  tabtrain bench micro [options]      aggregation vs memory copy, codecs, framing, loopback WebSocket

Every coordinator and server a benchmark starts listens on a free port it picks itself (port 0), on
loopback or inside its own network namespaces, so there is no --port, and a serve on 8080 is never
disturbed.

scaleout options:
  --kind K              synthetic (default): full-size messages, compute = a sleep per example
                        (sleeping, not spinning: the cores stay free for communication);
                        real: tfjs-wasm compute on a small model (--models alexnet-small)
  --models A,B          models (default alexnet,vgg11 for synthetic, alexnet-small for real)
  --workers 1,2,4,8     worker counts (default 1,2,4,8)
  --scaling S           strong (global batch fixed), weak (per-worker batch fixed) or both (default both)
  --batch N             strong scaling's global batch (default 128, d2l's)
  --per-worker-batch N  weak scaling's batch per worker (default 128)
  --ms-per-example X    synthetic compute time per example (default 0.25: d2l's V100, ~4,000 examples/s)
  --compress M[,M]      gradient compression: auto (default: the coordinator chooses from what it
                        measures, as serve's default does), none, fp16, int8, powersgd; each row of an
                        auto series says the mode its measured steps ran in
  --rank R              powersgd rank (default ${DEFAULT_RANK})
  --factors P[,P]       powersgd's factors on the wire (serve --factors): fp32 (default) and/or fp16
                        (half the bytes each way, each factor rounded to 11 bits); with both, every
                        powersgd and auto series runs once per precision, in this one run
  --steps N             measured steps per run (default 5)
  --burn-in N           unmeasured steps first (default 2)
  --backend B           real compute's worker backend (default wasm)
  --link RATE[,RATE]    run through emulated links, one series per rate (e.g. 1gbit,10gbit): the
                        coordinator and every worker in network namespaces the benchmark makes and
                        removes itself (needs root and iproute2); each worker has its own link of
                        RATE, the coordinator one link shared by all (tbf both ways, netem for --rtt)
  --coordinator-link R  the coordinator's link (default: the same as --link)
  --rtt MS              round-trip time added between a worker and the coordinator (default 1; needs
                        netem in the kernel, else the links are shaped for rate only and it says so)
  --worker-cpu M        synthetic workers' own CPU work (copying weights, encoding, decoding):
                        sleep = slept for the time it took when measured once on this machine (each
                        worker stands for its own machine; default with --link), real = done for real
                        on this machine's cores (default on loopback)
  --balance B           how the coordinator splits each step, as serve's --balance: cost (default,
                        as serve's): the cost model (measured compute and link rates) picks the workers
                        that make the step shortest and sizes their shards; speed: every worker
                        computes, shards sized by its measured examples/s; equal: even shards over
                        every worker. Runs of each land in their own files (--tag below), side by side
  --apply-threads T     powersgd: the coordinator's helper threads for each update (serve
                        --apply-threads; default: one a core, at most 4; 0 = on its event loop)
  --out DIR             results folder (default bench/results)
  --tag NAME            file name stem (default scaleout-<kind>, scaleout-<kind>-link with --link;
                        -<balance> added for --balance speed or equal)

  Linked runs show, beside each step time, the compute bound, the link bound (bytes through the
  coordinator's link each way ÷ its TCP payload rate, and the same for the busiest worker link) and
  the step ÷ the larger of the two; a row whose coordinator process was ≥ 80% busy is flagged.
  Full matrix: tabtrain bench scaleout --link 1gbit,10gbit --rtt 1

micro options:
  --model NAME          gradient size (default alexnet: 46,764,746 floats, 187 MB)
  --shards N            shards summed by the aggregation benchmark (default 8)
  --reps N              repetitions; the median is reported (default 5)
  --compress M[,M]      codecs to measure (default all: ${COMPRESS_MODES.join(',')})
  --no-ws               skip the loopback WebSocket measurement
  --ws-reps N           messages per WebSocket variant (default 5)
  --out DIR, --tag NAME as above (default tag micro)

Results: <out>/<tag>.json, <tag>.md, and for scaleout <tag>.svg. See docs/BENCHMARKS.md.
`;

export function machine(): string {
  const c = cpus();
  return `${c.length}-core ${c[0]?.model.trim() ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, no GPU used, Node ${process.version}, ${process.platform}`;
}

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const ints = (s: string, name: string) => list(s).map((x) => {
  const n = Number(x);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name}: '${x}' is not a positive integer`);
  return n;
});

/** --apply-threads: 0 (the event loop) or more. */
function threadCount(s: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--apply-threads: '${s}' is not 0 or a positive integer`);
  return n;
}

export async function bench(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (!what || what === 'help' || rest.includes('--help') || what === '--help') { console.log(asTyped(HELP)); return; }
  const port = rest.find((x) => x === '--port' || x.startsWith('--port='));
  if (port) throw new UsageError(`bench takes no --port: each coordinator it starts listens on a free port it picks (port 0), on loopback or in its own network namespaces; drop ${port}`);
  const log = (line: string) => console.log(line);
  const started = new Date().toISOString();
  if (what === 'micro') {
    const { values: v } = parseArgs({
      args: rest, strict: true,
      options: { model: { type: 'string', default: 'alexnet' }, shards: { type: 'string', default: '8' }, reps: { type: 'string', default: '5' }, compress: { type: 'string', default: COMPRESS_MODES.join(',') }, rank: { type: 'string', default: String(DEFAULT_RANK) }, 'no-ws': { type: 'boolean', default: false }, 'ws-reps': { type: 'string', default: '5' }, out: { type: 'string', default: 'bench/results' }, tag: { type: 'string', default: 'micro' } },
    });
    if (!MODELS[v.model!]) throw new UsageError(`unknown model '${v.model}'`);
    const modes = list(v.compress!).map((m) => parseCompression(m).mode as CompressMode);
    log(`tabtrain bench micro on ${machine()}; load average ${loadavg()[0].toFixed(2)}`);
    const result = await micro({ model: v.model!, shards: ints(v.shards!, 'shards')[0], reps: ints(v.reps!, 'reps')[0], modes, rank: ints(v.rank!, 'rank')[0], ws: !v['no-ws'], wsReps: ints(v['ws-reps']!, 'ws-reps')[0], log });
    write(v.out!, v.tag!, { bench: 'micro', started, machine: machine(), loadAvgAtStart: loadavg()[0], ...result }, microMarkdown(result as unknown as MicroResult), null);
    return;
  }
  if (what === 'scaleout') {
    const { values: v } = parseArgs({
      args: rest, strict: true,
      options: {
        kind: { type: 'string', default: 'synthetic' }, models: { type: 'string' }, workers: { type: 'string', default: '1,2,4,8' }, scaling: { type: 'string', default: 'both' },
        batch: { type: 'string', default: '128' }, 'per-worker-batch': { type: 'string', default: '128' }, 'ms-per-example': { type: 'string', default: '0.25' },
        compress: { type: 'string', default: 'auto' }, rank: { type: 'string', default: String(DEFAULT_RANK) }, factors: { type: 'string', default: 'fp32' }, steps: { type: 'string', default: '5' }, 'burn-in': { type: 'string', default: '2' },
        backend: { type: 'string', default: 'wasm' }, out: { type: 'string', default: 'bench/results' }, tag: { type: 'string' },
        link: { type: 'string' }, 'coordinator-link': { type: 'string' }, rtt: { type: 'string', default: '1' }, 'worker-cpu': { type: 'string' }, balance: { type: 'string', default: DEFAULTS.balance }, 'apply-threads': { type: 'string' },
      },
    });
    const kind = v.kind as ComputeKind;
    if (kind !== 'synthetic' && kind !== 'real') throw new UsageError(`--kind must be synthetic or real, got '${v.kind}'`);
    const models = list(v.models ?? (kind === 'synthetic' ? 'alexnet,vgg11' : 'alexnet-small'));
    for (const m of models) if (!MODELS[m]) throw new UsageError(`unknown model '${m}'`);
    const scaling = (v.scaling === 'both' ? ['strong', 'weak'] : list(v.scaling!)) as Scaling[];
    for (const s of scaling) if (s !== 'strong' && s !== 'weak') throw new UsageError(`--scaling must be strong, weak or both, got '${s}'`);
    const ms = Number(v['ms-per-example']);
    if (!(ms >= 0)) throw new UsageError(`--ms-per-example must be ≥ 0`);
    const rank = ints(v.rank!, 'rank')[0];
    const rtt = Number(v.rtt);
    if (!(rtt >= 0)) throw new UsageError(`--rtt must be a number of milliseconds ≥ 0, got '${v.rtt}'`);
    const links: LinkConfig[] | null = v.link === undefined ? null : list(v.link).map((r) => {
      const workerBits = parseRate(r);
      return { workerBits, coordinatorBits: v['coordinator-link'] ? parseRate(v['coordinator-link']) : workerBits, rttMs: rtt };
    });
    if (!links && v['coordinator-link']) throw new UsageError('--coordinator-link needs --link');
    const workerCpu = (v['worker-cpu'] ?? (links ? 'sleep' : 'real')) as WorkerCpu;
    if (workerCpu !== 'sleep' && workerCpu !== 'real') throw new UsageError(`--worker-cpu must be sleep or real, got '${v['worker-cpu']}'`);
    if (!BALANCES.includes(v.balance as Balance)) throw new UsageError(`--balance must be ${BALANCES.join(', ').replace(/, (?=[^,]*$)/, ' or ')}, got '${v.balance}' (see tabtrain bench --help)`);
    const balance = v.balance as Balance;
    if (links) {
      const why = whyNoNamespaces();
      if (why) throw new UsageError(`--link: ${why}.\n  For example: sudo bin/tabtrain bench scaleout --link ${v.link} --rtt ${rtt}`);
    }
    const tag = v.tag ?? `scaleout-${kind}${links ? '-link' : ''}${balance === DEFAULTS.balance ? '' : `-${balance}`}`;
    log(`tabtrain bench scaleout (${kind}, --balance ${balance}) on ${machine()}; load average ${loadavg()[0].toFixed(2)}`);
    if (kind === 'synthetic') log(`synthetic compute: ${ms} ms per example (${ms > 0 ? (1000 / ms).toFixed(0) : '∞'} examples/s per worker), slept, not spun`);
    const what = realAndSlept(kind, workerCpu, !!links);
    log(what);
    const { runs, memcpyGBs, workerCosts } = await scaleout({
      kind, models, workers: ints(v.workers!, 'workers'), scaling, steps: ints(v.steps!, 'steps')[0], burnIn: Number(v['burn-in']),
      msPerExample: ms, batch: ints(v.batch!, 'batch')[0], perWorkerBatch: ints(v['per-worker-batch']!, 'per-worker-batch')[0],
      compress: benchCompressions(list(v.compress!), rank, list(v.factors!)), backend: v.backend!, workerCpu, links, log, balance,
      applyThreads: v['apply-threads'] === undefined ? undefined : threadCount(v['apply-threads']),
    });
    const compute = kind === 'synthetic' ? `synthetic compute, ${ms} ms/example` : 'real compute';
    const json = { bench: 'scaleout', started, machine: machine(), kind, balance, msPerExample: ms, workerCpu, whatIsReal: what, memcpyGBs, links, workerCosts, runs };
    if (links) {
      const title = `tabtrain scale-out through emulated links (${compute}), ${links.map((l) => formatRate(l.workerBits)).join(', ')}, ${machine().split(',')[0]}`;
      write(v.out!, tag, json, linkMarkdown(runs, machine(), what), linkSvg(runs, title));
    } else {
      const title = `tabtrain scale-out (${compute}), loopback, ${machine().split(',')[0]}`;
      write(v.out!, tag, json, scaleoutMarkdown(runs, memcpyGBs, machine()), scaleoutSvg(runs, title));
    }
    return;
  }
  throw new UsageError(`unknown benchmark '${what}'; try: tabtrain bench --help`);
}

/** What in a run is real and what is a sleep: printed first, and kept in the results. */
function realAndSlept(kind: ComputeKind, workerCpu: WorkerCpu, linked: boolean): string {
  const net = linked ? 'every byte through real WebSockets and TCP, in network namespaces, through the emulated links' : 'every byte through real WebSockets and TCP on loopback';
  if (kind === 'real') return `Real: the workers' tfjs compute, on this machine's cores; ${net}; all of the coordinator's work.`;
  return workerCpu === 'sleep'
    ? `Slept (each synthetic worker stands for its own machine): forward and backward at the given rate, and the worker's own CPU work (copying the weights, encoding the gradient, decoding and applying updates) for the time it took when measured once on this machine. Real: ${net}; all of the coordinator's work.`
    : `Slept: forward and backward at the given rate. Real, on this machine's cores: the workers' own CPU work (copying the weights, encoding the gradient, decoding and applying updates); ${net}; all of the coordinator's work.`;
}

function write(dir: string, tag: string, json: unknown, md: string, svg: string | null): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${tag}.json`), JSON.stringify(json, null, 2) + '\n');
  writeFileSync(join(dir, `${tag}.md`), md);
  if (svg) writeFileSync(join(dir, `${tag}.svg`), svg);
  console.log(`wrote ${join(dir, `${tag}.json`)}, ${tag}.md${svg ? `, ${tag}.svg` : ''}`);
}

interface MicroResult {
  model: string; floats: number; shards: number;
  sgd: { simdMs: number; plainMs: number; bitIdentical: boolean };
  aggregation: { memcpyGBs: number; reducerGBs: number; reducerShardMajorGBs: number; reducerVsMemcpy: number; oldPathGBs: number; simd: boolean; bitIdenticalToReference: boolean };
  codecs: { mode: string; rank: number; frames: number; bytesPerWorkerPerStep: number; ratioToFp32: number; encodeMs: number; decodeFirstMs: number; decodeAddMs: number; workers: number; fold1Ms: number; orthonormaliseMs: number; fold2Ms: number; coordinatorCpuMs: number; applyMs: number }[];
  framing: { oursEncodeGBs: number; oursDecodeGBs: number; msgpackrEncodeGBs: number; msgpackrDecodeGBs: number; smallMessageDecodeUs: number };
  websocket?: { variant: string; direction: string; messageBytes: number; medianMBs: number; bestMBs: number }[];
}

function microMarkdown(r: MicroResult): string {
  const a = r.aggregation;
  const out = [
    `Machine: ${machine()}. Gradient: ${r.model}, ${r.floats.toLocaleString('en-US')} floats (${(4 * r.floats / 1e6).toFixed(1)} MB).`,
    '',
    `| aggregation of ${r.shards} shards | GB/s of gradient read |`,
    '|---|--:|',
    `| plain memory copy of the same bytes (the limit) | ${a.memcpyGBs.toFixed(2)} |`,
    `| streaming reducer, segments arriving round-robin (SIMD ${a.simd ? 'on' : 'off'}) | ${a.reducerGBs.toFixed(2)} (${(100 * a.reducerVsMemcpy).toFixed(0)}% of copy) |`,
    `| streaming reducer, shard after shard | ${a.reducerShardMajorGBs.toFixed(2)} |`,
    `| previous path: check + copy per slice, scalar sum at the end | ${a.oldPathGBs.toFixed(2)} |`,
    '',
    `Bit-identical to the shard-order reference sum: ${a.bitIdenticalToReference}.`,
    '',
    `SGD over the ${r.floats.toLocaleString('en-US')} weights (the coordinator's apply): SIMD ${r.sgd.simdMs.toFixed(1)} ms, plain loop ${r.sgd.plainMs.toFixed(1)} ms; bit-identical: ${r.sgd.bitIdentical}.`,
    '',
    '| mode | frames | bytes/worker/step | ÷ fp32 | worker encode ms | coordinator first shard ms | each further shard ms |',
    '|---|--:|--:|--:|--:|--:|--:|',
    ...r.codecs.filter((c) => c.mode !== 'powersgd').map((c) => `| ${c.mode} | ${c.frames} | ${c.bytesPerWorkerPerStep.toLocaleString('en-US')} | ${c.ratioToFp32.toFixed(4)} (1/${(1 / c.ratioToFp32).toFixed(1)}) | ${c.encodeMs.toFixed(0)} | ${c.decodeFirstMs.toFixed(0)} | ${c.decodeAddMs.toFixed(0)} |`),
    '',
    // PowerSGD has no codec to decode: its row is the coordinator's work in one two-round step.
    ...r.codecs.filter((c) => c.mode === 'powersgd').map((c) => `powersgd r=${c.rank}: ${c.bytesPerWorkerPerStep.toLocaleString('en-US')} bytes/worker/step, both rounds (1/${(1 / c.ratioToFp32).toFixed(0)} of fp32). Coordinator at N = ${c.workers}: fold round 1 ${c.fold1Ms.toFixed(1)} ms + orthonormalise ${c.orthonormaliseMs.toFixed(1)} ms + fold round 2 ${c.fold2Ms.toFixed(1)} ms = **${c.coordinatorCpuMs.toFixed(1)} ms** a step; applying P̂Qᵀ to the weights ${c.applyMs.toFixed(1)} ms (after the next step is dispatched).\n`),
    `Framing, one 8 MiB chunk: ours encode ${r.framing.oursEncodeGBs.toFixed(2)} GB/s (one copy), decode ${r.framing.oursDecodeGBs.toFixed(0)} GB/s (a view, no copy); msgpackr moreTypes pack ${r.framing.msgpackrEncodeGBs.toFixed(2)} GB/s, unpack ${r.framing.msgpackrDecodeGBs.toFixed(2)} GB/s. A small message decodes and validates in ${r.framing.smallMessageDecodeUs.toFixed(1)} µs.`,
  ];
  if (r.websocket) {
    out.push('', '| loopback WebSocket, one 187 MB message | direction | MB/s median | MB/s best |', '|---|---|--:|--:|');
    for (const w of r.websocket) out.push(`| ${w.variant} | ${w.direction === 'up' ? 'worker → coordinator (masked)' : 'coordinator → worker'} | ${w.medianMBs.toFixed(0)} | ${w.bestMBs.toFixed(0)} |`);
  }
  return out.join('\n') + '\n';
}
