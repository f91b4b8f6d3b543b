// Runs one coordinator and its workers inside a NetLab (netns.ts): the coordinator in its own
// namespace as a child process (coord-host.ts), each worker in its own namespace. Used by
// `bench scaleout --link` and by tests/integration/netns.test.ts.
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Summary } from '../coordinator';
import type { HostMessage, HostOptions, LinkBytes } from './coord-host';
import type { Host, NetLab } from './netns';

// Workers started by the coordinator's own process tree present this key and are established from
// the first step (no probation copies): the coordinator (a child of this process) and the workers
// (children too) inherit it. The coordinator reads it from the same variable (server/src/secrets.ts).
process.env.TABTRAIN_LOCAL_KEY ??= randomBytes(16).toString('hex');

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** argv for `node` running one of this repository's TypeScript entry points through tsx. */
export function tsArgs(file: string, args: string[]): string[] {
  return ['--import', join(ROOT, 'node_modules/tsx/dist/loader.mjs'), join(ROOT, file), ...args];
}

/** A command line to run in a namespace. */
export interface Command { cmd: string; args: string[] }

/** `tabtrain worker` through bin/tabtrain, as spawnWorker (spawn-worker.ts) starts it: --local ties it to its parent. */
export function cliWorker(url: string, args: string[]): Command {
  return { cmd: join(ROOT, 'bin/tabtrain'), args: ['worker', '--url', url, '--local', ...args] };
}

export interface StepMark {
  rec: import('../coordinator').StepRecord;
  /** The coordinator process's clock (performance.now()) and CPU (user + system, ms) after the step. */
  t: number;
  cpuMs: number;
  links: LinkBytes[];
  /** This machine's busy and total jiffies (/proc/stat) when the benchmark heard of the step. */
  machine: { busy: number; total: number };
  /** CPU (user + system, ms) of all the run's worker processes so far (/proc/PID/stat), summed. */
  workersCpuMs: number;
  /** The coordinator's eth0 since the previous mark (sampled every 10 ms): whether the two directions overlapped. */
  overlap?: Overlap;
}

/**
 * Bytes the coordinator's interface sent since the last step, and how many of them went out in
 * 10 ms intervals in which it was also receiving at ≥ 25% of its link's rate (gradients coming in):
 * a pipelined step sends most of the new weights during the upload, a step whose directions take
 * turns almost none. Counted at the interface (frames, headers included), not at the sockets.
 */
export interface Overlap { sentBytes: number; sentDuringUpBytes: number }

/**
 * eth0's received and sent bytes (frames) in the network namespace of process `pid`
 * (/proc/PID/net/dev), or null: also while the process is still in this process's namespace
 * (`ip netns exec` has not switched yet), whose eth0 is another interface.
 */
export function eth0Bytes(pid: number | undefined): { rx: number; tx: number; ns: string } | null {
  if (!pid) return null;
  try {
    const ns = readlinkSync(`/proc/${pid}/ns/net`);
    if (ns === readlinkSync('/proc/self/ns/net')) return null;
    const line = readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n').find((l) => l.trim().startsWith('eth0:'));
    if (!line) return null;
    const f = line.trim().slice(5).trim().split(/\s+/).map(Number);
    return { rx: f[0], tx: f[8], ns };
  } catch {
    return null;
  }
}

/** Samples a process's eth0 every 10 ms and accumulates an Overlap; take() returns it and starts the next. */
function overlapSampler(pid: number | undefined, rateBytesPerSec: number): { take: () => Overlap | undefined; stop: () => void } {
  let prev = eth0Bytes(pid);
  let prevT = performance.now();
  let acc: Overlap = { sentBytes: 0, sentDuringUpBytes: 0 };
  let seen = prev !== null;
  const timer = setInterval(() => {
    const now = eth0Bytes(pid);
    const t = performance.now();
    if (now && prev && now.ns === prev.ns) {
      const dtx = now.tx - prev.tx, drx = now.rx - prev.rx;
      acc.sentBytes += dtx;
      if (drx >= 0.25 * rateBytesPerSec * ((t - prevT) / 1000)) acc.sentDuringUpBytes += dtx;
      seen = true;
    }
    prev = now;
    prevT = t;
  }, 10);
  timer.unref();
  return {
    take: () => { const a = acc; acc = { sentBytes: 0, sentDuringUpBytes: 0 }; return seen ? a : undefined; },
    stop: () => clearInterval(timer),
  };
}

export interface LabRun {
  summary: Summary;
  marks: StepMark[];
  log: string[];
}

/** Busy and total jiffies of all CPUs since boot (/proc/stat), or zeros where there is none. */
export function machineJiffies(): { busy: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** User + system CPU of a process so far, ms (/proc/PID/stat; clock ticks of 10 ms), or 0 once it is gone. */
export function processCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // utime, stime (fields 14 and 15)
  } catch {
    return 0;
  }
}

function untilExit(p: ChildProcess): Promise<number | null> {
  return new Promise((r) => { if (p.exitCode !== null || p.signalCode !== null) r(p.exitCode); else p.once('exit', (code) => r(code)); });
}

/**
 * One run: the coordinator in lab.coordinator's namespace, listening on its address, and worker i
 * in lab.workers[i]'s, started by the command `worker(url, i)`. Resolves with the summary and one
 * mark per step; rejects, with the coordinator's and workers' last words, if the run fails.
 */
export async function runInLab(lab: NetLab, host: HostOptions, n: number, worker: (url: string, i: number) => Command, onStep?: (m: StepMark) => void): Promise<LabRun> {
  if (n > lab.workers.length) throw new Error(`the lab has ${lab.workers.length} worker namespaces, the run needs ${n}`);
  const log: string[] = [];
  const errors: string[] = [];
  const coord = lab.spawnIn(lab.coordinator, process.execPath, tsArgs('server/src/bench/coord-host.ts', [JSON.stringify({ ...host, host: lab.coordinator.ip, port: 0 })]), { cwd: ROOT, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
  coord.stderr?.on('data', (d: Buffer) => errors.push(`coordinator: ${d.toString()}`));
  const workers: ChildProcess[] = [];
  const marks: StepMark[] = [];
  const overlap = overlapSampler(coord.pid, lab.coordinator.link.rateBits / 8);
  try {
    return await new Promise<LabRun>((resolveRun, reject) => {
      let done = false;
      const fail = (why: string) => { if (!done) { done = true; reject(new Error(`${why}${errors.length ? `\n${errors.join('').slice(-1500)}` : ''}${log.length ? `\ncoordinator log: ${log.slice(-8).join(' | ')}` : ''}`)); } };
      coord.on('message', (m: HostMessage) => {
        if (m.type === 'listening') {
          const url = `ws://${lab.coordinator.ip}:${m.port}/ws`;
          for (let i = 0; i < n; i++) {
            const c = worker(url, i);
            const w = lab.spawnIn(lab.workers[i], c.cmd, c.args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
            w.stderr?.on('data', (d: Buffer) => errors.push(`worker ${i}: ${d.toString()}`));
            // A worker that dies before the run ends would leave the coordinator waiting for it.
            w.once('exit', (code, signal) => { if (code !== 0) fail(`worker ${i} (${lab.workers[i].ns}) exited (${signal ?? code}) before the run finished`); });
            w.once('error', (e) => fail(`could not start worker ${i}: ${e.message}`));
            workers.push(w);
          }
        } else if (m.type === 'step') {
          const mark = { rec: m.rec, t: m.t, cpuMs: m.cpuMs, links: m.links, machine: machineJiffies(), workersCpuMs: workers.reduce((a, w) => a + processCpuMs(w.pid), 0), overlap: overlap.take() };
          marks.push(mark);
          onStep?.(mark);
        } else if (m.type === 'log') {
          log.push(m.line);
        } else if (m.type === 'done') {
          done = true;
          resolveRun({ summary: m.summary, marks, log });
        } else if (m.type === 'error') {
          fail(`the coordinator failed: ${m.message}`);
        }
      });
      coord.once('exit', (code, signal) => fail(`the coordinator exited (${signal ?? code}) before the run finished`));
      coord.once('error', (e) => fail(`could not start the coordinator: ${e.message}`));
    });
  } finally {
    overlap.stop();
    await Promise.race([untilExit(coord), new Promise((r) => setTimeout(r, 5000))]);
    for (const w of [coord, ...workers]) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await Promise.all([coord, ...workers].map(untilExit));
  }
}

export interface Probe { rttMs: number; upMBs: number; downMBs: number; bytes: number }

/** TCP between the coordinator's namespace and a worker's: RTT, and throughput each way (link-probe.ts). */
export async function probeLink(lab: NetLab, worker: Host, bytes: number): Promise<Probe> {
  const server = lab.spawnIn(lab.coordinator, process.execPath, tsArgs('server/src/bench/link-probe.ts', ['server', lab.coordinator.ip]), { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  try {
    const port = await new Promise<number>((res, rej) => {
      server.once('message', (m: { port: number }) => res(m.port));
      server.once('exit', (c) => rej(new Error(`link probe server exited (${c})`)));
    });
    const client = lab.spawnIn(worker, process.execPath, tsArgs('server/src/bench/link-probe.ts', ['client', lab.coordinator.ip, String(port), String(bytes)]), { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    client.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    const code = await untilExit(client);
    if (code !== 0) throw new Error(`link probe client exited (${code})`);
    return { ...(JSON.parse(out.trim().split('\n').pop()!) as Omit<Probe, 'bytes'>), bytes };
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
    await untilExit(server);
  }
}
