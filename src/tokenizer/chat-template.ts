/**
 * Chat prompts: the checkpoint's Jinja `chat_template` rendered with @huggingface/jinja (which, like HF's
 * apply_chat_template, trims blocks), or OLMoE's own format when the checkpoint has none (spec §4.3):
 *   {bos}<|system|>\n{s}\n<|user|>\n{u}\n<|assistant|>\n{a}{eos}\n<|user|>\n…<|assistant|>\n
 */
import { Template } from '@huggingface/jinja';
import { InputError, OlmoeError } from '../core/errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatTemplateContext {
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
}

export function checkMessages(messages: readonly ChatMessage[]): void {
  if (messages.length === 0) throw new InputError('chat needs at least one message');
  messages.forEach((m, i) => {
    if (!['system', 'user', 'assistant'].includes(m.role)) throw new InputError(`message ${i}: unknown role ${JSON.stringify(m.role)}`);
    if (typeof m.content !== 'string') throw new InputError(`message ${i}: content must be a string`);
  });
}

export function renderChatTemplate(template: string, messages: readonly ChatMessage[], context: ChatTemplateContext, addGenerationPrompt: boolean): string {
  let compiled: Template;
  try {
    compiled = new Template(template);
  } catch (error) {
    throw new OlmoeError('format', `tokenizer_config.json: chat_template does not parse: ${(error as Error).message}`, { cause: error });
  }
  try {
    return compiled.render({
      messages: messages.map((m) => ({ ...m })),
      bos_token: context.bosToken ?? '',
      eos_token: context.eosToken ?? '',
      pad_token: context.padToken ?? '',
      add_generation_prompt: addGenerationPrompt,
    });
  } catch (error) {
    throw new OlmoeError('format', `chat_template failed to render: ${(error as Error).message}`, { cause: error });
  }
}

/** OLMoE-Instruct's format, used when the checkpoint carries no chat_template. */
export function renderOlmoeChat(messages: readonly ChatMessage[], context: ChatTemplateContext, addGenerationPrompt: boolean): string {
  const eos = context.eosToken ?? '';
  let text = context.bosToken ?? eos;
  messages.forEach((message, i) => {
    const separator = i < messages.length - 1 ? '\n' : '';
    if (message.role === 'assistant') text += `<|assistant|>\n${message.content}${eos}${separator}`;
    else text += `<|${message.role}|>\n${message.content}\n`;
  });
  if (addGenerationPrompt) text += '<|assistant|>\n';
  return text;
}
