/**
 * `--show-mask`: a sample as text with the trained spans marked, so a person can see at a glance that every
 * assistant turn (and its end-of-turn token) is trained and nothing else. Runs of equally masked tokens are
 * decoded together, so a character split across byte-level tokens of one run prints whole.
 */
import type { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { trainedCount, type EncodedSequence } from './encode.js';

export interface ShowMaskOptions {
  /** ANSI colours (trained text on a green background) instead of bracket marks. */
  color?: boolean;
}

const MARKS = { open: '⟦', close: '⟧' };
const ANSI = { open: '\x1b[42m\x1b[30m', close: '\x1b[0m' };

/** Runs of consecutive tokens with the same mask bit: [start, end, trained]. */
export function maskRuns(lossMask: ArrayLike<number>): [number, number, boolean][] {
  const runs: [number, number, boolean][] = [];
  for (let t = 0; t < lossMask.length; t++) {
    const trained = lossMask[t] === 1;
    const last = runs[runs.length - 1];
    if (last && last[2] === trained) last[1] = t + 1;
    else runs.push([t, t + 1, trained]);
  }
  return runs;
}

/** The decoded text of each run, with whether it is trained. */
export function maskedPieces(tokenizer: OlmoeTokenizer, sequence: EncodedSequence): [string, boolean][] {
  const ids = Array.from(sequence.tokens);
  return maskRuns(sequence.lossMask).map(([start, end, trained]) => [tokenizer.decode(ids.slice(start, end)), trained]);
}

/** The sample with trained text between ⟦ ⟧ (or coloured), then a line counting tokens. */
export function showMask(tokenizer: OlmoeTokenizer, sequence: EncodedSequence, opts: ShowMaskOptions = {}): string {
  const marks = opts.color ? ANSI : MARKS;
  const text = maskedPieces(tokenizer, sequence)
    .map(([piece, trained]) => (trained ? `${marks.open}${piece}${marks.close}` : piece))
    .join('');
  const total = sequence.tokens.length;
  const trained = trainedCount(sequence);
  const share = total === 0 ? 0 : (100 * trained) / total;
  return `${text}\n-- ${total} tokens, ${trained} trained (${share.toFixed(1)} %)${opts.color ? '' : `; trained text is between ${MARKS.open} ${MARKS.close}`}`;
}
