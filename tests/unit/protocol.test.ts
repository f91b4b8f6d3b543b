import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { CLOSE, MSG, PROTOCOL_VERSION, ProtocolError, asFloat32, chunkRanges, decodeFrame, encode, hasControl, printable, validate, zooHashes } from '@tabtrain/shared';

function codeOf(f: () => unknown): number | undefined {
  try { f(); } catch (e) { return e instanceof ProtocolError ? e.code : -1; }
  return undefined;
}

describe('protocol framing', () => {
  it('round-trips a header and an fp32 body, viewing the body without a copy', () => {
    const grad = new Float32Array([1.5, -2, 3e-8, 0, 7]);
    const frame = encode({ type: MSG.gradient, step: 3, shard: 1, offset: 10, total: 99 }, grad);
    const { header, body } = decodeFrame(frame);
    expect(validate(header)).toEqual({ type: 'gradient', step: 3, shard: 1, offset: 10, total: 99 });
    const view = asFloat32(body);
    expect(Array.from(view)).toEqual(Array.from(grad));
    expect(view.buffer).toBe(frame.buffer); // a view, not a copy
    expect(body.byteOffset % 4).toBe(0);
  });

  it('copies only when the frame itself sits at an unaligned offset', () => {
    const frame = encode({ type: MSG.weights, version: 1, offset: 0, total: 2 }, new Float32Array([1, 2]));
    const shifted = new Uint8Array(frame.length + 1).subarray(1);
    shifted.set(frame);
    expect(Array.from(asFloat32(decodeFrame(shifted).body))).toEqual([1, 2]);
  });

  it('names what is wrong with a bad frame', () => {
    expect(codeOf(() => decodeFrame(new Uint8Array([1, 2])))).toBe(CLOSE.malformed);
    expect(codeOf(() => decodeFrame(new Uint8Array([255, 255, 0, 0, 1, 2, 3])))).toBe(CLOSE.malformed);
    const junk = new Uint8Array([3, 0, 0, 0, 0xc1, 0xc1, 0xc1]); // 0xc1 is never valid msgpack
    expect(codeOf(() => decodeFrame(junk))).toBe(CLOSE.malformed);
    expect(codeOf(() => validate([1, 2]))).toBe(CLOSE.malformed);
    expect(codeOf(() => validate({ type: 'launch-missiles' }))).toBe(CLOSE.unknownType);
    expect(codeOf(() => validate({ type: 'gradient', step: '3', shard: 0, offset: 0, total: 1 }))).toBe(CLOSE.badField);
    expect(codeOf(() => validate({ type: 'gradient', step: -1, shard: 0, offset: 0, total: 1 }))).toBe(CLOSE.badField);
    expect(codeOf(() => validate({ type: 'result', task: 'train', step: 0, shard: 0, lossSum: NaN, correct: 0, count: 1, timings: {} }))).toBe(CLOSE.badField);
    expect(codeOf(() => validate({ type: 'result', task: 'train', step: 0, shard: 0, lossSum: 1, correct: 0, count: 1, timings: { computeMs: 1, encodeMs: 1 } }))).toBe(CLOSE.badField);
    // An update's batch divides it: 0 would make every replica's weights NaN, so it never reaches one.
    expect(codeOf(() => validate({ type: 'basis', version: 1, round: 2, offset: 0, total: 4, batch: 0 }))).toBe(CLOSE.badField);
    expect(codeOf(() => validate({ type: 'update', version: 1, offset: 0, total: 4, batch: 0 }))).toBe(CLOSE.badField);
    expect(validate({ type: 'basis', version: 1, round: 2, offset: 0, total: 4, batch: 1 }).type).toBe('basis');
    // A worker's drift (powersgd's working copy against its exact copy) is shown as sent: finite and ≥ 0, or absent.
    for (const drift of [-1e-8, NaN, Infinity, '1e-8']) expect(codeOf(() => validate({ type: 'status', tensors: 1, bytes: 4, drift }))).toBe(CLOSE.badField);
    expect(validate({ type: 'status', tensors: 1, bytes: 4, drift: 2.98e-8 })).toEqual({ type: 'status', tensors: 1, bytes: 4, drift: 2.98e-8 });
    expect(validate({ type: 'status', tensors: 1, bytes: 4 }).type).toBe('status');
    expect(codeOf(() => asFloat32(new Uint8Array(6)))).toBe(CLOSE.badGradient);
  });

  it('accepts a well-formed hello from msgpack written by someone else', () => {
    const head = new Packr().pack({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', kind: 'node', backend: 'cpu', adapter: null, modelHashes: zooHashes() });
    const frame = new Uint8Array(4 + head.length);
    new DataView(frame.buffer).setUint32(0, head.length, true);
    frame.set(head, 4);
    expect(validate(decodeFrame(frame).header).type).toBe('hello');
  });

  it('chunks a vector into ranges that cover it exactly', () => {
    expect(chunkRanges(10, 4)).toEqual([[0, 4], [4, 8], [8, 10]]);
    expect(chunkRanges(8, 4)).toEqual([[0, 4], [4, 8]]);
    expect(chunkRanges(0, 4)).toEqual([[0, 0]]);
  });

  it('close codes are unique', () => {
    const codes = Object.values(CLOSE);
    expect(new Set(codes).size).toBe(codes.length);
  });
});

describe('peer text in logs (issue 24, 8)', () => {
  const hello = (over: Record<string, unknown>) => ({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', kind: 'node', backend: 'cpu', adapter: null, modelHashes: zooHashes(), ...over });
  const FORGED = 'x\nworker #1 caught: FORGED\x1b[31m';

  it('printable writes out line breaks, ESC, C1 and bidi controls, and cuts to its length', () => {
    expect(printable(FORGED)).toBe('x\\nworker #1 caught: FORGED\\u001b[31m');
    expect(printable('a\r\tb\u009b\u202e\u2028\u007f')).toBe('a\\r\\tb\\u009b\\u202e\\u2028\\u007f');
    expect(printable('plain ünïcode ✓')).toBe('plain ünïcode ✓');
    expect(printable('x'.repeat(50), 10)).toBe(`${'x'.repeat(9)}…`);
    expect(printable(FORGED).split('\n')).toHaveLength(1);
    expect(hasControl('ok')).toBe(false);
    expect(hasControl('\u001b')).toBe(true);
  });

  it('a hello whose strings hold control characters is refused with badField, naming the field and the value escaped', () => {
    for (const over of [{ backend: FORGED }, { workerId: 'a\rb' }, { token: 't\u001b' }, { session: '\u202e' }, { local: '\u0085' }, { adapter: { vendor: FORGED } }, { adapter: { [FORGED]: 1 } }, { modelHashes: { 'alexnet-tiny': 'h\n' } }]) {
      expect(codeOf(() => validate(hello(over))), JSON.stringify(over)).toBe(CLOSE.badField);
    }
    let message = '';
    try { validate(hello({ backend: FORGED })); } catch (e) { message = (e as Error).message; }
    expect(message).toBe('hello.backend must not hold control characters (line breaks, ESC, bidi overrides), got "x\\nworker #1 caught: FORGED\\u001b[31m"');
    expect(validate(hello({ backend: 'webgpu', adapter: { vendor: 'apple', description: 'M2 ✓' } })).type).toBe('hello');
  });
});
