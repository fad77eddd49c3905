/**
 * Failure classes the fuzzer has found that are not fixed yet (FINDINGS.md says which are fixed, and where).
 * The CI test tolerates these and fails on any other class, so a fix can land separately from the fuzzer but a
 * new kind of failure turns CI red. Remove a line when its fix lands (the test prints the known classes it no
 * longer sees). Patterns: `mutator/outcome`, `*` matches any run of characters.
 */
export const KNOWN_FAILURES: readonly string[] = [];

function toRegExp(pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

export function isKnown(failureClass: string, known: readonly string[] = KNOWN_FAILURES): boolean {
  return known.some((pattern) => toRegExp(pattern).test(failureClass));
}

/** Known patterns that matched none of the classes seen (fixed, or not reached by this run). */
export function unseenKnown(seen: Iterable<string>, known: readonly string[] = KNOWN_FAILURES): string[] {
  const classes = [...seen];
  return known.filter((pattern) => !classes.some((c) => toRegExp(pattern).test(c)));
}
