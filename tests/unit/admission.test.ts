// The caps on connections not yet joined (server/src/admission.ts), on real sockets: a stranger's
// connections cannot take the coordinator's files (issue 24, 6).
import { afterEach, describe, expect, it } from 'vitest';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Admission, addressKey, admissionLimits, admits, openFileLimit } from '../../server/src/admission';

describe('admission limits', () => {
  it('reads the soft open-file limit and sizes the caps well under it', () => {
    expect(openFileLimit('Max cpu time              unlimited            unlimited            seconds\nMax open files            1024                 1048576              files     \n')).toBe(1024);
    expect(openFileLimit('nothing here')).toBeNull();
    expect(openFileLimit()).toBeGreaterThan(0); // this process's, from /proc/self/limits
    expect(admissionLimits(1024)).toMatchObject({ total: 256, reserve: 32, perAddress: 32 });
    expect(admissionLimits(20_000)).toMatchObject({ total: 1024, reserve: 128, perAddress: 64 });
    expect(admissionLimits(null)).toMatchObject({ files: null, total: 256 });
    for (const files of [64, 256, 1024, 4096, 20_000, 1 << 20]) {
      const L = admissionLimits(files);
      expect(L.total + L.reserve, `files ${files}`).toBeLessThanOrEqual(Math.max(20, files * 0.3));
    }
  });

  it('counts an address as itself, IPv4-mapped as IPv4, IPv6 by its /64', () => {
    expect(addressKey('10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::7')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('::1');
    expect(addressKey(undefined)).toBe('?');
  });

  it('refuses over the per-address cap (not on loopback) and over the total, keeping the reserve for newcomers', () => {
    const L = admissionLimits(1024); // total 256, reserve 32, perAddress 32
    expect(admits(L, 0, 31, false)).toBe(true);
    expect(admits(L, 0, 32, false)).toBe(false);
    expect(admits(L, 0, 500, true)).toBe(true); // loopback: only the total holds
    expect(admits(L, 255, 5, true)).toBe(true);
    expect(admits(L, 256, 5, true)).toBe(false); // the flooding address cannot take the reserve
    expect(admits(L, 256, 1, false)).toBe(true); // a newcomer can
    expect(admits(L, 287, 0, false)).toBe(true);
    expect(admits(L, 288, 0, false)).toBe(false);
  });
});

describe('admission on real sockets', () => {
  let server: Server | null = null;
  const clients: Socket[] = [];
  afterEach(async () => {
    for (const c of clients) c.destroy();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  });

  it('holds at most total + reserve, closes the rest at once, frees a slot on close and on release, and closes a silent one at its deadline', async () => {
    const admission = new Admission({ files: 64, total: 4, reserve: 2, perAddress: 4, requestMs: 300 });
    const held: Socket[] = [];
    server = createServer((s) => { if (admission.admit(s)) held.push(s); });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const open = (localAddress: string) => new Promise<{ closedMs: number }>((resolve) => {
      const t0 = performance.now();
      const c = connect({ port, host: '127.0.0.1', localAddress });
      clients.push(c);
      c.on('error', () => {});
      c.on('close', () => resolve({ closedMs: performance.now() - t0 }));
    });
    // A flood from 127.0.0.2: 4 held (the total), the 5th and 6th refused at once.
    const flood = Array.from({ length: 6 }, () => open('127.0.0.2'));
    await new Promise((r) => setTimeout(r, 100));
    expect(admission.pending).toBe(4);
    // A newcomer address still gets in (the reserve), twice at most from one address.
    const newcomer = [open('127.0.0.3'), open('127.0.0.3'), open('127.0.0.3')];
    await new Promise((r) => setTimeout(r, 100));
    expect(admission.pending).toBe(6);
    expect(admission.report()).toMatch(/^refused 3 connections .*: 127\.0\.0\.2 2, 127\.0\.0\.3 1$/);
    expect(admission.report()).toBeNull();
    // A joined one is released: no longer counted, and not closed at the deadline.
    admission.asked(held[0]);
    admission.release(held[0]);
    expect(admission.pending).toBe(5);
    const times = (await Promise.all([...flood.slice(1), ...newcomer])).map((t) => t.closedMs);
    // The refused ones closed at once, the silent ones at the 300 ms deadline, which freed their slots.
    expect(times.filter((ms) => ms < 150)).toHaveLength(3);
    expect(times.filter((ms) => ms >= 250 && ms < 1500)).toHaveLength(5);
    await new Promise((r) => setTimeout(r, 50)); // the server's side of each close
    expect(admission.pending).toBe(0);
    expect(held[0].destroyed).toBe(false);
  });
});
