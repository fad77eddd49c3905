/**
 * OLMoE's tokenizer: `tokenizer.json` (byte-level BPE) through @huggingface/tokenizers, which matches the
 * Rust tokenizers exactly on the OLMo vocabulary (ecosystem survey §3.2), plus the transformers-level
 * settings of `tokenizer_config.json`: special tokens, add_bos/eos, clean_up_tokenization_spaces, chat template.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, preview } from '../core/errors.js';
import { readJsonObject, readJsonObjectIfExists, type JsonObject } from '../io/json.js';
import { checkMessages, renderChatTemplate, renderOlmoeChat, type ChatMessage } from './chat-template.js';
import { StreamDecoder } from './stream.js';

type Json = JsonObject;

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export class OlmoeTokenizer {
  private readonly tokenizer: Tokenizer;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly chatTemplate: string | null;
  readonly addBosToken: boolean;
  readonly addEosToken: boolean;
  readonly cleanUpTokenizationSpaces: boolean;
  /** Number of ids the tokenizer knows (largest id + 1). */
  readonly vocabSize: number;
  /** Where the tokenizer came from, for errors. */
  private readonly source: string;
  /** Where chat_template came from, for errors. */
  private readonly chatTemplateSource: string;

  constructor(tokenizerJson: Json, config: Json = {}, source = 'tokenizer.json', configSource = source) {
    this.source = source;
    this.tokenizer = buildTokenizer(tokenizerJson, source);
    this.bosToken = tokenContent(config.bos_token);
    this.eosToken = tokenContent(config.eos_token);
    this.padToken = tokenContent(config.pad_token);
    this.chatTemplate = chatTemplateOf(config.chat_template);
    this.chatTemplateSource = `${configSource}: chat_template`;
    this.addBosToken = config.add_bos_token === true;
    this.addEosToken = config.add_eos_token === true;
    // transformers ≥ 4.45 defaults this to false; the Rust tokenizers never clean up.
    this.cleanUpTokenizationSpaces = config.clean_up_tokenization_spaces === true;
    let maxId = -1;
    for (const id of this.tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
  }

  /** tokenizer.json plus tokenizer_config.json / special_tokens_map.json when present. */
  static fromFolder(dir: string): OlmoeTokenizer {
    const path = join(dir, 'tokenizer.json');
    if (!existsSync(path)) throw new FormatError(path, 'not found: the model folder has no tokenizer.json');
    const config = { ...readJsonObjectIfExists(join(dir, 'special_tokens_map.json')), ...readJsonObjectIfExists(join(dir, 'tokenizer_config.json')) };
    return new OlmoeTokenizer(readJsonObject(path), config, path, join(dir, 'tokenizer_config.json'));
  }

  /** Text → ids. Special tokens (bos/eos) are added only where tokenizer_config asks (not for OLMoE base). */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const ids = this.library('encode', () => this.tokenizer.encode(text, { add_special_tokens: false }).ids);
    if (opts.addSpecialTokens === false) return ids;
    const bos = this.addBosToken ? this.tokenId(this.bosToken) : undefined;
    const eos = this.addEosToken ? this.tokenId(this.eosToken) : undefined;
    return [...(bos === undefined ? [] : [bos]), ...ids, ...(eos === undefined ? [] : [eos])];
  }

  /** Ids → text; ids the tokenizer does not know (e.g. padding rows of the embedding) decode to nothing. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    return this.library('decode', () =>
      this.tokenizer.decode([...ids], {
        skip_special_tokens: opts.skipSpecialTokens ?? false,
        clean_up_tokenization_spaces: this.cleanUpTokenizationSpaces,
      }),
    );
  }

  /**
   * A call into the tokenizers library. A tokenizer.json that builds can still fail at use (another model type
   * with BPE's fields, a post_processor missing its fields): that is the file's fault, so the error names it.
   */
  private library<T>(what: string, call: () => T): T {
    try {
      return call();
    } catch (error) {
      throw new FormatError(this.source, `the tokenizer cannot ${what}: ${(error as Error).message}`, { cause: error });
    }
  }

  tokenId(token: string | null): number | undefined {
    return token === null ? undefined : this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** The chat prompt as text: the checkpoint's template, else OLMoE's `<|user|>`/`<|assistant|>` format. */
  renderChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    checkMessages(messages);
    const context = { bosToken: this.bosToken, eosToken: this.eosToken, padToken: this.padToken };
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    if (this.chatTemplate) return renderChatTemplate(this.chatTemplate, messages, context, addGenerationPrompt, this.chatTemplateSource);
    return renderOlmoeChat(messages, context, addGenerationPrompt);
  }

  /** Chat prompt ids; the template already holds its special tokens, so none are added (as HF does). */
  encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.renderChat(messages, opts), { addSpecialTokens: false });
  }

  streamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder((ids) => this.decode(ids, opts));
  }
}

/** Ids at or above this are refused before the library sizes its id table by the largest (as config's vocab_size limit). */
export const MAX_TOKEN_ID = 1 << 24;

function buildTokenizer(json: Json, source: string): Tokenizer {
  const model = json.model as Json | undefined;
  if (typeof model !== 'object' || model === null || typeof model.type !== 'string') {
    throw new FormatError(source, 'has no "model" with a "type": not a tokenizers tokenizer.json');
  }
  checkIds(json, model, source);
  try {
    return new Tokenizer(json, {});
  } catch (error) {
    throw new FormatError(source, `cannot build the tokenizer: ${(error as Error).message}`, { cause: error });
  }
}

/** Vocabulary and added-token ids must be integers in [0, 2^24): a 2^31 would make the library allocate 2^31 slots. */
function checkIds(json: Json, model: Json, source: string): void {
  const vocab = model.vocab;
  const entries: [string, unknown][] = [];
  if (vocab !== null && typeof vocab === 'object' && !Array.isArray(vocab)) entries.push(...Object.entries(vocab).map(([token, id]): [string, unknown] => [`model.vocab[${preview(token)}]`, id]));
  if (Array.isArray(json.added_tokens)) json.added_tokens.forEach((t, i) => entries.push([`added_tokens[${i}].id`, (t as Json | null)?.id]));
  for (const [where, id] of entries) {
    if (id !== undefined && (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= MAX_TOKEN_ID)) {
      throw new FormatError(source, `${where} = ${preview(id)}: token ids must be integers in [0, ${MAX_TOKEN_ID})`);
    }
  }
}

/** bos_token etc. are a string or an AddedToken object {content: ...} in tokenizer_config.json. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as Json).content === 'string') return (value as Json).content as string;
  return null;
}

/** chat_template is a string, or a list of {name, template} of which "default" is used. */
function chatTemplateOf(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => (t as Json)?.name === 'default') ?? value[0];
    const template = (named as Json | undefined)?.template;
    return typeof template === 'string' ? template : null;
  }
  return null;
}
