// A mistyped option gets the one it was probably meant to be, from the command's own list.
import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { nearestOption, parseArgsMessage } from '@tabtrain/shared/cli-args';

const SERVE = ['epochs', 'batch', 'lr', 'model', 'min-workers', 'local-workers', 'token', 'port'];

describe('nearestOption', () => {
  it('names the option a typo was meant to be', () => {
    expect(nearestOption('--epoch', SERVE)).toBe('--epochs');
    expect(nearestOption('--min-worker', SERVE)).toBe('--min-workers');
    expect(nearestOption('--locl-workers=2', SERVE)).toBe('--local-workers');
    expect(nearestOption('--LR', SERVE)).toBe('--lr');
  });
  it('guesses nothing when no option is close', () => {
    expect(nearestOption('--bogus', SERVE)).toBeNull();
    expect(nearestOption('--x', SERVE)).toBeNull();
    expect(nearestOption('--epochs', [])).toBeNull();
  });
});

describe('parseArgsMessage', () => {
  const fail = (args: string[]) => {
    try {
      parseArgs({ args, strict: true, options: { epochs: { type: 'string' } } });
    } catch (e) {
      return e as Error & { code?: string };
    }
    throw new Error('parseArgs accepted it');
  };
  it('says the unknown option, the guess and where the help is, on one line', () => {
    expect(parseArgsMessage(fail(['--epoch', '3']), 'serve', ['epochs'])).toBe('unknown option --epoch for serve (did you mean --epochs?): see tabtrain serve --help');
    expect(parseArgsMessage(fail(['--bogus']), 'serve', ['epochs'])).toBe('unknown option --bogus for serve: see tabtrain serve --help');
    expect(parseArgsMessage(fail(['--epochs']), 'worker')).toBe('--epochs needs a value: see tabtrain worker --help');
  });
});
