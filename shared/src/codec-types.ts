// The names of the gradient codecs and compression modes. Their own module so that protocol.ts
// (which carries them) and compress.ts (which implements them, and frames with protocol.ts) do
// not import each other.

export const COMPRESS_MODES = ['none', 'fp16', 'int8', 'powersgd'] as const;
export type CompressMode = (typeof COMPRESS_MODES)[number];

/** A run's compression; travels in the welcome's run info (absent = none). */
export interface Compression {
  mode: CompressMode;
  /** Rank of the low-rank factors (powersgd only). */
  rank: number;
  /**
   * powersgd only: how its factors travel, both ways (absent = fp32). fp16 halves the bytes of
   * every factor frame; the coordinator and every replica apply exactly the decoded halves.
   */
  factors?: FactorCodec;
}

/** The precisions PowerSGD's factors may travel in (`--factors`). */
export const FACTOR_CODECS = ['fp32', 'fp16'] as const;
export type FactorCodec = (typeof FACTOR_CODECS)[number];

export const CODECS = ['fp32', 'fp16', 'int8'] as const;
export type Codec = (typeof CODECS)[number];
