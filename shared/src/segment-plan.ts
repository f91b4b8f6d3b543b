// The segment plan of a run's gradient. Both ends derive the same plan from the run (model layout
// + compression): the flat gradient is cut into segments, each travelling as one `gradient` frame
// whose body is encoded by the segment's codec (compress.ts). powersgd's two rounds of factors
// travel as frames cut where each matrix's factors start (`roundSegments`), in the plan's factor
// codec (fp32 or fp16); round 1's fp32 tensors' sums always as fp32.
//
// Pure code: no Node or DOM imports.
import type { Codec, Compression } from './codec-types';
import type { ParamInfo } from './models';
import { CHUNK_FLOATS } from './protocol';
import type { PowerSgdPlan } from './powersgd';

/** One frame's worth of the gradient. */
export interface Segment {
  index: number;
  codec: Codec;
  /** First float of the segment in the flat vector, and how many floats it covers. */
  offset: number;
  count: number;
  /** int8: [offset, count] of each piece with its own scale (absolute offsets). */
  pieces: [number, number][];
  /** Exact body length in bytes. */
  bytes: number;
}

/** Bodies stay near 8 MiB whatever the codec: one fp32 chunk's worth of bytes. */
const CHUNK_BYTES = CHUNK_FLOATS * 4;

/**
 * The segment plan of a run's gradient (none, fp16, int8). Every end calls this with the same
 * arguments and gets the same plan; `chunk` (floats per fp32 frame) only changes in tests.
 */
export function planSegments(params: ParamInfo[], total: number, c: Compression, chunk = CHUNK_FLOATS): Segment[] {
  const segs: Segment[] = [];
  const push = (s: Omit<Segment, 'index' | 'bytes'>) => segs.push({ ...s, index: segs.length, bytes: bodyBytes(s) });
  // Contiguous run [from, to) of plain-codec floats, cut into frames of about CHUNK_BYTES.
  const plain = (codec: Codec, from: number, to: number) => {
    const per = codec === 'fp16' ? chunk * 2 : codec === 'int8' ? chunk * 4 : chunk;
    for (let o = from; o < to; o += per) {
      const end = Math.min(to, o + per);
      const pieces: [number, number][] = [];
      if (codec === 'int8') {
        for (const p of params) {
          const a = Math.max(o, p.offset), b = Math.min(end, p.offset + p.size);
          if (a < b) pieces.push([a, b - a]);
        }
      }
      push({ codec, offset: o, count: end - o, pieces });
    }
  };
  if (c.mode === 'powersgd') throw new Error('powersgd gradients do not travel as segments: see powerSgdPlan and roundSegments');
  if (total === 0) return [{ index: 0, codec: 'fp32', offset: 0, count: 0, pieces: [], bytes: 0 }];
  plain(c.mode === 'none' ? 'fp32' : c.mode, 0, total);
  return segs;
}

/**
 * A PowerSGD round's vector as frames (offsets into that vector), cut where its matrices'
 * factors start (round 1: each Pᵀ, then the fp32 tensors' sums together; round 2: each Qᵀ). The
 * coordinator can then orthonormalise and broadcast a matrix's P̂ as soon as every shard's P of it
 * is summed, while later matrices are still arriving (step.ts), so the two directions overlap.
 */
export function roundSegments(plan: PowerSgdPlan, round: 1 | 2): Segment[] {
  const floats = round === 1 ? plan.round1Floats : plan.round2Floats;
  const starts = plan.matrices.map((m) => (round === 1 ? m.pAt : m.qAt));
  if (round === 1 && plan.dense.length) starts.push(plan.dense[0].at);
  const segs: Segment[] = [];
  starts.forEach((from, i) => {
    const to = i + 1 < starts.length ? starts[i + 1] : floats;
    // The same cuts whatever the codec: an fp16 frame is then half an fp32 one (≤ 4 MiB).
    const codec: Codec = i < plan.matrices.length ? plan.factors ?? 'fp32' : 'fp32';
    for (let o = from; o < to; o += CHUNK_FLOATS) {
      const count = Math.min(to, o + CHUNK_FLOATS) - o;
      segs.push({ index: segs.length, codec, offset: o, count, pieces: [], bytes: (codec === 'fp16' ? 2 : 4) * count });
    }
  });
  return segs.length ? segs : [{ index: 0, codec: 'fp32', offset: 0, count: 0, pieces: [], bytes: 0 }];
}

function bodyBytes(s: Omit<Segment, 'index' | 'bytes'>): number {
  switch (s.codec) {
    case 'fp32': return 4 * s.count;
    case 'fp16': return 2 * s.count;
    case 'int8': return 4 * s.pieces.length + s.count;
  }
}
