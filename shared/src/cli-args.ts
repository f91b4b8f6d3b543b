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

/** The known option nearest to a mistyped one (`--epoch` → `--epochs`), or null when none is close. */
export function nearestOption(given: string, known: readonly string[]): string | null {
  const g = given.replace(/^-+/, '').split('=')[0].toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(g, k.toLowerCase());
    if (d < bestDistance) { best = k; bestDistance = d; }
  }
  // Two edits on a word of five letters or more, one on shorter ones: beyond that it is a guess.
  return best !== null && bestDistance <= (g.length >= 5 ? 2 : 1) ? `--${best}` : null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/** node:util parseArgs's errors, said the way the rest of the CLI says things; `known` names the command's options for a "did you mean". */
export function parseArgsMessage(e: Error & { code?: string }, command: string, known: readonly string[] = []): string {
  const m = /'(-[^' ]+)/.exec(e.message);
  const help = `see tabtrain ${command} --help`;
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const near = m ? nearestOption(m[1], known) : null;
    return `unknown option ${m?.[1] ?? ''} for ${command}${near ? ` (did you mean ${near}?)` : ''}: ${help}`;
  }
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && /argument missing/.test(e.message)) return `${m?.[1] ?? 'an option'} needs a value: ${help}`;
  if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return `${command} takes no argument ${/'([^']*)'/.exec(e.message)?.[1] ?? ''}: options start with --; ${help}`;
  return `${e.message}: ${help}`;
}

/**
 * How the person who started this process runs tabtrain, so that every command we print runs as
 * printed: bin/tabtrain exports what was typed ($0: `bin/tabtrain`, `./bin/tabtrain`, a full path)
 * or `tabtrain` when that name on PATH is this checkout's. Code started some other way (the tests,
 * tsx by hand) gets `bin/tabtrain`, which runs from the checkout's root.
 */
export function tabtrainCommand(): string {
  const typed = typeof process === 'undefined' ? undefined : process.env.TABTRAIN_COMMAND;
  return typed && /^[\w./~+-]+$/.test(typed) ? typed : 'bin/tabtrain';
}

/** Text for a person with each `tabtrain COMMAND` written as this person runs it (tabtrainCommand). */
export function asTyped(text: string): string {
  const command = tabtrainCommand();
  return command === 'tabtrain' ? text : text.replace(/(^|[\s`(:'"])tabtrain (?=(serve|worker|bench|help|view)\b)/gm, `$1${command} `);
}
