// https and wss on the coordinator's port, as a tab on another machine meets them: real headless
// Chromium opens https://tabtrain.test:PORT/ (a name that is not localhost, mapped to 127.0.0.1
// by --host-resolver-rules, so nothing leaves loopback), gets a secure context and WebGPu, and
// trains; plain http by that name gets the notice with the fix. Node workers on wss:// are trusted
// by a pinned fingerprint or --ca, and refused, with the fingerprint to pin, otherwise.
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, DEFAULTS, type CoordinatorOptions } from '../../server/src/coordinator';
import { loadFashionMnist, type Dataset } from '../../server/src/data';
import { spawnWorker } from '../../server/src/spawn-worker';
import { machineNames, selfSignedCertificate, type Certificate } from '../../server/src/tls';
import { openTab, screenshot, waitFor, type Tab } from '../helpers/browser';
import { ensureClientBuilt } from '../helpers/build-client';

const RUN = { model: 'vgg11-tiny', batch: 16, seed: 11 };
/** A host name that is not localhost, resolved to loopback inside this browser only. */
const NAME = 'tabtrain.test';
const RESOLVE = `--host-resolver-rules=MAP ${NAME} 127.0.0.1`;

let data: Dataset;
let cert: Certificate;
const tabs: Tab[] = [];
const procs: ChildProcess[] = [];
const coords: Coordinator[] = [];

async function start(opts: Partial<CoordinatorOptions>): Promise<{ coord: Coordinator; port: number; lines: string[] }> {
  const lines: string[] = [];
  const coord = new Coordinator({
    ...RUN, epochs: 1, port: 0, host: '127.0.0.1', minWorkers: 1, balance: 'equal', evalExamples: 100,
    helloTimeoutMs: DEFAULTS.helloTimeoutMs, log: (l) => lines.push(l), progress: () => {},
    tls: { cert: cert.cert, key: cert.key, fingerprint: cert.fingerprint, selfSigned: cert.selfSigned }, ...opts,
  } as CoordinatorOptions, data);
  coords.push(coord);
  return { coord, port: await coord.listen(), lines };
}

async function tab(name: string, url: string, extraArgs: string[]): Promise<Tab> {
  const t = await openTab(name, url, { extraArgs });
  tabs.push(t);
  return t;
}

/** A `tabtrain worker` process; resolves with its exit code and everything it printed. */
function worker(url: string, args: string[]): { proc: ChildProcess; done: Promise<{ code: number | null; out: string }> } {
  const proc = spawnWorker(url, ['--backend', 'cpu', ...args], 'pipe');
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  return { proc, done: new Promise((r) => proc.on('exit', (code) => r({ code, out }))) };
}

beforeAll(async () => {
  ensureClientBuilt();
  data = loadFashionMnist();
  // The certificate `serve` makes at its first start, in a state folder of its own.
  cert = await selfSignedCertificate(mkdtempSync(join(tmpdir(), 'tabtrain-tls-state-')), machineNames('127.0.0.1'));
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') for (const t of tabs) console.log(`--- console of ${t.name} ---\n${t.console.join('\n')}`);
  await Promise.all(tabs.splice(0).map((t) => t.close()));
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
  await Promise.all(coords.splice(0).map((c) => c.close().catch(() => {})));
});

afterAll(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
});

describe('a tab on another machine, over https (headless Chromium, WebGPU on SwiftShader)', () => {
  it(`https://${NAME}:PORT/ is a secure context, gets WebGPU over wss, and trains`, async () => {
    const steps = 4;
    // The address serve prints, with the run's token: the tab is trusted and computes the steps.
    // SwiftShader's adapter is a fallback one, which the page passes over for wasm unless forced.
    const { coord, port, lines } = await start({ maxSteps: steps, token: 'https-tab-token' });
    const t = await tab('https', `https://${NAME}:${port}/?token=https-tab-token&backend=webgpu`, [RESOLVE, '--ignore-certificate-errors']);
    const where = await t.page.evaluate(() => ({ secure: window.isSecureContext, origin: location.origin, gpu: 'gpu' in navigator }));
    expect(where).toEqual({ secure: true, origin: `https://${NAME}:${port}`, gpu: true });
    const run = coord.train();
    // A screenshot while it trains, as a person would see the tab.
    await waitFor('the tab to finish two shards', () => t.snapshot(), (s) => s.shards.length >= 2, 180_000);
    const png = await screenshot(t, 'browser-https-webgpu.png');
    copyFileSync(png, join(tmpdir(), 'tabtrain-https-webgpu.png'));
    console.log(`screenshot of the https tab on webgpu: ${png} (copy: ${join(tmpdir(), 'tabtrain-https-webgpu.png')})`);
    const summary = await run;
    expect(summary.steps).toBe(steps);
    await coord.close();
    const s = await waitFor('the tab to show the end of the run', () => t.snapshot(), (x) => x.connection.startsWith('run finished'), 15_000);
    expect(s.backend).toBe('webgpu');
    expect(s.coordinator).toBe(`wss://${NAME}:${port}/ws`);
    expect(s.notice).not.toMatch(/not a secure context/);
    expect(s.shards.length).toBe(steps);
    expect(coord.status().workers).toEqual([expect.objectContaining({ kind: 'browser', backend: 'webgpu', shardsDone: steps })]);
    expect(lines.some((l) => /joined: browser\/webgpu/.test(l))).toBe(true);
  });

  it(`http://${NAME}:PORT/ shows the notice that explains the fix and links to https; localhost over http gets the page`, async () => {
    const { port } = await start({ open: true });
    const t = await tab('http', `http://${NAME}:${port}/`, [RESOLVE]);
    expect(await t.page.evaluate(() => window.isSecureContext)).toBe(false);
    const notice = await t.page.locator('#notice').textContent();
    expect(notice).toMatch(/This page needs https to use this machine's GPU/);
    expect(notice).toMatch(/Browsers offer WebGPU only to secure pages/);
    expect(notice).toContain(cert.fingerprint);
    expect(await t.page.locator('#https-link').getAttribute('href')).toBe(`https://${NAME}:${port}/`);
    expect(await t.page.evaluate(() => 'tabtrain' in window)).toBe(false); // the worker page did not start
    // localhost is a secure context over plain http: the worker page itself, on WebGPU.
    const local = await tab('local', `http://localhost:${port}/?backend=webgpu`, []);
    const s = await waitFor('the localhost tab to join', () => local.snapshot(), (x) => x.connection.startsWith('joined'), 120_000);
    expect(s.backend).toBe('webgpu');
    expect(s.coordinator).toBe(`ws://localhost:${port}/ws`);
  });

  it('a tab without the coordinator\'s --token says where the token goes; with ?token= it joins', async () => {
    const { port } = await start({ token: 'tab-token' });
    const without = await tab('no-token', `https://${NAME}:${port}/?backend=cpu`, [RESOLVE, '--ignore-certificate-errors']);
    const s = await waitFor('the tab to be refused', () => without.snapshot(), (x) => x.error !== null, 60_000);
    expect(s.error).toMatch(/the coordinator needs a token: open https:\/\/tabtrain\.test:\d+\/\?backend=cpu&token=… with its --token after \?token=/);
    expect(await without.page.locator('#notice').textContent()).toContain('?token=');
    const wrong = await tab('wrong-token', `https://${NAME}:${port}/?backend=cpu&token=nope`, [RESOLVE, '--ignore-certificate-errors']);
    expect((await waitFor('the tab to be refused', () => wrong.snapshot(), (x) => x.error !== null, 60_000)).error).toMatch(/\?token= in this page's address is not the coordinator's --token/);
    const right = await tab('token', `https://${NAME}:${port}/?backend=cpu&token=tab-token`, [RESOLVE, '--ignore-certificate-errors']);
    await waitFor('the tab with the token to join', () => right.snapshot(), (x) => x.connection.startsWith('joined'), 60_000);
  });
});

describe('Node workers on wss://', () => {
  it('pinned by --fingerprint (any spelling, the page URL as --url), or trusting --ca cert.pem, or on plain ws://: all three train', async () => {
    const steps = 3;
    const { coord, port, lines } = await start({ minWorkers: 3, maxSteps: steps });
    const sloppy = cert.fingerprint.replace(/:/g, '').toLowerCase();
    const pinned = worker(`https://127.0.0.1:${port}/`, ['--fingerprint', sloppy]);
    const ca = worker(`wss://localhost:${port}/ws`, ['--ca', cert.certFile]);
    const plain = worker(`ws://127.0.0.1:${port}/ws`, []);
    const summary = await coord.train();
    await coord.close();
    expect(summary.steps).toBe(steps);
    for (const w of [pinned, ca, plain]) {
      const { code, out } = await w.done;
      expect(code, out).toBe(0);
      expect(out).toMatch(/run finished/);
    }
    expect(lines.filter((l) => /joined: node\/cpu/.test(l))).toHaveLength(3);
    expect(coord.status().workers.every((w) => w.shardsDone === steps)).toBe(true);
  });

  it('with a wrong fingerprint, or none, the worker is refused at once with a message that quotes the one to pin; the token never leaves', async () => {
    const { port, lines } = await start({ token: 'worker-token' });
    const wrongPin = cert.fingerprint.replace(/^../, cert.fingerprint.startsWith('00') ? '11' : '00');
    const wrong = await worker(`wss://127.0.0.1:${port}/ws`, ['--fingerprint', wrongPin, '--token', 'worker-token']).done;
    expect(wrong.code).toBe(1);
    const line = wrong.out.trim().split('\n').at(-1)!;
    expect(line).toBe(`tabtrain worker: the coordinator at wss://127.0.0.1:${port}/ws presents a certificate with SHA-256 fingerprint ${cert.fingerprint}, not the pinned ${wrongPin}: if the coordinator made a new certificate, pin the fingerprint it prints at start; if not, something is intercepting the connection`);
    expect(wrong.out).not.toMatch(/\n\s+at /);
    const none = await worker(`wss://127.0.0.1:${port}/ws`, ['--token', 'worker-token']).done;
    expect(none.code).toBe(1);
    expect(none.out).toContain(`presents a self-signed certificate. If it is yours, pin it: --fingerprint ${cert.fingerprint}`);
    expect(none.out).toContain('or pass its certificate with --ca FILE');
    expect(none.out).not.toMatch(/\n\s+at /);
    // Refused before the WebSocket opened: the coordinator never got a hello (nor the token in it).
    expect(lines.filter((l) => /worker #\d+/.test(l))).toEqual([]);
  });
});
