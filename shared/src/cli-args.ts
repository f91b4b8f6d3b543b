// Command-line helpers both entry points use (tabtrain serve/bench, tabtrain worker).

/** parseArgs reads `--lr -1` as two options ("ambiguous"): join a negative number to its flag, so the range check can name it. */
export function joinNegativeValues(argv: string[], valued: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (valued.has(a) && i + 1 < argv.length && /^-(\d|\.\d)/.test(argv[i + 1])) out.push(`${a}=${argv[++i]}`);
    else out.push(a);
  }
  return out;
}
