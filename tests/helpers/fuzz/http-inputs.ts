// HTTP inputs: valid requests to every route (the control API with the right token only for
// actions that cannot change the run), mutated requests, mutated bytes, random request lines, and
// bodies that declare far more than they send.
import { mutateBytes, type Target } from './frames';
import type { Rng } from './rng';
import { describeValue, multibyte, weirdValue } from './values';

export interface HttpInput {
  kind: 'http';
  plan: string;
  notes: string[];
  bytes: Uint8Array;
}

interface Req {
  method: string; target: string; version: string; headers: [string, string][]; body: Uint8Array;
  /** Chunked bodies: 0 well formed, 1 a bad chunk size, 2 no last chunk. */
  bodyFor?: number;
  /** A Content-Length other than the body's (a number), or not a number at all (raw). */
  declare?: number; declareRaw?: string;
}

function httpTemplate(rng: Rng, t: Target): Req {
  const host: [string, string] = ['Host', `${t.host}:${t.port}`];
  const get = (path: string, method = rng.chance(0.75) ? 'GET' : 'HEAD'): Req => ({ method, target: path, version: 'HTTP/1.1', headers: [host], body: new Uint8Array(0) });
  const kind = rng.weighted<string>([
    [2, 'page'], [2, 'status'], [1.5, 'events'], [1.5, 'metrics'], [4, 'control'], [1, 'static'], [1, 'traversal'], [1, 'ws as http'], [1, 'other method'], [0.6, 'upgrade elsewhere'],
  ]);
  switch (kind) {
    case 'page': return get(rng.pick(['/', '/index.html', '/dashboard', '/dashboard/']));
    case 'status': return get(rng.pick(['/api/status', '/api/status?x=1', '/api/status/']));
    case 'events': return get('/api/events');
    case 'metrics': return get('/metrics');
    case 'static': return get(rng.pick([t.staticFile, '/missing.js', '/assets/', '/favicon.ico']));
    case 'traversal': return get(rng.pick(['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd', '/%2E%2E%5c', '/.env', '/link-out', '/%00', '/%', '/%zz', '/a%c0%af']));
    case 'ws as http': return get('/ws');
    case 'other method': return { ...get(rng.pick(['/', '/api/status', '/api/events', '/metrics', '/api/control', '/dashboard'])), method: rng.pick(['PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'POST', 'PROPFIND']) };
    case 'upgrade elsewhere': return { ...get(rng.pick(['/', '/api/status', '/api/events', '/metrics', '/api/control']), 'GET'), headers: [host, ['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']] };
    default: {
      // POST /api/control. With the right token only actions that cannot change the run are sent
      // (export is refused with 409: the coordinator has no --export dir); pause/resume/stop go
      // only with a wrong token or none.
      const auth = rng.weighted<string | null>([[4, t.adminToken], [2, 'WRONG-token-000000'], [1, null], [1, '']]);
      const right = auth === t.adminToken;
      const body = right
        ? rng.pick(['{"action":"export"}', '{"action":"launch"}', '{"action":null}', '{}', '[]', 'null', '"export"', '{"action":"export","x":1}', '{"action":"EXPORT"}', '{"action":"export"', '', '{"action":["export"]}', '{"action":1e999}', '\ufeff{"action":"export"}'])
        : rng.pick(['{"action":"pause"}', '{"action":"stop"}', '{"action":"resume"}', '{"action":"export"}']);
      const headers: [string, string][] = [host, ['Content-Type', rng.weighted([[6, 'application/json'], [1, 'text/plain'], [1, 'application/jsonx'], [1, 'application/json; charset=utf-16']])]];
      if (auth !== null) headers.push(['Authorization', `Bearer ${auth}`]);
      return { method: 'POST', target: '/api/control', version: 'HTTP/1.1', headers, body: Buffer.from(body) };
    }
  }
}

function mutateRequest(rng: Rng, r: Req, notes: string[]): void {
  const n = rng.range(1, 2);
  for (let i = 0; i < n; i++) {
    const kind = rng.weighted<string>([[3, 'target'], [1, 'method'], [1, 'version'], [3, 'header'], [3, 'body'], [1, 'content-length']]);
    if (kind === 'target') {
      const v = rng.pick(['//', '///', 'http://x:99999/', 'http://x:99999/api/status', 'http://[::1/', 'http://127.0.0.1/api/status', '//api/status', '*', '/api//status', '/API/STATUS', '/api/status#x', `/api/status?${'q'.repeat(rng.pick([100, 9000, 70_000]))}`,
        `/${'a'.repeat(rng.pick([1000, 20_000, 80_000]))}`, `/${multibyte(rng, 20)}`, '/%E4%B8%AD', '/\x7f', '/?', '?', '/api/events?', '/metrics/', 'x', '/.', '/./api/status']);
      notes.push(`target ${JSON.stringify(v.slice(0, 40))}${v.length > 40 ? `… (${v.length})` : ''}`);
      r.target = v;
    } else if (kind === 'method') {
      const v = rng.pick(['get', 'GETT', 'G', '', 'CONNECT', 'M-SEARCH', 'X'.repeat(100), 'GE T', 'HEAD', 'PRI', multibyte(rng, 3)]);
      notes.push(`method ${JSON.stringify(v.slice(0, 20))}`);
      r.method = v;
    } else if (kind === 'version') {
      const v = rng.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1x', '', 'http/1.1', 'HTTP/1.', 'HTTP/9.9', 'HTTP/1.1 extra']);
      notes.push(`version ${JSON.stringify(v)}`);
      r.version = v;
    } else if (kind === 'header') {
      const which = rng.pick(['huge value', 'many headers', 'multibyte value', 'space in name', 'empty name', 'no host', 'two hosts', 'expect', 'chunked', 'te gzip', 'obs-fold', 'bare cr', 'nul', 'auth huge', 'auth multibyte', 'connection close', 'range', 'upgrade h2c', 'accept-encoding', 'cookie']);
      notes.push(`header: ${which}`);
      const H = r.headers;
      if (which === 'huge value') H.push(['X-Fuzz', 'v'.repeat(rng.pick([4000, 15_000, 70_000]))]);
      if (which === 'many headers') { const k = rng.pick([100, 1000, 3000]); for (let j = 0; j < k; j++) H.push([`X-F${j}`, 'y']); }
      if (which === 'multibyte value') H.push(['X-Fuzz', multibyte(rng, 40)]);
      if (which === 'space in name') H.push(['X Fuzz', '1']);
      if (which === 'empty name') H.push(['', 'x']);
      if (which === 'no host') r.headers = H.filter(([k]) => k !== 'Host');
      if (which === 'two hosts') H.push(['Host', 'evil.example']);
      if (which === 'expect') H.push(['Expect', rng.pick(['100-continue', 'nonsense'])]);
      if (which === 'chunked') { H.push(['Transfer-Encoding', 'chunked']); r.bodyFor = rng.int(3); }
      if (which === 'te gzip') H.push(['Transfer-Encoding', 'gzip']);
      if (which === 'obs-fold') H.push(['X-Fold', 'a\r\n b']);
      if (which === 'bare cr') H.push(['X-Cr', 'a\rb']);
      if (which === 'nul') H.push(['X-Nul', 'a\0b']);
      if (which === 'auth huge') H.push(['Authorization', `Bearer ${'t'.repeat(rng.pick([300, 20_000]))}`]);
      if (which === 'auth multibyte') H.push(['Authorization', `Bearer ${multibyte(rng, 10)}`]);
      if (which === 'connection close') H.push(['Connection', 'close']);
      if (which === 'range') H.push(['Range', rng.pick(['bytes=0-0', 'bytes=-1', 'bytes=99999999-', 'bytes=1-0,0-1'])]);
      if (which === 'upgrade h2c') H.push(['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA']);
      if (which === 'accept-encoding') H.push(['Accept-Encoding', 'gzip, br, *;q=0']);
      if (which === 'cookie') H.push(['Cookie', 'a=b; '.repeat(200)]);
    } else if (kind === 'body') {
      const which = rng.pick(['truncate', 'extend', 'replace json', 'multibyte', 'invalid utf-8', 'large', 'deep json']);
      notes.push(`body: ${which}`);
      const b = r.body;
      if (which === 'truncate') { r.body = b.subarray(0, rng.int(b.length + 1)); r.bodyFor = 1; notes.push(`(declared ${b.length}, sent ${r.body.length})`); r.declare = b.length; }
      if (which === 'extend') { const ext = rng.bytes(rng.range(1, 200)); const o = new Uint8Array(b.length + ext.length); o.set(b); o.set(ext, b.length); r.body = o; if (rng.chance(0.5)) r.declare = b.length; }
      if (which === 'replace json') {
        const v = weirdValue(rng);
        let text: string;
        try { text = JSON.stringify({ action: v }, (_, x) => (typeof x === 'bigint' ? Number(x) : x)); } catch { text = `{"action":${'['.repeat(5000)}`; }
        notes.push(`(action := ${describeValue(v)})`);
        r.body = Buffer.from(text);
      }
      if (which === 'multibyte') r.body = Buffer.from(JSON.stringify({ action: multibyte(rng, 200) }));
      if (which === 'invalid utf-8') r.body = Uint8Array.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0xc0, 0x80, 0x7d]);
      if (which === 'large') { const k = rng.pick([1025, 4096, 1 << 16, 1 << 20]); r.body = new Uint8Array(k).fill(0x20); notes.push(`(${k} bytes)`); }
      if (which === 'deep json') r.body = Buffer.from('['.repeat(1000) + ']'.repeat(1000));
    } else {
      const v = rng.pick(['-1', 'abc', '1e3', '0x10', ' 5', '99999999999999999999', String(100_000_000), String(2 ** 31), '', '1, 2', '+5']);
      notes.push(`content-length ${JSON.stringify(v)}`);
      r.declareRaw = v;
    }
  }
}
function serialize(r: Req): Uint8Array {
  const head: string[] = [`${r.method} ${r.target} ${r.version}`.replace(/ $/, '')];
  let body = r.body;
  const chunked = r.headers.some(([k, v]) => k.toLowerCase() === 'transfer-encoding' && v === 'chunked');
  if (chunked) {
    // A chunked body: well formed, with a bad size, or without its last chunk.
    const s = Buffer.from(body).toString('latin1');
    const enc = r.bodyFor === 0 ? `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n` : r.bodyFor === 1 ? `zz\r\n${s}\r\n0\r\n\r\n` : `${s.length.toString(16)}\r\n${s}\r\n`;
    body = Buffer.from(enc, 'latin1');
  }
  for (const [k, v] of r.headers) head.push(`${k}: ${v}`);
  if (!chunked) {
    if (r.declareRaw !== undefined) head.push(`Content-Length: ${r.declareRaw}`);
    else if (r.declare !== undefined || body.length > 0 || r.method === 'POST') head.push(`Content-Length: ${r.declare ?? body.length}`);
  }
  const h = Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'utf8');
  const out = new Uint8Array(h.length + body.length);
  out.set(h); out.set(body, h.length);
  return out;
}

/** Never sends pause/resume/stop with the right token, however the bytes were mutated. */
function guardControl(bytes: Uint8Array, token: string, notes: string[]): Uint8Array {
  const s = Buffer.from(bytes).toString('latin1');
  if (!s.includes(token) || !/pause|resume|stop|\\u/i.test(s)) return bytes;
  notes.push('(right token replaced: the body could name a run-changing action)');
  return Buffer.from(s.split(token).join(token.toUpperCase() === token ? token.toLowerCase() : token.toUpperCase()), 'latin1');
}

export function httpInput(rng: Rng, t: Target): HttpInput {
  const notes: string[] = [];
  const kind = rng.weighted<string>([[6, 'request'], [2, 'mutated request'], [1.5, 'bytes'], [1, 'random line'], [0.7, 'huge content-length']]);
  const r = httpTemplate(rng, t);
  notes.push(`${r.method} ${r.target}${r.headers.some(([k]) => k === 'Authorization') ? ` auth=${r.headers.find(([k]) => k === 'Authorization')![1].slice(7, 20)}` : ''}`);
  let bytes: Uint8Array;
  if (kind === 'request') {
    if (rng.chance(0.3)) mutateRequest(rng, r, notes);
    bytes = serialize(r);
  } else if (kind === 'mutated request') {
    mutateRequest(rng, r, notes);
    mutateRequest(rng, r, notes);
    bytes = serialize(r);
  } else if (kind === 'bytes') {
    bytes = mutateBytes(rng, serialize(r), notes);
  } else if (kind === 'random line') {
    const line = rng.weighted<() => Uint8Array>([
      [2, () => rng.bytes(rng.range(1, 80))],
      [2, () => Buffer.from(`${rng.pick(['GET', 'POST', 'HEAD', 'X'])} ${Buffer.from(rng.bytes(rng.range(1, 30))).toString('latin1')} HTTP/1.1`, 'latin1')],
      [1, () => Buffer.from(multibyte(rng, rng.range(1, 50)))],
      [1, () => Buffer.from(`GET ${'/'.repeat(rng.range(1, 5))}${rng.pick(['', 'x', '..', '%', '\t'])} HTTP/1.1`, 'latin1')],
      [1, () => Buffer.from(rng.pick(['PRI * HTTP/2.0', 'GET / HTTP/1.1 x', 'GET  / HTTP/1.1', ' GET / HTTP/1.1', 'GET /', '\r\nGET / HTTP/1.1', 'GET / HTTP/1.1\n', 'SSH-2.0-OpenSSH_9.2', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03']))],
    ])();
    notes.push(`line ${JSON.stringify(Buffer.from(line).toString('latin1').slice(0, 60))}`);
    const tail = Buffer.from(rng.chance(0.7) ? `\r\nHost: ${t.host}\r\n\r\n` : '\r\n\r\n');
    bytes = new Uint8Array(line.length + tail.length); bytes.set(line); bytes.set(tail, line.length);
  } else {
    // Declares far more body than it sends: the answer must come without the body.
    const big = rng.pick([1 << 20, 100_000_000, 2 ** 32, 9_007_199_254_740_991]);
    if (r.method === 'GET' || r.method === 'HEAD') { r.method = 'POST'; r.target = rng.chance(0.7) ? '/api/control' : r.target; }
    r.declare = big;
    const prefix = rng.logSize(32, 256 << 10);
    const b = new Uint8Array(prefix).fill(0x41);
    b.set(Buffer.from('{"action":"export"'), 0);
    r.body = b;
    notes.push(`POST ${r.target} declares ${big} bytes, sends ${prefix}`);
    bytes = serialize(r);
  }
  return { kind: 'http', plan: kind, notes, bytes: guardControl(bytes, t.adminToken, notes) };
}

