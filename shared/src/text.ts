// Text from the network, made safe for a terminal, a log file and the dashboard. A string with a
// line break forges log lines ("worker #1 caught: FORGED"), an ESC or C1 byte drives the
// operator's terminal, and a bidi override reorders what is shown. Peers' strings are refused at
// the door when they hold any (protocol.ts, the hello); what still reaches a log line (a peer's
// close reason, an error message quoting a peer's bytes) is escaped here, JSON-style.

/** C0 (line breaks, ESC), DEL, C1 (8-bit CSI), the Unicode line separators and bidi overrides. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const CONTROLS = new RegExp(CONTROL.source, 'g');
const SHORT: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** True when `s` holds a character that a terminal or a log reader would act on rather than show. */
export function hasControl(s: string): boolean {
  return CONTROL.test(s);
}

/**
 * `s` with every control character written out (`\n`, `\u001b`), cut to `maxChars` with '…':
 * one line that shows what was sent, never more.
 */
export function printable(s: string, maxChars = 2000): string {
  const out = s.replace(CONTROLS, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return out.length > maxChars ? `${out.slice(0, maxChars - 1)}…` : out;
}
