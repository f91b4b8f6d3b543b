// A quick check of an emulated link (netns.ts): plain TCP between two namespaces.
//
//   link-probe.ts server HOST        listens on HOST:0, sends {"port": N} over IPC (or stdout)
//   link-probe.ts client HOST PORT BYTES
//                                    prints one JSON line: {rttMs, upMBs, downMBs}
//
// rttMs: median of 20 one-byte round trips (TCP_NODELAY). upMBs: client → server, BYTES of payload,
// from the first byte written until the server's one-byte answer. downMBs: server → client, BYTES,
// from the request until the last byte arrived. One TCP stream each, as a WebSocket is.
import { createConnection, createServer, type Socket } from 'node:net';

const CHUNK = 1 << 20;

function serve(host: string): void {
  const server = createServer((s) => {
    s.setNoDelay(true);
    let head: Buffer | null = Buffer.alloc(0);
    let left = 0;
    s.on('data', (d: Buffer) => {
      if (head) {
        head = Buffer.concat([head, d]);
        if (head.length < 9) return;
        const op = String.fromCharCode(head[0]);
        const n = Number(head.readBigUInt64LE(1));
        const rest = head.subarray(9);
        head = null;
        if (op === 'p') { s.setNoDelay(true); left = -1; if (rest.length) s.write(rest); return; }
        if (op === 'd') { stream(s, n).then(() => s.end()); return; }
        left = n - rest.length;
        if (left <= 0) s.end(Buffer.alloc(1));
        return;
      }
      if (left === -1) { s.write(d); return; }
      left -= d.length;
      if (left <= 0) s.end(Buffer.alloc(1));
    });
    s.on('error', () => {});
  });
  server.listen(0, host, () => {
    const msg = { port: (server.address() as { port: number }).port };
    if (process.send) process.send(msg); else console.log(JSON.stringify(msg));
  });
}

async function stream(s: Socket, n: number): Promise<void> {
  const buf = Buffer.alloc(CHUNK, 7);
  while (n > 0) {
    const piece = n >= CHUNK ? buf : buf.subarray(0, n);
    n -= piece.length;
    if (!s.write(piece)) await new Promise((r) => s.once('drain', r));
  }
}

function connect(host: string, port: number, op: string, n: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host, port }, () => {
      s.setNoDelay(true);
      const h = Buffer.alloc(9);
      h[0] = op.charCodeAt(0);
      h.writeBigUInt64LE(BigInt(n), 1);
      s.write(h);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function client(host: string, port: number, bytes: number): Promise<void> {
  // Round trips.
  const p = await connect(host, port, 'p', 0);
  const rtts: number[] = [];
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => { p.once('data', () => r()); p.write(Buffer.alloc(1)); });
    if (i > 0) rtts.push(performance.now() - t0);
  }
  p.destroy();
  rtts.sort((a, b) => a - b);
  // Upload.
  const u = await connect(host, port, 'u', bytes);
  const t1 = performance.now();
  const acked = new Promise<void>((r) => u.once('data', () => r()));
  await stream(u, bytes);
  await acked;
  const upS = (performance.now() - t1) / 1000;
  u.destroy();
  // Download.
  const t2 = performance.now();
  const d = await connect(host, port, 'd', bytes);
  let got = 0;
  await new Promise<void>((r) => { d.on('data', (b: Buffer) => { got += b.length; if (got >= bytes) r(); }); d.on('end', () => r()); });
  const downS = (performance.now() - t2) / 1000;
  d.destroy();
  console.log(JSON.stringify({ rttMs: rtts[rtts.length >> 1], upMBs: bytes / upS / 1e6, downMBs: got / downS / 1e6 }));
}

if (process.argv[1]?.endsWith('link-probe.ts')) {
  process.on('disconnect', () => process.exit(0));
  const [role, host, port, bytes] = process.argv.slice(2);
  if (role === 'server') serve(host);
  else client(host, Number(port), Number(bytes)).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
