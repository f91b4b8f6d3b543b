// Real headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by npm
// playwright-core (never `npx playwright install`). One browser PROCESS per simulated worker:
// tabs of one browser share one GPU process, which is not what separate machines look like.
// A closed tab's browser process is kept for the file's next tab with the same flags (a fresh
// context: its own storage, cookies and renderer), since starting and closing Chromium costs
// more than many a test's own work; no two open tabs ever share a process.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { PageSnapshot } from '../../client/src/page';
import { ROOT } from './build-client';
import { CHROMIUM, CHROMIUM_FLAGS } from './chromium';

export { CHROMIUM, CHROMIUM_FLAGS };
export const ARTIFACTS = join(ROOT, 'artifacts');

export interface Tab {
  name: string;
  context: BrowserContext;
  page: Page;
  /** The page's console and errors, for the failure report. */
  console: string[];
  snapshot(): Promise<PageSnapshot>;
  /** Closes the tab's context and hands its browser process to the next tab. Safe to call twice. */
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Drop --enable-unsafe-webgpu: the browser then has no WebGPU adapter, like most Linux desktops. */
  webgpu?: boolean;
  extraArgs?: string[];
  /** Runs in the page before its own scripts (to take an API away, as a browser without it would). */
  initScript?: string;
}

/** Init scripts that make the page see a browser without WebGL (canvas and OffscreenCanvas) or WebAssembly. */
export const WITHOUT = {
  webgl: `for (const C of [globalThis.HTMLCanvasElement, globalThis.OffscreenCanvas]) {
    if (!C) continue;
    const get = C.prototype.getContext;
    C.prototype.getContext = function (type, ...rest) { return /webgl/i.test(String(type)) ? null : get.call(this, type, ...rest); };
  }`,
  wasm: 'delete globalThis.WebAssembly;',
};

/** Browser processes no open tab uses, by their command-line flags. */
const idle = new Map<string, Browser[]>();
const launched = new Set<Browser>();

/** A headless Chromium with these flags that no open tab uses: a kept one, or a new process. */
async function browserWith(args: string[]): Promise<Browser> {
  const kept = idle.get(args.join(' '));
  while (kept?.length) {
    const b = kept.pop()!;
    if (b.isConnected()) return b;
  }
  const b = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  launched.add(b);
  return b;
}

/** Closes every browser process this file started (registered for each test file that imports this one). */
export async function closeBrowsers(): Promise<void> {
  idle.clear();
  await Promise.all([...launched].map((b) => b.close().catch(() => {})));
  launched.clear();
}
afterAll(closeBrowsers);

/** Opens `url` in a fresh context of a headless Chromium process that no other open tab uses. */
export async function openTab(name: string, url: string, opts: OpenOptions = {}): Promise<Tab> {
  const args = CHROMIUM_FLAGS.filter((f) => opts.webgpu !== false || f !== '--enable-unsafe-webgpu').concat(opts.extraArgs ?? []);
  const browser = await browserWith(args);
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  if (opts.initScript) await page.addInitScript(opts.initScript);
  const lines: string[] = [];
  page.on('console', (m) => { lines.push(`[${name} ${m.type()}] ${m.text()}`); if (lines.length > 400) lines.shift(); });
  page.on('pageerror', (e) => lines.push(`[${name} pageerror] ${e.message}`));
  await page.goto(url);
  let closed = false;
  return {
    name, context, page, console: lines,
    snapshot: () => page.evaluate(() => {
      if (!window.tabtrain) throw new Error('the page has not started (no window.tabtrain)');
      return window.tabtrain.snapshot();
    }),
    async close() {
      if (closed) return;
      closed = true;
      await context.close().catch(() => {});
      if (browser.isConnected()) idle.set(args.join(' '), [...(idle.get(args.join(' ')) ?? []), browser]);
    },
  };
}

/** Polls `get` until `ok` holds; throws with `what` and the last value on timeout. */
export async function waitFor<T>(what: string, get: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs: number, everyMs = 250): Promise<T> {
  const t0 = Date.now();
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await get();
      if (ok(last)) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(last)?.slice(0, 600)}${lastError ? `; last error ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function screenshot(tab: Tab, file: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, file);
  await tab.page.screenshot({ path, fullPage: true });
  return path;
}
