// Strangers beside the fuzzed inputs: colluders that arrive before the run's own workers, and a
// leaver that walks off with its probation shard.
import { MSG, decodeFrame } from '@tabtrain/shared';
import { colluder, hello as helloFrame, join, type Closed } from '../liars';

/**
 * Two strangers that connect before the run's own workers and agree with each other: each answers
 * every shard it is given with the same fabricated gradient and a perfect score (liars.ts,
 * colluder). Agreement among workers nobody vouches for must count for nothing: they only ever get
 * probation shadows, judged against an established worker's copy. Resolves once both are welcomed.
 */
export async function earlyColluders(url: string, model: string): Promise<{ closed: Promise<Closed[]>; answered: () => number }> {
  const cs = [colluder(url, model), colluder(url, model)];
  await Promise.all(cs.map((c) => c.welcome));
  return { closed: Promise.all(cs.map((c) => c.closed)), answered: () => cs.reduce((a, c) => a + c.answered(), 0) };
}

/** A stranger that leaves (without a close frame) as soon as it is given its first probation shard; resolves with that shard's step. */
export function leaverOnProbation(url: string): Promise<number> {
  const j = join(url, helloFrame({ workerId: `fuzz-leaver-${Math.random()}` }));
  return new Promise((resolve) => j.ws.on('message', (d: Buffer) => {
    const m = decodeFrame(d).header as { type: string; step?: number };
    if (m.type === MSG.assign) { j.ws.terminate(); resolve(m.step!); }
  }));
}
