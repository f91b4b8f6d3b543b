// The coordinator: owns the weights, the data and the clock. Workers only compute.
//
// One step: plan shards over the connected workers → send each its shard (weights first if it
// holds an older version) → collect each shard's gradient SUM → sum in shard order → SGD →
// version+1. Shards wait in a queue, so a shard whose worker vanishes goes to the next idle one
// and the step's gradient stays the exact gradient of the whole batch.
import { randomBytes, randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  CLOSE, CLOSE_NAMES, MAX_FRAME_BYTES, closeReason, MSG, PROTOCOL_VERSION, ProtocolError, chunkRanges, decodeFrame, encode,
  epochOrder, getModel, initParams, modelHash, paramLayout, planShards, stepsPerEpoch, validate,
  replicaHash, type Assign, type Gradient, type Hello, type ModelSpec, type Resync, type Result, type RunInfo, type WorkerKind,
} from '@tabtrain/shared';
import { GradientEncoder, NO_COMPRESSION, decodeInto, planSegments, updateFrame, type Compression } from '@tabtrain/shared/compress';
import { StreamReducer } from './reducer';
import { badRequest, guarded, guardHttp, guardUpgrade, refuseUpgrade, requestPath } from './guard';
import { LOCAL_KEY, sameSecret } from './secrets';
import { weightsSha256 } from './files';
import { formatSeconds, plural } from './format';

export { weightsSha256 };
import { NormMonitor, disagreement, sumSquares, type CopyEvidence } from './verify';
import { gather, type Dataset, type Split } from './data';
import { serveStatic } from './static';
import { createListener, type ListenerTls } from './listener';

export interface CoordinatorOptions {
  model: string;
  /** Also serve https and wss on the same port with this certificate (listener.ts); without it, plain http only. */
  tls?: ListenerTls;
  epochs: number;
  batch: number;
  lr?: number;
  seed: number;
  port: number;
  host: string;
  minWorkers: number;
  maxSteps?: number;
  /**
   * How gradients travel (compress.ts): none (fp32), fp16, int8 or powersgd; default none. A
   * compressed run also broadcasts the step's update in that codec instead of the weights.
   */
  compress?: Compression;
  /**
   * Compressed runs: every this many versions an assign carries the weights' replicaHash, and a
   * worker whose replica differs asks for the full weights before computing. Default 10.
   */
  verifyEvery?: number;
  /**
   * How shards are sized: 'speed' in proportion to each worker's measured examples/s (no step
   * waits on a slow tab), 'equal' evenly. Both give the exact batch gradient; only 'equal' is
   * bit-reproducible, because fp32 sums depend on where the batch is cut.
   */
  balance: 'speed' | 'equal';
  token?: string;
  /** Test images evaluated at each epoch's end (d2l: all 10,000). */
  evalExamples: number;
  /** How long a new socket may take to say hello. */
  helloTimeoutMs: number;
  /**
   * A shard not returned within this many ms is taken back and its worker dropped. 0 = derive it
   * from the worker's measured speed: 5× its expected time, at least `minDeadlineMs`.
   */
  deadlineMs?: number;
  /** Floor of the derived deadline of a measured worker, and the cap of a newcomer's. */
  minDeadlineMs?: number;
  /** The deadline while no worker has a measured speed yet (the run's first shards: model build, warm-up). */
  firstDeadlineMs?: number;
  /** Floor of a not-yet-measured worker's deadline, which is otherwise 5× the fleet's median worker's time. */
  newcomerDeadlineMs?: number;
  /** A worker whose send buffer has not shrunk for this long is closed as a slow reader. */
  slowReaderMs?: number;
  /** Shards of each kind a new worker computes as shadow copies, checked against established workers, before its results count (0 = trust everyone). */
  probation?: number;
  /** Fraction of all shards also computed by a second established worker and compared before the step is applied. */
  verifyShards?: number;
  /** Idle workers are pinged this often; one that misses two pongs is dropped. */
  heartbeatMs?: number;
  /** --export: where the LayersModel goes, at the end and on demand (dashboard 'export'). */
  exportDir?: string;
  /** Serves the built page and dashboard from here, if present. */
  staticDir?: string;
  /** Pause/resume/stop from the dashboard need this bearer token; without it the dashboard is read-only. */
  adminToken?: string;
  /** Appends one JSON line per step, epoch and state change to this file (--log). */
  metricsLog?: string;
  log: (line: string) => void;
  /** Progress during an epoch; replaced in place on a terminal. */
  progress: (line: string) => void;
}

export const DEFAULTS = {
  epochs: 10, batch: 128, seed: 42, port: 8080, host: '0.0.0.0', minWorkers: 1, balance: 'speed',
  evalExamples: 10_000, helloTimeoutMs: 10_000, minDeadlineMs: 120_000, firstDeadlineMs: 120_000, newcomerDeadlineMs: 10_000,
  slowReaderMs: 5_000, heartbeatMs: 10_000, verifyEvery: 10, probation: 3, verifyShards: 0.05,
} as const;

/** Per-connection state. */
const CONN = {
  /** Socket open, no valid hello yet. */
  hello: 'hello',
  /** Joined, no shard in hand. */
  idle: 'idle',
  /** Computing a shard. */
  working: 'working',
  /** Socket closed; kept (the last MAX_LOST of them) for the status table and for a reconnect to reclaim its identity. */
  lost: 'lost',
} as const;
type ConnState = (typeof CONN)[keyof typeof CONN];

/** Lost connections kept for the status table: a stranger's 20,000 short connections must not grow it. */
const MAX_LOST = 64;

/**
 * Whether a worker's results are believed, per kind of task (train, eval): established workers
 * (started by this coordinator, presenting --token, or past probation) compute the shards a step
 * uses; a worker on probation computes shadow copies of them, compared with an established
 * worker's, until PROBATION of them agree; an untrusted one was caught and is refused for the run.
 */
type Trust = { train: number; eval: number } | 'established' | 'untrusted';

interface Conn {
  id: number;
  ws: WebSocket;
  state: ConnState;
  workerId: string;
  /** Its session secret (sent once, in the welcome): a reconnect presenting it is this worker again. */
  session: string;
  /** 'established', 'untrusted', or on probation: how many shards of each kind have been verified. */
  trust: Trust;
  /** Why it was marked untrusted (status table, log). */
  caught: string;
  /** Started by this coordinator (it presented the local key): never spot-checked. */
  local: boolean;
  /** Its shadow copies handed out and not yet judged, per kind: probation never runs ahead of its verdicts. */
  awaiting: { train: number; eval: number };
  kind: WorkerKind;
  backend: string;
  adapter: Record<string, unknown> | null;
  remote: string;
  /** Weights version this worker holds (or will hold once queued frames arrive). */
  version: number;
  /** The copy of a shard it is computing. */
  copy: Copy | null;
  /** Measured train examples/s (EMA), used to size shards. 0 = unknown. */
  speed: number;
  shardSize: number;
  computeMs: number;
  uploadMs: number;
  bytesIn: number;
  bytesOut: number;
  shardsDone: number;
  joinedAt: number;
  lostAt: number;
  /** Live tensors and bytes on the worker's backend, as it last reported (flat across steps = no leak). */
  tensors: number;
  tensorBytes: number;
  /** Fires when the shard in hand is overdue. */
  deadline: NodeJS.Timeout | null;
  /** Pings sent to an idle worker without a pong since. */
  missedPongs: number;
  /** Token bucket against floods: messages allowed now, refilled at FLOOD_RATE per second. */
  tokens: number;
  tokensAt: number;
  /** Full copies sent because its replica's hash differed, and the version of the last one. */
  resyncs: number;
  resyncVersion: number;
  /** When its send buffer was last seen non-empty and not shrinking (slow-reader watch), 0 = draining. */
  stuckSince: number;
  stuckBytes: number;
  /** The last shard it returned: a second result for it is a duplicate. */
  lastDone: { kind: 'train' | 'eval'; step: number; shard: number } | null;
  /** Deadlines this identity has missed: each doubles its next deadline while it has no measured speed. */
  timeouts: number;
}

/** A legitimate worker sends ⌈P / CHUNK_FLOATS⌉ + 1 messages per shard (24 for AlexNet). */
const FLOOD_RATE = 400;
const FLOOD_BURST = 800;

/** One worker's computation of a task. A task has one copy, or several when it is verified. */
interface Copy {
  task: Task;
  owner: Conn;
  /** Gradient floats received so far (in order). */
  received: number;
  /** The gradient's frames as received (train), for comparison and, if buffered, for folding later. */
  frames: { g: Gradient; body: Uint8Array }[];
  /** Whether its frames went straight into the reducer (a task with one copy) or wait for a verdict. */
  streamed: boolean;
  /** A probation copy: compared with the trusted copy, never folded; the step does not wait for it. */
  shadow: boolean;
  /** Σ g² of its gradient, accumulated as frames arrive (fp32 runs): the plausibility check. */
  normSq: number;
  result: Result | null;
}

interface Task {
  kind: 'train' | 'eval';
  step: number;
  shard: number;
  position: number;
  count: number;
  /** Example indices into the split. */
  indices: Uint32Array;
  split: Split;
  /** Copies being computed. */
  copies: Copy[];
  /** Copies that finished and wait for a verdict (verified tasks). */
  finished: Copy[];
  /** How many agreeing copies the result needs: 1; 2 for a verified task; 3 once two disagreed. */
  want: number;
  /** Why it is verified, for the log: 'spot check', 'cross-check', 'norm'. */
  why: string;
  /** Probation copies that finished, waiting for the trusted result to be compared with. */
  shadows: Copy[];
  /** Whether a probation copy was handed out (one per task). */
  shadowed: boolean;
  /** A copy of it was lost (timeout, close): it goes to a measured worker if one can take it. */
  retaken: boolean;
  /** The copy whose frames are in the reducer's sum (train). */
  inReducer: Copy | null;
  done: boolean;
  result: Result | null;
  /** The copy whose result counts; kept while a shadow may still compare with it. */
  trusted: Copy | null;
  /** Connection that delivered the result, and when (performance.now()). */
  doneBy: number | null;
  doneAt: number;
}

export interface EpochMetrics {
  epoch: number;
  steps: number;
  examples: number;
  loss: number;
  trainAcc: number;
  testAcc: number | null;
  examplesPerSec: number;
  seconds: number;
}

/** Where one step's wall time went; emitted as the 'step' event after every step. */
export interface StepRecord {
  step: number;
  epoch: number;
  examples: number;
  loss: number;
  acc: number;
  wallMs: number;
  /** From the first assign sent until the last shard's result arrived. */
  collectMs: number;
  /** Slowest shard's compute and upload, as the worker measured them. */
  computeMs: number;
  uploadMs: number;
  aggregateMs: number;
  /** Time spent summing gradient segments as they arrived, inside collectMs (streaming aggregation). */
  foldMs?: number;
  applyMs: number;
  /** Encoding the new weights (fp32 runs) or the update (compressed runs) into frames; sending them overlaps the next step's dispatch. */
  broadcastMs: number;
  /** Connection id of the worker whose result came last: the one the step waited for. */
  straggler: number | null;
  shards: { shard: number; worker: number | null; count: number; computeMs: number; uploadMs: number }[];
  at: number;
}

/** An HTTP handler for the paths it knows; true when it answered. */
export type Route = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

export type RunState = 'waiting' | 'running' | 'paused' | 'evaluating' | 'finished' | 'stopped' | 'failed';

export interface Summary {
  model: string;
  modelHash: string;
  paramCount: number;
  config: { epochs: number; batch: number; lr: number; seed: number; minWorkers: number; maxSteps: number | null; evalExamples: number; compress: Compression };
  steps: number;
  examples: number;
  epochs: EpochMetrics[];
  examplesPerSec: number;
  seconds: number;
  workersSeen: number;
  weightsSha256: string;
  stoppedBy: 'epochs' | 'max-steps' | 'stop';
}

export class Coordinator {
  readonly spec: ModelSpec;
  readonly run: RunInfo;
  /** The only truth: every worker starts from these. */
  readonly weights: Float32Array;
  version = 0;
  step = 0;
  epoch = 0;
  private readonly gradSum: Float32Array;
  /** Sums gradient segments in shard order as they arrive (reducer.ts). */
  private readonly reducer: StreamReducer;
  private readonly conns = new Map<number, Conn>();
  private nextConnId = 1;
  private tasks: Task[] = [];
  private tasksDone: (() => void) | null = null;
  private weightFrames: { version: number; frames: Uint8Array[] } | null = null;
  /**
   * Compressed runs: the step's gradient sum is encoded once more, with the coordinator's own error
   * feedback, and that encoding is both what the coordinator applies and what it broadcasts, so
   * every replica applies the identical update (decoded by the same code) and stays bit-equal.
   */
  private readonly downlink: GradientEncoder | null = null;
  /** The decoded update of the last step (what SGD applied). */
  private readonly applied: Float32Array | null = null;
  private updateFrames: { version: number; frames: Uint8Array[] } | null = null;
  private hashCache: { version: number; hash: string } | null = null;
  private http: Server | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  /** fp32 gradients (no --compress): copies of a shard can be compared float by float. */
  private readonly fp32: boolean;
  /** Recent honest shards' gradient norms: the yardstick of the plausibility check. */
  private readonly norms = new NormMonitor();
  /** Workers caught lying (the last 50), for the log, /api/status and the dashboard. */
  readonly caught: { id: number; workerId: string; remote: string; why: string; step: number; at: number }[] = [];
  private wss: WebSocketServer | null = null;
  private waitingSince = 0;
  readonly history: EpochMetrics[] = [];
  private closed = false;
  /**
   * 'step' (StepRecord), 'epoch' (EpochMetrics), 'log' (string), 'state' (RunState), 'workers' ()
   * for the dashboard, metrics and logs; listeners must be cheap (they run on the training path).
   */
  readonly events = new EventEmitter();
  state: RunState = 'waiting';
  stateReason = '';
  private paused = false;
  /** Kept apart from stateReason, which every state change (evaluating, waiting) overwrites. */
  private pauseReason = '';
  private stopReason = '';
  private stopRequested = false;
  private resumeWaiters: (() => void)[] = [];
  readonly startedAt = Date.now();
  lastStep: StepRecord | null = null;

  readonly opts: CoordinatorOptions;

  constructor(opts: CoordinatorOptions, readonly data: Dataset) {
    const log = opts.log;
    this.opts = { ...opts, log: (line) => { log(line); this.events.emit('log', line); } };
    this.spec = getModel(opts.model);
    const { total } = paramLayout(this.spec);
    this.run = { model: this.spec.name, modelHash: modelHash(this.spec), seed: opts.seed, batch: opts.batch, lr: opts.lr ?? this.spec.lr, paramCount: total };
    const compress = opts.compress ?? NO_COMPRESSION;
    if (compress.mode !== 'none') this.run.compress = compress;
    this.fp32 = compress.mode === 'none';
    const plan = planSegments(paramLayout(this.spec).params, total, compress);
    // The weights (and a compressed run's decoded update) live beside the sum, for SIMD SGD.
    this.reducer = new StreamReducer(plan, total, (shard, why) => this.onBadShard(shard, why), compress.mode === 'none' ? 1 : 2);
    this.weights = this.reducer.regions[0];
    this.weights.set(initParams(this.spec, opts.seed));
    if (compress.mode !== 'none') {
      this.downlink = new GradientEncoder(plan, total, opts.seed ^ 0x5eed);
      this.applied = this.reducer.regions[1];
    }
    this.gradSum = this.reducer.sum;
  }

  /**
   * HTTP handlers asked before the static files (the dashboard adds its routes here); each
   * returns true when it answered. The coordinator itself knows nothing about them.
   */
  private readonly routes: Route[] = [];

  addRoutes(route: Route): void {
    this.routes.push(route);
  }

  // ---- network ----

  async listen(): Promise<number> {
    const log = this.opts.log;
    // http and https on one port (listener.ts): plain http when no certificate is given.
    this.http = createListener(guardHttp(log, (req, res) => this.serveHttp(req, res)), this.opts.tls);
    // Deliberate transport settings: frames are ≤ 8 MiB chunks, so maxPayload stays small (an
    // oversized frame is refused with 1009 before it is buffered); permessage-deflate is off (it
    // moved gradients at 26–38 MB/s); ws sets TCP_NODELAY on every socket it adopts, and bufferutil
    // (a dependency) unmasks worker uploads natively (docs/BENCHMARKS.md §1).
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
    this.http.on('upgrade', guardUpgrade(log, (req, socket, head) => {
      const path = requestPath(req.url);
      if (path !== '/ws') return refuseUpgrade(socket, path === null ? 400 : 404, path === null ? 'the request target is not a path' : 'workers connect to /ws');
      this.wss!.handleUpgrade(req, socket, head, (ws) => {
        try {
          this.accept(ws, req);
        } catch (e) {
          log(`accept: internal error ${(e as Error).message}`);
          ws.terminate();
        }
      });
    }));
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.heartbeatTimer = setInterval(guarded(log, 'heartbeat', () => this.heartbeat()), this.opts.heartbeatMs ?? DEFAULTS.heartbeatMs);
    this.heartbeatTimer.unref();
    this.drainTimer = setInterval(guarded(log, 'slow-reader watch', () => this.watchDrain()), 1000);
    this.drainTimer.unref();
    const addr = this.http.address();
    return typeof addr === 'object' && addr ? addr.port : this.opts.port;
  }

  private serveHttp(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req.url);
    if (path === null) return badRequest(res, `the request target ${JSON.stringify((req.url ?? '').slice(0, 60))} is not a path`);
    for (const route of this.routes) if (route(req, res, path)) return;
    if (path !== '/ws') return serveStatic(req, res, this.opts.staticDir);
    res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
    res.end('/ws is the workers\' WebSocket: connect with a WebSocket upgrade\n');
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    const conn: Conn = {
      id: this.nextConnId++, ws, state: CONN.hello, workerId: '', session: '', trust: { train: 0, eval: 0 }, caught: '', local: false, awaiting: { train: 0, eval: 0 }, kind: 'node', backend: '?', adapter: null,
      remote: req.socket.remoteAddress ?? '?', version: -1, copy: null, speed: 0, shardSize: 0, computeMs: 0, uploadMs: 0,
      bytesIn: 0, bytesOut: 0, shardsDone: 0, joinedAt: Date.now(), lostAt: 0, tensors: 0, tensorBytes: 0, deadline: null, missedPongs: 0, tokens: FLOOD_BURST, tokensAt: Date.now(),
      resyncs: 0, resyncVersion: -1, stuckSince: 0, stuckBytes: 0, timeouts: 0, lastDone: null,
    };
    this.conns.set(conn.id, conn);
    const log = this.opts.log;
    const fail = (e: Error) => this.drop(conn, CLOSE.malformed, `internal: ${e.message}`);
    const helloTimer = setTimeout(guarded(log, `worker #${conn.id} hello timer`, () => {
      if (conn.state === CONN.hello) this.drop(conn, CLOSE.helloTimeout, `no hello within ${this.opts.helloTimeoutMs} ms`);
    }, fail), this.opts.helloTimeoutMs);
    ws.on('pong', () => { conn.missedPongs = 0; });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      conn.bytesIn += data.byteLength;
      try {
        if (!takeToken(conn)) throw new ProtocolError(CLOSE.flood, `more than ${FLOOD_RATE} messages/s`);
        if (!isBinary) throw new ProtocolError(CLOSE.malformed, 'text frame; the protocol is binary');
        const { header, body } = decodeFrame(data);
        this.onMessage(conn, validate(header), body);
      } catch (e) {
        try {
          if (e instanceof ProtocolError) this.drop(conn, e.code, e.message);
          else fail(e as Error);
        } catch (e2) {
          log(`worker #${conn.id}: could not close after an error: ${(e2 as Error).message}`);
          ws.terminate();
        }
      }
    });
    ws.on('close', guarded(log, `worker #${conn.id} close`, (code: number, reason: Buffer) => {
      clearTimeout(helloTimer);
      this.onClose(conn, code, reason.toString());
    }));
    ws.on('error', guarded(log, `worker #${conn.id} socket error`, (e: Error & { code?: string }) => {
      // ws has already closed the socket (with 1009 for an oversized frame); name it in our log.
      if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.drop(conn, CLOSE.tooBig, `frame over ${MAX_FRAME_BYTES} bytes: ${e.message}`);
      else this.drop(conn, CLOSE.malformed, `socket error ${e.code ?? ''} ${e.message}`);
    }, () => ws.terminate()));
  }

  /** Closes a connection with a named code; the close handler returns its shard to the queue. */
  private drop(conn: Conn, code: number, reason: string): void {
    if (conn.state === CONN.lost) return;
    this.opts.log(`worker #${conn.id} (${conn.remote}) closed: ${CLOSE_NAMES[code] ?? code} (${code}) ${reason}`);
    try {
      conn.ws.close(code, closeReason(reason));
    } catch {
      conn.ws.terminate();
    }
    // A peer that never answers the close handshake must not hold its shard.
    setTimeout(() => conn.ws.terminate(), 2000).unref();
    this.release(conn);
  }

  private onClose(conn: Conn, code: number, reason: string): void {
    if (conn.state !== CONN.lost && conn.state !== CONN.hello && !this.closed) {
      this.opts.log(`worker #${conn.id} left (${CLOSE_NAMES[code] ?? code}${reason ? `: ${reason.slice(0, 120)}` : ''})`);
    }
    this.release(conn);
  }

  /** Marks a connection lost and puts its unfinished shard back in the queue. */
  private release(conn: Conn): void {
    if (conn.state === CONN.lost) return;
    const joined = conn.state !== CONN.hello;
    conn.state = CONN.lost;
    conn.lostAt = Date.now();
    if (conn.deadline) clearTimeout(conn.deadline);
    const c = conn.copy;
    conn.copy = null;
    if (c) {
      const t = c.task;
      t.copies = t.copies.filter((x) => x !== c);
      if (t.inReducer === c && !t.done) { this.reducer.revoke(t.shard); t.inReducer = null; }
      if (c.shadow) conn.awaiting[t.kind]--;
      else if (!t.done) t.retaken = true;
      if (!c.shadow && !t.done) this.opts.log(`shard ${t.step}/${t.shard} (${plural(t.count, 'example')}) goes back to the queue`);
    }
    this.pruneLost();
    if (!joined) return;
    if (this.workers().length === 0 && !this.closed) this.noteWaiting();
    this.abandonIfStopped();
    this.events.emit('workers');
    this.dispatch();
  }

  /** Forgets the oldest lost connections beyond MAX_LOST (their identities can no longer be reclaimed). */
  private pruneLost(): void {
    let lost = 0;
    for (const c of this.conns.values()) if (c.state === CONN.lost) lost++;
    for (const [id, c] of this.conns) {
      if (lost <= MAX_LOST) break;
      if (c.state === CONN.lost) { this.conns.delete(id); lost--; }
    }
  }

  private onMessage(conn: Conn, msg: ReturnType<typeof validate>, body: Uint8Array): void {
    if (conn.state === CONN.lost) return;
    if (conn.state === CONN.hello) {
      if (msg.type !== MSG.hello) throw new ProtocolError(CLOSE.unexpected, `${msg.type} before hello`);
      return this.onHello(conn, msg);
    }
    switch (msg.type) {
      case MSG.gradient: return this.onGradient(conn, msg, body);
      case MSG.result: return this.onResult(conn, msg);
      case MSG.status: conn.tensors = msg.tensors; conn.tensorBytes = msg.bytes; return;
      case MSG.resync: return this.onResync(conn, msg);
      default: throw new ProtocolError(CLOSE.unexpected, `${msg.type} is not allowed from a joined worker`);
    }
  }

  private onHello(conn: Conn, h: Hello): void {
    if (h.protocol !== PROTOCOL_VERSION) throw new ProtocolError(CLOSE.protocolMismatch, `protocol ${h.protocol}, coordinator speaks ${PROTOCOL_VERSION}; reload the page or update the worker`);
    const tokenOk = this.opts.token !== undefined && sameSecret(h.token, this.opts.token);
    if (this.opts.token !== undefined && !tokenOk) throw new ProtocolError(CLOSE.unauthorized, 'missing or wrong token');
    const theirs = h.modelHashes[this.run.model];
    if (theirs !== this.run.modelHash) throw new ProtocolError(CLOSE.modelMismatch, `worker has ${this.run.model} as ${String(theirs).slice(0, 20)}, run needs ${this.run.modelHash}; update the worker`);
    // A workerId is public (the status API shows it): claiming one displaces nobody unless the
    // claim carries that worker's session secret. Without it, the hello joins as a new worker.
    let workerId = h.workerId;
    const prior = this.identity(h.workerId, conn);
    let inherit: Conn | null = null;
    if (prior) {
      if (h.session !== undefined && sameSecret(h.session, prior.session)) {
        if (prior.trust === 'untrusted') throw new ProtocolError(CLOSE.untrusted, `this worker's results were rejected earlier in this run: ${prior.caught}`);
        inherit = prior;
        if (prior.state !== CONN.lost) this.drop(prior, CLOSE.replaced, 'the same worker connected again');
      } else {
        workerId = `${h.workerId.slice(0, 64)}~${randomBytes(4).toString('hex')}`;
      }
    }
    const local = h.local !== undefined && sameSecret(h.local, LOCAL_KEY);
    const trust: Trust = local || tokenOk || this.probation() === 0 ? 'established' : inherit ? inherit.trust : { train: 0, eval: 0 };
    Object.assign(conn, {
      state: CONN.idle, workerId, session: randomBytes(16).toString('hex'), trust, local, kind: h.kind, backend: h.backend, adapter: h.adapter ?? null, joinedAt: Date.now(),
      speed: inherit?.speed ?? 0, timeouts: inherit?.timeouts ?? 0,
    });
    this.sendFrame(conn, encode({ type: MSG.welcome, workerId, run: this.run, session: conn.session }));
    const how = trust === 'established' ? (local ? 'started by this coordinator' : tokenOk ? 'token' : 'no probation') : inherit ? 'reconnected' : 'on probation';
    this.opts.log(`worker #${conn.id} joined: ${h.kind}/${h.backend.slice(0, 40)} from ${conn.remote} (${how}; ${this.workers().length} connected)`);
    if (this.state === 'waiting' && this.step > 0) this.setState(this.paused ? 'paused' : 'running', this.paused ? this.pauseReason : '');
    this.events.emit('workers');
    this.dispatch();
  }

  /** The latest joined (or lost) connection with this workerId, other than `self`. */
  private identity(workerId: string, self: Conn): Conn | null {
    let found: Conn | null = null;
    for (const c of this.conns.values()) if (c !== self && c.state !== CONN.hello && c.workerId === workerId) found = c;
    return found;
  }

  private onGradient(conn: Conn, g: Gradient, body: Uint8Array): void {
    const c = this.ownedCopy(conn, g.step, g.shard, 'train');
    // In order, so `received` counts distinct floats: a repeated slice cannot fake a full gradient.
    if (g.offset !== c.received) throw new ProtocolError(CLOSE.badGradient, `gradient slice at ${g.offset}, expected the next at ${c.received}`);
    // The reducer checks the segment against the run's plan (offset, codec, exact body length).
    const checked = this.reducer.check(g, body);
    const t = c.task;
    if (c.streamed) {
      this.reducer.hold(t.shard, checked.segment, checked.body);
      t.inReducer = c;
    }
    c.frames.push({ g, body: checked.body });
    if (this.fp32) c.normSq += sumSquares([f32(checked.body)]);
    c.received += checked.segment.count;
  }

  /** The worker's replica differs from ours (hash or version): send it the full weights, once per version. */
  private onResync(conn: Conn, r: Resync): void {
    if (!conn.copy || r.version !== this.version) throw new ProtocolError(CLOSE.unexpected, `resync for version ${r.version} while ${conn.copy ? `the run is at ${this.version}` : 'holding no shard'}`);
    if (conn.resyncVersion === r.version) throw new ProtocolError(CLOSE.unexpected, `second resync for version ${r.version}: its replica still differs after a full copy`);
    conn.resyncVersion = r.version;
    conn.resyncs++;
    this.opts.log(`worker #${conn.id}: replica differs from version ${r.version}; resending the full weights`);
    for (const f of this.encodedWeights()) this.sendFrame(conn, f);
  }

  /** A shard's gradient decoded to NaN/Inf (found when folded): take it out, redo the shard, drop its sender. */
  private onBadShard(shard: number, why: string): void {
    const t = this.tasks.find((x) => x.kind === 'train' && x.shard === shard);
    if (!t) return;
    const culprit = t.inReducer;
    this.reducer.revoke(shard);
    t.inReducer = null;
    if (culprit) {
      t.finished = t.finished.filter((x) => x !== culprit);
      if (t.trusted === culprit) Object.assign(t, { done: false, result: null, trusted: null, doneBy: null });
      this.drop(culprit.owner, CLOSE.badGradient, `shard ${t.step}/${shard}: ${why}`);
    }
    this.dispatch();
  }

  private onResult(conn: Conn, r: Result): void {
    const c = this.ownedCopy(conn, r.step, r.shard, r.task);
    const t = c.task;
    if (r.count !== t.count || r.correct > r.count) throw new ProtocolError(CLOSE.badField, `result counts ${r.correct}/${r.count} for a shard of ${t.count}`);
    if (t.kind === 'train' && c.received !== this.run.paramCount) throw new ProtocolError(CLOSE.badGradient, `result after ${c.received} of ${this.run.paramCount} gradient floats`);
    if (!Number.isFinite(c.normSq)) throw new ProtocolError(CLOSE.badGradient, `shard ${t.step}/${t.shard}: the gradient has NaN or Inf`);
    c.result = r;
    if (conn.deadline) clearTimeout(conn.deadline);
    conn.copy = null;
    conn.lastDone = { kind: t.kind, step: t.step, shard: t.shard };
    conn.state = CONN.idle;
    conn.shardsDone++;
    if (t.kind === 'train') {
      conn.computeMs = r.timings.computeMs;
      conn.uploadMs = r.timings.encodeMs + r.timings.sendMs;
      const speed = (r.count * 1000) / Math.max(1, r.timings.computeMs);
      conn.speed = conn.speed ? 0.7 * conn.speed + 0.3 * speed : speed;
    }
    t.copies = t.copies.filter((x) => x !== c);
    if (c.shadow) {
      t.shadows.push(c);
      if (t.trusted) this.judgeShadows(t);
    } else {
      t.finished.push(c);
      this.decide(t);
    }
    if (this.tasks.length && this.tasks.every((x) => x.done)) this.tasksDone?.();
    this.dispatch();
  }

  /** The copy this connection is computing, or a named protocol error. */
  private ownedCopy(conn: Conn, step: number, shard: number, kind: 'train' | 'eval'): Copy {
    const c = conn.copy;
    if (c && c.task.step === step && c.task.shard === shard && c.task.kind === kind) return c;
    const last = conn.lastDone;
    const done = (last && last.step === step && last.shard === shard && last.kind === kind) || this.tasks.some((x) => x.step === step && x.shard === shard && x.kind === kind && x.done);
    if (done) throw new ProtocolError(CLOSE.duplicate, `${kind} shard ${step}/${shard} is already done`);
    throw new ProtocolError(CLOSE.notOwner, `${kind} shard ${step}/${shard} is not assigned to this worker`);
  }

  private sendFrame(conn: Conn, frame: Uint8Array): void {
    conn.bytesOut += frame.byteLength;
    conn.ws.send(frame);
  }

  // ---- verification ----

  /** Shards a new worker's results must match before its own count (--probation). */
  private probation(): number {
    return this.opts.probation ?? DEFAULTS.probation;
  }

  private established(conn: Conn, kind: 'train' | 'eval'): boolean {
    if (conn.trust === 'established') return true;
    if (conn.trust === 'untrusted') return false;
    // Compressed runs fold each worker's own error feedback into its gradient, so two copies of a
    // shard differ by more than any tolerance: train shards are not compared there (issue 14).
    return (kind === 'train' && !this.fp32) || conn.trust[kind] >= this.probation();
  }

  /** Workers whose results a step may use: the established ones, or (when there is none yet) all, cross-checked. */
  private pool(kind: 'train' | 'eval'): Conn[] {
    const live = this.workers();
    const est = live.filter((c) => this.established(c, kind));
    return est.length ? est : live;
  }

  /** What comparing a copy needs: its result and, in fp32 runs, its gradient. */
  private evidence(c: Copy): CopyEvidence {
    return { result: c.result!, gradient: c.task.kind === 'train' && this.fp32 ? c.frames.map((f) => f32(f.body)) : undefined };
  }

  /**
   * A verified task's verdict: two copies that agree make the result (a third is asked for when
   * two disagree); a copy outside the agreeing pair came from a liar.
   */
  private decide(t: Task): void {
    if (t.done) return;
    const fin = t.finished;
    if (t.want === 1 || (fin.length === 1 && this.pool(t.kind).length < 2 && t.copies.length === 0 && t.why !== 'norm')) {
      // Nobody else can check it (a lone worker in an open run): its result is used unverified.
      if (t.want > 1) this.opts.log(`shard ${t.step}/${t.shard}: no second worker to cross-check it; used unverified`);
      return this.complete(t, fin[0], []);
    }
    if (fin.length < 2) return;
    let agreeing: Copy[] = [];
    const why = new Map<Copy, string>();
    for (const a of fin) {
      const group = fin.filter((b) => {
        if (a === b) return true;
        const d = disagreement(this.evidence(a), this.evidence(b));
        if (d) why.set(b, d);
        return d === null;
      });
      if (group.length > agreeing.length) agreeing = group;
    }
    if (agreeing.length >= 2) {
      const liars = fin.filter((x) => !agreeing.includes(x));
      return this.complete(t, agreeing[0], liars.map((x) => [x, why.get(x) ?? 'disagrees with the majority']));
    }
    if (fin.length === 2) {
      t.want = 3;
      this.opts.log(`shard ${t.step}/${t.shard}: two copies disagree (${disagreement(this.evidence(fin[0]), this.evidence(fin[1]))}); asking a third worker`);
      return;
    }
    // Three copies, no two alike: nobody's result is believed; those not established are dropped.
    this.opts.log(`shard ${t.step}/${t.shard}: three copies all disagree; computing it again`);
    for (const x of fin) if (x.owner.trust !== 'established') this.punish(x.owner, `shard ${t.step}/${t.shard}: no two of three copies agreed`);
    t.finished = [];
    t.want = 2;
  }

  /** `c`'s result counts for task t: fold it (if it is not in the sum already), credit the agreeing, punish the liars. */
  private complete(t: Task, c: Copy, liars: [Copy, string][]): void {
    if (t.kind === 'train' && t.inReducer !== c) {
      if (t.inReducer) this.reducer.revoke(t.shard);
      for (const f of c.frames) this.reducer.accept(t.shard, f.g, f.body);
      t.inReducer = c;
    }
    Object.assign(t, { done: true, result: c.result, trusted: c, doneBy: c.owner.id, doneAt: performance.now() });
    if (t.finished.length > 1) for (const x of t.finished) if (!liars.some(([l]) => l === x)) this.credit(x.owner, t.kind);
    for (const [x, why] of liars) this.punish(x.owner, `${t.kind} shard ${t.step}/${t.shard} (${t.why}): ${why}`);
    if (t.shadows.length) this.judgeShadows(t);
  }

  /** Compares the probation copies of a task with its trusted result. */
  private judgeShadows(t: Task): void {
    for (const s of t.shadows.splice(0)) {
      s.owner.awaiting[t.kind]--;
      const why = disagreement(this.evidence(s), this.evidence(t.trusted!));
      if (why) this.punish(s.owner, `probation ${t.kind} shard ${t.step}/${t.shard}: ${why}`);
      else this.credit(s.owner, t.kind);
    }
  }

  private credit(conn: Conn, kind: 'train' | 'eval'): void {
    if (typeof conn.trust !== 'object') return;
    conn.trust[kind]++;
    if (conn.trust[kind] === this.probation()) this.opts.log(`worker #${conn.id} passed probation for ${kind} shards (${this.probation()} agreed with established workers' recomputation)`);
    if (conn.trust.train >= this.probation() && conn.trust.eval >= this.probation()) conn.trust = 'established';
    this.events.emit('workers');
  }

  /** A liar: refused for the rest of the run (its identity too), named in the log and the status. */
  private punish(conn: Conn, why: string): void {
    if (conn.trust === 'untrusted') return;
    conn.trust = 'untrusted';
    conn.caught = why;
    this.caught.push({ id: conn.id, workerId: conn.workerId, remote: conn.remote, why, step: this.step, at: Date.now() });
    if (this.caught.length > 50) this.caught.shift();
    this.opts.log(`worker #${conn.id} (${conn.remote}) caught: ${why}`);
    this.drop(conn, CLOSE.untrusted, why);
  }

  // ---- scheduling ----

  private workers(): Conn[] {
    return [...this.conns.values()].filter((c) => c.state === CONN.idle || c.state === CONN.working);
  }

  /** Gives each idle worker a copy to compute, weights first if it holds an older version. */
  private dispatch(): void {
    if (this.closed) return;
    for (const conn of this.conns.values()) {
      if (conn.state !== CONN.idle) continue;
      const pick = this.nextCopy(conn);
      if (pick) this.assign(conn, pick.task, pick.shadow);
    }
  }

  /**
   * What `conn` should compute next: a copy a task still needs (established workers, or everyone
   * while nobody is), else, on probation, a shadow of a task of this step. Never two copies of one
   * task on one worker.
   */
  private nextCopy(conn: Conn): { task: Task; shadow: boolean } | null {
    const tasks = this.tasks;
    if (!tasks.length || tasks[0].step !== this.step) return null;
    const kind = tasks[0].kind;
    const has = (t: Task) => [...t.copies, ...t.finished, ...t.shadows].some((c) => c.owner === conn);
    const primary = this.established(conn, kind) || !this.workers().some((c) => this.established(c, kind));
    if (primary) {
      // A shard taken back from a worker (a silent newcomer, say) must not go to the next
      // unmeasured one while a measured worker can take it: a step pays one deadline, not a chain.
      const measured = !conn.speed && this.workers().some((c) => c.speed > 0 && c !== conn && this.established(c, kind));
      const t = tasks.find((x) => !x.done && x.copies.filter((c) => !c.shadow).length + x.finished.length < x.want && !has(x) && !(x.retaken && measured));
      return t ? { task: t, shadow: false } : null;
    }
    if (typeof conn.trust !== 'object') return null;
    // No more shadows out than verdicts still needed: a liar cannot run ahead of its probation.
    if (conn.trust[kind] + conn.awaiting[kind] >= this.probation()) return null;
    const t = tasks.find((x) => !x.shadowed && !has(x));
    return t ? { task: t, shadow: true } : null;
  }

  private assign(conn: Conn, t: Task, shadow: boolean): void {
    const streamed = !shadow && t.want === 1 && t.kind === 'train' && !t.inReducer && t.finished.length === 0;
    const c: Copy = { task: t, owner: conn, received: 0, frames: [], streamed, shadow, normSq: 0, result: null };
    t.copies.push(c);
    if (shadow) { t.shadowed = true; conn.awaiting[t.kind]++; }
    conn.copy = c;
    conn.state = CONN.working;
    conn.shardSize = t.count;
    if (conn.version !== this.version) {
      // One version behind in a compressed run: the (small) update; otherwise the full weights.
      const update = conn.version === this.version - 1 && this.updateFrames?.version === this.version;
      for (const f of update ? this.updateFrames!.frames : this.encodedWeights()) this.sendFrame(conn, f);
      conn.version = this.version;
    }
    const a: Assign = { type: MSG.assign, task: t.kind, step: t.step, shard: t.shard, version: this.version, position: t.position, count: t.count };
    const hash = this.checkHash();
    if (hash) a.hash = hash;
    this.sendFrame(conn, encode(a, gather(t.split, t.indices)));
    const ms = this.deadlineFor(conn, t);
    conn.deadline = setTimeout(guarded(this.opts.log, `worker #${conn.id} deadline`, () => {
      // Bytes still queued for it mean it never read its shard: a slow reader, not a slow GPU.
      const queued = conn.ws.bufferedAmount;
      conn.timeouts++;
      if (queued > 0) this.drop(conn, CLOSE.slowReader, `${queued} bytes sent to it are still unread after ${ms} ms`);
      else this.drop(conn, CLOSE.timeout, `shard ${t.step}/${t.shard} not returned within its ${ms} ms deadline`);
    }, () => conn.ws.terminate()), ms);
  }

  /**
   * A fixed --deadline-ms; else 5× the time this worker's measured speed predicts, never below
   * the floor. A worker not yet measured gets 5× what the fleet's median worker would need (a
   * silent newcomer must not hold a step for minutes), doubled for each deadline its identity
   * already missed (an honest slow tab still gets through); before anyone is measured, the first
   * deadline.
   */
  private deadlineFor(conn: Conn, t: Task): number {
    if (this.opts.deadlineMs) return this.opts.deadlineMs;
    const floor = this.opts.minDeadlineMs ?? DEFAULTS.minDeadlineMs;
    if (conn.speed) return Math.max(floor, (5 * 1000 * t.count) / conn.speed);
    const speeds = this.workers().map((c) => c.speed).filter((s) => s > 0).sort((a, b) => a - b);
    if (!speeds.length) return this.opts.firstDeadlineMs ?? DEFAULTS.firstDeadlineMs;
    const median = speeds[speeds.length >> 1];
    const newcomerFloor = this.opts.newcomerDeadlineMs ?? DEFAULTS.newcomerDeadlineMs;
    return Math.min(floor, Math.max(newcomerFloor, (5 * 1000 * t.count) / median)) * 2 ** Math.min(conn.timeouts, 4);
  }

  /** Pings idle workers; a busy one is covered by its deadline (its event loop may be blocked computing). */
  private heartbeat(): void {
    for (const c of this.conns.values()) {
      if (c.state !== CONN.idle) { c.missedPongs = 0; continue; }
      if (c.missedPongs >= 2) { this.drop(c, CLOSE.timeout, 'missed two heartbeats'); continue; }
      c.missedPongs++;
      c.ws.ping();
    }
  }

  /**
   * A worker whose send buffer holds bytes and has not shrunk for slowReaderMs does not read what
   * we send it (a browser tab computing still reads: its socket lives on another thread).
   */
  private watchDrain(): void {
    const limit = this.opts.slowReaderMs ?? DEFAULTS.slowReaderMs;
    const now = Date.now();
    for (const c of this.conns.values()) {
      if (c.state === CONN.lost || c.state === CONN.hello) continue;
      const queued = c.ws.bufferedAmount;
      if (queued === 0 || queued < c.stuckBytes) { c.stuckSince = 0; c.stuckBytes = queued; continue; }
      if (!c.stuckSince) { c.stuckSince = now; c.stuckBytes = queued; continue; }
      if (now - c.stuckSince >= limit) this.drop(c, CLOSE.slowReader, `${queued} bytes sent to it unread for ${now - c.stuckSince} ms`);
    }
  }

  /** The weights as chunk frames, encoded once per version and shared by every worker. */
  private encodedWeights(): Uint8Array[] {
    if (this.weightFrames?.version !== this.version) {
      const total = this.weights.length;
      const frames = chunkRanges(total).map(([o, e]) => encode({ type: MSG.weights, version: this.version, offset: o, total }, this.weights.subarray(o, e)));
      this.weightFrames = { version: this.version, frames };
    }
    return this.weightFrames.frames;
  }

  /** The weights' replicaHash on every verifyEvery-th version of a compressed run (computed once per version). */
  private checkHash(): string | undefined {
    const every = this.opts.verifyEvery ?? DEFAULTS.verifyEvery;
    if (!this.downlink || every <= 0 || this.version === 0 || this.version % every !== 0) return undefined;
    if (this.hashCache?.version !== this.version) this.hashCache = { version: this.version, hash: replicaHash(this.weights) };
    return this.hashCache.hash;
  }

  /**
   * Compressed runs: encodes the gradient sum as version+1's update frames (one encode for every
   * worker) and decodes them into `applied`, exactly as each worker will.
   */
  private encodeUpdate(batch: number): void {
    const version = this.version + 1;
    const frames = this.downlink!.plan.map((s) => {
      const { frame, body } = updateFrame(s, version, this.weights.length, batch);
      this.downlink!.encode(s, this.gradSum, body);
      if (!decodeInto(s, body, this.applied!)) throw new Error(`update of step ${version} decoded to NaN/Inf at segment ${s.index}`);
      return frame;
    });
    this.updateFrames = { version, frames };
  }

  private noteWaiting(): void {
    this.waitingSince = Date.now();
    if (this.state === 'running' || this.state === 'evaluating') this.setState('waiting', 'no workers connected');
    this.opts.log(`waiting for workers: ${this.workers().length} connected, run paused until one joins (need ${this.opts.minWorkers} to start)`);
  }

  /** Runs the tasks through the queue until every one is done. */
  private async execute(tasks: Task[]): Promise<void> {
    this.tasks = tasks;
    const done = new Promise<void>((resolve) => { this.tasksDone = resolve; });
    if (this.workers().length === 0) this.noteWaiting();
    this.dispatch();
    await done;
    this.tasksDone = null;
    // Stopped with shards nobody is left to compute: drop the step unapplied (the weights stay
    // those of the last whole step, which is what a checkpoint then saves).
    if (this.closed || !tasks.every((t) => t.done)) throw new RunStopped();
  }

  private async waitForWorkers(n: number): Promise<void> {
    if (this.workers().length >= n) return;
    if (this.closed) throw new RunStopped();
    this.opts.log(`waiting for ${plural(n, 'worker')} (${this.workers().length} connected): join at the addresses above`);
    while (this.workers().length < n && !this.closed && !this.stopRequested) await new Promise((r) => setTimeout(r, 100));
  }

  /**
   * Writes the current weights as a LayersModel into opts.exportDir. Weights only change inside
   * the synchronous SGD call, so the copy taken here is always a whole step's weights.
   */
  async exportNow(): Promise<number> {
    const step = this.step;
    const { exportLayersModel } = await import('./export');
    await exportLayersModel(this.spec, this.weights.slice(), this.opts.exportDir!);
    this.opts.log(`exported the weights of step ${step} as a TensorFlow.js LayersModel to ${this.opts.exportDir}`);
    return step;
  }

  /** Continues from a checkpoint: weights, step, the epoch in progress and the metrics history. */
  restore(state: { step: number; weights: Float32Array; epochAcc: Coordinator['epochAcc']; history: EpochMetrics[] }): void {
    if (state.weights.length !== this.weights.length) throw new Error(`checkpoint has ${state.weights.length} weights, model needs ${this.weights.length}`);
    this.weights.set(state.weights);
    this.step = state.step;
    this.version = state.step;
    this.epochAcc = { ...state.epochAcc };
    this.history.splice(0, this.history.length, ...state.history);
    this.weightFrames = null;
    this.updateFrames = null;
  }

  // ---- control ----

  private setState(state: RunState, reason = ''): void {
    if (this.state === state && this.stateReason === reason) return;
    this.state = state;
    this.stateReason = reason;
    this.events.emit('state', state);
  }

  /** Holds the run before its next step until resume() or stop(). */
  pause(reason = 'paused by an operator'): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.pauseReason = reason;
    this.opts.log(`pausing after step ${this.step}: ${reason}`);
    this.setState('paused', reason);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.opts.log(`resuming at step ${this.step}`);
    this.setState('running');
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  /** Ends the run after the current step; train() then returns its summary as usual. */
  stop(reason = 'stopped by an operator'): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.stopReason = reason;
    // A step in flight still completes: name the step the run will end on.
    this.opts.log(`stopping after ${this.tasksDone && this.tasks[0]?.kind === 'train' ? `the step in hand (step ${this.step + 1})` : `step ${this.step}`}: ${reason}`);
    this.resume();
    this.abandonIfStopped();
  }

  /** A stop with no worker left cannot finish the step in hand: give it up. */
  private abandonIfStopped(): void {
    if (this.stopRequested && this.workers().length === 0) this.tasksDone?.();
  }

  private async whilePaused(): Promise<void> {
    while (this.paused && !this.stopRequested && !this.closed) await new Promise<void>((r) => this.resumeWaiters.push(r));
  }

  // ---- training ----

  /** One synchronous step over `indices` (positions in the training set). Returns its stats. */
  async trainStep(indices: Uint32Array): Promise<{ lossSum: number; correct: number; count: number }> {
    const t0 = performance.now();
    const pool = this.pool('train');
    // Nobody joined yet: one shard for whoever comes first.
    const plan = planShards(indices.length, pool.length ? pool.map((c) => (this.opts.balance === 'speed' ? c.speed || 1 : 1)) : [1]);
    const tasks = plan.map((p) => this.newTask('train', p.id, p.position, p.count, indices.subarray(p.position, p.position + p.count), this.data.train));
    this.reducer.begin(tasks.length);
    await this.execute(tasks);
    // Plausibility before the step is applied: a shard whose gradient norm stands out is
    // recomputed by another worker, and counts only if the two agree.
    for (let flagged = this.implausible(tasks); flagged.length; flagged = this.implausible(tasks)) {
      for (const [t, why] of flagged) {
        this.opts.log(`shard ${t.step}/${t.shard} from worker #${t.doneBy}: ${why}; recomputing it on another worker`);
        this.reducer.revoke(t.shard);
        Object.assign(t, { done: false, result: null, inReducer: null, finished: [t.trusted!], trusted: null, want: 2, why: 'norm' });
      }
      await this.execute(tasks);
    }
    for (const t of tasks) this.norms.accept(t.trusted!.normSq, t.count);
    const t1 = performance.now();
    this.reducer.finish(); // the sum is gradSum, already complete: segments were folded as they came
    const t2 = performance.now();
    if (this.downlink) this.encodeUpdate(indices.length);
    const t2b = performance.now();
    this.reducer.sgd(this.weights, this.applied ?? this.gradSum, this.run.lr, indices.length);
    this.version++;
    this.step++;
    const t3 = performance.now();
    // fp32 runs broadcast the weights; compressed ones encode full weights only for a joiner.
    if (!this.downlink) this.encodedWeights();
    const t4 = performance.now();
    const sum = (f: (r: Result) => number) => tasks.reduce((a, t) => a + f(t.result!), 0);
    const stats = { lossSum: sum((r) => r.lossSum), correct: sum((r) => r.correct), count: indices.length };
    const last = tasks.reduce((a, t) => (t.doneAt > a.doneAt ? t : a));
    const upload = (r: Result) => r.timings.encodeMs + r.timings.sendMs;
    this.lastStep = {
      step: this.step, epoch: this.epoch + 1, examples: indices.length, loss: stats.lossSum / stats.count, acc: stats.correct / stats.count,
      wallMs: t4 - t0, collectMs: t1 - t0, computeMs: Math.max(...tasks.map((t) => t.result!.timings.computeMs)),
      uploadMs: Math.max(...tasks.map((t) => upload(t.result!))), aggregateMs: t2 - t1, foldMs: this.reducer.foldMs, applyMs: t3 - t2b, broadcastMs: t4 - t3 + (t2b - t2),
      straggler: tasks.length > 1 ? last.doneBy : null,
      shards: tasks.map((t) => ({ shard: t.shard, worker: t.doneBy, count: t.count, computeMs: t.result!.timings.computeMs, uploadMs: upload(t.result!) })),
      at: Date.now(),
    };
    this.events.emit('step', this.lastStep);
    return stats;
  }

  /**
   * A task of the current step. It is verified (two copies that must agree) while no worker is
   * established yet, or as a --verify-shards spot check when two established workers can take it.
   */
  private newTask(kind: 'train' | 'eval', shard: number, position: number, count: number, indices: Uint32Array, split: Split): Task {
    const live = this.workers();
    const established = live.filter((c) => this.established(c, kind));
    const est = established.length;
    // Workers this coordinator started itself cannot lie; spot checks are for everyone else.
    const remote = established.some((c) => !c.local);
    const fraction = this.opts.verifyShards ?? DEFAULTS.verifyShards;
    // Train copies can be compared only in fp32 runs (error feedback differs per worker).
    const comparable = kind === 'eval' || this.fp32;
    let want = 1, why = '';
    if (comparable && est === 0 && live.length >= 2 && this.probation() > 0) { want = 2; why = 'cross-check'; }
    else if (comparable && est >= 2 && remote && fraction > 0 && randomInt(1_000_000) < fraction * 1_000_000) { want = 2; why = 'spot check'; }
    return {
      kind, step: this.step, shard, position, count, indices, split, copies: [], finished: [], shadows: [], shadowed: false, retaken: false, want, why,
      done: false, result: null, trusted: null, inReducer: null, doneBy: null, doneAt: 0,
    };
  }

  /** Train tasks whose accepted gradient is implausible (fp32 runs; a task already recomputed for it is exempt). */
  private implausible(tasks: Task[]): [Task, string][] {
    if (!this.fp32) return [];
    const out: [Task, string][] = [];
    for (const t of tasks) {
      if (t.why === 'norm' || t.kind !== 'train') continue;
      const why = this.norms.check(t.trusted!.normSq, t.count);
      if (why && this.pool('train').length >= 2) out.push([t, why]);
    }
    return out;
  }

  /** Test accuracy at the current weights, forward only, split over the workers. */
  async evaluate(): Promise<number> {
    const n = Math.min(this.opts.evalExamples, this.data.test.count);
    const tasks: Task[] = [];
    for (let o = 0, shard = 0; o < n; o += this.opts.batch, shard++) {
      const count = Math.min(this.opts.batch, n - o);
      tasks.push(this.newTask('eval', shard, o, count, new Uint32Array(count).map((_, i) => o + i), this.data.test));
    }
    await this.execute(tasks);
    return tasks.reduce((a, t) => a + t.result!.correct, 0) / n;
  }

  /**
   * Trains from the current position (step 0, or a checkpoint's) to the end. The position in the
   * run is derived from `step` alone: epoch = step ÷ steps-per-epoch, so a resumed run replays
   * exactly the batches an uninterrupted one would.
   */
  async train(): Promise<Summary> {
    const { epochs, batch, seed } = this.opts;
    const n = this.data.train.count;
    const perEpoch = stepsPerEpoch(n, batch);
    const maxSteps = Math.min(this.opts.maxSteps ?? Infinity, epochs * perEpoch);
    const t0 = performance.now();
    let lastProgress = 0;
    let partialEpoch: EpochMetrics | null = null;
    try {
      this.setState('waiting', `waiting for ${plural(this.opts.minWorkers, 'worker')}`);
      // A run already at its end (a resume of a finished one) has nothing to wait for.
      if (this.step < maxSteps) await this.waitForWorkers(this.opts.minWorkers);
      this.setState('running');
      while (this.step < maxSteps && !this.closed && !this.stopRequested) {
        this.epoch = Math.floor(this.step / perEpoch);
        const s = this.step % perEpoch;
        const order = epochOrder(n, seed, this.epoch);
        await this.whilePaused();
        if (this.stopRequested || this.closed) break;
        const s0 = performance.now();
        const r = await this.trainStep(order.subarray(s * batch, Math.min(n, (s + 1) * batch)));
        const acc = this.epochAcc;
        acc.seconds += (performance.now() - s0) / 1000;
        acc.lossSum += r.lossSum; acc.correct += r.correct; acc.examples += r.count; acc.steps++;
        const epochEnd = s === perEpoch - 1;
        if (performance.now() - lastProgress > 1000 || epochEnd) {
          lastProgress = performance.now();
          const left = Math.min(perEpoch - s - 1, maxSteps - this.step);
          this.opts.progress(`epoch ${this.epoch + 1}/${epochs} step ${s + 1}/${perEpoch}: loss ${(acc.lossSum / acc.examples).toFixed(3)}, train acc ${(acc.correct / acc.examples).toFixed(3)}, ${(acc.examples / acc.seconds).toFixed(1)} examples/sec, ${plural(this.workers().length, 'worker')}, epoch eta ${formatSeconds((acc.seconds / acc.steps) * left)}`);
        }
        if (epochEnd) await this.endEpoch(false);
        else await this.afterStep?.(this);
      }
      // A run cut short mid-epoch records the partial epoch; it skips the 10,000-image evaluation.
      if (this.epochAcc.steps > 0) partialEpoch = await this.endEpoch(true);
    } catch (e) {
      if (!(e instanceof RunStopped)) { this.setState('failed', (e as Error).message); throw e; }
    }
    this.setState(this.stopRequested ? 'stopped' : 'finished', this.stopRequested ? this.stopReason : `${this.step} steps done`);
    const epochsDone = partialEpoch ? [...this.history, partialEpoch] : [...this.history];
    const examples = epochsDone.reduce((a, m) => a + m.examples, 0);
    const trainSeconds = epochsDone.reduce((a, m) => a + m.examples / m.examplesPerSec, 0);
    return {
      model: this.spec.name, modelHash: this.run.modelHash, paramCount: this.run.paramCount,
      config: { epochs, batch, lr: this.run.lr, seed, minWorkers: this.opts.minWorkers, maxSteps: this.opts.maxSteps ?? null, evalExamples: this.opts.evalExamples, compress: this.run.compress ?? NO_COMPRESSION },
      steps: this.step, examples, epochs: epochsDone, examplesPerSec: examples / Math.max(trainSeconds, 1e-9),
      seconds: (performance.now() - t0) / 1000, workersSeen: this.nextConnId - 1,
      weightsSha256: weightsSha256(this.weights), stoppedBy: this.step >= epochs * perEpoch ? 'epochs' : this.stopRequested ? 'stop' : 'max-steps',
    };
  }

  /** Training totals of the epoch in progress (checkpointed with the weights). */
  epochAcc = { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 };
  /** Called after each step that does not end an epoch, and after each epoch (checkpoints). */
  afterStep: ((c: Coordinator) => Promise<void> | void) | null = null;

  private async endEpoch(partial: boolean): Promise<EpochMetrics> {
    const acc = this.epochAcc;
    this.setState('evaluating');
    const testAcc = partial ? null : await this.evaluate();
    this.setState(this.paused ? 'paused' : 'running', this.paused ? this.pauseReason : '');
    const m: EpochMetrics = { epoch: this.epoch + 1, steps: acc.steps, examples: acc.examples, loss: acc.lossSum / acc.examples, trainAcc: acc.correct / acc.examples, testAcc, examplesPerSec: acc.examples / acc.seconds, seconds: acc.seconds };
    // A partial epoch (stop, --max-steps) is reported but not closed: a resumed run goes on
    // accumulating it, so the epoch's line is still one line over all its steps.
    if (!partial) {
      this.history.push(m);
      this.epochAcc = { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 };
    }
    this.opts.log(`epoch ${m.epoch}${partial ? ' (partial)' : ''}: loss ${m.loss.toFixed(3)}, train acc ${m.trainAcc.toFixed(3)}, test acc ${testAcc === null ? 'n/a' : testAcc.toFixed(3)}, ${m.examplesPerSec.toFixed(1)} examples/sec`);
    this.events.emit('epoch', m);
    if (!partial) await this.afterStep?.(this);
    return m;
  }

  status() {
    return {
      model: this.run.model, modelHash: this.run.modelHash, paramCount: this.run.paramCount,
      config: { epochs: this.opts.epochs, batch: this.opts.batch, lr: this.run.lr, seed: this.opts.seed, maxSteps: this.opts.maxSteps ?? null },
      // 1-based, as every epoch a person reads (the header, the log lines).
      step: this.step, epoch: Math.min(this.epoch + 1, this.opts.epochs), version: this.version,
      waitingForWorkers: this.workers().length === 0, waitingSince: this.workers().length === 0 ? this.waitingSince : null,
      history: this.history,
      workers: [...this.conns.values()].filter((c) => c.state !== CONN.hello).map((c) => ({
        id: c.id, workerId: c.workerId, kind: c.kind, backend: c.backend, adapter: c.adapter, remote: c.remote, state: c.state,
        shardSize: c.shardSize, computeMs: c.computeMs, uploadMs: c.uploadMs, bytesIn: c.bytesIn, bytesOut: c.bytesOut,
        examplesPerSec: c.speed, shardsDone: c.shardsDone, tensors: c.tensors, tensorBytes: c.tensorBytes, resyncs: c.resyncs,
        trust: this.trustLabel(c), caught: c.caught || undefined,
      })),
      caught: this.caught,
    };
  }

  /** 'established', 'untrusted', or 'probation' with the verified shards of each kind. */
  private trustLabel(c: Conn): string {
    if (typeof c.trust === 'string') return c.trust;
    const k = this.probation();
    return `probation (train ${Math.min(c.trust.train, k)}/${k}, eval ${Math.min(c.trust.eval, k)}/${k})`;
  }

  /** Says goodbye to every worker with `code` and stops listening. */
  async close(code: number = CLOSE.finished, reason = 'run finished'): Promise<void> {
    this.closed = true;
    // Listeners (the dashboard) send their last word while the sockets are still open.
    this.events.emit('close');
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.drainTimer) clearInterval(this.drainTimer);
    for (const c of this.conns.values()) if (c.deadline) clearTimeout(c.deadline);
    for (const c of this.conns.values()) if (c.state !== CONN.lost) { c.ws.close(code, closeReason(reason)); c.state = CONN.lost; }
    this.tasksDone?.();
    await new Promise<void>((r) => (this.wss ? this.wss.close(() => r()) : r()));
    this.http?.closeAllConnections();
    await new Promise<void>((r) => (this.http ? this.http.close(() => r()) : r()));
  }
}

/** Thrown out of a step when the coordinator is closed under it (signal, stop). */
export class RunStopped extends Error { constructor() { super('run stopped'); } }


function takeToken(conn: Conn): boolean {
  const now = Date.now();
  conn.tokens = Math.min(FLOOD_BURST, conn.tokens + ((now - conn.tokensAt) * FLOOD_RATE) / 1000);
  conn.tokensAt = now;
  if (conn.tokens < 1) return false;
  conn.tokens--;
  return true;
}

/** A fp32 view of an aligned body (bodies are aligned by the reducer's check). */
function f32(body: Uint8Array): Float32Array {
  return new Float32Array(body.buffer, body.byteOffset, body.byteLength >> 2);
}


