// One port for http and https (and ws and wss). Each TCP connection's first byte says which:
// 0x16 opens a TLS handshake and goes to an https server, anything else to the http server. Both
// deliver 'request' to the same handler and 'upgrade' to the same listeners (the returned http
// server's), so the coordinator does not know or care how a request came.
//
// Plain http stays for localhost (the dashboard, local tabs, local workers). A browser that asks
// for the worker page over plain http by any other name would get a page that is not a secure
// context, hence no WebGPU: with TLS on, it gets a short page that explains that and links to the
// https address instead (`?http=1` still serves the worker page over http, for WebGL).
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Admission } from './admission';

export interface ListenerTls {
  cert: string | Buffer;
  key: string | Buffer;
  /** Shown on the plain-http notice, so a person can check the certificate the browser warns about. */
  fingerprint?: string;
  selfSigned?: boolean;
}

/** A connection that sends nothing for this long is closed before it is handed to a server (Admission's request deadline is shorter where given). */
const FIRST_BYTE_TIMEOUT_MS = 30_000;

/** Host names a browser treats as a secure context over plain http. */
export function isLoopbackHost(hostHeader: string | undefined): boolean {
  if (!hostHeader) return false;
  const host = hostHeader.replace(/:\d+$/, '').replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The worker page, asked for over plain http by a name that is not a secure context. */
function needsHttps(req: IncomingMessage): boolean {
  if ((req.socket as TLSSocket).encrypted) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const [path, query = ''] = (req.url ?? '/').split('?', 2);
  if (path !== '/' && path !== '/index.html') return false;
  if (new URLSearchParams(query).get('http') === '1') return false;
  return !isLoopbackHost(req.headers.host);
}

function httpsNotice(req: IncomingMessage, res: ServerResponse, tls: ListenerTls): void {
  const host = req.headers.host ?? '';
  if (!/^[A-Za-z0-9.\-:[\]]{1,255}$/.test(host)) {
    res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('bad request: invalid Host header\n');
    return;
  }
  const [path, query] = (req.url ?? '/').split('?', 2);
  const https = `https://${host}${path}${query ? `?${query}` : ''}`;
  const plain = `http://${host}${path}?${query ? `${query}&` : ''}http=1`;
  const trust = tls.selfSigned
    ? `<p>The coordinator made its own certificate, so the browser will warn that it is not trusted. Check that the
fingerprint it shows is the one the coordinator printed when it started:</p>
<p class="fp"><code>SHA-256 ${escapeHtml(tls.fingerprint ?? '?')}</code></p>
<p>then choose <em>Advanced → Proceed</em> (Chrome, Edge) or <em>Accept the risk</em> (Firefox). To be asked never
again on this machine, install the certificate instead: see docs/BROWSER.md, "A secure context".</p>`
    : '';
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tabtrain: open the https address</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}
.notice{border:2px solid #c80;background:#fff6e0;padding:1rem 1.25rem;border-radius:8px}
a.go{display:inline-block;margin:.5rem 0;padding:.5rem 1rem;background:#1a6;color:#fff;border-radius:6px;text-decoration:none;font-weight:600}
code{font-size:.85em;word-break:break-all}</style></head>
<body><div id="notice" class="notice warn">
<p><strong>This page needs https to use this machine's GPU.</strong> Browsers offer WebGPU only to secure pages:
https, or plain http on <code>localhost</code>. Over plain http from another machine, this tab would fall back to
WebGL and train several times slower.</p>
<p><a class="go" id="https-link" href="${escapeHtml(https)}">Open ${escapeHtml(https)}</a></p>
${trust}
<p>Or <a id="http-link" href="${escapeHtml(plain)}">join over plain http anyway</a> (WebGL, no WebGPU).</p>
</div></body></html>
`;
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-length': String(Buffer.byteLength(html)) });
  res.end(req.method === 'HEAD' ? undefined : html);
}

/**
 * An Expect other than 100-continue gets 417 and the connection closed. Left to Node, the 417 came
 * with the connection kept open to read the body the request declared: a request that declares
 * 2 GB and sends two bytes held its socket until the peer gave up (the fuzzer's find).
 */
function refuseExpectations<S extends Server>(server: S): S {
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const text = 'Expect: only 100-continue is understood\n';
    res.writeHead(417, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(text)), connection: 'close' });
    res.end(text);
  });
  return server;
}

/**
 * An http server that also speaks https on the same port when `tls` is given. Listen, address,
 * close and closeAllConnections work on it as on any http server; 'upgrade' listeners added to it
 * also get the upgrades that came over TLS. With `admission`, every connection is counted from
 * its accept, refused over the caps, and closed unless its first request (an HTTP request or an
 * upgrade, over TLS or not) comes within the deadline (admission.ts).
 */
export function createListener(onRequest: RequestListener, tls?: ListenerTls, admission?: Admission): Server {
  const asked = (req: IncomingMessage) => admission?.asked(req.socket);
  const handle: RequestListener = (req, res) => { asked(req); onRequest(req, res); };
  if (!tls) return admit(refuseExpectations(createHttpServer(handle)), asked, admission);
  const http = createHttpServer((req, res) => (needsHttps(req) ? (asked(req), httpsNotice(req, res, tls)) : handle(req, res)));
  // handshakeTimeout: Node's default lets a stalled handshake hold its ~90 KB for 120 s.
  const https = createHttpsServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', handshakeTimeout: admission?.limits.requestMs ?? 120_000 }, handle);
  refuseExpectations(http);
  refuseExpectations(https);
  https.on('upgrade', (req, socket, head) => http.emit('upgrade', req, socket, head));
  // CONNECT and unparseable requests over TLS get the same answers as over plain http.
  https.on('connect', (req, socket, head) => http.emit('connect', req, socket, head));
  https.on('clientError', (err, socket) => http.emit('clientError', err, socket));
  // A failed handshake (a browser that refuses the certificate, a scanner) only closes that socket.
  https.on('tlsClientError', (_err, socket) => socket.destroy());
  // https never listens itself: start its connection tracking (timeouts, closeAllConnections) with http's.
  http.on('listening', () => https.emit('listening'));
  http.on('close', () => https.close(() => {}));

  const plainConnection = http.listeners('connection')[0] as (socket: Socket) => void;
  http.removeAllListeners('connection');
  http.prependListener('upgrade', asked);
  const sniffing = new Set<Socket>();
  const overTls = new Set<Socket>();
  http.on('connection', (socket: Socket) => {
    if (admission && !admission.admit(socket)) return;
    sniffing.add(socket);
    const onError = () => socket.destroy();
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTE_TIMEOUT_MS);
    timer.unref();
    const done = () => { clearTimeout(timer); sniffing.delete(socket); socket.removeListener('error', onError); socket.removeListener('close', done); };
    socket.on('error', onError);
    socket.on('close', done);
    socket.once('data', (chunk: Buffer) => {
      done();
      socket.pause();
      socket.unshift(chunk);
      if (chunk[0] === 0x16) {
        // http accepts sockets half-open; under TLS that would keep a socket whose peer left after
        // the handshake (a refused certificate, a browser's preconnect) open forever, and close() waiting.
        socket.allowHalfOpen = false;
        // Tracked until it closes: https counts only sockets whose handshake is done and whose request began.
        overTls.add(socket);
        socket.once('close', () => overTls.delete(socket));
        https.emit('connection', socket);
      } else {
        plainConnection.call(http, socket);
        // http reads from the socket's handle from now on; the chunk put back above comes first.
        socket.resume();
      }
    });
  });
  const closeAll = http.closeAllConnections.bind(http);
  http.closeAllConnections = () => {
    closeAll();
    https.closeAllConnections();
    for (const s of [...sniffing, ...overTls]) s.destroy();
  };
  const closeIdle = http.closeIdleConnections.bind(http);
  http.closeIdleConnections = () => {
    closeIdle();
    https.closeIdleConnections();
  };
  return http;
}

/** Plain http alone: every connection through `admission` before the http server sees it. */
function admit(http: Server, asked: (req: IncomingMessage) => void, admission?: Admission): Server {
  if (!admission) return http;
  const plainConnection = http.listeners('connection')[0] as (socket: Socket) => void;
  http.removeAllListeners('connection');
  http.on('connection', (socket: Socket) => { if (admission.admit(socket)) plainConnection.call(http, socket); });
  http.prependListener('upgrade', asked);
  return http;
}
