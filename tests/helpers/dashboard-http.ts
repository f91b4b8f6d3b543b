// The dashboard's routes of an in-process run (in-process.ts) over real HTTP. The in-memory wire
// carries no HTTP, so a test whose pages must be real HTTP clients (server-sent event streams
// read over a socket) serves them here: the same Dashboard.handle() and the same guard the
// transport puts in front of it (transport.ts, serveHttp), on a port of their own.
import { createServer } from 'node:http';
import { guardHttp, requestPath } from '../../server/src/guard';
import type { InProcessRun } from './in-process';

export interface DashboardHttp {
  base: string;
  /** Stops listening and cuts every open stream. */
  close(): Promise<void>;
}

export async function serveDashboard(run: InProcessRun): Promise<DashboardHttp> {
  const server = createServer(guardHttp((l) => run.coord.opts.log(l), (req, res) => {
    const path = requestPath(req.url);
    if (path !== null && run.dashboard.handle(req, res, path)) return;
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not a dashboard route\n');
  }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  return {
    base: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
