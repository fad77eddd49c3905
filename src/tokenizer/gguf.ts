/**
 * The tokenizer stored in a GGUF (`tokenizer.ggml.*`), rebuilt as a tokenizer.json for the same BPE library:
 * tokens by id, merges, token types (control → special added token, user-defined → normalized added token,
 * unused padding rows → left out), byte-level pre-tokenizer and decoder, and the chat template.
 */
import { preview, UnsupportedError } from '../core/errors.js';
import type { GgufFile } from '../io/gguf.js';
import { OlmoeTokenizer } from './tokenizer.js';

/** llama.cpp token types (llama.h). */
export const TOKEN_TYPES = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export function tokenizerFromGguf(gguf: GgufFile): OlmoeTokenizer {
  const model = gguf.metadata.get('tokenizer.ggml.model');
  if (model !== 'gpt2') throw new UnsupportedError(`${gguf.file}: tokenizer.ggml.model ${preview(model)} is not supported (OLMoE uses "gpt2" byte-level BPE)`);
  const tokens = stringList(gguf, 'tokenizer.ggml.tokens');
  const types = (gguf.metadata.get('tokenizer.ggml.token_type') as number[] | undefined) ?? [];
  const merges = stringList(gguf, 'tokenizer.ggml.merges');
  // Tokens are names from the file: a Map, never a plain object (`constructor` or `__proto__` would hit its prototype).
  const vocab = new Map<string, number>();
  const addedTokens: object[] = [];
  tokens.forEach((token, id) => {
    const type = types[id] ?? TOKEN_TYPES.normal;
    if (type === TOKEN_TYPES.unused) return;
    if (type === TOKEN_TYPES.control || type === TOKEN_TYPES.userDefined) addedTokens.push(addedToken(id, token, type === TOKEN_TYPES.control));
    if (!vocab.has(token)) vocab.set(token, id);
  });
  const json = {
    version: '1.0',
    added_tokens: addedTokens,
    // OLMo's tokenizer.json normalizes to NFC; GGUF does not record normalizers, the pre-tokenizer name tells.
    normalizer: gguf.metadata.get('tokenizer.ggml.pre') === 'olmo' ? { type: 'NFC' } : null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(vocab), merges },
  };
  const tokenAt = (key: string) => {
    const id = gguf.metadata.get(key);
    return typeof id === 'number' && tokens[id] !== undefined ? tokens[id]! : null;
  };
  const config = {
    bos_token: tokenAt('tokenizer.ggml.bos_token_id'),
    eos_token: tokenAt('tokenizer.ggml.eos_token_id'),
    pad_token: tokenAt('tokenizer.ggml.padding_token_id'),
    add_bos_token: gguf.metadata.get('tokenizer.ggml.add_bos_token') === true,
    add_eos_token: gguf.metadata.get('tokenizer.ggml.add_eos_token') === true,
    chat_template: gguf.metadata.get('tokenizer.chat_template') ?? null,
  };
  return new OlmoeTokenizer(json, config, `${gguf.file} (tokenizer.ggml.*)`);
}

function addedToken(id: number, content: string, special: boolean): object {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special };
}

function stringList(gguf: GgufFile, key: string): string[] {
  const value = gguf.metadata.get(key);
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw new UnsupportedError(`${gguf.file}: metadata ${key} is missing or not a list of strings`);
  }
  return value as string[];
}
