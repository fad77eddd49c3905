/**
 * The record formats of adaptation data, as TRL and open-instruct read them, checked field by field:
 * - SFT: `{"messages": [{role, content}, ...]}` (system/user/assistant, multi-turn; every assistant turn is
 *   trained), `{"prompt", "completion"}` (strings or message lists; the completion's assistant turns are trained)
 *   and `{"text"}` (plain text, every token trained).
 * - Preference (DPO): `{"prompt", "chosen", "rejected"}`, each a string or a message list; without "prompt" the
 *   common leading messages of chosen and rejected are the prompt (TRL's implicit-prompt format).
 * - KTO: `{"prompt", "completion", "label"}`; a preference record in a KTO file is split into a desirable and an
 *   undesirable example (TRL's unpair_preference_dataset).
 */
import type { ChatMessage } from '../../tokenizer/chat-template.js';
import { preview } from '../../core/errors.js';
import { recordError, type JsonRecord, type RecordSource } from './jsonl.js';

/** A chat message and whether the loss counts its tokens (only ever true for assistant turns). */
export interface Turn extends ChatMessage {
  readonly train: boolean;
}

export type SftRecord =
  | { readonly kind: 'chat'; readonly turns: readonly Turn[]; readonly source: RecordSource }
  | { readonly kind: 'text'; readonly text: string; readonly source: RecordSource };

export interface PreferenceRecord {
  readonly prompt: readonly Turn[];
  readonly chosen: readonly Turn[];
  readonly rejected: readonly Turn[];
  readonly source: RecordSource;
}

export interface KtoRecord {
  readonly prompt: readonly Turn[];
  readonly completion: readonly Turn[];
  /** true: desirable; false: undesirable. */
  readonly label: boolean;
  readonly source: RecordSource;
}

const ROLES: readonly string[] = ['system', 'user', 'assistant'];

/** A list of {role, content} messages; `trainAssistant` marks its assistant turns as trained. */
function parseMessages(value: unknown, field: string, source: RecordSource, trainAssistant: boolean): Turn[] {
  if (!Array.isArray(value)) throw recordError(source, field, `must be a list of {"role", "content"} messages, not ${preview(value, 40)}`);
  if (value.length === 0) throw recordError(source, field, 'is an empty list of messages');
  return value.map((message: unknown, i) => {
    const at = `${field}[${i}]`;
    if (typeof message !== 'object' || message === null || Array.isArray(message)) throw recordError(source, at, `must be a {"role", "content"} object, not ${preview(message, 40)}`);
    const { role, content } = message as JsonRecord;
    if (typeof role !== 'string' || !ROLES.includes(role)) throw recordError(source, `${at}.role`, `unknown role ${preview(role, 40)} (expected "system", "user" or "assistant")`);
    if (typeof content !== 'string') throw recordError(source, `${at}.content`, `must be a string, not ${preview(content, 40)}`);
    return { role: role as Turn['role'], content, train: trainAssistant && role === 'assistant' };
  });
}

/** A prompt: a string is one user message; a message list must not end with an assistant turn. */
function parsePrompt(value: unknown, field: string, source: RecordSource): Turn[] {
  const turns = typeof value === 'string' ? [{ role: 'user' as const, content: value, train: false }] : parseMessages(value, field, source, false);
  if (turns[turns.length - 1]!.role === 'assistant') throw recordError(source, field, 'ends with an assistant message: a prompt ends with the turn the completion answers');
  return turns;
}

/** A completion: a string is one assistant message; a message list must start with an assistant turn. */
function parseCompletion(value: unknown, field: string, source: RecordSource): Turn[] {
  const turns = typeof value === 'string' ? [{ role: 'assistant' as const, content: value, train: true }] : parseMessages(value, field, source, true);
  if (turns[0]!.role !== 'assistant') throw recordError(source, `${field}[0].role`, `is "${turns[0]!.role}": a completion starts with the assistant's reply`);
  return turns;
}

/** Exactly one of the formats' key sets, named in the error when the record has none or several. */
function formatOf<F extends string>(record: JsonRecord, source: RecordSource, formats: Record<F, readonly string[]>): F {
  const present = (Object.keys(formats) as F[]).filter((f) => formats[f].some((key) => Object.hasOwn(record, key)));
  const describe = (Object.values(formats) as string[][]).map((keys) => `{${keys.map((k) => `"${k}"`).join(', ')}}`).join(' or ');
  if (present.length !== 1) throw recordError(source, '', `${present.length === 0 ? 'has none' : 'mixes the keys'} of the formats ${describe} (keys: ${preview(Object.keys(record), 60)})`);
  const format = present[0]!;
  for (const key of formats[format]) if (!Object.hasOwn(record, key)) throw recordError(source, key, 'is missing');
  return format;
}

/** A conversation must open with a system or user turn and train at least one assistant turn. */
function checkConversation(turns: readonly Turn[], field: string, source: RecordSource): void {
  if (turns[0]!.role === 'assistant') throw recordError(source, `${field}[0].role`, 'is "assistant": a conversation starts with a system or user message');
  if (!turns.some((t) => t.train)) throw recordError(source, field, 'has no assistant turn: nothing to train on');
}

export function parseSftRecord(record: JsonRecord, source: RecordSource): SftRecord {
  const format = formatOf(record, source, { messages: ['messages'], promptCompletion: ['prompt', 'completion'], text: ['text'] });
  if (format === 'text') {
    if (typeof record.text !== 'string' || record.text === '') throw recordError(source, 'text', `must be a non-empty string, not ${preview(record.text, 40)}`);
    return { kind: 'text', text: record.text, source };
  }
  const turns =
    format === 'messages'
      ? parseMessages(record.messages, 'messages', source, true)
      : [...parsePrompt(record.prompt, 'prompt', source), ...parseCompletion(record.completion, 'completion', source)];
  checkConversation(turns, format === 'messages' ? 'messages' : 'completion', source);
  return { kind: 'chat', turns, source };
}

/** TRL's extract_prompt: the longest common leading run of messages, ended before an assistant turn of both. */
function splitImplicitPrompt(chosen: Turn[], rejected: Turn[], source: RecordSource): { prompt: Turn[]; chosen: Turn[]; rejected: Turn[] } {
  let shared = 0;
  const same = (a: Turn, b: Turn) => a.role === b.role && a.content === b.content;
  while (shared < Math.min(chosen.length, rejected.length) && same(chosen[shared]!, rejected[shared]!)) shared++;
  while (shared > 0 && chosen[shared - 1]!.role === 'assistant') shared--; // the prompt ends on a non-assistant turn
  if (shared === 0 || chosen[shared]?.role !== 'assistant' || rejected[shared]?.role !== 'assistant') {
    throw recordError(source, 'chosen', 'without "prompt", chosen and rejected must be conversations that share their opening messages and then differ in an assistant reply');
  }
  const untrained = (turns: Turn[]) => turns.map((t) => ({ ...t, train: false }));
  return { prompt: untrained(chosen.slice(0, shared)), chosen: chosen.slice(shared), rejected: rejected.slice(shared) };
}

export function parsePreferenceRecord(record: JsonRecord, source: RecordSource): PreferenceRecord {
  for (const key of ['chosen', 'rejected']) if (!Object.hasOwn(record, key)) throw recordError(source, key, 'is missing (a preference record has "prompt", "chosen" and "rejected")');
  if (!Object.hasOwn(record, 'prompt')) {
    const whole = (key: 'chosen' | 'rejected') => parseMessages(record[key], key, source, true);
    return { ...splitImplicitPrompt(whole('chosen'), whole('rejected'), source), source };
  }
  return {
    prompt: parsePrompt(record.prompt, 'prompt', source),
    chosen: parseCompletion(record.chosen, 'chosen', source),
    rejected: parseCompletion(record.rejected, 'rejected', source),
    source,
  };
}

/** One KTO record, or two when the line is a preference pair (chosen desirable, rejected undesirable). */
export function parseKtoRecords(record: JsonRecord, source: RecordSource): KtoRecord[] {
  if (Object.hasOwn(record, 'chosen') || Object.hasOwn(record, 'rejected')) {
    const pair = parsePreferenceRecord(record, source);
    return [
      { prompt: pair.prompt, completion: pair.chosen, label: true, source },
      { prompt: pair.prompt, completion: pair.rejected, label: false, source },
    ];
  }
  formatOf(record, source, { kto: ['prompt', 'completion', 'label'] });
  if (typeof record.label !== 'boolean') throw recordError(source, 'label', `must be true (desirable) or false (undesirable), not ${preview(record.label, 40)}`);
  return [{ prompt: parsePrompt(record.prompt, 'prompt', source), completion: parseCompletion(record.completion, 'completion', source), label: record.label, source }];
}

/** Whether two completions are the same messages (a preference pair that teaches nothing). */
export function sameTurns(a: readonly Turn[], b: readonly Turn[]): boolean {
  return a.length === b.length && a.every((t, i) => t.role === b[i]!.role && t.content === b[i]!.content);
}
