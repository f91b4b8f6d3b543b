// WebSocket inputs: an upgrade request (sometimes mutated), then frames the fuzzer writes itself
// (client side, masked) so that it can also send what no library would: broken framing, frames
// over the payload limit, fragments out of order, floods, hellos of megabytes.
import { MSG } from '@tabtrain/shared';
import { rawFrame } from '../liars';
import { helloHeader, mutatedMessage, type Target } from './frames';
import type { Rng } from './rng';
import { multibyte } from './values';

export function wsFrame(opcode: number, payload: Uint8Array, o: { fin?: boolean; mask?: boolean; rsv?: number; declared?: bigint } = {}): Buffer {
  const fin = o.fin ?? true;
  const mask = o.mask ?? true;
  const len = o.declared ?? BigInt(payload.length);
  const head: number[] = [(fin ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (opcode & 0x0f)];
  const m = mask ? 0x80 : 0;
  if (len < 126n) head.push(m | Number(len));
  else if (len < 65_536n) head.push(m | 126, Number(len >> 8n) & 255, Number(len) & 255);
  else { head.push(m | 127); for (let i = 7; i >= 0; i--) head.push(Number((len >> BigInt(8 * i)) & 255n)); }
  const key = mask ? [0x12, 0x34, 0x56, 0x78] : [];
  const out = Buffer.alloc(head.length + key.length + payload.length);
  out.set(head, 0);
  out.set(key, head.length);
  for (let i = 0; i < payload.length; i++) out[head.length + key.length + i] = mask ? payload[i] ^ key[i & 3] : payload[i];
  return out;
}
export const bin = (p: Uint8Array) => wsFrame(0x2, p);
export const closeFrame = (code: number, reason: Uint8Array = new Uint8Array(0)) => {
  const p = new Uint8Array(2 + reason.length);
  p[0] = code >> 8; p[1] = code & 255; p.set(reason, 2);
  return wsFrame(0x8, p);
};

export function upgradeRequest(t: Target, path = '/ws', extra: string[] = []): string {
  return [`GET ${path} HTTP/1.1`, `Host: ${t.host}:${t.port}`, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', ...extra, '', ''].join('\r\n');
}

export interface WsInput {
  kind: 'ws';
  plan: string;
  notes: string[];
  upgrade: Uint8Array;
  /** Sent right after the 101, in order. */
  frames: Buffer[];
  /** After a welcome, how long the worker stays before the fuzzer closes it. */
  holdMs: number;
  /** On an assign, answer with a gradient or result that must be refused. */
  attack: boolean;
  /** A frame over the payload limit: the library may kill the socket. */
  oversize: boolean;
}

const WS_PLANS = [
  [12, 'message before hello'], [22, 'hello'], [26, 'hello + messages'], [6, 'hello + attack its shard'], [12, 'websocket framing'],
  [3, 'silent'], [2, 'flood'], [8, 'upgrade'], [1.2, 'huge hello'], [6, 'order'],
] as const;

export function wsInput(rng: Rng, t: Target, idx: number, tag: string): WsInput {
  const plan = rng.weighted(WS_PLANS);
  const notes: string[] = [];
  const id = `fuzz-${tag}-${idx}`;
  const hello = () => bin(rawFrame(helloHeader(rng, id)));
  const hold = rng.chance(0.1) ? rng.range(300, 1000) : rng.range(0, 150);
  const input: WsInput = { kind: 'ws', plan, notes, upgrade: Buffer.from(upgradeRequest(t)), frames: [], holdMs: hold, attack: false, oversize: false };
  switch (plan) {
    case 'message before hello':
      input.frames.push(bin(mutatedMessage(rng, t, id, notes, { mutate: rng.chance(0.85) })));
      break;
    case 'hello':
      input.frames.push(bin(mutatedMessage(rng, t, id, notes, { only: 'hello', mutate: rng.chance(0.9) })));
      break;
    case 'hello + messages': {
      input.frames.push(hello());
      const n = rng.range(1, 3);
      for (let i = 0; i < n; i++) input.frames.push(bin(mutatedMessage(rng, t, id, notes, { mutate: rng.chance(0.85) })));
      break;
    }
    case 'hello + attack its shard':
      input.frames.push(hello());
      input.attack = true;
      input.holdMs = rng.range(300, 1000);
      break;
    case 'websocket framing': {
      if (rng.chance(0.5)) { input.frames.push(hello()); notes.push('after hello'); }
      const good = rawFrame(helloHeader(rng, `${id}-f`));
      const which = rng.weighted<string>([
        [2, 'text frame'], [1, 'text invalid utf-8'], [1, 'unmasked'], [1, 'rsv bits'], [1, 'bad opcode'], [1, 'big ping'], [1, 'fragmented ping'],
        [1, 'continuation first'], [1, 'unfinished message'], [1, 'interleaved message'], [1.5, 'oversize'], [0.5, 'length 2^63'],
        [1.5, 'client close'], [1, 'close 1 byte'], [1, 'pong'], [1, 'empty binary'], [1, 'fragmented hello'], [1, 'flipped frame'],
      ]);
      notes.push(which);
      const f = input.frames;
      switch (which) {
        case 'text frame': f.push(wsFrame(0x1, Buffer.from(rng.chance(0.5) ? 'hello?' : multibyte(rng, rng.range(1, 200))))); break;
        case 'text invalid utf-8': f.push(wsFrame(0x1, Uint8Array.from([0x68, 0xff, 0xfe, 0xc0, 0x80]))); break;
        case 'unmasked': f.push(wsFrame(0x2, good, { mask: false })); break;
        case 'rsv bits': f.push(wsFrame(0x2, good, { rsv: rng.range(1, 7) })); break;
        case 'bad opcode': f.push(wsFrame(rng.pick([0x3, 0x7, 0xb, 0xf]), good)); break;
        case 'big ping': f.push(wsFrame(0x9, new Uint8Array(rng.range(126, 4000)))); break;
        case 'fragmented ping': f.push(wsFrame(0x9, new Uint8Array(4), { fin: false })); break;
        case 'continuation first': f.push(wsFrame(0x0, good)); break;
        case 'unfinished message': f.push(wsFrame(0x2, good.subarray(0, 5), { fin: false })); break;
        case 'interleaved message': f.push(wsFrame(0x2, good.subarray(0, 5), { fin: false }), wsFrame(0x2, good)); break;
        case 'oversize': {
          // Only the frame header and a little of the body: ws refuses on the declared length.
          const declared = BigInt(rng.pick([16 * 1024 * 1024 + 1, 17 * 1024 * 1024, 100 * 1024 * 1024, 2 ** 32]));
          notes.push(`declared ${declared}`);
          f.push(wsFrame(0x2, rng.bytes(rng.range(0, 4096)), { declared }));
          input.oversize = true;
          break;
        }
        case 'length 2^63': f.push(wsFrame(0x2, new Uint8Array(8), { declared: 2n ** 63n + BigInt(rng.int(1000)) })); input.oversize = true; break;
        case 'client close': {
          const code = rng.pick([1000, 1001, 1005, 1006, 999, 0, 1015, 2999, 3000, 4999, 5000, 65535, 4002]);
          const reason = rng.chance(0.3) ? Uint8Array.from([0xff, 0xfe]) : Buffer.from(multibyte(rng, rng.range(0, 30)).slice(0, 40));
          notes.push(`code ${code}, reason ${reason.length} bytes`);
          f.push(closeFrame(code, reason.subarray(0, 123)));
          break;
        }
        case 'close 1 byte': f.push(wsFrame(0x8, Uint8Array.from([3]))); break;
        case 'pong': f.push(wsFrame(0xa, Buffer.from('unsolicited'))); break;
        case 'empty binary': f.push(wsFrame(0x2, new Uint8Array(0))); break;
        case 'fragmented hello': {
          const parts = rng.range(2, 12);
          const step = Math.ceil(good.length / parts);
          for (let i = 0, k = 0; i < good.length; i += step, k++) f.push(wsFrame(k === 0 ? 0x2 : 0x0, good.subarray(i, i + step), { fin: i + step >= good.length }));
          break;
        }
        case 'flipped frame': {
          const w = Uint8Array.from(wsFrame(0x2, good));
          const k = rng.range(1, 4);
          for (let i = 0; i < k; i++) { const p = rng.int(Math.min(w.length, 14)); w[p] ^= 1 << rng.int(8); notes.push(`ws byte ${p} flipped`); }
          // A flipped length may declare more than is sent, or more than the limit: see wireClaims.
          f.push(Buffer.from(w));
          break;
        }
      }
      break;
    }
    case 'silent':
      break;
    case 'flood': {
      input.frames.push(hello());
      const n = rng.range(900, 2500);
      notes.push(`${n} status frames`);
      const st = bin(rawFrame({ type: MSG.status, tensors: 0, bytes: 0 }));
      for (let i = 0; i < n; i++) input.frames.push(st);
      break;
    }
    case 'upgrade': {
      const req = mutatedUpgrade(rng, t, notes);
      input.upgrade = req;
      input.frames.push(hello());
      break;
    }
    case 'huge hello': {
      const h = helloHeader(rng, id);
      const size = rng.logSize(1 << 20, 10 << 20);
      const what = rng.pick(['adapter string', 'adapter bin', 'adapter array', 'adapter nested key', 'workerId', 'modelHash', 'backend', 'extra field']);
      notes.push(`${what} of ~${size} bytes`);
      const s = '中'.repeat(Math.floor(size / 3));
      if (what === 'adapter string') h.adapter = { description: s };
      else if (what === 'adapter bin') h.adapter = { blob: new Uint8Array(size) };
      else if (what === 'adapter array') h.adapter = { list: Array.from({ length: size >> 3 }, (_, i) => i * 1.5) };
      else if (what === 'adapter nested key') h.adapter = { [s.slice(0, 100_000)]: 1 };
      else if (what === 'workerId') h.workerId = s;
      else if (what === 'modelHash') h.modelHashes = { ...(h.modelHashes as object), 'alexnet-tiny': s };
      else if (what === 'backend') h.backend = s;
      else h.padding = s;
      input.frames.push(bin(rawFrame(h)));
      break;
    }
    case 'order': {
      const which = rng.pick(['two hellos', 'hello twice same id', 'gradient then hello', 'result before gradient', 'resync then hello', 'hello then welcome', 'hello then hello of another']);
      notes.push(which);
      const f = input.frames;
      if (which === 'two hellos' || which === 'hello twice same id') f.push(hello(), hello());
      else if (which === 'gradient then hello') f.push(bin(mutatedMessage(rng, t, id, notes, { only: 'gradient', mutate: false })), hello());
      else if (which === 'result before gradient') f.push(hello(), bin(mutatedMessage(rng, t, id, notes, { only: 'result', mutate: false })));
      else if (which === 'resync then hello') f.push(bin(rawFrame({ type: MSG.resync, version: 0 })), hello());
      else if (which === 'hello then welcome') f.push(hello(), bin(rawFrame({ type: MSG.welcome, workerId: id, run: {} })));
      else f.push(hello(), bin(rawFrame(helloHeader(rng, `${id}-other`))));
      break;
    }
  }
  return input;
}

function mutatedUpgrade(rng: Rng, t: Target, notes: string[]): Uint8Array {
  const kind = rng.weighted<string>([[3, 'path'], [2, 'header'], [2, 'bytes'], [1, 'method']]);
  if (kind === 'path') {
    const p = rng.pick(['//', 'http://x:99999/ws', 'http://[::1/ws', '/wsx', '/ws/', '/WS', '/ws?x=1', '/ws#f', '/ws%00', '*', '/', '/api/status', '/ws/../ws', `/ws?${'x'.repeat(10_000)}`, `/${multibyte(rng, 20)}`]);
    notes.push(`path ${JSON.stringify(p.slice(0, 40))}`);
    return Buffer.from(upgradeRequest(t, p), 'utf8');
  }
  if (kind === 'method') {
    const m = rng.pick(['POST', 'HEAD', 'PUT', 'OPTIONS', 'CONNECT', 'GET\x00']);
    notes.push(`method ${JSON.stringify(m)}`);
    return Buffer.from(upgradeRequest(t).replace(/^GET/, m));
  }
  if (kind === 'header') {
    const lines = upgradeRequest(t).split('\r\n').filter(Boolean);
    const which = rng.pick(['drop key', 'drop version', 'drop upgrade', 'drop connection', 'bad key', 'version 8', 'version x', 'deflate', 'protocol', 'huge header', 'multibyte header', 'http/1.0', 'key twice']);
    notes.push(which);
    const set = (name: string, v: string | null) => {
      const i = lines.findIndex((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
      if (v === null) lines.splice(i, 1); else lines[i] = `${name}: ${v}`;
    };
    if (which === 'drop key') set('Sec-WebSocket-Key', null);
    if (which === 'drop version') set('Sec-WebSocket-Version', null);
    if (which === 'drop upgrade') set('Upgrade', null);
    if (which === 'drop connection') set('Connection', null);
    if (which === 'bad key') set('Sec-WebSocket-Key', rng.pick(['', 'abc', 'x'.repeat(300), '中文']));
    if (which === 'version 8') set('Sec-WebSocket-Version', '8');
    if (which === 'version x') set('Sec-WebSocket-Version', rng.pick(['x', '13, 8', '-1', '99999999999999999999']));
    if (which === 'deflate') lines.push('Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits');
    if (which === 'protocol') lines.push(`Sec-WebSocket-Protocol: ${rng.pick(['a,,b', 'x y', '中'])}`);
    if (which === 'huge header') lines.push(`X-Fuzz: ${'a'.repeat(rng.pick([8000, 17_000, 70_000]))}`);
    if (which === 'multibyte header') lines.push(`X-Fuzz: ${multibyte(rng, 50)}`);
    if (which === 'http/1.0') lines[0] = lines[0].replace('HTTP/1.1', 'HTTP/1.0');
    if (which === 'key twice') lines.push('Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==');
    return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);
  }
  // Byte mutations of the request, kept whole at the end so that the server is not left waiting.
  const req = Buffer.from(upgradeRequest(t));
  const out = Buffer.from(req);
  const k = rng.range(1, 4);
  for (let i = 0; i < k; i++) { const p = rng.int(out.length - 4); out[p] ^= 1 << rng.int(8); notes.push(`upgrade bit ${p * 8}`); }
  return out;
}
