/**
 * A minimal byte-level BPE tokenizer.json (256 byte tokens, no merges, plus <|endoftext|> and <|padding|>),
 * for checkpoints this project creates itself. Same pre-tokenizer and decoder as GPT-NeoX/OLMo.
 */

/** GPT-2's byte → printable character map, which ByteLevel tokenizers use as their 256 base tokens. */
export function byteToUnicode(): string[] {
  const printable: number[] = [];
  const ranges: [number, number][] = [[33, 126], [161, 172], [174, 255]];
  for (const [from, to] of ranges) for (let b = from; b <= to; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return map;
}

export const EOS_TOKEN = '<|endoftext|>';
export const PAD_TOKEN = '<|padding|>';

/** tokenizer.json text; ids 0..255 are bytes, 256 is <|endoftext|>, 257 is <|padding|>. */
export function byteLevelTokenizerJson(): { json: object; eosId: number; padId: number; size: number } {
  const vocab: Record<string, number> = {};
  byteToUnicode().forEach((char, id) => (vocab[char] = id));
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(256, EOS_TOKEN), special(257, PAD_TOKEN)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
  return { json, eosId: 256, padId: 257, size: 258 };
}
