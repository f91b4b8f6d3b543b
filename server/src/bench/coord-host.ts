// The coordinator of a linked scale-out run (linked.ts), as its own process, so that it can live in
// its own network namespace. Started with an IPC channel and one argument, the JSON of HostOptions.
//
// It sends to its parent, over IPC:
//   {type: 'listening', port}
//   {type: 'step', rec, t, cpuMs, links}   after every step: the StepRecord, performance.now(), this
//                                          process's CPU (user + system) so far, and per worker
//                                          connection the bytes received and sent at its socket
//   {type: 'log', line}                    the coordinator's log lines
//   {type: 'done', summary}                then exits 0
// and exits 1 on an error (after {type: 'error', message}). It exits when its parent goes away.
import { Coordinator, type CoordinatorOptions, type StepRecord } from '../coordinator';
import { loadFashionMnist } from '../data';

export type HostOptions = Omit<CoordinatorOptions, 'log' | 'progress'> & { dataDir?: string };

/** Per worker: its bytes each way so far, and the rates the coordinator measured for it each way (bytes/s, 0: none yet). */
export interface LinkBytes { id: number; remote: string; bytesIn: number; bytesOut: number; upBytesPerSec: number; downBytesPerSec: number }
export type HostMessage =
  | { type: 'listening'; port: number }
  | { type: 'step'; rec: StepRecord; t: number; cpuMs: number; links: LinkBytes[] }
  | { type: 'log'; line: string }
  | { type: 'done'; summary: import('../coordinator').Summary }
  | { type: 'error'; message: string };

const send = (m: HostMessage) => new Promise<void>((r) => { if (process.send) process.send(m, undefined, {}, () => r()); else { console.log(JSON.stringify(m)); r(); } });

async function main(): Promise<void> {
  const { dataDir, ...o } = JSON.parse(process.argv[2]) as HostOptions;
  const data = loadFashionMnist(dataDir);
  const coord = new Coordinator({ ...o, log: (line) => { void send({ type: 'log', line }); }, progress: () => {} }, data);
  const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  coord.events.on('step', (rec: StepRecord) => {
    const links = coord.status().workers.map((w) => ({ id: w.id, remote: w.remote, bytesIn: w.bytesIn, bytesOut: w.bytesOut, upBytesPerSec: w.upBytesPerSec, downBytesPerSec: w.downBytesPerSec }));
    void send({ type: 'step', rec, t: performance.now(), cpuMs: cpuMs(), links });
  });
  const port = await coord.listen();
  await send({ type: 'listening', port });
  try {
    const summary = await coord.train();
    await send({ type: 'done', summary });
  } finally {
    await coord.close();
  }
}

if (process.argv[1]?.endsWith('coord-host.ts')) {
  process.on('disconnect', () => process.exit(0));
  // Ctrl-C reaches the whole process group; the benchmark (the parent) decides what happens.
  process.on('SIGINT', () => {});
  main().then(() => process.exit(0), async (e) => {
    await send({ type: 'error', message: (e as Error).stack ?? String(e) });
    process.exit(1);
  });
}
