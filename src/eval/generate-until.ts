/**
 * lm-evaluation-harness's generate_until: greedy continuation of a context until any stop string appears or the
 * token budget ends; the text is cut before the first stop string (the harness's post-processing). Scored by
 * exact match against the gold answers after trimming surrounding whitespace.
 */
import { InputError } from '../core/errors.js';
import { generateText, type LanguageModel } from '../generate/generate.js';

export interface GenerateUntilRequest {
  readonly context: string;
  /** Stop strings (the harness's default is the end-of-text token alone: give [] for that). */
  readonly until: readonly string[];
  readonly maxTokens: number;
}

export async function generateUntil(lm: LanguageModel, requests: readonly GenerateUntilRequest[], opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<string[]> {
  const outputs: string[] = [];
  for (const [index, request] of requests.entries()) {
    if (!Number.isSafeInteger(request.maxTokens) || request.maxTokens < 1) throw new InputError(`request ${index}: max tokens ${request.maxTokens} must be a positive integer`);
    const ids = lm.tokenizer.encode(request.context, { addSpecialTokens: false });
    const budget = Math.min(request.maxTokens, lm.model.config.maxPositionEmbeddings - 1);
    const kept = ids.slice(Math.max(0, ids.length + budget - lm.model.config.maxPositionEmbeddings)); // left-truncate as the harness does
    const result = await generateText(lm, kept, { maxNewTokens: budget, temperature: 0, stopStrings: request.until, signal: opts.signal });
    outputs.push(cutAtStop(result.text, request.until));
    opts.onProgress?.(index + 1, requests.length);
  }
  return outputs;
}

/** The text before the first occurrence of any stop string. */
export function cutAtStop(text: string, until: readonly string[]): string {
  let end = text.length;
  for (const stop of until) {
    const at = stop === '' ? -1 : text.indexOf(stop);
    if (at >= 0 && at < end) end = at;
  }
  return text.slice(0, end);
}

/**
 * SQuAD's answer normalisation (also lm-eval's and OLMES's for short answers): lower case, punctuation and the
 * articles a/an/the removed, whitespace collapsed — so "Port Vila." matches "Port Vila".
 */
export function normalizeAnswer(text: string): string {
  return text.toLowerCase().replace(/[\p{P}\p{S}]/gu, '').replace(/\b(a|an|the)\b/g, ' ').split(/\s+/).filter(Boolean).join(' ');
}

/** Match after normalizeAnswer, against any of the gold answers. */
export function normalizedMatch(output: string, golds: readonly string[]): boolean {
  const answer = normalizeAnswer(output);
  return golds.some((gold) => normalizeAnswer(gold) === answer);
}

/** Exact match after trimming, against any of the gold answers. */
export function exactMatch(output: string, golds: readonly string[]): boolean {
  const answer = output.trim();
  return golds.some((gold) => gold.trim() === answer);
}
