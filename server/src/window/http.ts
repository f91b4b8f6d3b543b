// The dashboard's JSON answers: never cached, never sniffed as something else.
import type { ServerResponse } from 'node:http';

export function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(JSON.stringify(body));
}

export function methodNotAllowed(res: ServerResponse, allow: string): true {
  json(res, 405, { error: `use ${allow}` }, { allow });
  return true;
}
