// The last line of defence: nothing a peer sends may throw out of a handler and end the process.
// Each handler validates what it reads; these wrappers catch what validation missed, log it and
// close only the connection it came from.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** The path of a request target, or null when it is not a URL path (`//`, `http://x:99999/`, `*`). */
export function requestPath(target: string | undefined): string | null {
  if (!target || target[0] !== '/' || target.startsWith('//')) return null;
  try {
    return new URL(target, 'http://x').pathname;
  } catch {
    return null;
  }
}

/** Wraps an HTTP handler: an exception becomes a 500 (or a closed socket if headers went out), and a log line. */
export function guardHttp(log: (line: string) => void, handle: (req: IncomingMessage, res: ServerResponse) => void) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    try {
      handle(req, res);
    } catch (e) {
      log(`http ${req.method ?? '?'} from ${req.socket.remoteAddress ?? '?'}: internal error ${(e as Error).message}`);
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end('internal error\n');
      } else res.destroy();
    }
  };
}

/** Wraps an upgrade handler: an exception destroys that one socket. */
export function guardUpgrade(log: (line: string) => void, handle: (req: IncomingMessage, socket: Duplex, head: Buffer) => void) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    try {
      handle(req, socket, head);
    } catch (e) {
      log(`upgrade from ${req.socket.remoteAddress ?? '?'}: internal error ${(e as Error).message}`);
      socket.destroy();
    }
  };
}

/** Wraps a timer or event callback: an exception is logged and `onError` (e.g. drop the connection) runs. */
export function guarded<A extends unknown[]>(log: (line: string) => void, what: string, fn: (...a: A) => void, onError?: (e: Error) => void) {
  return (...a: A): void => {
    try {
      fn(...a);
    } catch (e) {
      log(`${what}: internal error ${(e as Error).message}`);
      try { onError?.(e as Error); } catch { /* the fallback itself failed; nothing more to do */ }
    }
  };
}

/** Answers a bad request target with 400 and closes the connection. */
export function badRequest(res: ServerResponse, why: string): void {
  res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  res.end(`bad request: ${why}\n`);
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 431: 'Request Header Fields Too Large' };

/**
 * Answers on a raw socket (a refused upgrade, CONNECT, a request that does not parse) with a
 * status line and a one-line reason, then closes it.
 */
export function refuseSocket(socket: Duplex, status: keyof typeof STATUS_TEXT, why: string): void {
  socket.once('error', () => {});
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(why) + 1}\r\n\r\n${why}\n`);
  setTimeout(() => socket.destroy(), 1000).unref();
}
