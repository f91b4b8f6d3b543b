// Network namespaces for `tabtrain bench scaleout --link RATE`: links like a user's, on this machine.
//
//   tt-<pid>-<k>-br   a bridge (br0), nothing else; no uplink, so no traffic leaves the lab
//   tt-<pid>-<k>-c    the coordinator, eth0 = 10.77.0.1, shaped at the coordinator's rate
//   tt-<pid>-<k>-wI   worker I, eth0 = 10.77.0.(10 + I), shaped at the worker's rate
//
// Each host namespace is joined to the bridge by a veth pair created inside the bridge namespace
// (its peer goes straight into the host's namespace: the root namespace is never touched). A link
// is shaped in both directions: tbf on the host's eth0 (what the host sends) and on the bridge's
// port (what it receives), so the coordinator's one link carries every worker's traffic, as one NIC
// does. Where the kernel has netem, each of those qdiscs also delays by RTT / 4, so a packet's path
// coordinator → worker (two qdiscs) takes RTT / 2 each way.
//
// Everything made here is removed on every exit path: destroy(), normal exit, an exception,
// SIGINT/SIGTERM/SIGHUP. A lab whose owner died by SIGKILL is removed by the next lab made on this
// machine (its name carries the dead pid).
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface LinkSpec {
  /** Bits per second. */
  rateBits: number;
  /** Round-trip time added between a worker and the coordinator, ms (0 = none). */
  rttMs: number;
}

export interface LabOptions {
  workers: number;
  /** Each worker's own link. */
  worker: LinkSpec;
  /** Worker i's link instead of `worker`, where given (a worker on a slower line). */
  links?: (LinkSpec | undefined)[];
  /** The coordinator's link, shared by all workers (default: the same as a worker's). */
  coordinator?: LinkSpec;
}

/** TCP payload per byte a tbf counts: 1448 payload bytes per 1514-byte frame (MTU 1500, TCP timestamps). */
export const TCP_PAYLOAD_FRACTION = 1448 / 1514;

/** Bytes of TCP payload per second a link of `rateBits` carries at most. */
export function payloadBytesPerSec(rateBits: number): number {
  return (rateBits / 8) * TCP_PAYLOAD_FRACTION;
}

/** '1gbit', '10Gbit/s', '200mbit', '500m', '1e9' → bits per second. */
export function parseRate(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]?)(?:bit|b|bps)?(?:\/s)?\s*$/i.exec(s);
  if (!m) throw new Error(`link rate '${s}' is not a rate like 1gbit, 10gbit or 200mbit`);
  const bits = Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  if (!(bits >= 1e5)) throw new Error(`link rate '${s}' is below 100 kbit/s`);
  return bits;
}

export function formatRate(bits: number): string {
  return bits >= 1e9 ? `${+(bits / 1e9).toFixed(3)} Gbit/s` : `${+(bits / 1e6).toFixed(3)} Mbit/s`;
}

const PREFIX = 'tt-';
const NAME = /^tt-(\d+)-/;

/** Why namespaces cannot be made here, or null when they can. */
export function whyNoNamespaces(): string | null {
  const how = 'run it as root (sudo) with iproute2 installed (apt-get install iproute2); without --link the benchmark runs on loopback';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return `network namespaces need root, and this is uid ${process.getuid()}: ${how}`;
  for (const tool of ['ip', 'tc']) if (!which(tool)) return `'${tool}' was not found: ${how}`;
  const probe = `${PREFIX}${process.pid}-probe`;
  try {
    ip(['netns', 'add', probe]);
    ip(['netns', 'del', probe]);
  } catch (e) {
    return `'ip netns add' failed (${(e as Error).message.trim().split('\n').pop()}): ${how}`;
  }
  return null;
}

function which(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']).some((d) => existsSync(`${d}/${tool}`));
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}
const ip = (args: string[]) => run('ip', args);
const tc = (args: string[]) => run('tc', args);

function namespaces(): string[] {
  return ip(['netns', 'list']).split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as { code?: string }).code === 'EPERM'; }
}

/** Kills what still runs in a namespace of ours (only processes we started live there), then deletes it. */
function removeNamespace(ns: string): void {
  try {
    for (const pid of ip(['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  } catch { /* already gone */ }
  try { ip(['netns', 'del', ns]); } catch { /* already gone */ }
}

/** Removes labs left behind by benchmark processes that died without cleaning up (SIGKILL). */
export function removeLeftovers(): string[] {
  const gone: string[] = [];
  for (const ns of namespaces()) {
    const m = NAME.exec(ns);
    if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) { removeNamespace(ns); gone.push(ns); }
  }
  return gone;
}

/** Does this kernel have netem (CONFIG_NET_SCH_NETEM)? Tried on a scratch veth inside `ns`. */
function hasNetem(ns: string): boolean {
  try {
    ip(['-n', ns, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1']);
    tc(['-n', ns, 'qdisc', 'add', 'dev', 'probe0', 'root', 'netem', 'delay', '1ms']);
    return true;
  } catch {
    return false;
  } finally {
    try { ip(['-n', ns, 'link', 'del', 'probe0']); } catch { /* not made */ }
  }
}

const labs = new Set<NetLab>();
let hooked = false;
let counter = 0;

/** Removes every live lab synchronously: safe in 'exit' handlers and signal handlers. */
function destroyAll(): void {
  for (const lab of [...labs]) lab.destroySync();
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', destroyAll);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(sig, () => {
      if (labs.size) console.error(`\n${sig}: removing network namespaces ${[...labs].map((l) => l.prefix).join(', ')}`);
      destroyAll();
      process.exit(code);
    });
  }
}

export interface Host { ns: string; ip: string; link: LinkSpec }

export class NetLab {
  readonly prefix: string;
  readonly bridge: string;
  readonly coordinator: Host;
  readonly workers: Host[];
  /** The kernel has netem: RTT is applied. Without it links are shaped for rate only. */
  netem = false;
  private made: string[] = [];
  private children = new Set<ChildProcess>();

  private constructor(o: LabOptions) {
    this.prefix = `${PREFIX}${process.pid}-${counter++}`;
    this.bridge = `${this.prefix}-br`;
    this.coordinator = { ns: `${this.prefix}-c`, ip: '10.77.0.1', link: o.coordinator ?? o.worker };
    this.workers = Array.from({ length: o.workers }, (_, i) => ({ ns: `${this.prefix}-w${i}`, ip: `10.77.0.${10 + i}`, link: o.links?.[i] ?? o.worker }));
  }

  /** Makes the namespaces, the bridge and the shaped links. Throws with the reason (and removes what it made) if it cannot. */
  static create(o: LabOptions): NetLab {
    if (o.workers < 1 || o.workers > 200) throw new Error(`a lab has 1 to 200 workers, not ${o.workers}`);
    const why = whyNoNamespaces();
    if (why) throw new Error(why);
    removeLeftovers();
    hookExit();
    const lab = new NetLab(o);
    labs.add(lab);
    try {
      lab.build();
    } catch (e) {
      lab.destroySync();
      throw e;
    }
    return lab;
  }

  private addNs(ns: string): void {
    ip(['netns', 'add', ns]);
    this.made.push(ns);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  private build(): void {
    this.addNs(this.bridge);
    ip(['-n', this.bridge, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', this.bridge, 'link', 'set', 'br0', 'up']);
    this.netem = this.coordinator.link.rttMs > 0 || this.workers.some((w) => w.link.rttMs > 0) ? hasNetem(this.bridge) : false;
    const hosts: [Host, string][] = [[this.coordinator, 'c'], ...this.workers.map((w, i) => [w, `w${i}`] as [Host, string])];
    for (const [h, port] of hosts) {
      this.addNs(h.ns);
      ip(['-n', this.bridge, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      ip(['-n', this.bridge, 'link', 'set', port, 'master', 'br0']);
      ip(['-n', this.bridge, 'link', 'set', port, 'up']);
      ip(['-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
      ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
      this.shape(h.ns, 'eth0', h.link);
      this.shape(this.bridge, port, h.link);
    }
  }

  /** tbf at the link's rate on the device's egress, under a netem delay of RTT / 4 where the kernel has netem. */
  private shape(ns: string, dev: string, l: LinkSpec): void {
    const bytesPerSec = l.rateBits / 8;
    // Burst: 1 ms at the rate (at least 64 KiB, a GSO packet); queue: 20 ms at the rate (at least 1 MiB).
    const burst = Math.max(65536, Math.round(bytesPerSec / 1000));
    const limit = Math.max(1 << 20, Math.round(bytesPerSec / 50));
    const tbf = ['tbf', 'rate', `${Math.round(l.rateBits)}bit`, 'burst', String(burst), 'limit', String(limit)];
    if (this.netem && l.rttMs > 0) {
      tc(['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'netem', 'delay', `${(l.rttMs / 4) * 1000}us`, 'limit', '100000']);
      tc(['-n', ns, 'qdisc', 'add', 'dev', dev, 'parent', '1:1', 'handle', '10:', ...tbf]);
    } else {
      tc(['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', ...tbf]);
    }
  }

  /** What the qdiscs say (for logs and tests). */
  qdiscs(host: Host): string {
    return tc(['-n', host.ns, '-s', 'qdisc', 'show', 'dev', 'eth0']);
  }

  /** Bytes the tbf on a host's eth0 has sent (what the host sent, headers included). */
  sentBytes(host: Host): number {
    const out = tc(['-n', host.ns, '-s', 'qdisc', 'show', 'dev', 'eth0']);
    const tbf = out.split(/\n(?=qdisc )/).find((b) => b.startsWith('qdisc tbf')) ?? out;
    const m = /Sent (\d+) bytes/.exec(tbf);
    return m ? Number(m[1]) : 0;
  }

  /** Spawns `cmd args` inside a host's namespace (`ip netns exec` execs it: the child's pid is the command's). */
  spawnIn(host: Host, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    if (!this.made.includes(host.ns)) throw new Error(`namespace ${host.ns} was removed`);
    const child = spawn('ip', ['netns', 'exec', host.ns, cmd, ...args], opts);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Removes the lab: its processes, namespaces, veths and bridge. Idempotent, synchronous. */
  destroySync(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    this.children.clear();
    for (const ns of this.made.reverse()) removeNamespace(ns);
    this.made = [];
    labs.delete(this);
  }

  /** The namespaces of this lab that still exist (tests check this is empty after destroySync). */
  existing(): string[] {
    const all = namespaces();
    return [this.bridge, this.coordinator.ns, ...this.workers.map((w) => w.ns)].filter((ns) => all.includes(ns));
  }
}

// `netns.ts hold N`: makes a lab of N workers, prints "holding <prefix>", and waits to be signalled
// (the test of the cleanup on every exit path).
if (process.argv[1]?.endsWith('netns.ts') && process.argv[2] === 'hold') {
  const lab = NetLab.create({ workers: Number(process.argv[3] ?? 1), worker: { rateBits: 1e9, rttMs: 0 } });
  console.log(`holding ${lab.prefix}`);
  setInterval(() => {}, 1 << 30);
}
