// Values of every type and size, to put where a field of another type belongs; and how to print
// them in a one-line description of an input.
import type { Rng } from './rng';

const MULTIBYTE = ['é', 'ñ', 'ß', 'Ω', 'Ж', '中', '文', '字', '漢', 'の', '한', '😀', '🦄', '🔥', '👩‍👩‍👧‍👦', '🏳️‍🌈', 'e\u0301', 'a\u0308\u0323', 'Z\u0335\u0321\u0334', '\u200d', '\ufeff', '\u202e', 'ﷺ', '\u{10ffff}', '\ud800', '\0'];

/** A string of `n` multi-byte characters (emoji, CJK, combining marks, a lone surrogate, NUL). */
export function multibyte(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(MULTIBYTE);
  return s;
}

/** Strings of every kind: empty, ASCII, multi-byte (often longer than a 123-byte close reason), long. */
export function weirdString(rng: Rng, allowHuge: boolean): string {
  return rng.weighted<() => string>([
    [1, () => ''],
    [1, () => 'x'],
    [1, () => ' '],
    [2, () => multibyte(rng, rng.range(1, 8))],
    [4, () => multibyte(rng, rng.range(30, 300))],
    [1, () => 'A'.repeat(rng.pick([255, 256, 257, 1000, 65_536]))],
    [1, () => '中'.repeat(rng.pick([41, 42, 100, 256, 257]))],
    [1, () => rng.pick(['hello', 'gradient', 'result', 'train', 'eval', 'node', 'browser', '__proto__', 'constructor', 'toString', 'null', 'NaN', '-1', '0x10', '1e308', '%s%n', '${x}', '\r\n\r\n', '<script>', 'alexnet-tiny', 'welcome'])],
    [allowHuge ? 0.2 : 0, () => rng.pick(['a', '中', '😀']).repeat(rng.logSize(1 << 19, 10 << 20) >> 1)],
  ])();
}

/** A value of some type, meant to replace a field of another type. */
export function weirdValue(rng: Rng, allowHuge = false): unknown {
  return rng.weighted<() => unknown>([
    [4, () => weirdString(rng, allowHuge)],
    [1, () => rng.pick([0, -1, 1, 2, 3, 7, 255, 256, 65_535, 2 ** 31, 2 ** 32, 2 ** 32 - 1])],
    [1, () => rng.pick([-0, 0.5, -1.5, 1e-308, 5e-324, 1e308, -1e308, 1.7976931348623157e308])],
    [1, () => rng.pick([NaN, Infinity, -Infinity])],
    [1, () => rng.pick([2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 64, -(2 ** 63), Number.MAX_SAFE_INTEGER])],
    // msgpack uint64/int64: they decode as BigInt, which JSON.stringify refuses.
    [1, () => rng.pick([2n ** 64n - 1n, 2n ** 63n, -(2n ** 63n), 5n, 0n])],
    [1, () => rng.pick([null, undefined, true, false])],
    [1, () => rng.pick([[], [1, 2, 3], [null], ['hello'], [[[[]]]]])],
    [1, () => rng.pick<Record<string, unknown>>([{}, { a: 1 }, { type: 'hello' }, { __proto__x: 1, constructor: 'x' }])],
    [0.5, () => new Date(rng.pick([0, NaN, 8.64e15, -1]))],
    [0.5, () => new Uint8Array(rng.pick([0, 1, 7, 4096]))],
    [0.3, () => nested(rng.pick([100, 1000, 3000, 5000, 20_000]))],
    [allowHuge ? 0.3 : 0, () => (rng.chance(0.5) ? new Uint8Array(rng.logSize(1 << 20, 10 << 20)) : Array.from({ length: rng.logSize(10_000, 300_000) }, (_, i) => i))],
  ])();
}

function nested(depth: number): unknown {
  let v: unknown = null;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

export function describeValue(v: unknown): string {
  if (typeof v === 'string') return v.length > 24 ? `string(${v.length} chars, ${Buffer.byteLength(v)} bytes: ${JSON.stringify(v.slice(0, 6))}…)` : JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `bin(${v.length})`;
  if (v instanceof Date) return `Date(${v.getTime()})`;
  if (Array.isArray(v)) return v.length > 8 ? `array(${v.length})` : `array depth ${depth(v)}`;
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  return v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v);
}
function depth(v: unknown): number { let d = 0; while (Array.isArray(v) && d < 1e6) { v = v[0]; d++; } return d; }
