/**
 * One response to a chat or completions request: streamed as server-sent events (one choice), or sent whole once
 * every choice is done (a completions request answers each of its prompts with one choice, `index` = prompt order).
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { TokenLogprob } from '../index.js';
import type { TokenMessage } from './engine.js';
import { errorBody, sendError, sendJson } from './http.js';
import { CompletionLogprobs } from './logprobs.js';
import { finishReason, type RequestError } from './openai.js';
import type { JobSummary, TokenRouting } from './protocol.js';

export interface ReplyOptions {
  kind: 'chat' | 'text';
  model: string;
  stream: boolean;
  /** Streamed: a last chunk with the usage. */
  withUsage: boolean;
  /** Each choice (and streamed chunk) lists its generated tokens' routing. */
  routing: boolean;
  /** Completions with `logprobs: N`: each choice gets OpenAI's logprobs object. */
  logprobs: boolean;
  /** Completions with `echo`: each choice's text starts with its prompt's text (and its logprobs with the prompt's). */
  echoTexts?: string[];
  /** The prompts' token ids, in choice order. */
  prompts: number[][];
  /** A token id's own text (special tokens kept). */
  tokenText: (id: number) => string;
}

interface Choice {
  text: string;
  logprobs: CompletionLogprobs | undefined;
  routing: (TokenRouting & { id: number; text: string })[];
  summary?: JobSummary;
}

export class Reply {
  private readonly id: string;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly choices: Choice[];
  private done = 0;
  /** Streamed logprobs: where the next chunk's first token starts in the text. */
  private streamOffset = 0;

  constructor(
    private readonly res: ServerResponse,
    private readonly opts: ReplyOptions,
  ) {
    this.id = `${opts.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    this.choices = opts.prompts.map((_, i) => ({ text: opts.echoTexts?.[i] ?? '', logprobs: opts.logprobs ? new CompletionLogprobs(opts.tokenText) : undefined, routing: [] }));
  }

  begin(): void {
    if (!this.opts.stream) return;
    this.res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    this.res.flushHeaders();
    if (this.opts.kind === 'chat') this.event(this.chunk({ role: 'assistant', content: '' }, null));
  }

  /** echo: the prompt's first token (unscored), then the log-probabilities of the others. */
  prompt(choice: number, logprobs: readonly TokenLogprob[]): void {
    const target = this.choices[choice]!.logprobs;
    if (!target) return;
    target.addUnscored(this.opts.prompts[choice]![0]!);
    for (const entry of logprobs) target.add(entry);
  }

  token(message: TokenMessage): void {
    const { choice: index, id, text, routing, logprob, eos } = message;
    const entry = id !== null && routing ? { id, text: this.opts.tokenText(id), ...routing } : undefined;
    if (!this.opts.stream) {
      const choice = this.choices[index]!;
      if (!eos) choice.text += text;
      if (logprob) choice.logprobs?.add(logprob);
      if (entry) choice.routing.push(entry);
      return;
    }
    const logprobs = this.opts.logprobs ? new CompletionLogprobs(this.opts.tokenText, this.streamOffset) : undefined;
    if (logprob) logprobs?.add(logprob);
    if (text === '' && !entry && !logprobs?.length) return;
    this.streamOffset = logprobs?.end ?? this.streamOffset;
    const chunk = this.chunk(this.opts.kind === 'chat' ? { content: text } : text, null, logprobs);
    if (entry) (chunk.choices[0] as Record<string, unknown>).routing = [entry];
    this.event(chunk);
  }

  /** A choice is complete; once all are, the reply goes out (or the stream ends). */
  finish(index: number, summary: JobSummary): void {
    this.choices[index]!.summary = summary;
    if (++this.done < this.choices.length) return;
    const summaries = this.choices.map((choice) => choice.summary!);
    const promptTokens = sum(summaries, (s) => s.promptTokens);
    const completionTokens = sum(summaries, (s) => s.completionTokens);
    const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
    const timings = { prefill_ms: round(sum(summaries, (s) => s.prefillMs)), decode_ms: round(sum(summaries, (s) => s.decodeMs)), seed: summaries[0]!.seed };
    if (this.opts.stream) {
      this.event(this.chunk(this.opts.kind === 'chat' ? {} : '', finishReason(summary.finishReason), this.opts.logprobs ? new CompletionLogprobs(this.opts.tokenText) : undefined));
      if (this.opts.withUsage) this.event({ ...this.envelope(), choices: [], usage, timings });
      this.res.end('data: [DONE]\n\n');
      return;
    }
    sendJson(this.res, 200, { ...this.envelope(), choices: this.choices.map((choice, i) => this.choiceJson(choice, i)), usage, timings });
  }

  fail(error: RequestError): void {
    if (!this.res.headersSent) return sendError(this.res, error);
    this.event({ error: errorBody(error) }); // the stream has begun: report in-band, as OpenAI does
    this.res.end('data: [DONE]\n\n');
  }

  private choiceJson(choice: Choice, index: number) {
    const routing = this.opts.routing ? { routing: choice.routing } : {};
    const reason = finishReason(choice.summary!.finishReason);
    if (this.opts.kind === 'chat') return { index, message: { role: 'assistant', content: choice.text }, logprobs: null, finish_reason: reason, ...routing };
    return { index, text: choice.text, logprobs: choice.logprobs ?? null, finish_reason: reason, ...routing };
  }

  private envelope() {
    const object = this.opts.kind === 'chat' ? (this.opts.stream ? 'chat.completion.chunk' : 'chat.completion') : 'text_completion';
    return { id: this.id, object, created: this.created, model: this.opts.model };
  }

  private chunk(delta: Record<string, unknown> | string, finish: string | null, logprobs?: CompletionLogprobs) {
    const choice = typeof delta === 'string' ? { index: 0, text: delta, logprobs: logprobs ?? null, finish_reason: finish } : { index: 0, delta, logprobs: null, finish_reason: finish };
    return { ...this.envelope(), choices: [choice], ...(this.opts.withUsage ? { usage: null } : {}) };
  }

  private event(payload: unknown): void {
    this.res.write(`data: ${JSON.stringify(payload)}\n\n`);
  }
}

function sum<T>(items: readonly T[], value: (item: T) => number): number {
  return items.reduce((total, item) => total + value(item), 0);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
