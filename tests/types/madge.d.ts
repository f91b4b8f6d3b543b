// madge ships no types; the part of its API the architecture test uses.
declare module 'madge' {
  interface MadgeResult { circular(): string[][]; obj(): Record<string, string[]> }
  export default function madge(path: string | string[], config?: Record<string, unknown>): Promise<MadgeResult>;
}
