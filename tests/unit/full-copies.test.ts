// full-copies.ts: the full weights to workers nobody vouched for, at a bounded rate (issue 24).
import { describe, expect, it } from 'vitest';
import { ADDRESS_BURST, ADDRESS_REFILL_MS, FullCopies, IDENTITY_BURST, IDENTITY_REFILL_MS } from '../../server/src/full-copies';

function setup(token?: string) {
  let now = 0;
  const lines: string[] = [];
  const copies = new FullCopies({ token, probation: 3, retry: () => {}, log: (l) => lines.push(l), now: () => now });
  let id = 0;
  const peer = (workerId = `w${id + 1}`, remote = '10.0.0.1', local = false) => ({ id: ++id, workerId, remote, local, version: -1 });
  return { copies, lines, peer, advance: (ms: number) => { now += ms; } };
}

describe('full copies', () => {
  it('an identity gets its burst, then one per refill period, with the reason shown while it waits', () => {
    const { copies, peer, advance, lines } = setup();
    const a = peer('stranger');
    for (let i = 0; i < IDENTITY_BURST; i++) expect(copies.take(a)).toBeNull();
    expect(copies.take(a)).toMatch(/waiting 60 s for a full copy of the weights: a worker without the run's token gets 4, then one per 60 s/);
    expect(copies.reason(a.id)).toMatch(/waiting/);
    expect(lines).toHaveLength(1); // logged once per wait
    expect(copies.take(a)).not.toBeNull();
    advance(IDENTITY_REFILL_MS);
    expect(copies.take(a)).toBeNull();
    expect(copies.reason(a.id)).toBeUndefined();
    expect(copies.take(a)).not.toBeNull();
    // The same identity on a new connection shares the bucket.
    expect(copies.take(peer('stranger'))).not.toBeNull();
  });

  it('fresh identities from one address share its bucket; another address has its own', () => {
    const { copies, peer, advance } = setup();
    let given = 0;
    for (let i = 0; i < 50; i++) if (copies.take(peer(`fresh-${i}`)) === null) given++;
    expect(given).toBe(ADDRESS_BURST);
    expect(copies.take(peer('elsewhere', '10.0.0.2'))).toBeNull();
    advance(ADDRESS_REFILL_MS);
    expect(copies.take(peer('fresh-late'))).toBeNull();
    expect(copies.take(peer('fresh-later'))).not.toBeNull();
  });

  it('the coordinator\'s own workers and token holders never wait', () => {
    const { copies, peer } = setup('T');
    const local = peer('local', '127.0.0.1', true), holder = peer('holder'), stranger = peer('stranger');
    copies.joined(local, undefined);
    copies.joined(holder, 'T');
    copies.joined(stranger, 'wrong');
    for (let i = 0; i < 100; i++) { expect(copies.take(local)).toBeNull(); expect(copies.take(holder)).toBeNull(); }
    for (let i = 0; i < IDENTITY_BURST; i++) expect(copies.take(stranger)).toBeNull();
    expect(copies.take(stranger)).not.toBeNull();
  });

  it('at an assign only a copy of the full weights waits: not the update of a worker one version behind, nor an established worker that holds weights', () => {
    const { copies, peer } = setup();
    const w = peer('stranger');
    for (let i = 0; i < IDENTITY_BURST; i++) copies.take(w);
    expect(copies.mustWait({ ...w, version: 9 }, 10, false)).toBe(false);
    expect(copies.mustWait({ ...w, version: 5 }, 10, true)).toBe(false);
    expect(copies.mustWait({ ...w, version: 5 }, 10, false)).toBe(true);
    expect(copies.mustWait({ ...w, version: -1 }, 10, true)).toBe(true);
  });
});
