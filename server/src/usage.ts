// A mistake in how a command was called: printed as its one-line message (no stack), exit code 2.
export class UsageError extends Error {}
