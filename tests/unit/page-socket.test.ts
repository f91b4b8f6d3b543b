// The browser page's pure parts: where it connects, its backoff, its stable id, its adapter line.
import { describe, expect, it } from 'vitest';
import { Backoff, coordinatorUrl, stableWorkerId } from '../../client/src/page-socket';
import { describeAdapter } from '../../client/src/page-ui';

const q = (s: string) => new URLSearchParams(s);

describe('coordinatorUrl', () => {
  it('joins the coordinator that served the page, ws or wss as the page', () => {
    expect(coordinatorUrl({ protocol: 'http:', host: '10.0.0.5:8080' }, q(''))).toBe('ws://10.0.0.5:8080/ws');
    expect(coordinatorUrl({ protocol: 'https:', host: 'train.example' }, q(''))).toBe('wss://train.example/ws');
  });

  it('?coordinator= overrides; http(s) URLs and bare host:port are accepted', () => {
    const page = { protocol: 'http:', host: 'localhost:5173' };
    expect(coordinatorUrl(page, q('coordinator=ws://10.0.0.5:8080/ws'))).toBe('ws://10.0.0.5:8080/ws');
    expect(coordinatorUrl(page, q('coordinator=wss://a.example:9/x'))).toBe('wss://a.example:9/x');
    expect(coordinatorUrl(page, q('coordinator=http://10.0.0.5:8080'))).toBe('ws://10.0.0.5:8080/ws');
    expect(coordinatorUrl(page, q('coordinator=https://a.example/'))).toBe('wss://a.example/ws');
    expect(coordinatorUrl(page, q('coordinator=10.0.0.5:8080'))).toBe('ws://10.0.0.5:8080/ws');
  });

  it('refuses what is not a WebSocket URL', () => {
    expect(() => coordinatorUrl({ protocol: 'http:', host: 'h' }, q('coordinator=ftp://h/ws'))).toThrow(/ws:\/\/ or wss:\/\//);
    expect(() => coordinatorUrl({ protocol: 'http:', host: 'h' }, q('coordinator=ws://'))).toThrow(/not a URL/);
  });
});

describe('Backoff', () => {
  it('doubles from 500 ms to a 15 s cap, within ±20% jitter, and starts over after reset', () => {
    const lo = new Backoff(500, 15_000, () => 0);
    const hi = new Backoff(500, 15_000, () => 1);
    const los = Array.from({ length: 8 }, () => lo.next());
    const his = Array.from({ length: 8 }, () => hi.next());
    expect(los).toEqual([400, 800, 1600, 3200, 6400, 12000, 12000, 12000]);
    expect(his).toEqual([600, 1200, 2400, 4800, 9600, 15000, 15000, 15000]);
    expect(lo.attempts).toBe(8);
    lo.reset();
    expect(lo.next()).toBe(400);
  });
});

describe('stableWorkerId', () => {
  const store = () => {
    const m = new Map<string, string>();
    return { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v) };
  };

  it('keeps one id per tab across reloads, and makes a fresh one on demand', () => {
    const s = store();
    const a = stableWorkerId(s);
    expect(a).toMatch(/^tab-[0-9a-f]{16}$/);
    expect(stableWorkerId(s)).toBe(a);
    const b = stableWorkerId(s, true);
    expect(b).not.toBe(a);
    expect(stableWorkerId(s)).toBe(b);
  });

  it('ignores a tampered stored value and survives storage that throws', () => {
    const s = store();
    s.setItem('tabtrain.workerId', '<script>');
    expect(stableWorkerId(s)).toMatch(/^tab-/);
    const broken = { getItem: () => { throw new Error('denied'); }, setItem: () => { throw new Error('denied'); } };
    expect(stableWorkerId(broken)).toMatch(/^tab-/);
    expect(stableWorkerId(null)).toMatch(/^tab-/);
  });
});

describe('describeAdapter', () => {
  it('names vendor, architecture and whether the adapter is a fallback', () => {
    expect(describeAdapter({ api: 'webgpu', vendor: 'nvidia', architecture: 'ampere', description: '', isFallbackAdapter: false }))
      .toBe('vendor nvidia · architecture ampere · fallback adapter: no');
    expect(describeAdapter({ api: 'webgpu', vendor: 'google', architecture: 'swiftshader', isFallbackAdapter: true })).toMatch(/fallback adapter: yes/);
    expect(describeAdapter({ api: 'webgpu', vendor: '', architecture: '', isFallbackAdapter: null })).toMatch(/vendor \? · architecture \? · fallback adapter: unknown/);
    expect(describeAdapter(null)).toBe('none (CPU)');
    expect(describeAdapter({ api: 'wasm', threads: 4, simd: true, crossOriginIsolated: true })).toBe('no GPU: WebAssembly, 4 threads, SIMD');
  });
});
