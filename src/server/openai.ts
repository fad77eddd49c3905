/**
 * The OpenAI request bodies we accept, validated with zod (unknown fields are refused by name, so a typo is not
 * silently ignored), and their translation into the library's generation options. Extensions beyond OpenAI's
 * fields, as llama.cpp and vLLM also accept: top_k, min_p, repetition_penalty, ignore_eos, and `routing: true`
 * (the top-k experts and weights of every generated token, per layer).
 *
 * Completions take what lm-evaluation-harness's `local-completions` sends (lm_eval/models/openai_completions.py,
 * `_create_payload`): `prompt` as a batch of token-id lists, `echo: true` with `logprobs: N` and `max_tokens` 0 or 1
 * to score, `seed`, and up to 16 stop strings (lm-eval adds the eos string to a task's `until` list; vLLM sets no
 * limit, OpenAI's 4 would refuse tasks with four stops of their own).
 */
import { z } from 'zod';
import type { ChatMessage } from '../index.js';
import type { JobOptions, JobRequest } from './protocol.js';

const MAX_STOPS = 16;
// A string or a list of strings; checked by hand because a zod union reports only "Invalid input" for a list too long.
const stop = z.unknown().transform((value, ctx): string[] => {
  const fail = (message: string, path: number[] = []) => (ctx.addIssue({ code: 'custom', message, path }), z.NEVER);
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list)) return fail(`must be a string or a list of strings (got ${describe(value)})`);
  if (list.length > MAX_STOPS) return fail(`at most ${MAX_STOPS} stop strings (got ${list.length})`);
  const bad = list.findIndex((item) => typeof item !== 'string' || item === '');
  if (bad >= 0) return fail(typeof list[bad] === 'string' ? 'stop strings must not be empty' : `stop strings must be strings (got ${describe(list[bad])})`, typeof value === 'string' ? [] : [bad]);
  return list as string[];
});
/** Most alternatives per token in `logprobs` (vLLM's default --max-logprobs; OpenAI's legacy API allowed 5). */
export const MAX_LOGPROBS = 20;
/** Most prompts in one completions request (lm-eval's batch_size); each is answered in turn in one engine slot. */
export const MAX_PROMPTS = 256;
const optional = <T extends z.ZodType>(schema: T) => schema.nullish();
const zeroOnly = (what: string) => z.number().refine((value) => value === 0, `${what} is not supported (only 0)`);

const sampling = {
  model: z.string().min(1, 'name the model (GET /v1/models lists it)'),
  max_tokens: optional(z.int().min(1, 'must be at least 1')),
  temperature: optional(z.number().min(0, 'must be between 0 and 2').max(2, 'must be between 0 and 2')),
  top_p: optional(z.number().gt(0, 'must be in (0, 1]').max(1, 'must be in (0, 1]')),
  seed: optional(z.int().min(0, 'must be a non-negative integer').max(Number.MAX_SAFE_INTEGER)),
  stop: optional(stop),
  n: optional(z.literal(1, 'only n = 1 is supported')),
  stream: optional(z.boolean()),
  stream_options: optional(z.strictObject({ include_usage: optional(z.boolean()) })),
  presence_penalty: optional(zeroOnly('presence_penalty')),
  frequency_penalty: optional(zeroOnly('frequency_penalty')),
  user: optional(z.string()),
  // extensions
  top_k: optional(z.int().min(0, 'must be a non-negative integer (0 = off)')),
  min_p: optional(z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]')),
  repetition_penalty: optional(z.number().gt(0, 'must be positive')),
  ignore_eos: optional(z.boolean()),
  routing: optional(z.boolean()),
};

const textPart = z.strictObject({ type: z.literal('text', 'only text content parts are supported'), text: z.string() });
const message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant'], 'role must be system, developer, user or assistant'),
  content: z.union([z.string(), z.array(textPart)], 'content must be a string or an array of text parts'),
  name: optional(z.string()),
});

export const chatRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1, 'give at least one message'),
  max_completion_tokens: optional(z.int().min(1, 'must be at least 1')),
  logprobs: optional(z.literal(false, 'logprobs are not supported on chat completions (POST /v1/completions takes logprobs: N)')),
});

/**
 * A completions prompt, whichever of OpenAI's four shapes it came in: texts, or token ids; one choice per prompt.
 * `batch`: it came as a list of prompts, so errors name prompt[i] (a single string or id list is `prompt`).
 */
export type Prompts = ({ texts: string[] } | { ids: number[][] }) & { batch: boolean };

export const completionRequest = z.strictObject({
  ...sampling,
  max_tokens: optional(z.int().min(0, 'must be at least 0')),
  prompt: z.unknown().transform(parsePrompts),
  logprobs: optional(z.int(`must be an integer from 0 to ${MAX_LOGPROBS}`).min(0, `must be an integer from 0 to ${MAX_LOGPROBS}`).max(MAX_LOGPROBS, `must be an integer from 0 to ${MAX_LOGPROBS} (the most alternatives per token this server returns)`)),
  echo: optional(z.boolean()),
  best_of: optional(z.literal(1, 'only best_of = 1 is supported')),
});

/**
 * OpenAI's `prompt`: a string, a list of strings, a list of token ids (one tokenized prompt) or a list of token-id
 * lists (a batch, as lm-eval sends by default). A list holds one kind only; a wrong element is named by its index.
 * Ids are checked against the vocabulary later, when the model's size is known.
 */
function parsePrompts(value: unknown, ctx: z.RefinementCtx): Prompts {
  const fail = (message: string, path: (number | string)[] = []) => (ctx.addIssue({ code: 'custom', message, path }), z.NEVER);
  if (typeof value === 'string') return { texts: [value], batch: false };
  if (!Array.isArray(value)) return fail(`must be a string, a list of strings, a list of token ids or a list of token-id lists (got ${describe(value)})`);
  if (value.length === 0) return fail('give at least one prompt (got an empty list)');
  if (value.length > MAX_PROMPTS && typeof value[0] !== 'number') return fail(`at most ${MAX_PROMPTS} prompts per request (got ${value.length})`);
  const first = value[0];
  if (typeof first === 'string') {
    const bad = value.findIndex((item) => typeof item !== 'string');
    return bad < 0 ? { texts: value as string[], batch: true } : fail(`expected a string like prompt[0] (a list of prompts is all strings or all token-id lists), got ${describe(value[bad])}`, [bad]);
  }
  if (typeof first === 'number') {
    const bad = value.findIndex((item) => !isTokenId(item));
    return bad < 0 ? { ids: [value as number[]], batch: false } : fail(`expected a token id (a non-negative integer) like prompt[0], got ${describeItem(value[bad])}`, [bad]);
  }
  if (!Array.isArray(first)) return fail(`expected a string, a token id or a list of token ids, got ${describe(first)}`, [0]);
  for (const [i, item] of value.entries()) {
    if (!Array.isArray(item)) return fail(`expected a list of token ids like prompt[0], got ${describe(item)}`, [i]);
    if (item.length === 0) return fail('the prompt is empty: give at least one token id', [i]);
    const bad = item.findIndex((id) => !isTokenId(id));
    if (bad >= 0) return fail(`expected a token id (a non-negative integer), got ${describeItem(item[bad])}`, [i, bad]);
  }
  return { ids: value as number[][], batch: true };
}

/** How errors name prompt `i` (and its token `j`). */
export function promptParam(prompts: Prompts, i: number, j?: number): string {
  const at = prompts.batch ? `prompt[${i}]` : 'prompt';
  return j === undefined ? at : `${at}[${j}]`;
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function describeItem(value: unknown): string {
  return typeof value === 'number' ? String(value) : describe(value);
}

/** `POST /tokenize`, as llama.cpp's and vLLM's (vllm/entrypoints/serve/tokenize/protocol.py): a chat (with the generation prompt) or a text. */
export const tokenizeRequest = z
  .strictObject({
    model: optional(z.string()),
    messages: optional(z.array(message).min(1, 'give at least one message')),
    prompt: optional(z.string()),
    // vLLM's fields; lm-eval's remote tokenizer sends add_special_tokens: false (lm_eval/utils.py, RemoteTokenizer.encode)
    add_special_tokens: optional(z.boolean()),
    add_generation_prompt: optional(z.boolean()),
    return_token_strs: optional(z.boolean()),
  })
  .refine((r) => (r.messages == null) !== (r.prompt == null), 'give either messages or prompt');

/** `POST /detokenize`, as vLLM's: token ids → `{prompt}` text (lm-eval's RemoteTokenizer.decode). */
export const detokenizeRequest = z.strictObject({
  model: optional(z.string()),
  tokens: z.array(z.int('token ids must be integers').min(0, 'token ids must be non-negative')),
});

export type ChatRequest = z.infer<typeof chatRequest>;
export type TokenizeRequest = z.infer<typeof tokenizeRequest>;
export type DetokenizeRequest = z.infer<typeof detokenizeRequest>;
export type CompletionRequest = z.infer<typeof completionRequest>;
type Sampling = Omit<Pick<ChatRequest, keyof typeof sampling>, 'max_tokens'> & { max_tokens?: number | null };

/** A validation failure as OpenAI reports it: the offending field's path and what is wrong with it. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const where = issue.path.length ? `${pathOf(issue.path)}.` : '';
    throw new RequestError(400, `unknown field ${issue.keys.map((key) => `"${where}${key}"`).join(', ')}`, where + issue.keys[0]);
  }
  const param = pathOf(issue.path);
  const received = issue.code === 'invalid_type' ? ` (got ${describe(valueAt(body, issue.path))})` : '';
  throw new RequestError(400, `${param || 'body'}: ${issue.message}${received}`, param || null);
}

function pathOf(path: readonly PropertyKey[]): string {
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i ? '.' : ''}${String(part)}`)).join('');
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let value = body;
  for (const part of path) value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[part] : undefined;
  return value;
}

function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
}

/** OpenAI's messages in the chat template's terms: text parts joined, developer messages as system messages. */
export function chatMessages(request: ChatRequest): ChatMessage[] {
  return request.messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join(''),
  }));
}

/**
 * Generation options for a prompt of `promptTokens` tokens. Unset sampling fields fall back to the checkpoint's
 * generation_config.json (as `olmoe generate` does), not to OpenAI's temperature 1. A max_tokens beyond the
 * context is cut to what is left of it; no max_tokens means up to the end of the context.
 */
export function jobOptions(request: Sampling & { max_completion_tokens?: number | null }, promptTokens: number, context: number): JobOptions {
  if (promptTokens >= context) {
    throw new RequestError(400, `the prompt has ${promptTokens} tokens, which leaves no room in the model's context of ${context} tokens`, 'messages', 'context_length_exceeded');
  }
  const room = context - promptTokens;
  const asked = request.max_completion_tokens ?? request.max_tokens ?? room;
  return { maxNewTokens: Math.min(asked, room), ...samplingOptions(request) };
}

/**
 * A completions request as engine work, one choice per prompt (tokenized already). Each prompt must leave room
 * for a token, except with `echo` and `max_tokens: 0` (scoring only: the prompt may fill the context); all of them
 * together hold at most `maxPromptTokens`, or one context's worth when that is more. No
 * `max_tokens` means up to the end of the context; the worker caps it per prompt. `stream` answers one prompt,
 * without echo.
 */
export function completionJob(request: CompletionRequest, ids: number[][], limits: { context: number; maxPromptTokens: number }): JobRequest {
  const { context, maxPromptTokens } = limits;
  const { prompt } = request;
  if (request.stream && request.echo) throw new RequestError(400, 'echo: not supported with stream: true (send stream: false to score a prompt)', 'echo');
  if (request.stream && ids.length > 1) throw new RequestError(400, `prompt: a streamed completion answers one prompt; this request has ${ids.length} (send stream: false for a batch)`, 'prompt');
  const maxNewTokens = request.max_tokens ?? context;
  const scoreOnly = request.echo === true && maxNewTokens === 0;
  for (const [i, tokens] of ids.entries()) {
    const param = promptParam(prompt, i);
    if (tokens.length === 0) throw new RequestError(400, `${param}: the prompt is empty (no tokens); give at least one`, param);
    if (tokens.length > context || (tokens.length === context && !scoreOnly)) {
      const why = tokens.length > context ? 'does not fit' : 'leaves no room to generate in';
      throw new RequestError(400, `${param}: the prompt has ${tokens.length} tokens, which ${why} the model's context of ${context} tokens`, param, 'context_length_exceeded');
    }
  }
  const total = ids.reduce((sum, tokens) => sum + tokens.length, 0);
  const limit = Math.max(maxPromptTokens, context); // one prompt that fits the context always may
  if (total > limit) {
    throw new RequestError(400, `prompt: the prompts hold ${total} tokens in all; one request may hold at most ${limit} (send the batch in smaller requests)`, 'prompt', 'request_too_large');
  }
  return { prompts: ids, options: { maxNewTokens, ...samplingOptions(request) }, routing: request.routing ?? false, logprobs: request.logprobs ?? undefined, echo: request.echo ?? false };
}

/** The sampling fields of a request; unset ones fall back to generation_config.json in the worker. */
function samplingOptions(request: Sampling): Omit<JobOptions, 'maxNewTokens'> {
  return {
    temperature: request.temperature ?? undefined,
    topP: request.top_p ?? undefined,
    topK: request.top_k ?? undefined,
    minP: request.min_p ?? undefined,
    repetitionPenalty: request.repetition_penalty ?? undefined,
    seed: request.seed ?? undefined,
    stopStrings: request.stop ?? undefined,
    ignoreEos: request.ignore_eos ?? undefined,
  };
}

/** OpenAI's finish reasons: an eos token and a stop string are both "stop". */
export function finishReason(reason: 'eos' | 'stop' | 'length'): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}
