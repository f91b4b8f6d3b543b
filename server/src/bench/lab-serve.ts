// `lab-serve.ts --link RATE --workers N [--rtt MS] -- SERVE OPTIONS`: runs `tabtrain serve` through
// emulated links (bench/accuracy.sh with LINK=RATE). The coordinator runs in its own network
// namespace and each of N local Node workers in another, every one behind a link shaped at RATE
// (netns.ts), so the coordinator measures real link rates: workers on loopback are priced as
// link-free (link-meter.ts onLoopback) and --compress auto would never leave fp32 there.
//
// The workers are established as --local-workers are (the local key, linked.ts), so a run here
// differs from `serve --local-workers N` only in its links. The namespaces are removed on every
// exit path (netns.ts), Ctrl-C included; the exit code is the coordinator's.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetLab, formatRate, parseRate, whyNoNamespaces } from './netns';
import { ROOT, cliWorker } from './linked';

const USAGE = `lab-serve: tabtrain serve with its coordinator and local workers in network namespaces joined by shaped links.

Usage (as root, with iproute2):
  node --import tsx server/src/bench/lab-serve.ts --link RATE [--workers N] [--rtt MS] [--backend B] -- SERVE OPTIONS

  --link RATE    every link's rate, each way: 1gbit, 100mbit, 20mbit (the coordinator's link is shared by all workers)
  --workers N    local Node workers, each in its own namespace (default 2)
  --rtt MS       round-trip time added where the kernel has netem (default 0)
  --backend B    the workers' backend (default wasm, as serve's --local-workers)
  SERVE OPTIONS  passed to tabtrain serve; --host, --port, --no-tls and --local-workers are set here

Example:
  sudo node --import tsx server/src/bench/lab-serve.ts --link 100mbit -- --model alexnet-small --max-steps 50 --balance equal
`;

const PORT = 8470;
const BIN = join(ROOT, 'bin/tabtrain');

async function main(argv: string[]): Promise<number> {
  const split = argv.indexOf('--');
  const own = split < 0 ? argv : argv.slice(0, split);
  const serveArgs = split < 0 ? [] : argv.slice(split + 1);
  const { values: v } = parseArgs({ args: own, options: { link: { type: 'string' }, workers: { type: 'string', default: '2' }, rtt: { type: 'string', default: '0' }, backend: { type: 'string', default: 'wasm' }, help: { type: 'boolean', short: 'h' } } });
  if (v.help) { console.log(USAGE); return 0; }
  if (!v.link) { console.error(`lab-serve: --link RATE is required (1gbit, 100mbit, 20mbit)\n\n${USAGE}`); return 2; }
  const rateBits = parseRate(v.link);
  const workers = Number(v.workers);
  const rttMs = Number(v.rtt);
  if (!Number.isInteger(workers) || workers < 1 || workers > 200) { console.error(`lab-serve: --workers must be an integer from 1 to 200, got '${v.workers}'`); return 2; }
  if (!(rttMs >= 0)) { console.error(`lab-serve: --rtt must be milliseconds ≥ 0, got '${v.rtt}'`); return 2; }
  for (const taken of ['--host', '--port', '--local-workers', '--no-tls']) {
    if (serveArgs.some((a) => a === taken || a.startsWith(`${taken}=`))) { console.error(`lab-serve: ${taken} is set by lab-serve (the coordinator listens in its namespace); leave it out of the serve options`); return 2; }
  }
  const why = whyNoNamespaces();
  if (why) { console.error(`lab-serve: ${why}`); return 2; }

  const lab = NetLab.create({ workers, worker: { rateBits, rttMs } });
  console.log(`lab-serve: ${lab.prefix}: coordinator ${lab.coordinator.ip} and ${workers} worker namespaces, every link ${formatRate(rateBits)} each way${rttMs > 0 ? (lab.netem ? `, RTT ${rttMs} ms` : ', no netem in this kernel: RTT not applied') : ''}`);
  const token = randomBytes(18).toString('base64url').replace(/^-/, 'A');
  const coord = lab.spawnIn(lab.coordinator, BIN, ['serve', '--local-workers', '0', ...serveArgs, '--host', lab.coordinator.ip, '--port', String(PORT), '--no-tls', `--token=${token}`], { cwd: ROOT, stdio: 'inherit' });
  // Workers keep trying to connect until the coordinator listens (their --connect-timeout).
  const url = `ws://${lab.coordinator.ip}:${PORT}/ws`;
  for (const [i, host] of lab.workers.entries()) {
    const w = cliWorker(url, ['--backend', v.backend!, '--quiet', `--token=${token}`]);
    const child = lab.spawnIn(host, w.cmd, w.args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('exit', (code, signal) => { if (code !== 0) console.error(`lab-serve: worker ${i + 1} failed (${signal ?? `exit code ${code}`}); its output is above`); });
  }
  const code = await new Promise<number>((done) => coord.once('exit', (c, signal) => done(c ?? (signal ? 128 : 1))));
  lab.destroySync();
  return code;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (e) => { console.error(`lab-serve: ${(e as Error).message}`); process.exit(2); });
