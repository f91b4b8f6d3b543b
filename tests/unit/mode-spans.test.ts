// The summary's record of which compression ran at which steps (server/src/mode-spans.ts).
import { describe, expect, it } from 'vitest';
import { ModeSpans } from '../../server/src/mode-spans';

describe('ModeSpans', () => {
  it('keeps consecutive steps of one mode as one span and opens a span at each switch', () => {
    const m = new ModeSpans();
    for (let s = 1; s <= 3; s++) m.add(s, 'none');
    for (let s = 4; s <= 9; s++) m.add(s, 'powersgd-r4');
    m.add(10, 'none');
    expect(m.spans).toEqual([
      { mode: 'none', firstStep: 1, lastStep: 3, steps: 3 },
      { mode: 'powersgd-r4', firstStep: 4, lastStep: 9, steps: 6 },
      { mode: 'none', firstStep: 10, lastStep: 10, steps: 1 },
    ]);
  });

  it('opens a new span across a gap in the steps (a resumed run), even in the same mode', () => {
    const m = new ModeSpans();
    m.add(1, 'int8');
    m.add(2, 'int8');
    m.add(101, 'int8');
    expect(m.spans.map((s) => [s.firstStep, s.lastStep, s.steps])).toEqual([[1, 2, 2], [101, 101, 1]]);
  });
});
