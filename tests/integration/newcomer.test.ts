// What a new user meets in the first hour, through the real command line (bin/tabtrain): each
// mistake gets one line that names the problem and the fix, no stack trace, and the exit code a
// shell expects. Real coordinators on loopback, real worker processes, real Fashion-MNIST.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stepsPerEpoch } from '@tabtrain/shared';
import { saveCheckpoint } from '../../server/src/checkpoint';
import { joinLines } from '../../server/src/cli';
import { Coordinator, DEFAULTS } from '../../server/src/coordinator';
import { BIN } from '../../server/src/spawn-worker';
import { data, freePort, startCoordinator } from '../helpers/run';

const tmp = mkdtempSync(join(tmpdir(), 'tabtrain-newcomer-'));
/** Every serve below keeps its certificate here, not in ~/.tabtrain. */
const STATE = ['--state-dir', join(tmp, 'state')];
const closers: (() => Promise<unknown> | void)[] = [];
afterAll(async () => { for (const c of closers.splice(0)) await c(); });

interface Ran { code: number | null; signal: NodeJS.Signals | null; out: string; err: string; ms: number }

/** Runs `tabtrain ARGS` to its end (or `until` its output matches, then `then` runs). */
function tabtrain(args: string[], opts: { timeoutMs?: number; until?: RegExp; then?: (p: import('node:child_process').ChildProcess) => void } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    // A person at a terminal: not a worker this test process's coordinators started, so without the
    // local key that this process exports to the workers it spawns (secrets.ts).
    // And one who has tabtrain on PATH: the commands it prints say `tabtrain …` (how they name a
    // path that was typed instead is tests/unit/cli-args.test.ts).
    const { TABTRAIN_LOCAL_KEY: _local, ...env } = process.env;
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, TABTRAIN_COMMAND: 'tabtrain' } });
    let out = '';
    let err = '';
    let fired = false;
    const check = () => {
      if (!fired && opts.until?.test(out + err)) { fired = true; opts.then?.(p); }
    };
    p.stdout.on('data', (d) => { out += d; check(); });
    p.stderr.on('data', (d) => { err += d; check(); });
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`tabtrain ${args.join(' ')} ran past ${opts.timeoutMs ?? 60_000} ms:\n${out}\n${err}`)); }, opts.timeoutMs ?? 60_000);
    p.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out, err, ms: Date.now() - t0 }); });
  });
}

const NO_STACK = /\n\s+at |Error:|\bnode:internal\b/;

/** The run failed with exactly one line on stderr, `line`, and exit code `code`. */
function oneLine(r: Ran, line: string | RegExp, code = 2): void {
  const lines = r.err.trim().split('\n');
  expect(lines, r.err).toHaveLength(1);
  if (typeof line === 'string') expect(lines[0]).toBe(line);
  else expect(lines[0]).toMatch(line);
  expect(r.err + r.out).not.toMatch(NO_STACK);
  expect(r.code, r.out + r.err).toBe(code);
}

async function busyPort(): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => s.close(r)));
  return (s.address() as { port: number }).port;
}

const SERVE = ['serve', '--model', 'vgg11-tiny', '--batch', '16', '--host', '127.0.0.1', '--local-workers', '0', ...STATE];

// Every test here runs `tabtrain` processes of its own (own ports, own folders) and waits on their
// output: they run side by side (describe.concurrent, vitest's 5 at a time), and so do the
// independent cases inside a test. A process start is most of each case's time.
describe.concurrent('serve: one line that names the problem and the fix', () => {
  it('the port is already in use', async () => {
    const port = await busyPort();
    oneLine(await tabtrain([...SERVE, '--port', String(port)]), `tabtrain: port ${port} is already in use on 127.0.0.1 (another tabtrain serve?): stop that one, or pick another port with --port N (0 picks a free one)`);
  });

  it('--port 99999', async () => {
    oneLine(await tabtrain([...SERVE, '--port', '99999']), "tabtrain: --port must be an integer from 0 to 65535, got '99999'");
  });

  it('--lr -1 and --batch -5 (negative values are read, then refused)', async () => {
    const [lr, batch, bogus] = await Promise.all([tabtrain([...SERVE, '--lr', '-1']), tabtrain(['serve', '--batch', '-5', ...STATE]), tabtrain(['serve', '--bogus'])]);
    oneLine(lr, "tabtrain: --lr must be a number > 0, got '-1'");
    oneLine(batch, "tabtrain: --batch must be an integer ≥ 1, got '-5'");
    oneLine(bogus, 'tabtrain: unknown option --bogus for serve: see tabtrain serve --help');
  });

  it('every output path is checked before the first step, and none of them hangs (/proc/x)', async () => {
    const cases: [string[], string][] = [
      [['--summary', '/proc/x/summary.json'], 'tabtrain: --summary /proc/x/summary.json: cannot write there (ENOENT); choose a path in a folder you can write to'],
      [['--weights-out', '/proc/x/w.bin'], 'tabtrain: --weights-out /proc/x/w.bin: cannot write there (ENOENT); choose a path in a folder you can write to'],
      [['--checkpoint', '/proc/x'], 'tabtrain: --checkpoint /proc/x: cannot create or write that folder (ENOENT); choose a folder you can write to'],
      [['--export', '/proc/x'], 'tabtrain: --export /proc/x: cannot create or write that folder (ENOENT); choose a folder you can write to'],
      [['--log', '/proc/x/run.jsonl'], 'tabtrain: --log /proc/x/run.jsonl: cannot append to it (ENOENT); choose a path in a folder you can write to'],
      [['--summary', tmp], `tabtrain: --summary ${tmp} is a folder; give a file name in it, e.g. ${tmp}/summary.json`],
    ];
    const ran = await Promise.all(cases.map(([args]) => tabtrain([...SERVE, '--port', '0', '--local-workers', '1', ...args], { timeoutMs: 30_000 })));
    cases.forEach(([, line], i) => {
      oneLine(ran[i], line);
      expect(ran[i].out, 'refused before anything started').toBe('');
    });
  });

  it('--resume of a finished run, or with --epochs below what is done, or --max-steps not beyond it', async () => {
    // A real checkpoint, written by the coordinator's own code, of a vgg11-tiny run at the end of its only epoch.
    const perEpoch = stepsPerEpoch(data().train.count, 16);
    const save = (dir: string, step: number, epochs: number) => {
      const c = new Coordinator({ model: 'vgg11-tiny', epochs, batch: 16, seed: 7, port: 0, host: '127.0.0.1', minWorkers: 1, balance: 'equal', evalExamples: 100, helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: () => {}, progress: () => {} }, data());
      c.restore({ step, weights: c.weights.slice(), epochAcc: { steps: 0, examples: 0, lossSum: 0, correct: 0, seconds: 0 }, history: [] });
      saveCheckpoint(dir, c);
      return dir;
    };
    const finished = save(join(tmp, 'finished'), perEpoch, 1);
    const twoDone = save(join(tmp, 'two-done'), 2 * perEpoch + 5, 4);
    const [fin, epochs, steps] = await Promise.all([
      tabtrain(['serve', '--resume', finished, '--local-workers', '0', '--port', '0', '--host', '127.0.0.1', ...STATE]),
      tabtrain(['serve', '--resume', twoDone, '--local-workers', '0', '--epochs', '2', '--port', '0', '--host', '127.0.0.1', ...STATE]),
      tabtrain(['serve', '--resume', twoDone, '--local-workers', '0', '--max-steps', '100', '--port', '0', '--host', '127.0.0.1', ...STATE]),
    ]);
    oneLine(fin, `tabtrain: ${finished} is a finished run (1 epoch, ${perEpoch.toLocaleString('en-US')} steps done): to train further, give --epochs 2 or more`);
    oneLine(epochs, `tabtrain: --epochs 2 is not beyond what ${twoDone} has done (2 epochs, ${(2 * perEpoch + 5).toLocaleString('en-US')} steps): give --epochs 3 or more to train further`);
    oneLine(steps, `tabtrain: --max-steps 100 is not beyond step ${2 * perEpoch + 5}, where ${twoDone} stopped: give a larger --max-steps, or none`);
  });

  it('with --token, the join lines show where the token goes: ?token= for tabs, --token for workers', async () => {
    let port = 0;
    const r = await tabtrain([...SERVE, '--port', '0', '--token', 'open sesame'], {
      until: /headless: .*\n/, then: (p) => p.kill('SIGKILL'), timeoutMs: 60_000,
    });
    port = Number(/http:\/\/127\.0\.0\.1:(\d+)\//.exec(r.out)?.[1]);
    expect(r.out).toContain(`join from a browser on this machine: http://127.0.0.1:${port}/?token=open%20sesame`);
    expect(r.out).toContain(`headless: tabtrain worker --url ws://127.0.0.1:${port}/ws --token 'open sesame'`);
    // Listening on every interface, with the certificate: https links for the LAN, the pin and the token.
    const lines = joinLines({ host: '0.0.0.0', port: 8080, token: 't0k', adminToken: false, cert: { fingerprint: 'AB:CD', selfSigned: true, certFile: '/s/tls/cert.pem', origin: 'stored' } as never });
    const text = lines.join('\n');
    expect(text).toMatch(/\?token=t0k/);
    expect(text).toMatch(/--token t0k/);
    if (/another machine/.test(text)) {
      expect(text).toMatch(/https:\/\/[\d.]+:8080\/\?token=t0k/);
      expect(text).toMatch(/--url wss:\/\/[\d.]+:8080\/ws --fingerprint AB:CD --token t0k/);
    }
  });

  it('without --token, serve makes a random token and puts it in the join lines; strangers are refused unless --open', async () => {
    const [r, again, helped] = await Promise.all([
      tabtrain([...SERVE, '--port', '0'], { until: /token: .*\n/, then: (p) => p.kill('SIGKILL'), timeoutMs: 60_000 }),
      tabtrain([...SERVE, '--port', '0', '--open'], { until: /token: .*\n/, then: (p) => p.kill('SIGKILL'), timeoutMs: 60_000 }),
      tabtrain(['serve', '--help']),
    ]);
    const tab = /join from a browser on this machine: http:\/\/127\.0\.0\.1:\d+\/\?token=([\w-]+)/.exec(r.out)?.[1];
    const worker = /headless: tabtrain worker --url ws:\/\/127\.0\.0\.1:\d+\/ws --token ([\w-]+)/.exec(r.out)?.[1];
    expect(tab, r.out).toBeDefined();
    expect(tab!.length).toBeGreaterThanOrEqual(24);
    expect(worker).toBe(tab);
    expect(r.out).toContain('  token: made for this run (--token T picks one); workers without it are refused (serve --open admits them on probation)');
    expect(/\?token=([\w-]+)/.exec(again.out)?.[1]).not.toBe(tab);
    expect(again.out).toContain('workers without it join on probation (--open)');
    const help = helped.out;
    expect(help).toMatch(/--token T +the run's token \(default: a random one/);
    expect(help).toMatch(/--open +also admit workers without the token, on probation/);
  });

  it('Ctrl-C (one SIGINT) stops the run, writes its outputs and exits with 130', async () => {
    const summary = join(tmp, 'sigint-summary.json');
    const r = await tabtrain([...SERVE, '--port', '0', '--summary', summary], { until: /waiting for/, then: (p) => p.kill('SIGINT'), timeoutMs: 60_000 });
    expect(r.code, r.out + r.err).toBe(130);
    expect(r.out).toMatch(/stopping after step 0: SIGINT/);
    expect(JSON.parse(readFileSync(summary, 'utf8')).stoppedBy).toBe('stop');
    expect(r.err + r.out).not.toMatch(NO_STACK);
  });

  it('a short run with --export: no tfjs "install tfjs-node" banner, and the model is written', async () => {
    const dir = join(tmp, 'export');
    const r = await tabtrain([...SERVE, '--port', '0', '--max-steps', '1', '--local-workers', '1', '--local-backend', 'cpu', '--export', dir], { timeoutMs: 120_000 });
    expect(r.code, r.out + r.err).toBe(0);
    expect(existsSync(join(dir, 'model.json'))).toBe(true);
    expect(r.out + r.err).toMatch(/exported the weights of step 1/);
    expect(r.out + r.err).not.toMatch(/TensorFlow\.js in Node\.js|tfjs-node/);
    expect(r.out + r.err).not.toMatch(NO_STACK);
  });
});

describe.concurrent('each command shows its own help', () => {
  it('serve --help, worker --help, bench --help and bench scaleout --help', async () => {
    const [serve, worker, bench, scaleout, general] = await Promise.all([['serve', '--help'], ['worker', '--help'], ['bench', '--help'], ['bench', 'scaleout', '--help'], ['help']].map((a) => tabtrain(a)));
    for (const r of [serve, worker, bench, scaleout, general]) expect(r.code).toBe(0);
    expect(serve.out).toMatch(/^tabtrain serve: run a coordinator/);
    expect(serve.out).toContain('--tls-cert FILE');
    expect(serve.out).not.toContain('--fingerprint');
    expect(worker.out).toMatch(/^tabtrain worker: join a coordinator/);
    expect(worker.out).toContain('--fingerprint FP');
    expect(worker.out).toContain('--connect-timeout');
    expect(worker.out).not.toContain('--tls-cert');
    expect(bench.out).toMatch(/^tabtrain bench:/);
    expect(bench.out).toContain('scaleout options');
    expect(scaleout.out).toContain('scaleout options');
    // --balance offers serve's three ways to split a step (cost against speed is the lead's comparison).
    expect(scaleout.out).toMatch(/--balance B .*cost \(default,\s+as serve's\): the cost model[^]*speed: every worker[^]*equal: even shards/);
    for (const r of [serve, worker, bench, scaleout]) expect(r.out).not.toBe(general.out);
    const badBalance = await tabtrain(['bench', 'scaleout', '--balance', 'fast']);
    expect(badBalance.code).toBe(2);
    expect(badBalance.err).toMatch(/--balance must be equal, cost or speed, got 'fast'/);
    expect(general.out).toContain('tabtrain serve --help, tabtrain worker --help, tabtrain bench --help');
  });
});

describe('worker: one line that names the problem and the fix', () => {
  // Alone (no test runs beside it: this suite is not concurrent): its bound on the whole run, process start
  // included, is about the --connect-timeout, not about a busy machine.
  it('a coordinator that is not running: says so, names the URL, gives up after --connect-timeout, never "disconnected"', async () => {
    const port = await freePort();
    // `localhost:PORT`, as people type it, is understood as ws://localhost:PORT/ws.
    const r = await tabtrain(['worker', '--url', `localhost:${port}`, '--connect-timeout', '2s', '--synthetic-ms-per-example', '0'], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(15_000);
    const lines = r.err.trim().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^\\[worker \\w+\\] cannot reach the coordinator at ws://localhost:${port}/ws: connection refused: nothing listens on localhost:${port}; start \`tabtrain serve\` first, or check --url \\(the coordinator prints it when it starts\\)\\. Retrying for up to 2s \\(--connect-timeout\\)$`));
    expect(lines.at(-1)).toBe(`tabtrain worker: gave up after 2s: no coordinator at ws://localhost:${port}/ws (connection refused: nothing listens on localhost:${port}); start \`tabtrain serve\` first, or check --url (the coordinator prints it when it starts)`);
    expect(r.out + r.err).not.toMatch(/disconnected|1006/);
    expect(r.out + r.err).not.toMatch(NO_STACK);
  });

  describe.concurrent('with a coordinator, or none needed', () => {
    it('a missing or wrong --token', async () => {
      const { coord, port } = await startCoordinator({ model: 'vgg11-tiny', token: 'right' });
      closers.push(() => coord.close());
      const url = `ws://127.0.0.1:${port}/ws`;
      const [missing, wrong] = await Promise.all([
        tabtrain(['worker', '--url', url, '--synthetic-ms-per-example', '0', '--quiet']),
        tabtrain(['worker', '--url', url, '--token', 'wrong', '--synthetic-ms-per-example', '0', '--quiet']),
      ]);
      oneLine(missing, `tabtrain worker: the coordinator at ${url} needs a token: add --token T with the token it was started with (its --token)`, 1);
      oneLine(wrong, `tabtrain worker: the coordinator at ${url} refused --token: it is not the token the coordinator was started with (its --token)`, 1);
    });

    it('wss:// to a coordinator without TLS', async () => {
      const { coord, port } = await startCoordinator({ model: 'vgg11-tiny' });
      closers.push(() => coord.close());
      oneLine(await tabtrain(['worker', '--url', `wss://127.0.0.1:${port}/ws`, '--synthetic-ms-per-example', '0', '--quiet']),
        `tabtrain worker: cannot connect to wss://127.0.0.1:${port}/ws: 127.0.0.1:${port} does not speak TLS (a coordinator started with --no-tls?); use ws://127.0.0.1:${port}/ws`, 1);
    });

    it('URLs and values it cannot use', async () => {
      const cases: [string[], string][] = [
        [['worker', '--url', 'ftp://host:8080'], 'tabtrain worker: --url ftp://host:8080: the scheme must be ws:// or wss:// (or the page\'s http:// or https://)'],
        [['worker'], "tabtrain worker: --url is missing: give the coordinator's address as it prints it when it starts, e.g. --url wss://HOST:8080/ws"],
        [['worker', '--url', 'localhost:8080', '--delay-ms', '-1'], "tabtrain worker: --delay-ms must be a number > 0, got '-1'"],
        [['worker', '--url', 'wss://h:1/ws', '--fingerprint', 'abc'], 'tabtrain worker: --fingerprint abc is not a SHA-256 fingerprint (64 hex digits, colons optional); the coordinator prints it at start'],
        [['worker', '--url', 'localhost:8080', '--connect-timeout', 'soon'], 'tabtrain worker: --connect-timeout soon is not a duration: use e.g. 90s, 10m, 1h, or 0 for no limit'],
      ];
      const ran = await Promise.all(cases.map(([args]) => tabtrain(args)));
      cases.forEach(([, line], i) => oneLine(ran[i], line));
    });
  });
});
