// Verdicts that last the run, whatever the churn: a caught liar's identity (its workerId with the
// session secret it was last given) stays refused, and each identity's invalid frames are counted
// across its reconnections, so a worker that keeps sending them becomes a caught liar too.
//
// Kept apart from the status table (membership.ts), which forgets lost connections: a liar that
// makes 70 short connections must not be forgotten with them.
import { CLOSE } from '@tabtrain/shared';
import { sameSecret } from './secrets';

/** Invalid frames one identity may send in a run, each costing it its connection; the next makes it a liar. */
export const INVALID_FRAMES = 3;

/**
 * Identities remembered. A verdict costs its liar a probation shard (or three invalid frames
 * under one identity), so this many is more than any run meets; beyond it, counts of identities
 * without a verdict are forgotten first.
 */
const MAX_IDENTITIES = 100_000;

/** Close codes that prove a worker sent something invalid (not a slow link, a deadline or a flood). */
const INVALID_CODES: ReadonlySet<number> = new Set([
  CLOSE.tooBig, CLOSE.malformed, CLOSE.unknownType, CLOSE.badField, CLOSE.notOwner, CLOSE.duplicate, CLOSE.badGradient, CLOSE.unexpected,
]);

interface Identity { session: string; invalid: number; verdict: string | null }

export class Verdicts {
  private readonly byId = new Map<string, Identity>();

  /** Why this workerId, presenting `session`, is refused for the rest of the run; null if it is not. */
  refused(workerId: string, session: unknown): string | null {
    const r = this.byId.get(workerId);
    return r?.verdict && sameSecret(session, r.session) ? r.verdict : null;
  }

  /** Whether the run has a record of this workerId (a stranger claiming it without its secret gets another). */
  known(workerId: string): boolean {
    return this.byId.get(workerId)?.verdict != null;
  }

  /** A liar: its identity is refused from now on. */
  convict(workerId: string, session: string, why: string): void {
    const r = this.record(workerId);
    Object.assign(r, { session, verdict: why });
  }

  /**
   * A connection of this identity was closed with `code`: counts it if the code says the frame was
   * invalid (not an internal error of ours). Returns how many it has sent in the run, or 0.
   */
  invalid(workerId: string, code: number, reason: string): number {
    if (!workerId || !INVALID_CODES.has(code) || reason.startsWith('internal')) return 0;
    return ++this.record(workerId).invalid;
  }

  private record(workerId: string): Identity {
    let r = this.byId.get(workerId);
    if (r) return r;
    r = { session: '', invalid: 0, verdict: null };
    this.byId.set(workerId, r);
    if (this.byId.size > MAX_IDENTITIES) {
      let victim: string | undefined;
      for (const [id, x] of this.byId) if (!x.verdict) { victim = id; break; }
      this.byId.delete(victim ?? this.byId.keys().next().value!);
    }
    return r;
  }
}
