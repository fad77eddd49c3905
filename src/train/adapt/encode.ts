/**
 * Conversations → token ids and a per-token loss mask, through the model's own chat template.
 *
 * The trained spans are found by rendering prefixes of the conversation, as open-instruct does for the Tülu/OLMoE
 * SFT data (finetune.py, encode_sft_example): an assistant turn i spans from the end of
 * render(messages[:i], add_generation_prompt=True) to the end of render(messages[:i+1]). That is exactly the text
 * the template writes for the reply: its content, the end-of-turn token, and whatever the template appends to the
 * turn itself (OLMoE-0924's template writes "\n" after eos, open-instruct trains it too). It holds only if the
 * template is prefix-stable — every prefix renders to the start of the whole — which is checked, never assumed.
 *
 * Each span is tokenized on its own, as TRL's DPOTrainer tokenizes prompt and completion apart: the prompt's ids
 * are then exactly those inference feeds (`encodeChat(..., addGenerationPrompt)`), and no token straddles a
 * boundary between a trained and an untrained span.
 *
 * lossMask[t] = 1 means token t is a training target, predicted from tokens[0..t-1]; lossMask[0] is always 0.
 */
import { OlmoeError, preview } from '../../core/errors.js';
import type { ChatMessage } from '../../tokenizer/chat-template.js';
import type { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { recordError, type RecordSource } from './jsonl.js';
import type { SftRecord, Turn } from './records.js';

export interface EncodedSequence {
  readonly tokens: Int32Array;
  /** 1 where the token is a loss target (predicted from the tokens before it). */
  readonly lossMask: Uint8Array;
}

/** A character span of the rendered conversation and whether it is trained. */
interface Span {
  readonly start: number;
  readonly end: number;
}

function render(tokenizer: OlmoeTokenizer, turns: readonly Turn[], addGenerationPrompt: boolean, source: RecordSource): string {
  const messages: ChatMessage[] = turns.map(({ role, content }) => ({ role, content }));
  try {
    return tokenizer.renderChat(messages, { addGenerationPrompt });
  } catch (error) {
    if (error instanceof OlmoeError) throw recordError(source, '', `cannot be rendered with the chat template: ${error.message}`);
    throw error;
  }
}

/** `prefix` must begin `whole`; otherwise the template is not prefix-stable and the error says where they part. */
function checkPrefix(whole: string, prefix: string, what: string, source: RecordSource): void {
  if (whole.startsWith(prefix)) return;
  let at = 0;
  while (at < prefix.length && prefix[at] === whole[at]) at++;
  throw recordError(
    source,
    '',
    `the chat template is not prefix-stable: ${what} renders to text that is not the start of the whole conversation's ` +
      `(they differ at character ${at}: ${preview(prefix.slice(at, at + 24))} vs ${preview(whole.slice(at, at + 24))}), ` +
      'so the trained spans cannot be found from prefix renders; use a template whose rendering of a conversation begins with the rendering of each of its prefixes',
  );
}

/** The character spans of the trained assistant turns in `whole`, from prefix renders. */
function trainedSpans(tokenizer: OlmoeTokenizer, turns: readonly Turn[], whole: string, source: RecordSource): Span[] {
  const spans: Span[] = [];
  turns.forEach((turn, i) => {
    if (!turn.train) return;
    const before = render(tokenizer, turns.slice(0, i), true, source);
    checkPrefix(whole, before, `the ${i} message(s) before assistant turn ${i} with the generation prompt`, source);
    const through = render(tokenizer, turns.slice(0, i + 1), false, source);
    checkPrefix(whole, through, `the first ${i + 1} messages (through assistant turn ${i})`, source);
    if (through.length < before.length) {
      throw recordError(source, '', `the chat template's generation prompt (${preview(before.slice(through.length))}) is longer than its rendering of assistant turn ${i}: the template does not open an assistant turn the way it prompts for one`);
    }
    spans.push({ start: before.length, end: through.length });
  });
  return spans;
}

/** Tokenize `text` piece by piece at the span boundaries; tokens of spans are trained. */
function tokenizePieces(tokenizer: OlmoeTokenizer, text: string, spans: readonly Span[]): EncodedSequence {
  const tokens: number[] = [];
  const mask: number[] = [];
  const add = (from: number, to: number, trained: boolean) => {
    if (to <= from) return;
    const ids = tokenizer.encode(text.slice(from, to), { addSpecialTokens: false });
    for (const id of ids) {
      tokens.push(id);
      mask.push(trained ? 1 : 0);
    }
  };
  let at = 0;
  for (const span of spans) {
    add(at, span.start, false);
    add(span.start, span.end, true);
    at = span.end;
  }
  add(at, text.length, false);
  if (mask[0] === 1) mask[0] = 0; // nothing predicts the first token
  return { tokens: Int32Array.from(tokens), lossMask: Uint8Array.from(mask) };
}

/** A conversation through the tokenizer's chat template (or OLMoE's format when it has none). */
export function encodeTurns(tokenizer: OlmoeTokenizer, turns: readonly Turn[], source: RecordSource): EncodedSequence {
  const whole = render(tokenizer, turns, false, source);
  return tokenizePieces(tokenizer, whole, trainedSpans(tokenizer, turns, whole, source));
}

/** The id documents start and end with: OLMoE's data separates documents by eos; bos when the tokenizer has one. */
function boundaryIds(tokenizer: OlmoeTokenizer): { start: number; end: number } {
  const end = tokenizer.tokenId(tokenizer.eosToken);
  if (end === undefined) throw new OlmoeError('input', 'the tokenizer has no eos token: plain-text ("text") records need one to end each document');
  return { start: tokenizer.tokenId(tokenizer.bosToken) ?? end, end };
}

/** Plain text: a leading bos (or eos), the text, eos; every token after the first is trained. */
export function encodeText(tokenizer: OlmoeTokenizer, text: string): EncodedSequence {
  const { start, end } = boundaryIds(tokenizer);
  const tokens = Int32Array.from([start, ...tokenizer.encode(text, { addSpecialTokens: false }), end]);
  const lossMask = new Uint8Array(tokens.length).fill(1);
  lossMask[0] = 0;
  return { tokens, lossMask };
}

export function encodeSftRecord(tokenizer: OlmoeTokenizer, record: SftRecord): EncodedSequence {
  return record.kind === 'text' ? encodeText(tokenizer, record.text) : encodeTurns(tokenizer, record.turns, record.source);
}

/** Number of trained tokens. */
export function trainedCount(sequence: EncodedSequence): number {
  let n = 0;
  for (const bit of sequence.lossMask) n += bit;
  return n;
}
