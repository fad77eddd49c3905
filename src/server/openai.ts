/**
 * The OpenAI request bodies we accept, validated with zod (unknown fields are refused by name, so a typo is not
 * silently ignored), and their translation into the library's generation options. Extensions beyond OpenAI's
 * fields, as llama.cpp and vLLM also accept: top_k, min_p, repetition_penalty, ignore_eos, and `routing: true`
 * (the top-k experts and weights of every generated token, per layer).
 */
import { z } from 'zod';
import type { ChatMessage } from '../index.js';
import type { JobOptions } from './protocol.js';

const stop = z.union([z.string().min(1, 'stop strings must not be empty'), z.array(z.string().min(1, 'stop strings must not be empty')).max(4, 'at most 4 stop strings')]);
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
  logprobs: optional(z.literal(false, 'logprobs are not supported')),
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
});

export const completionRequest = z.strictObject({
  ...sampling,
  prompt: z
    .union([z.string(), z.array(z.string()), z.array(z.int().min(0))], 'prompt must be a string, an array of one string, or an array of token ids')
    .refine((p) => typeof p === 'string' || (p.length > 0 && (typeof p[0] === 'number' || p.length === 1)), 'give exactly one prompt (only one prompt per request)'),
  echo: optional(z.literal(false, 'echo is not supported')),
  best_of: optional(z.literal(1, 'only best_of = 1 is supported')),
});

/** `POST /tokenize` (llama.cpp and vLLM have one): the ids of a chat (with the generation prompt) or a text. */
export const tokenizeRequest = z
  .strictObject({ model: optional(z.string()), messages: optional(z.array(message).min(1, 'give at least one message')), prompt: optional(z.string()) })
  .refine((r) => (r.messages == null) !== (r.prompt == null), 'give either messages or prompt');

export type ChatRequest = z.infer<typeof chatRequest>;
export type TokenizeRequest = z.infer<typeof tokenizeRequest>;
export type CompletionRequest = z.infer<typeof completionRequest>;
type Sampling = Pick<ChatRequest, keyof typeof sampling>;

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
  const stops = request.stop == null ? undefined : typeof request.stop === 'string' ? [request.stop] : request.stop;
  return {
    maxNewTokens: Math.min(asked, room),
    temperature: request.temperature ?? undefined,
    topP: request.top_p ?? undefined,
    topK: request.top_k ?? undefined,
    minP: request.min_p ?? undefined,
    repetitionPenalty: request.repetition_penalty ?? undefined,
    seed: request.seed ?? undefined,
    stopStrings: stops,
    ignoreEos: request.ignore_eos ?? undefined,
  };
}

/** OpenAI's finish reasons: an eos token and a stop string are both "stop". */
export function finishReason(reason: 'eos' | 'stop' | 'length'): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}
