/**
 * OpenAI's legacy completions `logprobs` object — `{tokens, token_logprobs, top_logprobs, text_offset}` — laid out
 * as vLLM builds it (vllm/entrypoints/openai/completion/serving.py, `_create_completion_logprobs`), which is what
 * lm-evaluation-harness reads (lm_eval/models/openai_completions.py, `parse_logprobs`: the sum of
 * token_logprobs[ctxlen:-1], greedy when each equals the largest value of its top_logprobs map):
 * - `tokens`: each token decoded on its own (special tokens kept; a piece of a UTF-8 character decodes to U+FFFD);
 * - `token_logprobs`: log p(token | everything before it), null for the prompt's first token (nothing to condition on);
 * - `top_logprobs`: per token, a map {token text: logprob} of the N most likely tokens plus the token itself (so up to
 *   N + 1 entries), most likely first; null for the prompt's first token;
 * - `text_offset`: where each token starts in the choice's text, counted as the sum of the previous tokens' lengths
 *   in Unicode code points (Python's len, as vLLM).
 * Log-probabilities below -9999 are written as -9999, as OpenAI and vLLM do (JSON has no -Infinity).
 */
import type { Logprob, TokenLogprob } from '../index.js';

export interface LogprobsJson {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

const FLOOR = -9999;

export class CompletionLogprobs {
  private readonly json: LogprobsJson = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };

  /** `offset`: where the first token added starts in the choice's text (a streamed chunk continues the previous). */
  constructor(
    private readonly tokenText: (id: number) => string,
    private offset = 0,
  ) {}

  /** Where the next token would start. */
  get end(): number {
    return this.offset;
  }

  get length(): number {
    return this.json.tokens.length;
  }

  /** A token with nothing before it to condition on: the prompt's first. */
  addUnscored(id: number): void {
    this.push(id, null, null);
  }

  add(entry: TokenLogprob): void {
    this.push(entry.id, floor(entry.logprob), this.topMap(entry));
  }

  toJSON(): LogprobsJson {
    return this.json;
  }

  private push(id: number, logprob: number | null, top: Record<string, number> | null): void {
    const text = this.tokenText(id);
    this.json.tokens.push(text);
    this.json.token_logprobs.push(logprob);
    this.json.top_logprobs.push(top);
    this.json.text_offset.push(this.offset);
    this.offset += codePoints(text);
  }

  /**
   * The N most likely tokens and the token itself, most likely first, keyed by their text. Two ids with the same text
   * keep the more likely one. Object.fromEntries defines own properties, so a token such as "__proto__" is a key like
   * any other (token texts come from the checkpoint's tokenizer file).
   */
  private topMap(entry: TokenLogprob): Record<string, number> {
    const ranked: Logprob[] = entry.top.some((t) => t.id === entry.id) ? entry.top : [...entry.top, entry].sort((a, b) => b.logprob - a.logprob);
    const seen = new Set<string>();
    const pairs: [string, number][] = [];
    for (const { id, logprob } of ranked) {
      const text = this.tokenText(id);
      if (seen.has(text)) continue;
      seen.add(text);
      pairs.push([text, floor(logprob)]);
    }
    return Object.fromEntries(pairs);
  }
}

function floor(logprob: number): number {
  return Math.max(logprob, FLOOR);
}

/** Length in code points: a surrogate pair counts once. */
export function codePoints(text: string): number {
  let count = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) count--, i++;
  }
  return count;
}
