// One end of the loopback WebSocket microbenchmark, run as its own process so that sender and
// receiver each get a core, as a coordinator and a worker would:
//
//   ws-peer.ts server <json options>   listens on 127.0.0.1:0, prints {"port": N}
//   ws-peer.ts client <json options>   connects to the port
//
// The sender (the client for 'up', worker → coordinator, masked; the server for 'down',
// coordinator → worker, unmasked) sends one unmeasured message, then `reps` messages of `bytes` in frames of `frameBytes`;
// after each whole message the receiver answers one byte. The sender prints one JSON line of
// per-message seconds. Frames are encoded once up front: this measures the transport alone.
// WS_NO_BUFFER_UTIL=1 in the environment turns off ws's native masking (the baseline).
import WebSocket, { WebSocketServer } from 'ws';
import { CHUNK_FLOATS, chunkRanges, encode, MSG } from '@tabtrain/shared';

export interface PeerOptions {
  direction: 'up' | 'down';
  bytes: number;
  /** Bytes per WebSocket message; the whole `bytes` when equal to it (one huge frame). */
  frameBytes: number;
  reps: number;
  port?: number;
  /** Client masking key: 'random' (RFC 6455, default) or 'zero' (ws's generateMask; masking is skipped). */
  mask?: 'random' | 'zero';
}

function frames(o: PeerOptions): Uint8Array[] {
  const floats = Math.floor(o.bytes / 4);
  const data = new Float32Array(floats);
  for (let i = 0; i < floats; i += 7) data[i] = i * 1e-9;
  const per = Math.max(1, Math.floor(o.frameBytes / 4));
  return chunkRanges(floats, per).map(([a, b]) => encode({ type: MSG.gradient, step: 0, shard: 0, offset: a, total: floats }, data.subarray(a, b)));
}

async function sendAll(ws: WebSocket, fs: Uint8Array[], reps: number, acks: AsyncIterator<unknown>): Promise<number[]> {
  const times: number[] = [];
  // One unmeasured message first: burn in the JIT and the allocator.
  for (const f of fs) ws.send(f);
  await acks.next();
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (const f of fs) ws.send(f);
    await acks.next();
    times.push((performance.now() - t0) / 1000);
  }
  return times;
}

/** Counts received bytes; answers one byte per complete message. */
function receiver(ws: WebSocket, total: number): void {
  let got = 0;
  ws.on('message', (data: Buffer) => {
    got += data.byteLength;
    if (got >= total) { got -= total; ws.send(new Uint8Array(1)); }
  });
}

function acksOf(ws: WebSocket): AsyncIterator<unknown> {
  const queue: (() => void)[] = [];
  let pending = 0;
  ws.on('message', () => { const w = queue.shift(); if (w) w(); else pending++; });
  return {
    next: () => new Promise((resolve) => {
      if (pending > 0) { pending--; resolve({ value: 1, done: false }); } else queue.push(() => resolve({ value: 1, done: false }));
    }),
  };
}

const MAX = 512 * 1024 * 1024;

async function main(): Promise<void> {
  const [role, json] = process.argv.slice(2);
  const o = JSON.parse(json) as PeerOptions;
  const fs = frames(o);
  const total = fs.reduce((a, f) => a + f.byteLength, 0);
  const wsOpts = { maxPayload: MAX, perMessageDeflate: false, skipUTF8Validation: true };
  if (role === 'server') {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...wsOpts });
    wss.on('listening', () => console.log(JSON.stringify({ port: (wss.address() as { port: number }).port })));
    wss.on('connection', async (ws) => {
      if (o.direction === 'up') return receiver(ws, total);
      const times = await sendAll(ws, fs, o.reps, acksOf(ws));
      console.log(JSON.stringify({ times, total }));
      ws.close();
    });
    return;
  }
  const ws = new WebSocket(`ws://127.0.0.1:${o.port}/`, { ...wsOpts, ...(o.mask === 'zero' ? { generateMask: (m: Buffer) => { m.fill(0); } } : {}) });
  await new Promise((r) => ws.once('open', r));
  if (o.direction === 'down') {
    receiver(ws, total);
    await new Promise((r) => ws.once('close', r));
    process.exit(0);
  }
  const times = await sendAll(ws, fs, o.reps, acksOf(ws));
  console.log(JSON.stringify({ times, total }));
  process.exit(0);
}

// Keep the frame size constant visible to readers of the results.
export const DEFAULT_FRAME_BYTES = CHUNK_FLOATS * 4;

if (process.argv[1]?.endsWith('ws-peer.ts')) {
  // Started with an IPC channel: when the benchmark process dies, so does this peer.
  process.on('disconnect', () => process.exit(0));
  main().catch((e) => { console.error(e); process.exit(1); });
}
