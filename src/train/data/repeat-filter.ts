/**
 * The repeated n-gram document filter (OLMoE paper §2 / Dolma: drop documents dominated by repeated n-grams,
 * such as "buy now buy now buy now …" or a line pasted fifty times).
 *
 * Rule (precise): split the document into words on whitespace. For every n in 1..13, find the runs where an
 * n-word gram repeats back to back (words[i] == words[i + n] for a stretch of at least n positions). Every word
 * in such a run after the first copy of the gram is "repeated". The document is dropped when
 *   - the repeated words hold more than `maxRepeatedFraction` (default 0.3) of the document's non-space
 *     characters, or
 *   - some gram repeats back to back `maxRepeats` (default 32) or more times.
 * Back-to-back repetition (not any repeat anywhere) keeps code and prose, whose n-grams recur far apart, while
 * catching spam, boilerplate floods and degenerate text. Cost: O(13 · words).
 */
export interface RepeatFilterOptions {
  maxN?: number;
  maxRepeatedFraction?: number;
  maxRepeats?: number;
}

export interface RepeatStats {
  /** Fraction of non-space characters in words that repeat an immediately preceding copy of their gram. */
  repeatedFraction: number;
  /** Most back-to-back copies of one gram (1 when nothing repeats). */
  maxRepeats: number;
}

export function repeatStats(text: string, maxN = 13): RepeatStats {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const repeated = new Uint8Array(words.length);
  let maxRepeats = words.length > 0 ? 1 : 0;
  for (let n = 1; n <= maxN; n++) {
    let runStart = 0;
    for (let i = 0; i + n <= words.length; i++) {
      const same = i + n < words.length && words[i] === words[i + n];
      if (same) continue;
      // positions runStart..i-1 satisfy words[j] == words[j+n]: words[runStart, i + n) repeat with period n
      const runLength = i - runStart;
      if (runLength >= n) {
        repeated.fill(1, runStart + n, i + n);
        maxRepeats = Math.max(maxRepeats, Math.floor(runLength / n) + 1);
      }
      runStart = i + 1;
    }
  }
  let total = 0;
  let covered = 0;
  words.forEach((word, i) => {
    total += word.length;
    if (repeated[i]) covered += word.length;
  });
  return { repeatedFraction: total === 0 ? 0 : covered / total, maxRepeats };
}

/** True when the document should be dropped under the rule above. */
export function hasRepeatedNgrams(text: string, opts: RepeatFilterOptions = {}): boolean {
  const stats = repeatStats(text, opts.maxN ?? 13);
  return stats.repeatedFraction > (opts.maxRepeatedFraction ?? 0.3) || stats.maxRepeats >= (opts.maxRepeats ?? 32);
}
