// A mistyped option gets the one it was probably meant to be, from the command's own list.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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

// The commands tabtrain prints run as printed: on a fresh clone `tabtrain` is not on PATH, so help
// and join lines say the path that was typed; where `tabtrain` on PATH is this checkout's, they say
// `tabtrain`. Real processes through bin/tabtrain, as a person starts them.
describe('printed commands name tabtrain as it was typed', () => {
  const help = (command: string, env: NodeJS.ProcessEnv = {}) =>
    execFileSync(command, ['serve', '--help'], { encoding: 'utf8', env: { ...process.env, TABTRAIN_COMMAND: '', ...env } });
  it('bin/tabtrain: its help says bin/tabtrain serve, never a bare tabtrain command', () => {
    const text = help('bin/tabtrain');
    expect(text).toContain('bin/tabtrain serve --model alexnet');
    expect(text).not.toMatch(/(^|\s)tabtrain (serve|worker) /m);
  });
  it('tabtrain on PATH (a link to this checkout): its help says tabtrain serve', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabtrain-path-'));
    try {
      symlinkSync(resolve('bin/tabtrain'), join(dir, 'tabtrain'));
      const text = help('tabtrain', { PATH: `${dir}:${process.env.PATH}` });
      expect(text).toMatch(/^\s+tabtrain serve --model alexnet/m);
      expect(text).not.toContain('bin/tabtrain serve');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bench and ports', () => {
  it('bench --port is refused with why: its coordinators listen on free ports they pick', async () => {
    const { bench } = await import('../../server/src/bench/index');
    await expect(bench(['scaleout', '--port', '9000'])).rejects.toThrow(/bench takes no --port: each coordinator it starts listens on a free port it picks \(port 0\).*drop --port/);
    await expect(bench(['micro', '--port=1'])).rejects.toThrow(/drop --port=1$/);
  });
});
