// The README's commands on a fresh copy of the project, which has no client/dist: `npm ci` runs
// the `prepare` script, which builds the page; `npm start` builds it too when it is missing, and
// then serves the worker page and the dashboard.
//
// The copy holds the files a clone would (tracked, plus new files git does not ignore). npm ci
// itself is not rerun (it would download the dependencies again): the copy's node_modules links
// each installed package of this checkout, except the workspaces' own links (@tabtrain/*), which
// point into the copy as npm would make them.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/build-client';

let copy: string;

beforeAll(() => {
  copy = mkdtempSync(join(tmpdir(), 'tabtrain-fresh-'));
  const files = spawnSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\0').filter(Boolean);
  for (const f of files) {
    if (!existsSync(join(ROOT, f))) continue; // deleted in the working tree
    mkdirSync(dirname(join(copy, f)), { recursive: true });
    cpSync(join(ROOT, f), join(copy, f));
  }
  mkdirSync(join(copy, 'node_modules/@tabtrain'), { recursive: true });
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (name === '@tabtrain' || name === '.cache' || name === '.vite') continue;
    symlinkSync(join(ROOT, 'node_modules', name), join(copy, 'node_modules', name));
  }
  for (const ws of ['shared', 'server', 'client', 'tests']) symlinkSync(`../../${ws}`, join(copy, 'node_modules/@tabtrain', ws));
  expect(existsSync(join(copy, 'client/dist'))).toBe(false);
  expect(statSync(join(copy, 'bin/tabtrain')).mode & 0o111).not.toBe(0);
});

afterAll(() => {
  if (copy) rmSync(copy, { recursive: true, force: true });
});

/** GET over http or https (the copy's own self-signed certificate). */
function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const done = (res: import('node:http').IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }));
    };
    if (url.startsWith('https:')) httpsGet(url, { rejectUnauthorized: false }, done).on('error', reject);
    else fetch(url).then(async (r) => resolve({ status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() }), reject);
  });
}

describe('a fresh copy of the project, with the README\'s commands', () => {
  it('`npm ci` builds the page: its prepare script writes client/dist', () => {
    const r = spawnSync('npm', ['run', 'prepare'], { cwd: copy, encoding: 'utf8', timeout: 180_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(existsSync(join(copy, 'client/dist/index.html'))).toBe(true);
    expect(existsSync(join(copy, 'client/dist/dashboard.html'))).toBe(true);
  });

  it('`npm start` builds a missing page with a progress line, serves the page and the dashboard, and trains', async () => {
    rmSync(join(copy, 'client/dist'), { recursive: true, force: true });
    // The README's `npm start`, on loopback, short, with its certificate in the copy.
    const log = join(copy, 'steps.jsonl');
    const p = spawn('npm', ['start', '--', '--host', '127.0.0.1', '--port', '0', '--max-steps', '30', '--state-dir', join(copy, '.state'), '--log', log], { cwd: copy, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    try {
      let port = 0;
      for (let i = 0; i < 1200 && !port; i++) {
        port = Number(/join from a browser on this machine: http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)?.[1] ?? 0);
        if (!port) await new Promise((r) => setTimeout(r, 100));
      }
      expect(port, out).toBeGreaterThan(0);
      expect(out).toMatch(/building the worker page and dashboard \(client\/dist is missing\): vite build, a few seconds…/);
      expect(out).toMatch(/built the worker page in \d+\.\d s \(client\/dist\)/);
      const page = await get(`http://127.0.0.1:${port}/`);
      expect(page.status).toBe(200);
      expect(page.type).toMatch(/text\/html/);
      expect(page.body).toMatch(/<title>tabtrain worker<\/title>/);
      const script = /<script type="module"[^>]*src="\.\/([^"]+)"/.exec(page.body)?.[1];
      expect(script, page.body).toBeDefined();
      const js = await get(`http://127.0.0.1:${port}/${script}`);
      expect(js.status).toBe(200);
      expect(js.type).toMatch(/javascript/);
      const dashboard = await get(`http://127.0.0.1:${port}/dashboard`);
      expect(dashboard.status).toBe(200);
      expect(dashboard.body).toMatch(/<html/);
      expect((await get(`https://127.0.0.1:${port}/`)).body).toBe(page.body);
      expect(await exited, out).toBe(0);
      expect(out).toMatch(/done: 30 steps/);
      // --balance cost (the default) with both workers on this machine: they share its cores, so
      // each is split by speed and none is benched (one was, from step 11, on a rate measured while
      // the other computed: 572 examples/s on one worker against 692 on both).
      const steps = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.type === 'step' || r.shards);
      const late = steps.slice(-15);
      expect(late.length, 'step records in the --log file').toBe(15);
      for (const r of late) expect(new Set(r.shards.map((x: { worker: number }) => x.worker)).size, JSON.stringify(r.shards)).toBe(2);
      // --compress auto on loopback: no wire to save bytes on, so the run stays exact fp32 (it once
      // read CPU contention as a 33 MB/s link and went to powersgd after step 2, int8 after step 5).
      expect(out).toMatch(/compression fp32: predicted/);
      expect(out).not.toMatch(/compression (powersgd|int8|fp16)/);
      expect(out).not.toMatch(/\n\s+at /);
    } finally {
      if (p.exitCode === null) p.kill('SIGKILL');
    }
  });
});
